"""Synthetic pointmap videos with exact ground truth for tests, benchmarks and metrics.

:func:`pointmap_sequence` renders a :mod:`fourdnex_jax.data.synthetic` scene, re-expresses it in the first
camera's frame, normalises it like a model output would be and optionally corrupts it the way a generative model
errs: Gaussian noise proportional to depth on every point, and *inconsistent moving objects* -- each moving
object's points displaced per frame by a random 3D offset (off their pixel rays, as a model that misplaces a moving
object produces), plus a fraction of gross outliers.
"""

from __future__ import annotations

import numpy as np

from fourdnex_jax.data import geometry, normalize, synthetic


def pointmap_sequence(index: int = 0, split: str = "heldout", frames: int = 13, height: int = 48, width: int = 64,
                      normalization: str = "sequence", noise: float = 0.0, dynamic_offset: float = 0.0,
                      outliers: float = 0.0, seed: int = 0) -> tuple[dict, dict]:
    """Returns (inputs, truth). inputs: ``xyz`` float32 (T,H,W,3), ``valid``, ``rgb`` uint8. truth: ``K`` (3,3),
    ``c2w`` (T,4,4) relative to camera 0 in *normalised* units (translation / scale), ``depth`` (T,H,W) metric,
    ``scale``, ``centers`` (T,3), ``dynamic`` (T,H,W), ``xyz_metric`` (T,H,W,3) in camera-0 frame."""
    _, r, _ = synthetic.generate_clip(split, index, frames, height, width)
    c2w = geometry.relative_to_first(r["cam_c2w"])
    w2c0 = np.linalg.inv(r["cam_c2w"][0])
    xyz = geometry.transform_points(w2c0, r["xyz_world"].astype(np.float64).reshape(-1, 3)).reshape(
        r["xyz_world"].shape)
    valid = r["object_id"] != -2  # the sky dome is far and uninformative; a model would not place it reliably
    rng = np.random.default_rng(seed)
    noisy = xyz.copy()
    depth = r["depths"].astype(np.float64)
    if noise > 0:
        noisy += rng.normal(size=xyz.shape) * (noise * depth)[..., None]
    if dynamic_offset > 0:
        for t in range(frames):
            for o in np.unique(r["object_id"][t]):
                if o < 0:
                    continue
                m = (r["object_id"][t] == o) & r["dynamic_mask"][t]
                if m.any():
                    off = rng.normal(size=3)
                    noisy[t][m] += dynamic_offset * off / np.linalg.norm(off) * np.median(depth[t][m])
    if outliers > 0:
        m = rng.random(valid.shape) < outliers
        noisy[m] += rng.normal(size=(int(m.sum()), 3)) * depth[m][:, None] * 0.3
    xyz_n, centers, scale = normalize.normalize(noisy, valid, normalization)
    c2w_n = c2w.copy()
    c2w_n[:, :3, 3] /= scale
    inputs = {"xyz": xyz_n, "valid": valid, "rgb": r["images"]}
    truth = {"K": r["intrinsics"][0], "c2w": c2w_n, "depth": depth, "scale": scale, "centers": centers,
             "dynamic": r["dynamic_mask"], "xyz_metric": xyz, "object_id": r["object_id"]}
    return inputs, truth


def pose_errors(c2w_est: np.ndarray, c2w_true: np.ndarray) -> dict[str, float]:
    """Max rotation error (deg) and max translation error (relative to the true path's extent), no alignment
    (both trajectories are relative to camera 0 in the same units)."""
    from fourdnex_jax.geometry.cameras import rotation_angle_deg

    rot = rotation_angle_deg(np.swapaxes(c2w_est[:, :3, :3], 1, 2) @ c2w_true[:, :3, :3])
    extent = max(np.linalg.norm(c2w_true[:, :3, 3], axis=-1).max(), 1e-12)
    tr = np.linalg.norm(c2w_est[:, :3, 3] - c2w_true[:, :3, 3], axis=-1) / extent
    return {"rot_deg_max": float(rot.max()), "trans_rel_max": float(tr.max())}
