"""Spatial resize + crop of a 6D clip: cover the target size, then centre crop (4DNeX ``build_wan_dataset.py``).

RGB is resized bilinearly with antialiasing (Pillow's ``BILINEAR`` filter, widened when downsampling, reproduced
bit-exactly by :func:`fourdnex_jax.models.image_encoder.preprocess.resize_uint8`); pointmaps, validity and dynamic
masks use nearest-neighbour sampling with the same geometry, so every RGB pixel keeps its own 3D point (XYZ values
are never blended across depth discontinuities). Intrinsics are updated to the new pixel grid (pixel centres at
integer coordinates: ``u' = (u + 0.5) * s - 0.5 - left``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fourdnex_jax.models.image_encoder.preprocess import BILINEAR, resize_uint8


@dataclasses.dataclass(frozen=True)
class CropPlan:
    """Resize (in_h, in_w) -> (resized_h, resized_w), then keep rows [top, top + out_h) and columns
    [left, left + out_w)."""

    in_h: int
    in_w: int
    resized_h: int
    resized_w: int
    top: int
    left: int
    out_h: int
    out_w: int

    @property
    def scale_x(self) -> float:
        return self.resized_w / self.in_w

    @property
    def scale_y(self) -> float:
        return self.resized_h / self.in_h

    @property
    def is_identity(self) -> bool:
        return (self.in_h, self.in_w) == (self.out_h, self.out_w)


def cover_crop_plan(height: int, width: int, out_h: int, out_w: int) -> CropPlan:
    """The smallest uniform scale whose result covers (out_h, out_w), rounded to whole pixels, then a centre crop
    (offset ``(resized - out) // 2``)."""
    if min(height, width, out_h, out_w) <= 0:
        raise ValueError(f"invalid sizes: source {height}x{width}, target {out_h}x{out_w}")
    s = max(out_h / height, out_w / width)
    rh, rw = max(out_h, int(round(height * s))), max(out_w, int(round(width * s)))
    return CropPlan(height, width, rh, rw, (rh - out_h) // 2, (rw - out_w) // 2, out_h, out_w)


def resize_rgb(video: np.ndarray, plan: CropPlan) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, out_h, out_w, 3) uint8: antialiased bilinear resize, centre crop."""
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4:
        raise ValueError(f"expected (T, H, W, C) uint8 video, got {video.shape} {video.dtype}")
    t, h, w, c = video.shape
    if (h, w) != (plan.resized_h, plan.resized_w):
        stacked = np.ascontiguousarray(video.transpose(1, 2, 0, 3).reshape(h, w, t * c))  # all frames in one pass
        stacked = resize_uint8(stacked, plan.resized_h, plan.resized_w, BILINEAR)
        video = stacked.reshape(plan.resized_h, plan.resized_w, t, c).transpose(2, 0, 1, 3)
    return np.ascontiguousarray(video[:, plan.top:plan.top + plan.out_h, plan.left:plan.left + plan.out_w])


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resampling: ``floor((i + 0.5) * in / out)``."""
    return np.minimum(((np.arange(out_size) + 0.5) * in_size / out_size).astype(np.int64), in_size - 1)


def resize_nearest(arr: np.ndarray, plan: CropPlan) -> np.ndarray:
    """(T, H, W, ...) any dtype -> (T, out_h, out_w, ...): nearest-neighbour resize to the plan, centre crop."""
    arr = np.asarray(arr)
    rows = nearest_indices(arr.shape[1], plan.resized_h)[plan.top:plan.top + plan.out_h]
    cols = nearest_indices(arr.shape[2], plan.resized_w)[plan.left:plan.left + plan.out_w]
    return np.ascontiguousarray(arr[:, rows][:, :, cols])


def adjust_intrinsics(K: np.ndarray, plan: CropPlan) -> np.ndarray:
    """Intrinsics (..., 3, 3) of the source grid -> those of the resized + cropped grid."""
    K = np.array(K, np.float64, copy=True)
    sx, sy = plan.scale_x, plan.scale_y
    K[..., 0, 0] *= sx
    K[..., 1, 1] *= sy
    K[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5 - plan.left
    K[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5 - plan.top
    return K
