"""Intrinsics: the K matrix, the full DLT + RQ split, and closed-form K from a frame-0 pointmap (NumPy, float64).

Conventions: :mod:`fourdnex_jax.geometry.se3` (OpenCV cameras, pixel centres at integer coordinates).

  * :func:`dlt_projection` -- normalised (Hartley) DLT for a full 3x4 projection ``P`` (11 DoF);
    :func:`decompose_projection` -- RQ split ``P = K [R | t]`` with ``diag(K) > 0`` and ``det R = +1``.
    This is what recovers K and the (unknown) offset of a per-frame-centred 4DNeX frame 0.
    :func:`robust_projection` -- the same robustly (batched minimal hypotheses).
  * :func:`fit_intrinsics_camera_frame` -- a camera-frame pointmap (no shift) gives ``u = fx X/Z + cx`` and
    ``v = fy Y/Z + cy``: two robust 1-D line fits (LMedS, then least squares on the inliers), then a joint
    square-pixel Tukey IRLS fit.
  * :func:`fit_intrinsics_shifted` -- K and the offset of a camera-oriented but shifted pointmap.
  * :func:`estimate_focal` -- least-squares focal lengths with the principal point at the image centre (DUSt3R).
"""

from __future__ import annotations

import numpy as np

from fourdnex_jax.geometry.robust import HALF_NORMAL_Q30_TO_MEDIAN, ROBUST_QUANTILE, robust_level, tukey_weights
from fourdnex_jax.geometry.se3 import pixel_grid


def intrinsics_matrix(fx, fy, cx, cy) -> np.ndarray:
    """(3, 3) K from scalars (or (T, 3, 3) from (T,) arrays)."""
    fx, fy, cx, cy = (np.asarray(a, np.float64) for a in (fx, fy, cx, cy))
    k = np.zeros(np.broadcast(fx, fy, cx, cy).shape + (3, 3))
    k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2], k[..., 2, 2] = fx, fy, cx, cy, 1.0
    return k


def reference_intrinsics(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """4DNeX ``build_wan_dataset.py`` quirk: keep only fx (used for both axes), principal point (W//2, H//2)."""
    K = np.asarray(K, np.float64)
    fx = K[..., 0, 0]
    return intrinsics_matrix(fx, fx, np.full_like(fx, width // 2), np.full_like(fx, height // 2))


def estimate_focal(points_cam: np.ndarray, valid: np.ndarray | None = None) -> tuple[float, float]:
    """Least-squares (fx, fy) of one camera-frame pointmap (H, W, 3) with the principal point at (W/2, H/2)
    (as DUSt3R assumes): ``u - cx = fx X/Z``, ``v - cy = fy Y/Z``. Used for DUSt3R annotations, which carry no K."""
    p = np.asarray(points_cam, np.float64)
    h, w = p.shape[:2]
    u, v = pixel_grid(h, w)
    ok = np.isfinite(p).all(-1) & (p[..., 2] > 1e-9)
    if valid is not None:
        ok &= valid
    if ok.sum() < 8:
        raise ValueError("too few valid points to estimate a focal length")
    a, b = p[..., 0][ok] / p[..., 2][ok], p[..., 1][ok] / p[..., 2][ok]
    du, dv = u[ok] - w / 2, v[ok] - h / 2
    return float((a * du).sum() / max((a * a).sum(), 1e-12)), float((b * dv).sum() / max((b * b).sum(), 1e-12))


def rq3(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RQ decomposition of a 3x3 matrix: ``m = K @ R`` with K upper triangular (positive diagonal), R orthogonal."""
    q, r = np.linalg.qr(np.flipud(m).T)
    k = np.flipud(r.T)[:, ::-1]
    rot = q.T[::-1, :]
    sg = np.sign(np.diag(k))
    sg[sg == 0] = 1.0
    s = np.diag(sg)
    return k @ s, s @ rot


# -- full DLT + RQ ----------------------------------------------------------------------------------------------
def _dlt_batch(X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Normalised (Hartley) DLT for a batch of point sets: X (M, k, 3), uv (M, k, 2), k >= 6 -> P (M, 3, 4) with
    ``uv ~ P [X; 1]`` (least squares; one batched SVD)."""
    nb, k, _ = X.shape
    xm = X.mean(1, keepdims=True)
    xs = np.sqrt(((X - xm) ** 2).sum(-1).mean(-1))
    xs = np.where(xs > 1e-12, xs, 1.0)
    um = uv.mean(1, keepdims=True)
    us = np.sqrt(((uv - um) ** 2).sum(-1).mean(-1))
    us = np.where(us > 1e-12, us, 1.0)
    xh = np.concatenate([(X - xm) / xs[:, None, None], np.ones((nb, k, 1))], -1)
    un = (uv - um) / us[:, None, None]
    a = np.zeros((nb, 2 * k, 12))
    a[:, 0::2, 0:4] = xh
    a[:, 0::2, 8:12] = -un[..., :1] * xh
    a[:, 1::2, 4:8] = xh
    a[:, 1::2, 8:12] = -un[..., 1:] * xh
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    pn = vt[:, -1].reshape(nb, 3, 4)
    tx = np.zeros((nb, 4, 4))
    tx[:, [0, 1, 2], [0, 1, 2]] = 1 / xs[:, None]
    tx[:, :3, 3] = -xm[:, 0] / xs[:, None]
    tx[:, 3, 3] = 1.0
    tu_inv = np.zeros((nb, 3, 3))
    tu_inv[:, [0, 1], [0, 1]] = us[:, None]
    tu_inv[:, :2, 2] = um[:, 0]
    tu_inv[:, 2, 2] = 1.0
    return tu_inv @ pn @ tx


def dlt_projection(X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Normalised DLT: 3x4 ``P`` with ``uv ~ P [X; 1]`` (least squares over >= 6 points): X (N, 3), uv (N, 2)."""
    return _dlt_batch(np.asarray(X, np.float64)[None], np.asarray(uv, np.float64)[None])[0]


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


def robust_projection(X: np.ndarray, uv: np.ndarray, *, hypotheses: int = 256, score_points: int = 2000,
                      min_threshold: float = 1e-3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Full DLT robustly: X (N, 3), uv (N, 2). Minimal 6-point DLT hypotheses (solved in one batched SVD, scored
    in one pass on ``score_points`` pairs) ranked by the truncated squared error at the threshold of the best
    median (MSAC with an LMedS scale), refit on the inliers. Returns (P (3, 4), inliers (N,))."""
    X = np.asarray(X, np.float64)
    uv = np.asarray(uv, np.float64)
    n = len(X)
    rng = np.random.default_rng(seed)
    sub = rng.choice(n, min(n, score_points), replace=False)
    xh = np.concatenate([X, np.ones((n, 1))], 1)

    def errors(P, rows):  # P (..., 3, 4) -> (..., len(rows))
        p = xh[rows] @ np.swapaxes(P, -1, -2)
        z = np.where(np.abs(p[..., 2]) > 1e-12, p[..., 2], 1e-12)
        return np.hypot(p[..., 0] / z - uv[rows, 0], p[..., 1] / z - uv[rows, 1])

    picks = rng.integers(0, n, (hypotheses, 6))
    for _ in range(100):  # redraw sets with a repeated index
        srt = np.sort(picks, 1)
        rep = (srt[:, 1:] == srt[:, :-1]).any(1)
        if not rep.any() or n < 6:
            break
        picks[rep] = rng.integers(0, n, (int(rep.sum()), 6))
    Ps = _dlt_batch(X[picks], uv[picks])
    with np.errstate(all="ignore"):
        err = errors(Ps, sub)
        meds = np.median(err, axis=1)
        # LMedS ties (a plane-dominated map: a degenerate P fits the plane's points exactly) are broken MSAC-style:
        # truncated squared error at the threshold the best median implies
        cap = max(2.5 * 1.4826 * float(np.nanmin(np.where(np.isfinite(meds), meds, np.nan))), min_threshold)
        score = np.where(np.isfinite(meds), (np.minimum(err, cap) ** 2).sum(1), np.nan)
    P = Ps[int(np.nanargmin(score))]
    allrows = np.arange(n)
    for _ in range(2):
        e = errors(P, allrows)
        inl = e < max(2.5 * 1.4826 * np.median(e), min_threshold)
        P = dlt_projection(X[inl], uv[inl])
    e = errors(P, allrows)
    return P, e < max(2.5 * 1.4826 * np.median(e), min_threshold)


# -- intrinsics from frame 0 ------------------------------------------------------------------------------------
def _robust_line(a: np.ndarray, b: np.ndarray, fixed_c: float | None, rng: np.random.Generator, iters: int = 200,
                 min_thresh: float = 1e-6, score_points: int = 500) -> tuple[float, float, np.ndarray]:
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
    sub = rng.choice(n, min(n, score_points), replace=False)
    res = np.abs(b[sub][None] - fs[:, None] * a[sub][None] - cs[:, None])
    best = int(np.argmin(np.partition(res, len(sub) // 2, 1)[:, len(sub) // 2]))  # LMedS (upper median)
    f, c = fs[best], cs[best]
    for _ in range(2):
        r = np.abs(b - f * a - c)
        sigma = 1.4826 * HALF_NORMAL_Q30_TO_MEDIAN * np.partition(r, int(ROBUST_QUANTILE * n))[int(ROBUST_QUANTILE * n)]
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
    if square_pixels:  # Tukey IRLS of the joint fit, starting from the two line fits' common inliers
        wts = inl.astype(np.float64)
        ones = np.ones(len(a), bool)
        for _ in range(6):
            if principal_point is None:  # unknowns (f, cx, cy): 3x3 weighted normal equations
                sa, sb, sw = (wts * a).sum(), (wts * b).sum(), wts.sum()
                nm = np.array([[(wts * (a * a + b * b)).sum(), sa, sb], [sa, sw, 0.0], [sb, 0.0, sw]])
                rhs = np.array([(wts * (a * uv[:, 0] + b * uv[:, 1])).sum(), (wts * uv[:, 0]).sum(),
                                (wts * uv[:, 1]).sum()])
                fx, cx, cy = np.linalg.solve(nm + 1e-300 * np.eye(3), rhs)
            else:
                fx = float((wts * (a * (uv[:, 0] - cx) + b * (uv[:, 1] - cy))).sum()
                           / max((wts * (a * a + b * b)).sum(), 1e-12))
            fy = fx
            e = np.hypot(fx * a + cx - uv[:, 0], fy * b + cy - uv[:, 1])
            wts = tukey_weights(e, ones)
        inl = e <= max(2.5 * 1.4826 * float(robust_level(e, ones)), 1e-6)
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
    """(fx, fy, cx, cy, offset) of theta (..., 6 or 7): each (...), offset (..., 3)."""
    th = np.moveaxis(np.asarray(theta, np.float64), -1, 0)
    if len(th) == 6:
        f, cx, k1, cy, k2, c = th
        fx = fy = f
    else:
        fx, cx, k1, fy, cy, k2, c = th
    return fx, fy, cx, cy, np.stack([(k1 - cx * c) / fx, (k2 - cy * c) / fy, c], -1)


def _shifted_error(theta, X, uv):
    """Pixel errors of points X (S, 3) at uv (S, 2) under theta (..., P) -> (..., S)."""
    fx, fy, cx, cy, off = _shifted_params(theta)
    fx, fy, cx, cy = (np.asarray(v)[..., None] for v in (fx, fy, cx, cy))
    p = X + off[..., None, :]
    z = p[..., 2]
    zs = np.where(z > 1e-12, z, 1e-12)
    e = np.hypot(fx * p[..., 0] / zs + cx - uv[..., 0], fy * p[..., 1] / zs + cy - uv[..., 1])
    return np.where(z > 1e-12, e, np.inf)


def fit_intrinsics_shifted(X: np.ndarray, uv: np.ndarray, hypotheses: int = 128, score_points: int = 1000,
                           min_threshold: float = 1e-3, square_pixels: bool = True,
                           seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        meds = np.median(_shifted_error(thetas, Xs[sub], uv[sub]), axis=1)  # all hypotheses in one pass
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
