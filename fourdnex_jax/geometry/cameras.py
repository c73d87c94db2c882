"""Closed-form camera geometry from dense 3D-2D pairs (NumPy, float64, no GPU).

Conventions are those of :mod:`fourdnex_jax.data.geometry`: OpenCV cameras, pixel centres at integer
coordinates, ``w2c`` maps world points into the camera (``x_cam = R X + t``), ``c2w`` is its inverse.

Building blocks:
  * :func:`dlt_projection` -- normalised (Hartley) DLT for a full 3x4 projection ``P`` (11 DoF);
    :func:`decompose_projection` -- RQ split ``P = K [R | t]`` with ``diag(K) > 0`` and ``det R = +1``.
    This is what recovers K and the (unknown) offset of a per-frame-centred 4DNeX frame 0.
  * :func:`fit_intrinsics_camera_frame` -- a camera-frame pointmap (no shift) gives ``u = fx X/Z + cx`` and
    ``v = fy Y/Z + cy``: two robust 1-D line fits (LMedS, then least squares on the inliers).
  * :func:`calibrated_dlt` -- with K known, ``cross(K^-1 p, R X + t) = 0`` is linear in the 12 entries of
    ``[R | t]``; SVD null vector, projection onto SO(3), then a linear re-solve of ``t`` given ``R``.
    :func:`robust_pose` draws minimal 6-point hypotheses (all solved in one batched SVD), scores them by LMedS or
    RANSAC on the reprojection error, refits on the inliers and optionally runs Gauss-Newton steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np


# -- small linear algebra ---------------------------------------------------------------------------------------
def project_to_so3(m: np.ndarray) -> np.ndarray:
    """Nearest rotation(s) (Frobenius) to (..., 3, 3) matrices with positive determinant."""
    u, _, vt = np.linalg.svd(m)
    d = np.sign(np.linalg.det(u @ vt))
    u = u.copy()
    u[..., :, 2] *= d[..., None]
    return u @ vt


def rq3(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RQ decomposition of a 3x3 matrix: ``m = K @ R`` with K upper triangular (positive diagonal), R orthogonal."""
    q, r = np.linalg.qr(np.flipud(m).T)
    k = np.flipud(r.T)[:, ::-1]
    rot = q.T[::-1, :]
    sg = np.sign(np.diag(k))
    sg[sg == 0] = 1.0
    s = np.diag(sg)
    return k @ s, s @ rot


def rotation_angle_deg(r: np.ndarray) -> np.ndarray:
    """Angle(s) in degrees of rotation matrices (..., 3, 3)."""
    c = (np.trace(r, axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def invert_pose(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(R, t) of w2c -> 4x4 c2w."""
    out = np.eye(4)
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t
    return out


def _normalise_points(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    m = x.mean(0)
    s = np.sqrt(((x - m) ** 2).sum(-1).mean())
    s = s if s > 1e-12 else 1.0
    return (x - m) / s, m, s


# -- projection ---------------------------------------------------------------------------------------------------
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


# -- full DLT + RQ -------------------------------------------------------------------------------------------------
def dlt_projection(X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Normalised DLT: 3x4 ``P`` with ``uv ~ P [X; 1]`` (least squares over >= 6 points)."""
    xn, xm, xs = _normalise_points(np.asarray(X, np.float64))
    un, um, us = _normalise_points(np.asarray(uv, np.float64))
    n = len(xn)
    xh = np.concatenate([xn, np.ones((n, 1))], 1)
    a = np.zeros((2 * n, 12))
    a[0::2, 0:4] = xh
    a[0::2, 8:12] = -un[:, :1] * xh
    a[1::2, 4:8] = xh
    a[1::2, 8:12] = -un[:, 1:] * xh
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    pn = vt[-1].reshape(3, 4)
    tx = np.array([[1 / xs, 0, 0, -xm[0] / xs], [0, 1 / xs, 0, -xm[1] / xs], [0, 0, 1 / xs, -xm[2] / xs],
                   [0, 0, 0, 1]])
    tu_inv = np.array([[us, 0, um[0]], [0, us, um[1]], [0, 0, 1]])
    return tu_inv @ pn @ tx


def decompose_projection(P: np.ndarray, X: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``P = lambda K [R | t]`` -> (K with K[2,2] = 1, R, t). The sign of P is fixed so that ``det R = +1``
    (cheirality follows, and is checked on ``X`` when given)."""
    P = np.asarray(P, np.float64)
    if np.linalg.det(P[:, :3]) < 0:
        P = -P
    k, r = rq3(P[:, :3])
    scale = k[2, 2]
    t = np.linalg.solve(k, P[:, 3])
    k = k / scale
    if X is not None and np.median(X @ r[2] + t[2]) < 0:  # pragma: no cover - degenerate input
        raise ValueError("DLT solution places the points behind the camera")
    return k, r, t


# -- intrinsics from a camera-frame map ----------------------------------------------------------------------------
def _robust_line(a: np.ndarray, b: np.ndarray, fixed_c: float | None, rng: np.random.Generator, iters: int = 200,
                 min_thresh: float = 1e-6) -> tuple[float, float, np.ndarray]:
    """Robust fit of ``b = f a + c`` (LMedS over 2-point hypotheses, least squares on inliers)."""
    n = len(a)
    if fixed_c is not None:
        i = rng.integers(0, n, iters)
        ok = np.abs(a[i]) > 1e-9
        fs = (b[i][ok] - fixed_c) / a[i][ok]
        cs = np.full_like(fs, fixed_c)
    else:
        i, j = rng.integers(0, n, iters), rng.integers(0, n, iters)
        da = a[i] - a[j]
        ok = np.abs(da) > 1e-6
        fs = (b[i][ok] - b[j][ok]) / da[ok]
        cs = b[i][ok] - fs * a[i][ok]
    sub = rng.choice(n, min(n, 2000), replace=False)
    res = np.abs(b[sub][None] - fs[:, None] * a[sub][None] - cs[:, None])
    best = int(np.argmin(np.median(res, 1)))
    f, c = fs[best], cs[best]
    for _ in range(2):
        r = np.abs(b - f * a - c)
        sigma = 1.4826 * np.median(r)
        inl = r <= max(3.0 * sigma, min_thresh)
        if fixed_c is not None:
            f = float((a[inl] * (b[inl] - fixed_c)).sum() / max((a[inl] ** 2).sum(), 1e-12))
        else:
            m = np.stack([a[inl], np.ones(inl.sum())], 1)
            (f, c), *_ = np.linalg.lstsq(m, b[inl], rcond=None)
    return float(f), float(c), inl


def fit_intrinsics_camera_frame(X: np.ndarray, uv: np.ndarray, principal_point: tuple | None = None,
                                square_pixels: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """K from a camera-frame pointmap (points (N, 3) seen at pixels (N, 2)): ``u = fx X/Z + cx``, ``v = fy Y/Z +
    cy``. ``principal_point=None`` fits (cx, cy) too; otherwise they are fixed. With ``square_pixels`` the two
    line fits only nominate inliers and ``f`` is refitted jointly on both axes. Returns (K, inlier mask)."""
    rng = np.random.default_rng(seed)
    z = X[:, 2]
    good = z > 1e-9
    X, uv = X[good], uv[good]
    a, b = X[:, 0] / X[:, 2], X[:, 1] / X[:, 2]
    pp = (None, None) if principal_point is None else principal_point
    fx, cx, inx = _robust_line(a, uv[:, 0], pp[0], rng)
    fy, cy, iny = _robust_line(b, uv[:, 1], pp[1], rng)
    inl = inx & iny
    if square_pixels:
        for _ in range(2):
            n = int(inl.sum())
            if principal_point is None:  # unknowns (f, cx, cy)
                m = np.zeros((2 * n, 3))
                m[:n, 0], m[:n, 1], m[n:, 0], m[n:, 2] = a[inl], 1.0, b[inl], 1.0
                (fx, cx, cy), *_ = np.linalg.lstsq(m, np.concatenate([uv[inl, 0], uv[inl, 1]]), rcond=None)
            else:
                aa, bb = np.concatenate([a[inl], b[inl]]), np.concatenate([uv[inl, 0] - cx, uv[inl, 1] - cy])
                fx = float((aa * bb).sum() / max((aa * aa).sum(), 1e-12))
            fy = fx
            e = np.hypot(fx * a + cx - uv[:, 0], fy * b + cy - uv[:, 1])
            inl = e <= max(2.5 * 1.4826 * np.median(e), 1e-6)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    mask = np.zeros(len(good), bool)
    mask[np.nonzero(good)[0]] = inl
    return K, mask


def _shifted_rows(X, uv, square: bool):
    x, y, z = X[..., 0], X[..., 1], X[..., 2]
    u, v = uv[..., 0], uv[..., 1]
    zero, one = np.zeros_like(x), np.ones_like(x)
    if square:  # theta = (f, cx, k1, cy, k2, c)
        ru = np.stack([x, z, one, zero, zero, -u], -1)
        rv = np.stack([y, zero, zero, z, one, -v], -1)
    else:  # theta = (fx, cx, k1, fy, cy, k2, c)
        ru = np.stack([x, z, one, zero, zero, zero, -u], -1)
        rv = np.stack([zero, zero, zero, y, z, one, -v], -1)
    return np.concatenate([ru, rv], -2), np.concatenate([u * z, v * z], -1)


def _shifted_params(theta):
    if len(theta) == 6:
        f, cx, k1, cy, k2, c = theta
        fx = fy = f
    else:
        fx, cx, k1, fy, cy, k2, c = theta
    return fx, fy, cx, cy, np.array([(k1 - cx * c) / fx, (k2 - cy * c) / fy, c])


def _shifted_error(theta, X, uv):
    fx, fy, cx, cy, off = _shifted_params(theta)
    p = X + off
    z = p[..., 2]
    zs = np.where(z > 1e-12, z, 1e-12)
    e = np.hypot(fx * p[..., 0] / zs + cx - uv[..., 0], fy * p[..., 1] / zs + cy - uv[..., 1])
    return np.where(z > 1e-12, e, np.inf)


def fit_intrinsics_shifted(X: np.ndarray, uv: np.ndarray, hypotheses: int = 128, score_points: int = 1000,
                           min_threshold: float = 1e-3, square_pixels: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K and the offset ``o`` of a camera-ORIENTED but shifted pointmap (4DNeX frame 0: ``X_cam = X + o``):
    ``u = fx (x + a) / (z + c) + cx`` is linear in (fx, cx, fx a + cx c, fy, cy, fy b + cy c, c) after multiplying
    by ``z + c``. LMedS over 4-point sets (batched), then IRLS least squares weighted by ``1 / (z + c)`` (pixel
    error) on the inliers. The rotation-constrained form of the DLT: unlike the full 11-DoF DLT it is not
    degenerate when most points lie on one plane. ``square_pixels`` (fx = fy, default) removes the remaining
    near-degeneracy of the v equation on a floor plane (measured: fy 2.2 instead of 49 at 0.5% depth noise
    without it). Returns (K, o, inliers)."""
    X = np.asarray(X, np.float64)
    uv = np.asarray(uv, np.float64)
    n = len(X)
    rng = np.random.default_rng(seed)
    m = np.abs(X).mean() or 1.0  # conditioning: solve in units of the mean coordinate
    Xs = X / m
    idx = rng.integers(0, n, (hypotheses, 4))
    a, b = _shifted_rows(Xs[idx], uv[idx], square_pixels)  # (M, 8, P), (M, 8)
    ata = np.einsum("mki,mkj->mij", a, a) + 1e-12 * np.eye(a.shape[-1])
    thetas = np.linalg.solve(ata, np.einsum("mki,mk->mi", a, b)[..., None])[..., 0]
    sub = rng.choice(n, min(n, score_points), replace=False)
    with np.errstate(all="ignore"):
        meds = np.array([np.median(_shifted_error(th, Xs[sub], uv[sub])) for th in thetas])
    theta = thetas[int(np.nanargmin(np.where(np.isfinite(meds), meds, np.nan)))]
    for _ in range(4):
        e = _shifted_error(theta, Xs, uv)
        inl = e < max(2.5 * 1.4826 * np.median(e), min_threshold)
        wz = 1.0 / np.maximum(Xs[inl, 2] + theta[-1], 1e-9)
        a, b = _shifted_rows(Xs[inl], uv[inl], square_pixels)
        wz2 = np.concatenate([wz, wz])
        theta, *_ = np.linalg.lstsq(a * wz2[:, None], b * wz2, rcond=None)
    fx, fy, cx, cy, off = _shifted_params(theta)
    e = _shifted_error(theta, Xs, uv)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    return K, off * m, e < max(2.5 * 1.4826 * np.median(e), min_threshold)


# -- calibrated DLT -------------------------------------------------------------------------------------------------
def _cross_rows(b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Rows of ``cross(b, M X + t) = 0`` in the unknown vec([M | t]) (row-major 3x4): (..., 3N, 12)."""
    xh = np.concatenate([X, np.ones(X.shape[:-1] + (1,))], -1)  # (..., N, 4)
    z = np.zeros_like(xh)
    bx, by, bz = b[..., 0:1], b[..., 1:2], b[..., 2:3]
    # cross(b, q) = (by q3 - bz q2, bz q1 - bx q3, bx q2 - by q1), q_i = row_i . xh
    r1 = np.concatenate([z, -bz * xh, by * xh], -1)
    r2 = np.concatenate([bz * xh, z, -bx * xh], -1)
    r3 = np.concatenate([-by * xh, bx * xh, z], -1)
    out = np.stack([r1, r2, r3], -2)  # (..., N, 3, 12)
    return out.reshape(out.shape[:-3] + (-1, 12))


def _solve_t(b: np.ndarray, X: np.ndarray, r: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """Least-squares ``t`` of ``cross(b, R X + t) = 0`` for a fixed R."""
    q = X @ r.T
    bx = np.zeros((len(b), 3, 3))  # [b]_x
    bx[:, 0, 1], bx[:, 0, 2], bx[:, 1, 0] = -b[:, 2], b[:, 1], b[:, 2]
    bx[:, 1, 2], bx[:, 2, 0], bx[:, 2, 1] = -b[:, 0], -b[:, 1], b[:, 0]
    rhs = -np.einsum("nij,nj->ni", bx, q)
    if w is not None:
        bx, rhs = bx * w[:, None, None], rhs * w[:, None]
    t, *_ = np.linalg.lstsq(bx.reshape(-1, 3), rhs.reshape(-1), rcond=None)
    return t


def calibrated_dlt(bearings: np.ndarray, X: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pose (R, t) with ``R X + t`` parallel to ``bearings = K^-1 [u, v, 1]`` (least squares, >= 6 points)."""
    xn, m, s = _normalise_points(X)
    bn = bearings / np.linalg.norm(bearings, axis=-1, keepdims=True)
    a = _cross_rows(bn, xn)
    if w is not None:
        a = a * np.repeat(w, 3)[:, None]
    _, vecs = np.linalg.eigh(a.T @ a)  # normal equations: 12x12 (points are normalised, float64)
    v = vecs[:, 0].reshape(3, 4)
    if np.linalg.det(v[:, :3]) < 0:
        v = -v
    r = project_to_so3(v[:, :3])
    tn = _solve_t(bn, xn, r, w)
    return r, s * tn - r @ m


def _batched_minimal(bearings: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated DLT on a batch of minimal sets: bearings, X (M, 6, 3) -> R (M, 3, 3), t (M, 3)."""
    m = X.mean(1, keepdims=True)
    s = np.sqrt(((X - m) ** 2).sum(-1).mean(-1))[:, None, None]
    s = np.where(s > 1e-12, s, 1.0)
    xn = (X - m) / s
    bn = bearings / np.linalg.norm(bearings, axis=-1, keepdims=True)
    a = _cross_rows(bn, xn)  # (M, 18, 12)
    _, _, vt = np.linalg.svd(a)
    v = vt[:, -1].reshape(-1, 3, 4)
    v = v * np.sign(np.linalg.det(v[:, :, :3]))[:, None, None]
    r = project_to_so3(v[:, :, :3])
    sv = np.linalg.svd(v[:, :, :3], compute_uv=False).mean(-1)
    tn = v[:, :, 3] / np.where(sv > 1e-12, sv, 1.0)[:, None]
    t = s[:, 0] * tn - np.einsum("mij,mj->mi", r, m[:, 0])
    return r, t


@dataclasses.dataclass
class PoseResult:
    R: np.ndarray          # (3, 3) world -> camera
    t: np.ndarray          # (3,)
    inliers: np.ndarray    # (N,) bool over the input pairs
    threshold: float       # inlier threshold in pixels
    median_error: float    # median reprojection error of the final pose (pixels, all pairs)
    source: str = ""       # which hypothesis won ('init' or 'dlt')


def irls_pose(K: np.ndarray, r: np.ndarray, t: np.ndarray, X: np.ndarray, uv: np.ndarray, iters: int = 8,
              min_scale: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Robust Gauss-Newton (Cauchy weights, scale from the MAD of the current residuals)."""
    for _ in range(iters):
        e = reprojection_error(K, r, t, X, uv)
        fin = np.isfinite(e)
        if fin.sum() < 6:
            break
        c = max(2.385 * 1.4826 * float(np.median(e[fin])), min_scale)
        wts = np.where(fin, 1.0 / (1.0 + (e / c) ** 2), 0.0)
        keep = wts > 1e-3
        r, t = _weighted_gn_step(K, r, t, X[keep], uv[keep], wts[keep])
    return r, t


def _weighted_gn_step(K, r, t, X, uv, wts):
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    q = X @ r.T
    p = q + t
    z = p[:, 2]
    ok = z > 1e-12
    if ok.sum() < 6:
        return r, t
    q, p, z, uvo, sw = q[ok], p[ok], z[ok], uv[ok], np.sqrt(wts[ok])
    res = np.concatenate([(fx * p[:, 0] / z + cx - uvo[:, 0]) * sw, (fy * p[:, 1] / z + cy - uvo[:, 1]) * sw])
    ju = np.stack([fx / z, np.zeros_like(z), -fx * p[:, 0] / z ** 2], -1) * sw[:, None]
    jv = np.stack([np.zeros_like(z), fy / z, -fy * p[:, 1] / z ** 2], -1) * sw[:, None]
    qx = np.zeros((len(q), 3, 3))  # dp/dw = -[q]_x
    qx[:, 0, 1], qx[:, 0, 2], qx[:, 1, 0] = q[:, 2], -q[:, 1], -q[:, 2]
    qx[:, 1, 2], qx[:, 2, 0], qx[:, 2, 1] = q[:, 0], q[:, 1], -q[:, 0]
    jw = np.concatenate([np.einsum("ni,nij->nj", ju, qx), np.einsum("ni,nij->nj", jv, qx)])
    j = np.concatenate([jw, np.concatenate([ju, jv])], 1)
    jtj = j.T @ j
    delta = np.linalg.solve(jtj + 1e-12 * np.trace(jtj) * np.eye(6), -(j.T @ res))
    w, dt = delta[:3], delta[3:]
    th = np.linalg.norm(w)
    if th > 1e-15:
        kx = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / th
        dr = np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * kx @ kx
    else:
        dr = np.eye(3)
    return project_to_so3(dr @ r), dr @ t + dt


def gauss_newton_pose(K, r, t, X, uv, steps: int = 3):
    """Plain Gauss-Newton steps on the pixel reprojection error (left perturbation ``R <- exp(w) R``)."""
    for _ in range(steps):
        r, t = _weighted_gn_step(K, r, t, X, uv, np.ones(len(X)))
    return r, t


def robust_pose(K: np.ndarray, X: np.ndarray, uv: np.ndarray, *, init: list | None = None, method: str = "lmeds",
                hypotheses: int = 64, subset: int = 8, threshold: float | None = None, score_points: int = 1000,
                irls_iters: int = 8, gn_steps: int = 3, min_threshold: float = 1e-3, seed: int = 0) -> PoseResult:
    """Pose from dense 3D-2D pairs.

    Hypotheses: the poses in ``init`` (e.g. the previous frame's: video motion is small) and ``hypotheses``
    calibrated-DLT solutions of random ``subset``-point sets (one batched SVD). Scored by LMedS (median
    reprojection error) or RANSAC (inlier count at ``threshold`` pixels) on ``score_points`` pairs. The winner is
    refined by robust IRLS Gauss-Newton (Cauchy), then the inliers (``2.5 x`` robust sigma, or ``threshold``)
    get a calibrated-DLT refit, kept only if it is not worse (the linear DLT is ill-conditioned when most points
    lie on one plane, e.g. a floor), and ``gn_steps`` plain Gauss-Newton steps."""
    X = np.asarray(X, np.float64)
    uv = np.asarray(uv, np.float64)
    n = len(X)
    if n < 6:
        raise ValueError("need at least 6 3D-2D pairs for a pose")
    rng = np.random.default_rng(seed)
    kinv = np.linalg.inv(K)
    bear = np.concatenate([uv, np.ones((n, 1))], 1) @ kinv.T
    cand_r, cand_t, src = [], [], []
    for r0, t0 in (init or []):
        cand_r.append(np.asarray(r0, np.float64)[None])
        cand_t.append(np.asarray(t0, np.float64)[None])
        src.append("init")
    if hypotheses > 0:
        k = max(6, min(subset, n))
        idx = np.argsort(rng.random((hypotheses, n)), axis=1)[:, :k] if n < 4 * k else \
            rng.integers(0, n, (hypotheses, k))
        rs, ts = _batched_minimal(bear[idx], X[idx])
        cand_r.append(rs)
        cand_t.append(ts)
        src += ["dlt"] * hypotheses
    rs, ts = np.concatenate(cand_r), np.concatenate(cand_t)
    sub = rng.choice(n, min(n, score_points), replace=False)
    err = reprojection_error(K, rs, ts, X[sub][None], uv[sub][None])  # (M, S)
    if method == "lmeds":
        best = int(np.argmin(np.median(err, 1)))
    elif method == "ransac":
        best = int(np.argmax((err < (1.0 if threshold is None else threshold)).sum(1)))
    else:
        raise ValueError(f"unknown robust method {method!r}")
    r, t = irls_pose(K, rs[best], ts[best], X, uv, iters=irls_iters)

    def thr_of(e):
        if threshold is not None:
            return threshold
        fin = e[np.isfinite(e)]
        return max(2.5 * 1.4826 * float(np.median(fin)) if len(fin) else np.inf, min_threshold)

    e = reprojection_error(K, r, t, X, uv)
    inl = e < thr_of(e)
    if inl.sum() >= 6:
        r2, t2 = calibrated_dlt(bear[inl], X[inl])
        e2 = reprojection_error(K, r2, t2, X[inl], uv[inl])
        if np.median(e2) <= np.median(e[inl]):
            r, t = r2, t2
        r, t = gauss_newton_pose(K, r, t, X[inl], uv[inl], steps=gn_steps)
    e = reprojection_error(K, r, t, X, uv)
    thr = thr_of(e)
    return PoseResult(R=r, t=t, inliers=e < thr, threshold=float(thr), median_error=float(np.median(e)),
                      source=src[best])


def robust_projection(X: np.ndarray, uv: np.ndarray, *, hypotheses: int = 256, score_points: int = 2000,
                      min_threshold: float = 1e-3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full DLT robustly: LMedS over minimal 6-point DLT hypotheses, refit on the inliers. Returns (P, inliers)."""
    X = np.asarray(X, np.float64)
    uv = np.asarray(uv, np.float64)
    n = len(X)
    rng = np.random.default_rng(seed)
    sub = rng.choice(n, min(n, score_points), replace=False)
    xh = np.concatenate([X, np.ones((n, 1))], 1)

    def errors(P, rows):
        p = xh[rows] @ P.T
        z = np.where(np.abs(p[:, 2]) > 1e-12, p[:, 2], 1e-12)
        return np.hypot(p[:, 0] / z - uv[rows, 0], p[:, 1] / z - uv[rows, 1])

    best, best_med = None, np.inf
    for _ in range(hypotheses):
        pick = rng.choice(n, 6, replace=False)
        try:
            P = dlt_projection(X[pick], uv[pick])
        except np.linalg.LinAlgError:  # pragma: no cover
            continue
        med = np.median(errors(P, sub))
        if med < best_med:
            best, best_med = P, med
    P = best
    allrows = np.arange(n)
    for _ in range(2):
        e = errors(P, allrows)
        inl = e < max(2.5 * 1.4826 * np.median(e), min_threshold)
        P = dlt_projection(X[inl], uv[inl])
    return P, errors(P, allrows) < max(2.5 * 1.4826 * np.median(errors(P, allrows)), min_threshold)
