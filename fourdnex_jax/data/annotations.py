"""Annotations -> one training clip: :class:`RawClip` -> :class:`Clip6D` (pure NumPy, no I/O).

Steps, in the order 4DNeX's ``build_wan_dataset.py`` applies them:
  1. frames: the first ``num_frames`` from ``start_frame``, ping-pong padded if the annotation is short;
  2. validity: depth finite and > 0 (or finite world points); a clip with less than ``min_valid_fraction`` valid
     pixels is a bad example (``invalid_depth``);
  3. geometry: back-project depth with the full intrinsics (``intrinsics='full'``, default) or with the
     reference's quirk (``'reference'``: fx for both axes, principal point (W//2, H//2)), move into the first
     camera's frame ``inv(c2w[0]) @ c2w[t] @ X_cam`` (DUSt3R world points: ``inv(c2w[0]) @ X_world``);
  4. normalisation (``'reference'`` or ``'sequence'``, see :mod:`normalize`) at the source resolution;
  5. resize/crop to (height, width): RGB antialiased bilinear, XYZ/masks nearest, intrinsics adjusted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fourdnex_jax.data import geometry, normalize, resize, temporal
from fourdnex_jax.data.clip6d import Clip6D, RawClip
from fourdnex_jax.data.errors import BadExample

INTRINSICS_MODES = ("full", "reference")


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """How annotations become training clips. Defaults: 4DNeX's 49 frames at the tiny model's 64 x 96."""

    num_frames: int = temporal.DEFAULT_NUM_FRAMES
    height: int = 64
    width: int = 96
    normalization: str = "reference"
    intrinsics: str = "full"
    start_frame: int = 0
    min_valid_fraction: float = 0.5

    def __post_init__(self):
        if self.normalization not in normalize.METHODS:
            raise ValueError(f"normalization must be one of {normalize.METHODS}, got {self.normalization!r}")
        if self.intrinsics not in INTRINSICS_MODES:
            raise ValueError(f"intrinsics must be one of {INTRINSICS_MODES}, got {self.intrinsics!r}")
        if self.num_frames < 1 or self.height < 1 or self.width < 1:
            raise ValueError("num_frames, height and width must be positive")


def to_clip6d(raw: RawClip, config: ClipConfig = ClipConfig()) -> Clip6D:
    """Converts one annotation (see module docstring). Raises :class:`BadExample` for unusable data."""
    raw.validate()
    if raw.caption is None or not raw.caption.strip():
        raise BadExample("missing_caption", f"clip {raw.clip_id!r} has no caption")
    n = raw.num_frames
    if config.start_frame >= n:
        raise BadExample("missing_frames", f"start frame {config.start_frame} but only {n} frames")
    idx = temporal.pingpong_indices(n, config.num_frames, config.start_frame)
    h, w = raw.rgb.shape[1:3]
    c2w = np.asarray(raw.c2w, np.float64)[idx]
    rel = geometry.relative_to_first(c2w)

    if raw.depth is not None:
        depth = np.asarray(raw.depth, np.float64)[idx]
        valid = np.isfinite(depth) & (depth > 0)
        K = np.asarray(raw.K, np.float64)[idx]
        K_used = geometry.reference_intrinsics(K, h, w) if config.intrinsics == "reference" else K
        cam = geometry.backproject(np.where(valid, depth, 0.0), K_used)
        xyz = geometry.transform_points(rel, cam)
    else:
        pts = np.asarray(raw.points_world, np.float64)[idx]
        valid = np.isfinite(pts).all(-1)
        xyz = geometry.transform_points(np.linalg.inv(c2w[0]), np.where(valid[..., None], pts, 0.0))
        if raw.K is not None:
            K_used = np.asarray(raw.K, np.float64)[idx]
        else:  # DUSt3R carries no intrinsics: least-squares focal per frame, principal point at the centre
            cam_t = geometry.transform_points(geometry.invert_se3(rel) if _rigid(rel) else np.linalg.inv(rel), xyz)
            K_used = np.stack([geometry.intrinsics_matrix(*_focal(cam_t[i], valid[i]), w / 2, h / 2)
                               for i in range(len(idx))])
        if config.intrinsics == "reference":
            K_used = geometry.reference_intrinsics(K_used, h, w)

    frac = valid.mean()
    if frac < config.min_valid_fraction:
        raise BadExample("invalid_depth", f"only {frac:.1%} valid depth (min {config.min_valid_fraction:.0%})")
    try:
        xyz_n, centers, scale = normalize.normalize(xyz, valid, config.normalization)
    except ValueError as e:
        raise BadExample("invalid_depth", str(e)) from None

    plan = resize.cover_crop_plan(h, w, config.height, config.width)
    if raw.dynamic_mask is not None:
        dyn = np.asarray(raw.dynamic_mask, bool)[idx]
    else:
        dyn = np.zeros((len(idx), h, w), bool)
    return Clip6D(
        rgb=resize.resize_rgb(np.asarray(raw.rgb)[idx], plan),
        xyz=resize.resize_nearest(xyz_n, plan),
        valid=resize.resize_nearest(valid, plan),
        dynamic_mask=resize.resize_nearest(dyn, plan),
        has_dynamic_mask=raw.dynamic_mask is not None,
        intrinsics=resize.adjust_intrinsics(K_used, plan).astype(np.float32),
        c2w=rel.astype(np.float32),
        centers=centers.astype(np.float32),
        scale=float(scale),
        frame_index=idx,
        num_source_frames=n,
        normalization=config.normalization,
        intrinsics_mode=config.intrinsics,
        caption=raw.caption.strip(),
        clip_id=raw.clip_id,
        source=raw.source,
    )


def _rigid(T: np.ndarray) -> bool:
    r = T[:, :3, :3]
    return bool(np.allclose(np.swapaxes(r, -1, -2) @ r, np.eye(3), atol=1e-6))


def _focal(points_cam: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    try:
        return geometry.estimate_focal(points_cam, valid)
    except ValueError as e:
        raise BadExample("invalid_depth", str(e)) from None
