"""Resampling of uint8 images and video clips: Pillow's resize reproduced bit-exactly, and cover + centre-crop plans.

:func:`resize_uint8` equals ``PIL.Image.fromarray(img).resize((width, height), resample)`` for 8-bit images.
Pillow resamples in two separable passes (horizontal, then vertical), each with fixed-point weights (22 fractional
bits, rounded away from zero) and a uint8 round/clamp after the pass; the filter is widened by the scale factor
when downsampling (antialiasing). The kernel follows that recipe step for step; Pillow itself is not needed.

A :class:`CropPlan` resizes a clip to cover the target size, then centre crops it (4DNeX ``build_wan_dataset.py``):
RGB bilinearly with antialiasing (:func:`resize_rgb`); pointmaps, validity and dynamic masks with nearest-neighbour
sampling of the same geometry (:func:`resize_nearest`), so every RGB pixel keeps its own 3D point (XYZ values are
never blended across depth discontinuities). :func:`adjust_intrinsics` moves intrinsics to the new pixel grid
(pixel centres at integer coordinates: ``u' = (u + 0.5) * s - 0.5 - left``). Videos are (T, H, W, C).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

# PIL.Image.Resampling values.
BILINEAR, BICUBIC = 2, 3

_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point precision for 8-bit images


def _bilinear(x: np.ndarray) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, 1.0 - x, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5  # Pillow's (and Keys') cubic convolution parameter
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


_FILTERS: dict[int, tuple[Callable[[np.ndarray], np.ndarray], float]] = {
    BILINEAR: (_bilinear, 1.0),
    BICUBIC: (_bicubic, 2.0),
}


def _coefficients(in_size: int, out_size: int, resample: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: for each output pixel, the source indices
    (out, taps) and int64 fixed-point weights (out, taps); taps past the window have weight 0."""
    filt, filter_support = _FILTERS[resample]
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    taps = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    xmin = np.maximum(np.trunc(center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - xmin
    offsets = np.arange(taps)
    valid = offsets[None, :] < xmax[:, None]
    w = np.where(valid, filt((offsets[None, :] + xmin[:, None] - center[:, None] + 0.5) / filterscale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    fixed = np.trunc(w * (1 << _PRECISION_BITS) + np.where(w < 0, -0.5, 0.5)).astype(np.int64)
    fixed = np.where(valid, fixed, 0)
    index = np.minimum(xmin[:, None] + offsets[None, :], in_size - 1)
    return index, fixed


def _resample_axis(img: np.ndarray, out_size: int, axis: int, resample: int) -> np.ndarray:
    """One separable pass over ``axis`` of a (H, W, C) uint8 image, with Pillow's rounding and clamping."""
    index, weight = _coefficients(img.shape[axis], out_size, resample)
    src = img.astype(np.int64)
    shape = [1, 1, 1]
    shape[axis] = out_size
    acc = np.full(tuple(s if i != axis else out_size for i, s in enumerate(img.shape)), 1 << (_PRECISION_BITS - 1),
                  np.int64)
    for t in range(index.shape[1]):  # loop over taps: memory stays at one image, not image x taps
        acc += np.take(src, index[:, t], axis=axis) * weight[:, t].reshape(shape)
    return np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_uint8(img: np.ndarray, height: int, width: int, resample: int = BICUBIC) -> np.ndarray:
    """``PIL.Image.fromarray(img).resize((width, height), resample)`` for a (H, W, C) uint8 image."""
    if resample not in _FILTERS:
        raise ValueError(f"resample {resample} not supported (PIL BILINEAR=2 and BICUBIC=3 are)")
    if img.dtype != np.uint8 or img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {img.shape} {img.dtype}")
    if img.shape[1] != width:
        img = _resample_axis(img, width, 1, resample)
    if img.shape[0] != height:
        img = _resample_axis(img, height, 0, resample)
    return img


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
