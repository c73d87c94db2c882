"""Geometry metrics as MonST3R / CUT3R / Pi3 report them (NumPy).

Video depth: one alignment per sequence fitted on the valid pixels -- ``scale`` or ``scale_shift`` -- in closed
form: least squares (``fit='lsq'``) or the exact L1 optimum by IRLS (``fit='l1'``; MonST3R minimises L1 with Adam
and stops short of the optimum). AbsRel = mean |d - d*| / d*, delta<1.25 = fraction with max(d/d*, d*/d) < 1.25,
over all valid pixels of the sequence.

Camera pose: Sim(3) Umeyama alignment of the estimated camera positions to the true ones (evo
``--align --correct_scale``), then ATE = RMSE of the position errors, RPE-trans / RPE-rot = RMSE over consecutive
pairs (delta = 1 frame) of the translation norm / rotation angle (degrees) of
``inv(inv(G_i) G_{i+1}) inv(P_i) P_{i+1}`` (evo ``rpe`` defaults, what MonST3R's ``eval_metrics`` prints).
"""

from __future__ import annotations

import numpy as np

from fourdnex_jax.geometry.cameras import rotation_angle_deg


def fit_depth_alignment(pred: np.ndarray, gt: np.ndarray, mode: str = "scale_shift", fit: str = "lsq",
                        iters: int = 50) -> tuple[float, float]:
    """(scale, shift) minimising |s pred + b - gt| (L2 or L1); ``mode='scale'`` fixes b = 0."""
    p, g = np.asarray(pred, np.float64).ravel(), np.asarray(gt, np.float64).ravel()
    a = np.stack([p, np.ones_like(p)], 1) if mode == "scale_shift" else p[:, None]
    if mode not in ("scale", "scale_shift"):
        raise ValueError(f"mode must be 'scale' or 'scale_shift', got {mode!r}")
    w = np.ones_like(p)
    coef = np.zeros(a.shape[1])
    for _ in range(iters if fit == "l1" else 1):
        sw = np.sqrt(w)
        coef, *_ = np.linalg.lstsq(a * sw[:, None], g * sw, rcond=None)
        if fit == "l1":
            w = 1.0 / np.maximum(np.abs(a @ coef - g), 1e-9)
        elif fit != "lsq":
            raise ValueError(f"fit must be 'lsq' or 'l1', got {fit!r}")
    return float(coef[0]), float(coef[1]) if mode == "scale_shift" else 0.0


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, mode: str = "scale_shift",
                  fit: str = "lsq") -> dict[str, float]:
    """Per-sequence aligned video-depth metrics; pred, gt (T, H, W), valid (T, H, W) (gt > 0 enforced)."""
    valid = np.asarray(valid, bool) & (np.asarray(gt) > 0) & np.isfinite(pred)
    p, g = np.asarray(pred, np.float64)[valid], np.asarray(gt, np.float64)[valid]
    s, b = fit_depth_alignment(p, g, mode, fit)
    d = np.maximum(s * p + b, 1e-6)
    return {"abs_rel": float(np.mean(np.abs(d - g) / g)), "delta_1_25": float(np.mean(np.maximum(d / g, g / d) < 1.25)),
            "scale": s, "shift": b, "pixels": int(valid.sum())}


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising sum ||dst - (s R src + t)||^2 (Umeyama 1991); src, dst (N, 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    xs, xd = src - ms, dst - md
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sgn = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[2, 2] = -1
    r = u @ sgn @ vt
    var = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sgn) / var) if with_scale and var > 0 else 1.0
    return s, r, md - s * r @ ms


def align_trajectory(c2w_est: np.ndarray, c2w_gt: np.ndarray, with_scale: bool = True) -> np.ndarray:
    """Estimated c2w (T, 4, 4) after the Sim(3) that best maps its positions onto the truth's."""
    s, r, t = umeyama(c2w_est[:, :3, 3], c2w_gt[:, :3, 3], with_scale)
    out = np.array(c2w_est, np.float64, copy=True)
    out[:, :3, :3] = r @ c2w_est[:, :3, :3]
    out[:, :3, 3] = s * c2w_est[:, :3, 3] @ r.T + t
    return out


def pose_metrics(c2w_est: np.ndarray, c2w_gt: np.ndarray, with_scale: bool = True) -> dict[str, float]:
    """ATE, RPE-trans (RMSE, gt units) and RPE-rot (RMSE, degrees) after Sim(3) alignment."""
    est = align_trajectory(c2w_est, c2w_gt, with_scale)
    gt = np.asarray(c2w_gt, np.float64)
    ate = float(np.sqrt(np.mean(np.sum((est[:, :3, 3] - gt[:, :3, 3]) ** 2, -1))))
    rel_e = np.linalg.inv(est[:-1]) @ est[1:]
    rel_g = np.linalg.inv(gt[:-1]) @ gt[1:]
    err = np.linalg.inv(rel_g) @ rel_e
    rpe_t = float(np.sqrt(np.mean(np.sum(err[:, :3, 3] ** 2, -1)))) if len(err) else 0.0
    rpe_r = float(np.sqrt(np.mean(rotation_angle_deg(err[:, :3, :3]) ** 2))) if len(err) else 0.0
    return {"ate": ate, "rpe_trans": rpe_t, "rpe_rot_deg": rpe_r}
