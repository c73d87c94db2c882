"""XYZ normalisation of a pointmap clip into [-1, 1] (the range the Wan VAE expects), and its exact inverse.

Both methods return ``(xyz_n, centers, scale)`` with the one contract every stored clip obeys::

    xyz_metric[t] = xyz_n[t] * scale + centers[t]        (first-camera frame, annotation units)

``centers`` is (T, 3), ``scale`` a positive scalar; both are stored with every clip (:mod:`fourdnex_jax.data.clip6d`).

``reference`` (4DNeX ``build_wan_dataset.py``, what the released weights were trained on):
  per frame and per axis, clip to the [2nd, 98th] percentile of the valid points; centre = per-frame
  (min + max) / 2 of the clipped values; scale = ONE global scalar, the largest half-extent over all frames and
  axes. Output in [-1, 1]. The inverse is exact on points inside their frame's percentile box; the clipped outer
  points come back at the box boundary (the clip is lossy by design). Per-frame centring removes each frame's
  bounding-box translation (quirk 3 of the reference notes), so the stored ``centers`` are needed to rebuild a
  consistent world.

``sequence`` (recommended for new training): one transform for the whole clip, ``centers = 0`` (no shift, frame 0
  stays a true camera-frame pointmap, so focal/pose recovery works) and ``scale = max |coordinate|`` over all
  valid points of all frames (about the first camera's origin). Output in [-1, 1]; the inverse is exact
  everywhere. ``z`` of frame 0 is positive, so it uses only half the range.

Invalid pixels (``valid == False``: missing depth, NaN/inf) are excluded from the statistics and set to 0.
"""

from __future__ import annotations

import numpy as np

METHODS = ("reference", "sequence")


def _check(xyz: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    xyz = np.asarray(xyz, np.float64)
    if xyz.ndim != 4 or xyz.shape[-1] != 3:
        raise ValueError(f"xyz must be (T, H, W, 3), got {xyz.shape}")
    finite = np.isfinite(xyz).all(-1)
    valid = finite if valid is None else (np.asarray(valid, bool) & finite)
    if valid.shape != xyz.shape[:-1]:
        raise ValueError(f"valid mask {valid.shape} does not match xyz {xyz.shape[:-1]}")
    if not valid.reshape(valid.shape[0], -1).any(-1).all():
        raise ValueError("a frame has no valid point; cannot normalise")
    return xyz, valid


def normalize_reference(xyz: np.ndarray, valid: np.ndarray | None = None, lo: float = 2.0,
                        hi: float = 98.0) -> tuple[np.ndarray, np.ndarray, float]:
    """4DNeX normalisation (see module docstring). xyz (T, H, W, 3) -> (xyz_n float32, centers (T, 3), scale)."""
    xyz, valid = _check(xyz, valid)
    t = xyz.shape[0]
    lows, highs = np.zeros((t, 3)), np.zeros((t, 3))
    for i in range(t):  # per frame, per axis percentiles over the valid points
        pts = xyz[i][valid[i]]
        lows[i], highs[i] = np.percentile(pts, [lo, hi], axis=0)
    clipped = np.clip(xyz, lows[:, None, None, :], highs[:, None, None, :])
    centers = (lows + highs) / 2.0  # = (min + max) / 2 of the clipped values
    scale = float(np.max((highs - lows) / 2.0))
    if not scale > 0:
        raise ValueError("degenerate pointmap: zero extent after percentile clipping")
    out = (clipped - centers[:, None, None, :]) / scale
    out[~valid] = 0.0
    return np.clip(out, -1.0, 1.0).astype(np.float32), centers, scale


def normalize_sequence(xyz: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """One scale for the clip about the first camera's origin, no shift (see module docstring)."""
    xyz, valid = _check(xyz, valid)
    scale = float(np.max(np.abs(xyz[valid])))
    if not scale > 0:
        raise ValueError("degenerate pointmap: all points at the origin")
    out = xyz / scale
    out[~valid] = 0.0
    return out.astype(np.float32), np.zeros((xyz.shape[0], 3)), scale


def normalize(xyz: np.ndarray, valid: np.ndarray | None = None, method: str = "reference"):
    """Dispatches on ``method`` in :data:`METHODS`; returns (xyz_n float32, centers (T, 3) float64, scale)."""
    if method == "reference":
        return normalize_reference(xyz, valid)
    if method == "sequence":
        return normalize_sequence(xyz, valid)
    raise ValueError(f"unknown normalisation {method!r}; use one of {METHODS}")


def denormalize(xyz_n: np.ndarray, centers: np.ndarray, scale: float) -> np.ndarray:
    """Inverse map: (T, H, W, 3) normalised -> first-camera-frame metric points, ``xyz_n * scale + centers[t]``."""
    xyz_n = np.asarray(xyz_n, np.float64)
    centers = np.asarray(centers, np.float64)
    return xyz_n * float(scale) + centers[:, None, None, :]
