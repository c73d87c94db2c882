"""Geometry metrics as MonST3R / CUT3R / Pi3 report them (NumPy).

Video depth: one alignment per sequence fitted on the valid pixels -- ``scale`` or ``scale_shift`` -- in closed
form: least squares (``fit='lsq'``) or the exact L1 optimum by IRLS (``fit='l1'``; MonST3R minimises L1 with Adam
and stops short of the optimum). AbsRel = mean |d - d*| / d*, delta<1.25 = fraction with max(d/d*, d*/d) < 1.25,
over all valid pixels of the sequence.

Camera pose: Sim(3) Umeyama alignment of the estimated camera positions to the true ones (evo
``--align --correct_scale``), then ATE = RMSE of the position errors, RPE-trans / RPE-rot = RMSE over consecutive
pairs (delta = 1 frame) of the translation norm / rotation angle (degrees) of
``inv(inv(G_i) G_{i+1}) inv(P_i) P_{i+1}`` (evo ``rpe`` defaults, what MonST3R's ``eval_metrics`` prints).

:func:`registration_metrics` is the row of ``fourdnex eval-geometry``: closed-form registration of one pointmap video,
then all of the above against its ground truth; :func:`mean_metrics` averages rows.
"""

from __future__ import annotations

import numpy as np

from fourdnex_jax.geometry import register
from fourdnex_jax.geometry.se3 import rotation_angle_deg


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


def registration_metrics(xyz: np.ndarray, valid: np.ndarray | None, normalization: str, gt_depth: np.ndarray,
                         gt_c2w: np.ndarray, gt_valid: np.ndarray) -> dict:
    """Cameras and depth of a pointmap video xyz (T, H, W, 3) by :func:`register.register`, scored against the
    truth (depth (T, H, W), c2w (T, 4, 4), valid (T, H, W)): video depth with a per-sequence ``scale`` and
    ``scale_shift`` (least squares and exact L1) and pose ATE / RPE after Sim(3) alignment, plus ``ate_rel`` /
    ``rpe_trans_rel`` divided by the true path length, and ``frames_registered`` (the registration's verdict,
    :mod:`fourdnex_jax.geometry.status`; the metrics score every frame, rejected ones included). A map with no
    registered frame (a plane) falls back to depth = its z channel and a static camera, recorded under
    ``fallback``."""
    with np.errstate(all="ignore"):
        reg = register.register(xyz, valid, normalization=normalization)
    row = {"frames_registered": reg.status.num_registered}
    if reg.status.num_registered:
        depth, c2w, ok = reg.depth, reg.c2w, gt_valid & reg.valid
        row["focal_px"], row["registration_s"] = float(reg.K[0, 0]), reg.timings["total_s"]
    else:
        z = np.asarray(xyz, np.float64)[..., 2]
        depth, c2w, ok = z - z.min() + 1e-3, np.tile(np.eye(4), (len(gt_c2w), 1, 1)), gt_valid
        row["fallback"] = f"registration failed ({reg.status.message()}); depth = z channel, static camera"
    for mode in ("scale", "scale_shift"):
        for fit in ("lsq", "l1"):
            m = depth_metrics(depth, gt_depth, ok, mode, fit)
            row[f"depth_{mode}_{fit}"] = {"abs_rel": m["abs_rel"], "delta_1_25": m["delta_1_25"]}
    pm = pose_metrics(c2w, gt_c2w)
    length = float(np.linalg.norm(np.diff(gt_c2w[:, :3, 3], axis=0), axis=-1).sum()) or 1.0
    row["pose"] = dict(pm, ate_rel=pm["ate"] / length, rpe_trans_rel=pm["rpe_trans"] / length)
    return row


def mean_metrics(rows: list[dict]) -> dict:
    """Mean of every numeric entry (and of every numeric entry of the dict entries) of
    :func:`registration_metrics` rows, with the number of ``sequences`` and of ``failed`` (fallback) rows."""
    out = {"sequences": len(rows), "failed": sum("fallback" in r for r in rows)}
    if not rows:
        return out
    keys = dict.fromkeys(k for r in rows for k in r)  # a fallback row has no focal / timing: mean of those that do
    for k in keys:
        have = [r[k] for r in rows if k in r]
        if isinstance(have[0], str):
            continue
        if isinstance(have[0], dict):
            out[k] = {m: float(np.mean([v[m] for v in have])) for m in have[0]}
        else:
            out[k] = float(np.mean(have))
    return out


def camera_recovery(xyz: np.ndarray, valid: np.ndarray | None, normalization: str, gt_c2w: np.ndarray,
                    gt_focal_px: float, rgb: np.ndarray | None = None) -> dict:
    """Whether the cameras of a pointmap video xyz (T, H, W, 3) can be recovered, scored against the truth.

    Registration (:func:`register.register`) gives the cameras in the first camera's frame, as the truth
    ``gt_c2w`` (T, 4, 4) is, so rotations compare without alignment: ``rot_err_deg`` (T,) is the angle of
    ``R_gt^T R_est`` per frame (0 at frame 0), ``focal_rel_err`` = |f - f*| / f* of the shared focal length
    (``gt_focal_px``), ``frames_registered`` the registration's own verdict and ``all_registered`` whether it
    accepted every frame, ``consistent`` / ``scene_reason`` the clip verdict (one 4D scene or not,
    :mod:`fourdnex_jax.geometry.consistency`, given the frames' colours ``rgb`` when known). A rejected frame keeps
    its error (the solver's last estimate, or the identity)."""
    with np.errstate(all="ignore"):
        reg = register.register(xyz, valid, rgb=rgb, normalization=normalization)
    rel = np.swapaxes(np.asarray(gt_c2w, np.float64)[:, :3, :3], -1, -2) @ reg.c2w[:, :3, :3]
    rot = rotation_angle_deg(rel)
    focal = float(reg.K[0, 0])
    return {"frames_registered": int(reg.status.num_registered), "frames": int(len(rot)),
            "all_registered": bool(reg.status.num_registered == len(rot)),
            "consistent": bool(reg.clip.consistent), "scene_reason": reg.clip.reason,
            "rot_err_deg": rot.round(3).tolist(), "rot_err_median_deg": float(np.median(rot[1:])) if len(rot) > 1
            else 0.0, "focal_px": focal, "focal_rel_err": abs(focal - gt_focal_px) / gt_focal_px,
            "status": reg.status.message(), "scene_4d": reg.clip.message()}


def reprojection_error_px(xyz_metric: np.ndarray, gt_c2w: np.ndarray, gt_K: np.ndarray, mask: np.ndarray
                          ) -> np.ndarray:
    """Pixel distance (N,) between each masked pixel and where its point lands through the TRUE camera of its
    frame: ``xyz_metric`` (T, H, W, 3) in the first camera's frame (a prediction de-normalised with the true
    centres and scale), ``gt_c2w`` (T, 4, 4), ``gt_K`` (T, 3, 3), ``mask`` (T, H, W). Registration needs a few
    pixels of this (docs/tiny_model.md); a point behind its camera counts as infinitely far."""
    t, h, w, _ = xyz_metric.shape
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    w2c = np.linalg.inv(np.asarray(gt_c2w, np.float64))
    out = []
    for k in range(t):
        pc = np.asarray(xyz_metric[k], np.float64)[mask[k]] @ w2c[k, :3, :3].T + w2c[k, :3, 3]
        z = pc[:, 2]
        with np.errstate(all="ignore"):
            pu = gt_K[k, 0, 0] * pc[:, 0] / z + gt_K[k, 0, 2]
            pv = gt_K[k, 1, 1] * pc[:, 1] / z + gt_K[k, 1, 2]
            err = np.hypot(pu - u[mask[k]], pv - v[mask[k]])
        out.append(np.where(z > 1e-9, err, np.inf))
    return np.concatenate(out) if out else np.zeros(0)
