"""transformers' ``CLIPImageProcessor`` (PIL backend) in numpy: RGB conversion, shortest-edge resize with Pillow's
resampling reproduced bit-exactly, centre crop, rescale, normalise. Output NHWC float32 for the vision tower.

Pillow is not needed (a PIL image passed in is read through its own methods). The resize is
:func:`fourdnex_jax.media.resize.resize_uint8`, whose uint8 output equals ``PIL.Image.resize``'s, so the
normalised pixels match the processor's exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fourdnex_jax.media.resize import BICUBIC, resize_uint8
from fourdnex_jax.utils import bounds

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output (height, width) with the short side = ``shortest_edge`` and the long side truncated, as transformers'
    ``get_resize_output_image_size(default_to_square=False)``."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def center_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """transformers' ``center_crop`` on (H, W, C): offsets floor((in - out) / 2); zero-pads images that are too
    small, centring them with ceil((out - in) / 2)."""
    h, w = img.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0 and top + height <= h and left + width <= w:
        return img[top:top + height, left:left + width]
    new_h, new_w = max(height, h), max(width, w)
    padded = np.zeros((new_h, new_w) + img.shape[2:], img.dtype)
    pt, pl = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded[pt:pt + h, pl:pl + w] = img
    top, left = (new_h - height) // 2, (new_w - width) // 2  # transformers crops the padded image the same way
    return padded[top:top + height, left:left + width]


def to_rgb_uint8(image: Any) -> np.ndarray:
    """A PIL image or an (H, W[, 1|3|4]) uint8 array -> (H, W, 3) uint8, compositing alpha onto white exactly as
    transformers' ``convert_to_rgb`` does."""
    if hasattr(image, "getbands") and hasattr(image, "convert"):  # a PIL image
        from PIL import Image  # only reachable when the caller already uses Pillow

        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return np.array(Image.alpha_composite(background, rgba).convert("RGB"))
        return np.array(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 (H, W, C), got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 1|3|4) image, got shape {arr.shape}")
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:4] / 255
        return np.round(alpha * arr[..., :3] + (1 - alpha) * 255).astype(np.uint8)
    return arr


@dataclasses.dataclass(frozen=True)
class CLIPPreprocessConfig:
    """``preprocessor_config.json`` of a ``CLIPImageProcessor``. Defaults = Wan2.1 I2V's ``image_processor/``
    (OpenAI CLIP settings: shortest edge 224, bicubic, centre crop 224 x 224, x/255, OpenAI mean/std).

    ``size`` is ``{"shortest_edge": n}`` or ``{"height": h, "width": w}``; ``crop_size`` is ``{"height", "width"}``."""

    size: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"shortest_edge": 224})
    crop_size: Mapping[str, int] = dataclasses.field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = BICUBIC
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: Sequence[float] = OPENAI_CLIP_MEAN
    image_std: Sequence[float] = OPENAI_CLIP_STD
    do_convert_rgb: bool = True

    def __post_init__(self):
        bounds.check_dataclass(self, "image processor config (CLIPPreprocessConfig)")

    # Keys of preprocessor_config.json that only name classes / versions.
    BOOKKEEPING = frozenset({"image_processor_type", "processor_class", "feature_extractor_type",
                             "_processor_class", "transformers_version", "default_to_square", "backend"})

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> CLIPPreprocessConfig:
        """From a ``preprocessor_config.json`` dict; unknown keys raise. An int ``size`` / ``crop_size`` means
        ``{"shortest_edge": n}`` / a square crop, as in transformers."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in hf if k not in fields and k not in cls.BOOKKEEPING)
        if unknown:
            raise ValueError(f"unknown CLIP preprocessor key(s) {unknown}")
        if hf.get("default_to_square", False):
            raise ValueError("default_to_square=True is not CLIPImageProcessor's behaviour and is not supported")
        kw = {k: v for k, v in hf.items() if k in fields}
        if isinstance(kw.get("size"), int):
            kw["size"] = {"shortest_edge": kw["size"]}
        if isinstance(kw.get("crop_size"), int):
            kw["crop_size"] = {"height": kw["crop_size"], "width": kw["crop_size"]}
        for key in ("image_mean", "image_std"):
            if isinstance(kw.get(key), (int, float)):
                kw[key] = (kw[key],) * 3
            if key in kw:
                kw[key] = tuple(float(v) for v in kw[key])
        return cls(**kw)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        size = dict(self.size)
        if set(size) == {"shortest_edge"}:
            return shortest_edge_size(height, width, size["shortest_edge"])
        if set(size) == {"height", "width"}:
            return size["height"], size["width"]
        raise ValueError(f"size {size} not supported (use shortest_edge, or height and width)")


def preprocess_image(image: Any, config: CLIPPreprocessConfig = CLIPPreprocessConfig()) -> np.ndarray:
    """One image (PIL, or (H, W, C) uint8) -> (crop_h, crop_w, 3) float32, = the processor's ``pixel_values[0]``
    transposed to HWC."""
    img = to_rgb_uint8(image) if config.do_convert_rgb else np.asarray(image)
    if config.do_resize:
        h, w = config.output_size(*img.shape[:2])
        img = resize_uint8(img, h, w, config.resample)
    if config.do_center_crop:
        img = center_crop(img, config.crop_size["height"], config.crop_size["width"])
    out = img
    if config.do_rescale:
        out = (out.astype(np.float64) * config.rescale_factor).astype(np.float32)  # transformers' rounding order
    if config.do_normalize:
        out = out.astype(np.float32) if not np.issubdtype(out.dtype, np.floating) else out
        mean = np.asarray(config.image_mean, dtype=out.dtype)
        std = np.asarray(config.image_std, dtype=out.dtype)
        out = (out - mean) / std
    return np.asarray(out, dtype=np.float32)


def preprocess_images(images: Any | Sequence[Any], config: CLIPPreprocessConfig = CLIPPreprocessConfig()) -> np.ndarray:
    """A PIL image / uint8 array, or a list of them -> (B, crop_h, crop_w, 3) float32 NHWC."""
    if not isinstance(images, (list, tuple)):
        images = [images]
    return np.stack([preprocess_image(im, config) for im in images])
