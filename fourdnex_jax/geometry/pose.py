"""Camera poses from dense 3D-2D pairs with known intrinsics (NumPy, float64, no GPU).

Conventions: :mod:`fourdnex_jax.geometry.se3` (OpenCV cameras, pixel centres at integer coordinates; a pose
``(R, t)`` is world -> camera, ``x_cam = R X + t``). Robust scales: :mod:`fourdnex_jax.geometry.robust`.

Building blocks:
  * :func:`calibrated_dlt` -- with K known, ``cross(K^-1 p, R X + t) = 0`` is linear in the 12 entries of
    ``[R | t]``; null vector of the 12x12 normal matrix, projection onto SO(3), then a linear re-solve of ``t``.
  * :func:`p3p` -- minimal 3-point absolute pose (Lambda Twist), batched over many triples.
  * :func:`gauss_newton_pose` / :func:`irls_pose` -- (robust) Gauss-Newton on the pixel reprojection error.
  * :func:`robust_pose_batch` -- the poses of ALL frames of a video in one vectorised pass, in four stages, each
    its own function on stacked (T, ...) arrays: :func:`_pose_hypotheses` (P3P or calibrated-DLT solutions of
    random minimal sets), :func:`_select_hypothesis` (preemptive LMedS / RANSAC scoring), :func:`_refit_inliers`
    (a calibrated-DLT refit on the winner's inliers) and :func:`_robust_gauss_newton` (Tukey IRLS on a random
    subset, then a few steps on all pairs; 6x6 normal equations from one Gram product, ``np.linalg.solve`` on
    (T, 6, 6)). Frame by frame it is :func:`robust_pose` (T = 1) with the same results.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fourdnex_jax.geometry.robust import masked_median, robust_level, tukey_weights
from fourdnex_jax.geometry.se3 import project_to_so3


def reprojection_error(K: np.ndarray, r: np.ndarray, t: np.ndarray, X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Pixel reprojection error of points ``X`` (..., N, 3) under pose(s) ``r`` (..., 3, 3), ``t`` (..., 3).
    Points behind the camera get ``inf``."""
    p = X @ np.swapaxes(r, -1, -2) + t[..., None, :]
    z = p[..., 2]
    ok = z > 1e-12
    zs = np.where(ok, z, 1.0)
    du = K[0, 0] * p[..., 0] / zs + K[0, 1] * p[..., 1] / zs + K[0, 2] - uv[..., 0]
    dv = K[1, 1] * p[..., 1] / zs + K[1, 2] - uv[..., 1]
    return np.where(ok, np.sqrt(du * du + dv * dv), np.inf)


# -- batched pose machinery -------------------------------------------------------------------------------------
# The pose code works on frames stacked along a leading axis T, with the points in a "transposed" layout:
# ``Xt`` (T, 3, N) world points and ``uvt`` (T, 2, N) pixels (rows contiguous, which keeps every elementwise pass a
# plain vector loop), and ``mask`` (T, N) bool for frames with fewer valid points than N. One frame is T = 1.
def gather_columns(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``out[..., c, :] = a[c, idx]``: a (C, M), integer idx (..., n) -> (..., C, n) float64, one 1-D ``np.take``
    per component (several times faster than fancy indexing of an interleaved (..., 3) array)."""
    a = np.ascontiguousarray(a, np.float64)
    out = np.empty(idx.shape[:-1] + (a.shape[0], idx.shape[-1]))
    for c in range(a.shape[0]):
        np.take(a[c], idx, out=out[..., c, :], mode="clip")
    return out


def _kparams(K: np.ndarray, tt: int) -> tuple[np.ndarray, ...]:
    """(fx, fy, skew, cx, cy) of K (3, 3) or (T, 3, 3), each (T, 1) to broadcast over (T, N)."""
    K = np.broadcast_to(np.asarray(K, np.float64), (tt, 3, 3))
    return tuple(np.ascontiguousarray(K[:, i, j])[:, None] for i, j in ((0, 0), (1, 1), (0, 1), (0, 2), (1, 2)))


def _take(kp: tuple, idx: np.ndarray) -> tuple:
    return tuple(a[idx] for a in kp)


def _project(kp: tuple, r: np.ndarray, t: np.ndarray, Xt: np.ndarray, uvt: np.ndarray):
    """Pixel residuals of ``Xt`` (T, 3, N) under w2c (r (T, 3, 3), t (T, 3)): returns ``ok`` (in front), ``iz``
    (1 / z), normalised coordinates ``xn, yn`` and the residuals ``ru, rv`` (prediction - observation), all
    (T, N)."""
    fx, fy, sk, cx, cy = kp
    p = r @ Xt + t[:, :, None]
    z = p[:, 2]
    ok = z > 1e-12
    iz = 1.0 / np.where(ok, z, 1.0)
    xn, yn = p[:, 0] * iz, p[:, 1] * iz
    return ok, iz, xn, yn, fx * xn + sk * yn + cx - uvt[:, 0], fy * yn + cy - uvt[:, 1]


def _pixel_error(ok: np.ndarray, ru: np.ndarray, rv: np.ndarray) -> np.ndarray:
    return np.where(ok, np.sqrt(ru * ru + rv * rv), np.inf)


# Pixel Jacobians of the left update (columns: d/dw then d/dt, p = z (x, y, 1)): du = fx U + skew V, dv = fy V
#   U = (-x y, 1 + x^2, -y, 1/z, 0, -x/z),  V = (-(1 + y^2), x y, x, 0, 1/z, -y/z),
# both linear in the 8 per-point functions b = (x y, 1 + x^2, 1 + y^2, x, y, 1/z, x/z, y/z): [U | V] = b @ _QUV.
_QUV = np.zeros((8, 12))
for _i, _j, _s in ((0, 0, -1), (1, 1, 1), (4, 2, -1), (5, 3, 1), (6, 5, -1),  # U
                   (2, 6, -1), (0, 7, 1), (3, 8, 1), (5, 10, 1), (7, 11, -1)):  # V (columns 6..11)
    _QUV[_i, _j] = _s


def _gn_delta(kp: tuple, ok, iz, xn, yn, ru, rv, w: np.ndarray) -> np.ndarray:
    """Weighted Gauss-Newton step (T, 6) = (w, dt) for the left update ``R <- exp(w) R``, ``t <- exp(w) t + dt``
    (so ``p <- exp(w) p + dt``), weights ``w`` (T, N) >= 0. The normal equations come from ONE batched Gram
    product of the 8 basis functions and the 2 residuals, ``G = sum w [b, ru, rv] [b, ru, rv]^T`` (T, 10, 10):
    ``H = fx^2 UU + fx s (UV + VU) + (s^2 + fy^2) VV``, ``g = fx U.ru + s V.ru + fy V.rv`` with ``UU = QU^T G QU``
    etc.; then one batched 6x6 solve."""
    fx, fy, sk, _, _ = (a[:, :, None] for a in kp)
    tt, n = xn.shape
    sw = np.sqrt(np.where(ok, w, 0.0))
    bm = np.empty((tt, 10, n))
    np.multiply(xn, yn, out=bm[:, 0])
    np.multiply(xn, xn, out=bm[:, 1])
    bm[:, 1] += 1.0
    np.multiply(yn, yn, out=bm[:, 2])
    bm[:, 2] += 1.0
    bm[:, 3], bm[:, 4], bm[:, 5] = xn, yn, iz
    np.multiply(xn, iz, out=bm[:, 6])
    np.multiply(yn, iz, out=bm[:, 7])
    bm[:, 8], bm[:, 9] = ru, rv
    bm *= sw[:, None, :]
    g10 = bm @ bm.transpose(0, 2, 1)
    m = _QUV.T @ g10[:, :8, :8] @ _QUV  # (T, 12, 12): [[UU, UV], [VU, VV]]
    uv_ = m[:, :6, 6:]
    h = fx * fx * m[:, :6, :6] + fx * sk * (uv_ + uv_.transpose(0, 2, 1)) + (sk * sk + fy * fy) * m[:, 6:, 6:]
    gr = _QUV.T @ g10[:, :8, 8:]  # (T, 12, 2): U.ru, U.rv; V.ru, V.rv
    g = fx[:, :, 0] * gr[:, :6, 0] + sk[:, :, 0] * gr[:, 6:, 0] + fy[:, :, 0] * gr[:, 6:, 1]
    reg = 1e-12 * np.trace(h, axis1=1, axis2=2) + 1e-300
    return -np.linalg.solve(h + reg[:, None, None] * np.eye(6), g[..., None])[..., 0]


def _skew(v: np.ndarray) -> np.ndarray:
    out = np.zeros(v.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2], out[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    out[..., 1, 0], out[..., 2, 0], out[..., 2, 1] = v[..., 2], -v[..., 1], v[..., 0]
    return out


def _apply_delta(r: np.ndarray, t: np.ndarray, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R <- exp(w) R``, ``t <- exp(w) t + dt`` for delta (T, 6) (Rodrigues, batched)."""
    w, dt = delta[:, :3], delta[:, 3:]
    th = np.linalg.norm(w, axis=-1)
    kx = _skew(w / np.where(th > 1e-15, th, 1.0)[:, None])
    dr = np.eye(3) + np.sin(th)[:, None, None] * kx + (1.0 - np.cos(th))[:, None, None] * (kx @ kx)
    return dr @ r, (dr @ t[:, :, None])[..., 0] + dt


def _step_size(delta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """max(|w| (rad), |dt| / scale) per frame: the convergence measure of the iterative refinements."""
    return np.maximum(np.linalg.norm(delta[:, :3], axis=-1), np.linalg.norm(delta[:, 3:], axis=-1) / scale)


def _depth_scale(r: np.ndarray, t: np.ndarray, Xt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """|depth of the masked points' centroid| per frame (T,): the length unit of the convergence tests."""
    cen = (Xt * mask[:, None]).sum(-1) / np.maximum(mask.sum(-1), 1)[:, None]
    return np.maximum(np.abs((r[:, 2] * cen).sum(-1) + t[:, 2]), 1e-12)


def _refine(kp: tuple, r: np.ndarray, t: np.ndarray, Xt: np.ndarray, uvt: np.ndarray, mask: np.ndarray,
            iters: int, tol: float, robust: bool, min_scale: float = 1e-6,
            level_cols: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched (robust) Gauss-Newton on the pixel reprojection error: kp from :func:`_kparams`, r (T, 3, 3),
    t (T, 3), Xt (T, 3, N), uvt (T, 2, N), mask (T, N). ``robust``: IRLS with
    :func:`tukey_weights` re-estimated each step (their scale from the first ``level_cols`` pairs, default all);
    otherwise plain least squares over ``mask``. Each frame stops on its own after a step smaller than ``tol``
    (:func:`_step_size`: rad, translation relative to the centroid depth; ``tol = 0``: always ``iters`` steps),
    or when it has < 6 usable pairs; only the still-active frames are computed. Returns (R, t, steps per
    frame)."""
    r, t = r.copy(), t.copy()
    tt = r.shape[0]
    steps = np.zeros(tt, np.int64)
    active = np.ones(tt, bool)
    scale = _depth_scale(r, t, Xt, mask) if tol > 0 else np.ones(tt)
    for _ in range(iters):
        idx = np.flatnonzero(active)
        if len(idx) == 0:
            break
        full = len(idx) == tt
        sub = (lambda a: a) if full else (lambda a: a[idx])
        k = kp if full else _take(kp, idx)
        ok, iz, xn, yn, ru, rv = _project(k, sub(r), sub(t), sub(Xt), sub(uvt))
        m = sub(mask) & ok
        enough = m.sum(1) >= 6
        if robust:
            e = _pixel_error(ok, ru, rv)
            lev = None if level_cols is None else robust_level(e[:, :level_cols], m[:, :level_cols])
            wts = tukey_weights(e, m, min_scale, level=lev)
        else:
            wts = m.astype(np.float64)
        delta = _gn_delta(k, ok, iz, xn, yn, ru, rv, wts)
        upd = idx[enough]
        r[upd], t[upd] = _apply_delta(sub(r)[enough], sub(t)[enough], delta[enough])
        steps[upd] += 1
        done = ~enough
        if tol > 0:
            done |= _step_size(delta, sub(scale)) < tol
        active[idx[done]] = False
    return project_to_so3(r), t, steps


# -- calibrated DLT ---------------------------------------------------------------------------------------------
def _calibrated_dlt_batch(bn: np.ndarray, Xt: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated DLT for stacked frames: unit bearings ``bn`` (T, 3, N), points ``Xt`` (T, 3, N), normal-equation
    weights ``w`` (T, N) >= 0 (0 = unused). ``cross(b, M x + t) = 0`` in vec([M | t]) has per point the 12x12
    normal matrix ``(I - b b^T) (x) (xh xh^T)`` (unit b), so the system is ``I3 (x) sum(w xh xh^T) - sum(w
    (b (x) xh)(b (x) xh)^T)``: two batched Gram products instead of the (3N, 12) design matrix. Points are
    normalised (weighted centroid, RMS distance 1) for conditioning; null vector by ``eigh``; the rotation part
    is projected onto SO(3) and ``t`` re-solved linearly given R. Returns R (T, 3, 3), t (T, 3)."""
    tt, _, n = Xt.shape
    wsum = np.maximum(w.sum(1), 1e-300)
    m = (Xt * w[:, None]).sum(-1) / wsum[:, None]
    d = Xt - m[:, :, None]
    s = np.sqrt(((d * d).sum(1) * w).sum(1) / wsum)
    s = np.where(s > 1e-12, s, 1.0)
    xh = np.concatenate([d / s[:, None, None], np.ones((tt, 1, n))], 1)  # (T, 4, N)
    sw = np.sqrt(w)[:, None, :]
    o = (bn[:, :, None, :] * xh[:, None, :, :]).reshape(tt, 12, n) * sw
    xw = xh * sw
    a = -(o @ o.transpose(0, 2, 1))
    gx = xw @ xw.transpose(0, 2, 1)
    for i in range(3):
        a[:, 4 * i:4 * i + 4, 4 * i:4 * i + 4] += gx
    _, vecs = np.linalg.eigh(a)
    v = vecs[:, :, 0].reshape(tt, 3, 4)
    v = v * np.sign(np.linalg.det(v[:, :, :3]))[:, None, None]
    r = project_to_so3(v[:, :, :3])
    # t given R: sum_n w (I - b b^T) (R x_n + t) = 0
    q = r @ xh[:, :3]
    bq = (bn * q).sum(1)
    lhs = wsum[:, None, None] * np.eye(3) - (bn * w[:, None]) @ bn.transpose(0, 2, 1)
    rhs = (q * w[:, None]).sum(-1) - (bn * (w * bq)[:, None]).sum(-1)
    tn = -np.linalg.solve(lhs + 1e-300 * np.eye(3), rhs[..., None])[..., 0]
    return r, s[:, None] * tn - (r @ m[:, :, None])[..., 0]


def calibrated_dlt(bearings: np.ndarray, X: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pose (R, t) with ``R X + t`` parallel to ``bearings = K^-1 [u, v, 1]`` (least squares, >= 6 points).
    bearings, X (N, 3); ``w`` (N,) multiplies each point's equations (weight ``w^2`` in the normal equations)."""
    b = np.asarray(bearings, np.float64)
    bn = (b / np.linalg.norm(b, axis=-1, keepdims=True)).T[None]
    w2 = np.ones(len(b)) if w is None else np.asarray(w, np.float64) ** 2
    r, t = _calibrated_dlt_batch(bn, np.asarray(X, np.float64).T[None], w2[None])
    return r[0], t[0]


def _minimal_hypotheses(bn: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated DLT on a batch of small point sets: unit bearings, X (B, k, 3), k >= 6. Solved with the last
    entry of the normalised ``[M | t]`` (``t_z``: the centroid's depth, far from 0 for points in front) fixed to
    1: one batched 11x11 solve instead of an SVD per set. Returns the 3x4 ``[M | t]`` (B, 3, 4) in the original
    coordinates, up to a positive scale (``det M > 0``), and the nearest pose (R (B, 3, 3), t (B, 3))."""
    nb, k, _ = X.shape
    m = X.mean(1, keepdims=True)
    d = X - m
    s = np.sqrt((d * d).sum(-1).mean(-1))
    s = np.where(s > 1e-12, s, 1.0)
    xh = np.concatenate([d / s[:, None, None], np.ones((nb, k, 1))], -1)  # (B, k, 4)
    o = (bn[:, :, :, None] * xh[:, :, None, :]).reshape(nb, k, 12)
    a = -(o.transpose(0, 2, 1) @ o)
    gx = xh.transpose(0, 2, 1) @ xh
    for i in range(3):
        a[:, 4 * i:4 * i + 4, 4 * i:4 * i + 4] += gx
    a11 = a[:, :11, :11] + (1e-10 * np.trace(a, axis1=1, axis2=2) + 1e-300)[:, None, None] * np.eye(11)
    v = np.concatenate([np.linalg.solve(a11, -a[:, :11, 11:])[..., 0], np.ones((nb, 1))], 1).reshape(nb, 3, 4)
    v = v * np.sign(np.linalg.det(v[:, :, :3]))[:, None, None]
    mn = v[:, :, :3]
    p = np.concatenate([mn, s[:, None, None] * v[:, :, 3:] - mn @ m.transpose(0, 2, 1)], -1)
    r = project_to_so3(mn)
    c = np.linalg.svd(mn, compute_uv=False).mean(-1)
    c = np.where(c > 1e-12, c, 1.0)
    t = (s[:, None] * v[:, :, 3] / c[:, None]) - (r @ m.transpose(0, 2, 1))[..., 0]
    return p, r, t


# -- P3P (Lambda Twist) -----------------------------------------------------------------------------------------
def _cubic_root(b: np.ndarray, c: np.ndarray, d: np.ndarray, iters: int = 12) -> np.ndarray:
    """One real root of ``x^3 + b x^2 + c x + d`` per entry (the leftmost or rightmost one, where the cubic is
    steep): Lambda Twist's start from the stationary points, then Newton steps."""
    disc = b * b - 3.0 * c
    v = np.sqrt(np.maximum(disc, 0.0))
    t1, t2 = (-b - v) / 3.0, (-b + v) / 3.0
    k1 = ((t1 + b) * t1 + c) * t1 + d
    k2 = ((t2 + b) * t2 + c) * t2 + d
    with np.errstate(invalid="ignore", divide="ignore"):
        left = t1 - np.sqrt(np.maximum(-k1 / (3.0 * t1 + b), 0.0))
        right = t2 + np.sqrt(np.maximum(-k2 / (3.0 * t2 + b), 0.0))
    r = np.where(disc >= 0, np.where(k1 > 0, left, right), -b / 3.0)
    r = np.where(np.isfinite(r), r, -b / 3.0)
    for _ in range(iters):
        fp = (3.0 * r + 2.0 * b) * r + c
        r = r - (((r + b) * r + c) * r + d) / np.where(np.abs(fp) > 1e-300, fp, 1e-300)
    return r


def p3p(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimal absolute pose from 3 points, batched (Lambda Twist, Persson & Nordberg, ECCV 2018).

    y (B, 3, 3) unit bearings (rows = points), x (B, 3, 3) world points. The depths ``l`` of the three points
    satisfy ``|l_i y_i - l_j y_j|^2 = |x_i - x_j|^2``; one root of a cubic makes a pencil of the two quadrics
    degenerate, its eigen-split gives ``l1 = w0 l2 + w1 l3`` and a quadratic in ``l3 / l2``; the rotation maps
    the world triangle frame onto the camera triangle frame. Returns R (B, 4, 3, 3), t (B, 4, 3) world -> camera
    and ok (B, 4) (real solutions with positive depths; degenerate sets give none)."""
    y1, y2, y3 = y[:, 0], y[:, 1], y[:, 2]
    x1 = x[:, 0]
    b12, b13, b23 = (-2.0 * (y1 * y2).sum(-1), -2.0 * (y1 * y3).sum(-1), -2.0 * (y2 * y3).sum(-1))
    d12, d13, d23 = x1 - x[:, 1], x1 - x[:, 2], x[:, 1] - x[:, 2]
    a12, a13, a23 = (d12 * d12).sum(-1), (d13 * d13).sum(-1), (d23 * d23).sum(-1)
    c31, c23, c12 = -0.5 * b13, -0.5 * b23, -0.5 * b12
    blob = c12 * c23 * c31 - 1.0
    s31, s23, s12 = 1.0 - c31 * c31, 1.0 - c23 * c23, 1.0 - c12 * c12
    p3 = a13 * (a23 * s31 - a13 * s23)
    p2 = 2.0 * blob * a23 * a13 + a13 * (2.0 * a12 + a13) * s23 + a23 * (a23 - a12) * s31
    p1 = a23 * (a13 - a23) * s12 - a12 * a12 * s23 - 2.0 * a12 * (blob * a23 + a13 * s23)
    p0 = a12 * (a12 * s23 - a23 * s12)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ip3 = 1.0 / p3
        g = _cubic_root(p2 * ip3, p1 * ip3, p0 * ip3)
    a = np.empty(y.shape[:1] + (3, 3))
    a[:, 0, 0] = a23 * (1.0 - g)
    a[:, 0, 1] = a[:, 1, 0] = 0.5 * a23 * b12
    a[:, 0, 2] = a[:, 2, 0] = -0.5 * a23 * b13 * g
    a[:, 1, 1] = a23 - a12 + a13 * g
    a[:, 1, 2] = a[:, 2, 1] = 0.5 * b23 * (a13 * g - a12)
    a[:, 2, 2] = g * (a13 - a23) - a12
    good = np.isfinite(a).all((1, 2))
    lam, vec = np.linalg.eigh(np.where(good[:, None, None], a, 0.0))
    order = np.argsort(-np.abs(lam), -1)  # |L0| >= |L1| >= |L2| (= 0)
    lam = np.take_along_axis(lam, order, -1)
    vec = np.take_along_axis(vec, order[:, None, :], -1)
    ls, oks = [], []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = np.sqrt(np.maximum(-lam[:, 1] / lam[:, 0], 0.0))
        for s in (v, -v):
            w2 = 1.0 / (s * vec[:, 0, 1] - vec[:, 0, 0])
            w0 = (vec[:, 1, 0] - s * vec[:, 1, 1]) * w2
            w1 = (vec[:, 2, 0] - s * vec[:, 2, 1]) * w2
            ia = 1.0 / ((a13 - a12) * w1 * w1 - a12 * b13 * w1 - a12)
            bq = (a13 * b12 * w1 - a12 * b13 * w0 - 2.0 * w0 * w1 * (a12 - a13)) * ia
            cq = ((a13 - a12) * w0 * w0 + a13 * b12 * w0 + a13) * ia
            dq = bq * bq - 4.0 * cq
            sq = np.sqrt(np.maximum(dq, 0.0))
            for tau in ((-bq + sq) / 2.0, (-bq - sq) / 2.0):
                dd = a23 / (tau * (b23 + tau) + 1.0)
                l2 = np.sqrt(np.maximum(dd, 0.0))
                l3 = tau * l2
                l1 = w0 * l2 + w1 * l3
                ls.append(np.stack([l1, l2, l3], -1))
                oks.append(good & (dq >= 0) & (tau > 0) & (dd > 0) & (l1 >= 0))
    depth = np.stack(ls, 1)  # (B, 4, 3)
    ok = np.stack(oks, 1) & np.isfinite(depth).all(-1)
    depth = np.where(ok[..., None], depth, 1.0)
    n = np.cross(d12, d13)
    det = (n * n).sum(-1)  # det [d12, d13, d12 x d13]
    inv_rows = np.stack([np.cross(d13, n), np.cross(n, d12), n], 1) / np.where(det > 1e-300, det, 1.0)[:, None, None]
    ry = depth[..., None] * y[:, None]  # (B, 4, 3 points, 3)
    e1, e2 = ry[:, :, 0] - ry[:, :, 1], ry[:, :, 0] - ry[:, :, 2]
    ym = np.stack([e1, e2, np.cross(e1, e2)], -1)  # columns
    r = ym @ inv_rows[:, None]
    t = ry[:, :, 0] - (r @ x1[:, None, :, None])[..., 0]
    ok &= (det > 1e-300)[:, None] & np.isfinite(r).all((-1, -2)) & np.isfinite(t).all(-1)
    return np.where(ok[..., None, None], r, np.eye(3)), np.where(ok[..., None], t, 0.0), ok


# -- robust poses -----------------------------------------------------------------------------------------------
def pose_medians(K: np.ndarray, r: np.ndarray, t: np.ndarray, X: np.ndarray, uv: np.ndarray,
                 valid: np.ndarray | None = None) -> np.ndarray:
    """Median pixel reprojection error of candidate poses per frame: K (3, 3) or (T, 3, 3), r (T, C, 3, 3),
    t (T, C, 3), X (T, N, 3), uv (T, N, 2) or (N, 2), valid (T, N) -> (T, C) (upper median over the valid pairs,
    see :func:`masked_median`; points behind the camera count as inf)."""
    X = np.asarray(X, np.float64)
    tt, n, _ = X.shape
    Xt = np.ascontiguousarray(X.transpose(0, 2, 1))
    uvt = np.ascontiguousarray(np.broadcast_to(np.asarray(uv, np.float64), (tt, n, 2)).transpose(0, 2, 1))
    mask = np.ones((tt, n), bool) if valid is None else np.asarray(valid, bool)
    kp = _kparams(K, tt)
    out = np.empty(r.shape[:2])
    for j in range(r.shape[1]):
        ok, _, _, _, ru, rv = _project(kp, np.asarray(r[:, j], np.float64), np.asarray(t[:, j], np.float64), Xt, uvt)
        out[:, j] = masked_median(_pixel_error(ok, ru, rv), mask)
    return out


@dataclasses.dataclass
class PoseResult:
    """One frame's pose (:func:`robust_pose`)."""
    R: np.ndarray          # (3, 3) world -> camera
    t: np.ndarray          # (3,)
    inliers: np.ndarray    # (N,) bool over the input pairs
    threshold: float       # inlier threshold in pixels
    median_error: float    # median reprojection error of the final pose (pixels, all pairs)
    source: str = ""       # which hypothesis won ('init', 'p3p' or 'dlt')


@dataclasses.dataclass
class PoseBatch:
    """The poses of T frames (:func:`robust_pose_batch`); ``frame(i)`` is frame i's :class:`PoseResult`."""
    R: np.ndarray             # (T, 3, 3) world -> camera
    t: np.ndarray             # (T, 3)
    inliers: np.ndarray       # (T, N) bool over the input pairs (False where not valid)
    threshold: np.ndarray     # (T,) inlier threshold in pixels
    median_error: np.ndarray  # (T,) median reprojection error of the final pose (pixels, valid pairs)
    source: list              # (T,) which hypothesis won per frame ('init', 'p3p' or 'dlt')
    refit: np.ndarray         # (T,) bool: the calibrated-DLT refit on the winner's inliers replaced it
    irls_steps: np.ndarray    # (T,) robust Gauss-Newton steps taken on the subset
    gn_steps: np.ndarray      # (T,) robust Gauss-Newton steps taken on all pairs

    def frame(self, i: int) -> PoseResult:
        return PoseResult(self.R[i], self.t[i], self.inliers[i], float(self.threshold[i]),
                          float(self.median_error[i]), self.source[i])


def _single(K, r, t, X, uv):
    X, uv = np.asarray(X, np.float64), np.asarray(uv, np.float64)
    return (_kparams(K, 1), np.asarray(r, np.float64)[None], np.asarray(t, np.float64)[None], X.T[None],
            uv.T[None], np.ones((1, len(X)), bool))


def irls_pose(K: np.ndarray, r: np.ndarray, t: np.ndarray, X: np.ndarray, uv: np.ndarray, iters: int = 8,
              min_scale: float = 1e-6, tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Robust Gauss-Newton of one pose (IRLS with :func:`tukey_weights` re-estimated each step): K (3, 3),
    r (3, 3), t (3,), X (N, 3), uv (N, 2) -> (R, t). ``tol > 0`` stops early (see :func:`_refine`)."""
    kp, r, t, Xt, uvt, mask = _single(K, r, t, X, uv)
    r, t, _ = _refine(kp, r, t, Xt, uvt, mask, iters, tol, robust=True, min_scale=min_scale)
    return r[0], t[0]


def gauss_newton_pose(K, r, t, X, uv, steps: int = 3):
    """Plain Gauss-Newton steps on the pixel reprojection error (left update ``R <- exp(w) R``,
    ``t <- exp(w) t + dt``); shapes as :func:`irls_pose`."""
    kp, r, t, Xt, uvt, mask = _single(K, r, t, X, uv)
    r, t, _ = _refine(kp, r, t, Xt, uvt, mask, steps, 0.0, robust=False)
    return r[0], t[0]


def _score_poses(Kb: np.ndarray, r: np.ndarray, t: np.ndarray, ok: np.ndarray, Xt: np.ndarray, uvt: np.ndarray,
                 mask: np.ndarray, method: str, threshold: float) -> np.ndarray:
    """Score (T, C), lower is better, of candidate poses r (T, C, 3, 3), t (T, C, 3) (``ok`` (T, C) False: +inf)
    on the pairs ``Xt`` (T, 3, S), ``uvt`` (T, 2, S), ``mask`` (T, S): LMedS = median squared pixel error,
    RANSAC = minus the number of pairs within ``threshold`` px. One (T, C, 3, S) projection pass."""
    tt, nc = r.shape[:2]
    ns = Xt.shape[-1]
    cp = Kb[:, None] @ np.concatenate([r, t[..., None]], -1)  # (T, C, 3, 4)
    xs = np.concatenate([Xt, np.ones((tt, 1, ns))], 1)
    pr = (cp.reshape(tt, nc * 3, 4) @ xs).reshape(tt, nc, 3, ns)
    z = pr[:, :, 2]
    front = z > 1e-12
    iz = 1.0 / np.where(front, z, 1.0)
    du = pr[:, :, 0] * iz - uvt[:, None, 0]
    dv = pr[:, :, 1] * iz - uvt[:, None, 1]
    e2 = np.where(front, du * du + dv * dv, np.inf)
    m = np.broadcast_to(mask[:, None], e2.shape)
    if method == "lmeds":
        score = masked_median(e2, m)
    else:
        score = -((e2 < threshold * threshold) & m).sum(-1).astype(np.float64)
    return np.where(ok, score, np.inf)


@dataclasses.dataclass
class _Pairs:
    """The valid 3D-2D pairs of T frames in the transposed layout, each frame's pairs in its own random order and
    padded to a common ``n`` by repeating the frame's first pair (``mask`` is False on the padding)."""
    Xt: np.ndarray      # (T, 3, n) world points
    uvt: np.ndarray     # (T, 2, n) pixels
    bn: np.ndarray      # (T, 3, n) unit bearings K^-1 [u, v, 1] / |.|
    mask: np.ndarray    # (T, n) bool
    order: np.ndarray   # (T, n) index of each pair among the input's N
    counts: np.ndarray  # (T,) valid pairs per frame
    kp: tuple           # (fx, fy, skew, cx, cy), each (T, 1) (:func:`_kparams`)
    Kb: np.ndarray      # (T, 3, 3)

    def head(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Xt, uvt, mask) of the first ``n`` pairs of every frame: a random subset of its valid pairs."""
        return self.Xt[:, :, :n], self.uvt[:, :, :n], self.mask[:, :n]


def _draw_pairs(K: np.ndarray, X: np.ndarray, uv: np.ndarray, valid: np.ndarray, seeds: np.ndarray, k: int,
                nh: int) -> tuple[_Pairs, np.ndarray]:
    """Per-frame random draws, then the stacked pairs: frame i's generator (seed ``seeds[i]``) gives a random order
    of its valid pairs and ``nh`` index sets of ``k`` pairs (distinct within a set when the frame has fewer than
    ``4 k`` pairs). X (T, N, 3), uv (N, 2) or (T, N, 2), valid (T, N) -> (pairs, hyp (T, nh, k) indices into each
    frame's order)."""
    tt, n_in, _ = X.shape
    counts = valid.sum(1)
    nmax = int(counts.max())
    order = np.empty((tt, nmax), np.int64)
    hyp = np.zeros((tt, nh, k), np.int64)
    for i in range(tt):  # per-frame random draws (cheap); everything after is batched
        rng = np.random.default_rng(int(seeds[i]))
        vi = np.flatnonzero(valid[i])
        n = len(vi)
        order[i, :n] = vi[rng.permutation(n)]
        order[i, n:] = order[i, 0]
        if nh:
            hyp[i] = np.argsort(rng.random((nh, n)), axis=1)[:, :k] if n < 4 * k else rng.integers(0, n, (nh, k))
    flat_idx = order + np.arange(tt)[:, None] * n_in
    Xt = gather_columns(X.reshape(-1, 3).T, flat_idx)  # (T, 3, nmax)
    if uv.ndim == 2:
        uvt = gather_columns(uv.T, order)
    else:
        uvt = gather_columns(np.broadcast_to(uv, (tt, n_in, 2)).reshape(-1, 2).T, flat_idx)
    Kb = np.broadcast_to(np.asarray(K, np.float64), (tt, 3, 3))
    kinv = np.linalg.inv(Kb)
    bear = kinv[:, :, :2] @ uvt + kinv[:, :, 2:]
    pairs = _Pairs(Xt=Xt, uvt=uvt, bn=bear / np.linalg.norm(bear, axis=1, keepdims=True),
                   mask=np.arange(nmax)[None] < counts[:, None], order=order, counts=counts, kp=_kparams(K, tt),
                   Kb=Kb)
    return pairs, hyp


def _pose_hypotheses(pairs: _Pairs, hyp: np.ndarray, init: tuple | None,
                     solver: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """Stage 1a: candidate poses per frame, the ``init`` poses (R (T, I, 3, 3), t (T, I, 3)) first, then the
    solutions of the minimal sets ``hyp`` (T, nh, k): P3P (up to 4 each) or one calibrated DLT each. Empty P3P
    slots are dropped (keeping the order; about 1.5 real solutions per set). Returns r (T, C, 3, 3), t (T, C, 3),
    ok (T, C) (False: padding of frames with fewer solutions), cidx (T, C) each candidate's index in ``src``, and
    ``src`` the kind of each undropped slot ('init', 'p3p' or 'dlt')."""
    tt, nh, k = hyp.shape
    rows = np.arange(tt)[:, None]
    cand_r, cand_t, cand_ok, src = [], [], [], []
    if init is not None:
        ri, ti = np.asarray(init[0], np.float64), np.asarray(init[1], np.float64)
        cand_r.append(ri)
        cand_t.append(ti)
        cand_ok.append(np.ones(ri.shape[:2], bool))
        src += ["init"] * ri.shape[1]
    if nh:
        hx = pairs.Xt.transpose(0, 2, 1)[rows[:, :, None], hyp].reshape(-1, k, 3)
        hb = pairs.bn.transpose(0, 2, 1)[rows[:, :, None], hyp].reshape(-1, k, 3)
        if solver == "p3p":
            r_h, t_h, ok_h = p3p(hb, hx)
            per = 4
        else:
            _, r_h, t_h = _minimal_hypotheses(hb, hx)
            ok_h, per = np.isfinite(r_h).all((-1, -2)) & np.isfinite(t_h).all(-1), 1
        cand_r.append(r_h.reshape(tt, nh * per, 3, 3))
        cand_t.append(t_h.reshape(tt, nh * per, 3))
        cand_ok.append(ok_h.reshape(tt, nh * per))
        src += [solver] * (nh * per)
    if not cand_r:
        raise ValueError("no pose hypotheses: pass init or hypotheses > 0")
    cr, ct, cok = np.concatenate(cand_r, 1), np.concatenate(cand_t, 1), np.concatenate(cand_ok, 1)
    cidx = np.broadcast_to(np.arange(cr.shape[1]), cr.shape[:2])
    if not cok.all():
        cidx = np.argsort(~cok, axis=1, kind="stable")[:, :max(int(cok.sum(1).max()), 1)]
        cr, ct, cok = cr[rows, cidx], ct[rows, cidx], cok[rows, cidx]
    return cr, ct, cok, cidx, src


def _select_hypothesis(pairs: _Pairs, cr: np.ndarray, ct: np.ndarray, cok: np.ndarray, cidx: np.ndarray, *,
                       method: str, threshold: float, prescore_points: int, prescore_keep: int,
                       score_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1b, preemptive scoring (:func:`_score_poses`): all candidates on the first ``prescore_points`` pairs
    of each frame, the best ``prescore_keep`` again on the first ``score_points``; the best per frame wins.
    Returns the winners' r (T, 3, 3), t (T, 3) and their ``cidx`` (T,)."""
    rows = np.arange(cr.shape[0])[:, None]
    nmax = pairs.Xt.shape[-1]
    n1 = min(prescore_points, nmax)
    if cr.shape[1] > prescore_keep > 0 and n1 < min(score_points, nmax):
        s1 = _score_poses(pairs.Kb, cr, ct, cok, *pairs.head(n1), method, threshold)
        keep = np.sort(np.argpartition(s1, prescore_keep - 1, 1)[:, :prescore_keep], 1)
        cr, ct, cok, cidx = cr[rows, keep], ct[rows, keep], cok[rows, keep], cidx[rows, keep]
    s2 = _score_poses(pairs.Kb, cr, ct, cok, *pairs.head(min(score_points, nmax)), method, threshold)
    best = np.argmin(s2, 1)
    return cr[rows[:, 0], best], ct[rows[:, 0], best], cidx[rows[:, 0], best]


def _inlier_threshold(e: np.ndarray, mask: np.ndarray, threshold: float | None,
                      min_threshold: float) -> np.ndarray:
    """Inlier threshold (T,) in pixels from the errors ``e`` (T, S) over ``mask`` (T, S): ``threshold`` when given,
    else ``2.5 x 1.4826 x`` :func:`robust_level` of the finite errors (inf for a frame without any), at least
    ``min_threshold``."""
    if threshold is not None:
        return np.full(e.shape[0], float(threshold))
    fin = mask & np.isfinite(e)
    return np.maximum(np.where(fin.any(1), 2.5 * 1.4826 * robust_level(e, fin), np.inf), min_threshold)


def _refit_inliers(pairs: _Pairs, r: np.ndarray, t: np.ndarray, ni: int, threshold: float | None,
                   min_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 2: the inliers of pose (r (T, 3, 3), t (T, 3)) among the first ``ni`` pairs (:func:`_inlier_threshold`)
    get a calibrated-DLT refit, kept where its squared error over those inliers is not larger (the linear DLT is
    ill-conditioned when most points lie on one plane, e.g. a floor). Frames with < 6 inliers keep their pose.
    Returns (r, t, refit (T,) bool: the refit replaced the pose); r and t are updated in place."""
    tt = r.shape[0]
    Xs, uvs, ms = pairs.head(ni)
    ok, _, _, _, ru, rv = _project(pairs.kp, r, t, Xs, uvs)
    e = _pixel_error(ok, ru, rv)
    inl = ms & (e < _inlier_threshold(e, ms, threshold, min_threshold)[:, None])
    f = np.flatnonzero(inl.sum(1) >= 6)
    refit = np.zeros(tt, bool)
    if len(f):
        inl_f = inl[f]
        r2, t2 = _calibrated_dlt_batch(pairs.bn[f, :, :ni], Xs[f], inl_f.astype(np.float64))
        ok2, _, _, _, ru2, rv2 = _project(_take(pairs.kp, f), r2, t2, Xs[f], uvs[f])
        sse_dlt = np.where(inl_f, np.where(ok2, ru2 * ru2 + rv2 * rv2, np.inf), 0.0).sum(1)
        sse_now = np.where(inl_f, ru[f] * ru[f] + rv[f] * rv[f], 0.0).sum(1)  # inliers are in front
        refit[f] = sse_dlt <= sse_now
        r[f] = np.where(refit[f, None, None], r2, r[f])
        t[f] = np.where(refit[f, None], t2, t[f])
    return r, t, refit


def _robust_gauss_newton(pairs: _Pairs, r: np.ndarray, t: np.ndarray, ni: int, *, irls_iters: int,
                         irls_tol: float, gn_steps: int,
                         gn_tol: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stages 3 and 4: robust (Tukey IRLS) Gauss-Newton (:func:`_refine`) on the first ``ni`` pairs, at most
    ``irls_iters`` steps (stopping after a step below ``irls_tol``), then at most ``gn_steps`` steps on ALL valid
    pairs (stopping below ``gn_tol``; their robust scale from the first ``ni`` pairs; none for frames whose subset
    is already all their pairs): from the subset optimum they converge in one or two steps. Returns (r, t, IRLS
    steps (T,), full-resolution steps (T,))."""
    tt = r.shape[0]
    r, t, irls_steps = _refine(pairs.kp, r, t, *pairs.head(ni), irls_iters, irls_tol, robust=True)
    gn_taken = np.zeros(tt, np.int64)
    f = np.flatnonzero(pairs.counts > ni)  # frames whose subset is not already all their pairs
    if len(f) and gn_steps > 0:
        whole = len(f) == tt
        pick = (lambda a: a) if whole else (lambda a: a[f])
        r4, t4, g4 = _refine(pairs.kp if whole else _take(pairs.kp, f), r[f], t[f], pick(pairs.Xt),
                             pick(pairs.uvt), pick(pairs.mask), gn_steps, gn_tol, robust=True, level_cols=ni)
        r[f], t[f], gn_taken[f] = r4, t4, g4
    return r, t, irls_steps, gn_taken


def robust_pose_batch(K: np.ndarray, X: np.ndarray, uv: np.ndarray, valid: np.ndarray | None = None, *,
                      init: tuple | None = None, method: str = "lmeds", solver: str = "p3p", hypotheses: int = 64,
                      subset: int = 8, threshold: float | None = None, prescore_points: int = 64,
                      prescore_keep: int = 8, score_points: int = 500, irls_points: int = 1000,
                      irls_iters: int = 8, irls_tol: float = 1e-4, gn_steps: int = 3, gn_tol: float = 5e-4,
                      min_threshold: float = 1e-3, seeds=0) -> PoseBatch:
    """Poses of T frames from dense 3D-2D pairs, all frames in one vectorised pass.

    K (3, 3) or (T, 3, 3); X (T, N, 3) world points; uv (T, N, 2) or (N, 2) pixels; valid (T, N) bool (>= 6 per
    frame); init: optional (R (T, I, 3, 3), t (T, I, 3)) extra hypotheses per frame; seeds: an int (frame i uses
    ``seeds + i``) or T ints. Frame i draws, from its own generator, a random order of its valid pairs and the
    index sets of its hypotheses, so each frame's result equals a one-frame call with its seed (frames are
    padded to a common N; padding is masked out everywhere).

    1. hypotheses (:func:`_pose_hypotheses`): the ``init`` poses and, from ``hypotheses`` random minimal sets, P3P
       solutions (``solver='p3p'``: 3 pairs, up to 4 poses each, :func:`p3p`) or calibrated-DLT solutions of
       ``subset`` pairs (``'dlt'``; poor on noisy, plane-dominated maps). Preemptive scoring
       (:func:`_select_hypothesis`): all on the first ``prescore_points`` pairs of each frame's random order, the
       best ``prescore_keep`` again on the first ``score_points``, by LMedS (median reprojection error) or RANSAC
       (inlier count at ``threshold`` px);
    2. the winner's inliers among the first ``irls_points`` pairs (error below ``2.5 x 1.4826 x``
       :func:`robust_level`, or ``threshold``; at least ``min_threshold``) get a calibrated-DLT refit, kept where
       its squared error over those inliers is not larger (:func:`_refit_inliers`);
    3. robust Gauss-Newton (Tukey IRLS, :func:`tukey_weights`) on the same ``irls_points`` pairs, at most
       ``irls_iters`` steps, each frame stopping after a step below ``irls_tol`` (rad; translation relative to
       the centroid depth);
    4. at most ``gn_steps`` robust Gauss-Newton steps on ALL valid pairs (stopping after a step below ``gn_tol``;
       none when the subset is already all pairs): from the subset optimum they converge in one or two steps
       (3 and 4: :func:`_robust_gauss_newton`).
    The final threshold and inliers use the robust level of the first ``irls_points`` pairs' errors; the median
    error is over all valid pairs."""
    if method not in ("lmeds", "ransac"):
        raise ValueError(f"unknown robust method {method!r}")
    if solver not in ("p3p", "dlt"):
        raise ValueError(f"unknown minimal solver {solver!r}")
    X = np.asarray(X, np.float64)
    tt, n_in, _ = X.shape
    if tt == 0:
        raise ValueError("no frames")
    uv = np.asarray(uv, np.float64)
    valid = np.ones((tt, n_in), bool) if valid is None else np.asarray(valid, bool)
    counts = valid.sum(1)
    if counts.min() < 6:
        raise ValueError("need at least 6 3D-2D pairs for a pose")
    seeds = np.asarray(seeds, np.int64)
    seeds = seeds + np.arange(tt) if seeds.ndim == 0 else seeds
    k = 3 if solver == "p3p" else max(6, min(subset, int(counts.min())))
    pairs, hyp = _draw_pairs(K, X, uv, valid, seeds, k, max(hypotheses, 0))

    # 1. hypotheses, preemptive scoring
    cr, ct, cok, cidx, src = _pose_hypotheses(pairs, hyp, init, solver)
    r, t, won = _select_hypothesis(pairs, cr, ct, cok, cidx, method=method,
                                   threshold=1.0 if threshold is None else float(threshold),
                                   prescore_points=prescore_points, prescore_keep=prescore_keep,
                                   score_points=score_points)
    # 2. a calibrated-DLT refit on the winner's inliers among the first ni pairs
    ni = min(irls_points, pairs.Xt.shape[-1])
    r, t, refit = _refit_inliers(pairs, r, t, ni, threshold, min_threshold)
    # 3. + 4. robust Gauss-Newton on those pairs, then on all pairs
    r, t, irls_steps, gn_taken = _robust_gauss_newton(pairs, r, t, ni, irls_iters=irls_iters, irls_tol=irls_tol,
                                                      gn_steps=gn_steps, gn_tol=gn_tol)

    ok, _, _, _, ru, rv = _project(pairs.kp, r, t, pairs.Xt, pairs.uvt)
    e = _pixel_error(ok, ru, rv)
    thr = _inlier_threshold(e[:, :ni], pairs.mask[:, :ni], threshold, min_threshold)
    inl = pairs.mask & (e < thr[:, None])
    med = np.array([np.median(e[i, :counts[i]]) for i in range(tt)])
    inl = np.where(pairs.mask, inl, inl[:, :1])  # padding repeats each frame's first pair: same value
    inliers = np.zeros((tt, n_in), bool)
    inliers[np.arange(tt)[:, None], pairs.order] = inl
    return PoseBatch(R=r, t=t, inliers=inliers, threshold=thr, median_error=med, source=[src[b] for b in won],
                     refit=refit, irls_steps=irls_steps, gn_steps=gn_taken)


def robust_pose(K: np.ndarray, X: np.ndarray, uv: np.ndarray, *, init: list | None = None, method: str = "lmeds",
                seed: int = 0, **kw) -> PoseResult:
    """Pose of one frame from dense 3D-2D pairs: K (3, 3), X (N, 3), uv (N, 2), ``init`` a list of (R, t) extra
    hypotheses (e.g. the previous frame's: video motion is small). :func:`robust_pose_batch` with T = 1 and
    ``seeds=[seed]``; the keyword arguments (hypotheses, solver, threshold, score_points, gn_steps, ...) are
    passed on (see there)."""
    X = np.asarray(X, np.float64)
    if len(X) < 6:
        raise ValueError("need at least 6 3D-2D pairs for a pose")
    ini = None
    if init:
        ini = (np.stack([np.asarray(r0, np.float64) for r0, _ in init])[None],
               np.stack([np.asarray(t0, np.float64) for _, t0 in init])[None])
    res = robust_pose_batch(K, X[None], np.asarray(uv, np.float64)[None], init=ini, method=method, seeds=[seed],
                            **kw)
    return res.frame(0)
