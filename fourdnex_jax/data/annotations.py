"""Annotations -> one training clip: :class:`RawClip` -> :class:`Clip6D` (pure NumPy, no I/O).

Steps, in the order 4DNeX's ``build_wan_dataset.py`` applies them:
  1. frames: the first ``num_frames`` from ``start_frame``, ping-pong padded (one reflection at most) if the
     annotation is short; a clip too short for that is skipped as ``too_few_frames`` (the reference skips every
     clip without 13 latent frames after its one reverse padding: the same clips for 1 + 4k frames);
  2. validity: depth finite and > 0 (or finite world points); a clip with less than ``min_valid_fraction`` valid
     pixels is a bad example (``invalid_depth``);
  3. geometry: back-project depth with the full intrinsics (``intrinsics='full'``, default) or with the
     reference's quirk (``'reference'``: fx for both axes, principal point (W//2, H//2)), move into the first
     camera's frame ``inv(c2w[0]) @ c2w[t] @ X_cam`` (DUSt3R world points: ``inv(c2w[0]) @ X_world``);
  4. normalisation (``'reference'`` or ``'sequence'``, see :mod:`fourdnex_jax.geometry.normalize`) at the
     annotation's resolution, its statistics (percentile clip, centres, the one global scale) over every *loaded*
     frame, before the clip is cut to ``num_frames``, as the reference does: the first ``normalization_frames``
     (81, the reference's ``max_frames``) from ``start_frame``, all frames for the sources in
     ``normalization_all_frames`` (MegaSaM: the reference loads its whole npz);
  5. resize/crop to (height, width): RGB from the raw frames at their own resolution (the reference's
     ``rgb_raw``), antialiased bilinear cover + centre crop; XYZ/masks nearest from the annotation grid with its own
     cover + centre crop (the same crop when both have one aspect ratio), intrinsics adjusted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fourdnex_jax.data import temporal
from fourdnex_jax.data.clip6d import Clip6D, RawClip
from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.geometry import intrinsics, normalize, se3
from fourdnex_jax.media import resize

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
    normalization_frames: int = 81  # frames the normalisation statistics cover (reference: max_frames = 81)
    normalization_all_frames: tuple[str, ...] = ("megasam",)  # sources whose statistics cover every frame

    def __post_init__(self):
        if self.normalization_frames < self.num_frames:
            raise ValueError(f"normalization_frames {self.normalization_frames} < num_frames {self.num_frames}")
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
    n, start = raw.num_frames, config.start_frame
    if start >= n:
        raise BadExample("missing_frames", f"start frame {start} but only {n} frames")
    need = temporal.min_source_frames(config.num_frames)
    if n - start < need:
        raise BadExample("too_few_frames", f"{n - start} frames from frame {start}; {config.num_frames} frames need "
                                           f"at least {need} (one ping-pong reflection)")
    idx = temporal.pingpong_indices(n, config.num_frames, start)
    stats = n - start if raw.source in config.normalization_all_frames else min(n - start,
                                                                                config.normalization_frames)
    win = np.arange(start, start + stats)  # the loaded frames: normalisation statistics cover all of them
    local = idx - start  # the clip's frames within ``win``
    geo = raw.depth if raw.depth is not None else raw.points_world
    h, w = geo.shape[1:3]
    rel_w = se3.relative_to_first(np.asarray(raw.c2w, np.float64)[win])
    rel = rel_w[local]

    if raw.depth is not None:
        depth = np.asarray(raw.depth, np.float64)[win]
        valid_w = np.isfinite(depth) & (depth > 0)
        K = np.asarray(raw.K, np.float64)[win]
        K_w = intrinsics.reference_intrinsics(K, h, w) if config.intrinsics == "reference" else K
        xyz_w = se3.transform_points(rel_w, se3.backproject(np.where(valid_w, depth, 0.0), K_w))
        K_used = K_w[local]
    else:
        pts = np.asarray(raw.points_world, np.float64)[win]
        valid_w = np.isfinite(pts).all(-1)
        c2w0 = np.asarray(raw.c2w, np.float64)[start]
        xyz_w = se3.transform_points(np.linalg.inv(c2w0), np.where(valid_w[..., None], pts, 0.0))
        if raw.K is not None:
            K_used = np.asarray(raw.K, np.float64)[idx]
        else:  # DUSt3R carries no intrinsics: least-squares focal per frame, principal point at the centre
            cam_t = se3.transform_points(se3.invert_se3(rel) if _rigid(rel) else np.linalg.inv(rel), xyz_w[local])
            K_used = np.stack([intrinsics.intrinsics_matrix(*_focal(cam_t[i], valid_w[local][i]), w / 2, h / 2)
                               for i in range(len(idx))])
        if config.intrinsics == "reference":
            K_used = intrinsics.reference_intrinsics(K_used, h, w)

    valid = valid_w[local]
    frac = valid.mean()
    if frac < config.min_valid_fraction:
        raise BadExample("invalid_depth", f"only {frac:.1%} valid depth (min {config.min_valid_fraction:.0%})")
    try:
        xyz_n_w, centers_w, scale = normalize.normalize(xyz_w, valid_w, config.normalization)
    except ValueError as e:
        raise BadExample("invalid_depth", str(e)) from None

    plan = resize.cover_crop_plan(h, w, config.height, config.width)
    rgb_plan = resize.cover_crop_plan(raw.rgb.shape[1], raw.rgb.shape[2], config.height, config.width)
    if raw.dynamic_mask is not None:
        dyn = np.asarray(raw.dynamic_mask, bool)[idx]
    else:
        dyn = np.zeros((len(idx), h, w), bool)
    return Clip6D(
        rgb=resize.resize_rgb(np.asarray(raw.rgb)[idx], rgb_plan),
        xyz=resize.resize_nearest(xyz_n_w[local], plan),
        valid=resize.resize_nearest(valid, plan),
        dynamic_mask=resize.resize_nearest(dyn, plan),
        has_dynamic_mask=raw.dynamic_mask is not None,
        intrinsics=resize.adjust_intrinsics(K_used, plan).astype(np.float32),
        c2w=rel.astype(np.float32),
        centers=centers_w[local].astype(np.float32),
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
        return intrinsics.estimate_focal(points_cam, valid)
    except ValueError as e:
        raise BadExample("invalid_depth", str(e)) from None
