"""Decoding the images a user hands in: one path for files, PIL images and arrays, so ``fourdnex generate`` and the
Python API (``ImageTo4DPipeline(...)(image)``) turn the same picture into the same (H, W, 3) uint8 RGB.

How values become 8-bit RGB (files go through Pillow, then the same rules as arrays):

* 8-bit (``uint8``, Pillow ``L`` / ``RGB`` / ``P`` / ``CMYK`` / ``YCbCr``): as is (through Pillow's RGB conversion
  for the colour spaces); 1-bit and ``bool``: 0 / 255;
* 16-bit (``uint16``, Pillow ``I;16*``): scaled by 255 / 65535, rounded;
* 32-bit integers (Pillow ``I``, e.g. a 32-bit TIFF; ``int32`` / ``uint32`` / ``int64`` arrays): scaled by the range
  their values really use, the smallest of 8, 16 and 32 bits (31 for signed) that holds the largest value, never
  clipped; negative values are refused;
* floats (Pillow ``F``, float arrays): values in [0, 1] scaled by 255; any other range is refused (it is unknown);
* transparency (``RGBA``, ``LA``, ``PA``, a palette with a transparent index, (H, W, 4) and (H, W, 2) arrays): every
  channel made 8-bit as above, then composited over :data:`ALPHA_BACKGROUND` with one formula,
  ``round((c * a + bg * (255 - a)) / 255)``, for files, PIL images and arrays alike;
* EXIF orientation is applied (files and PIL images).

Sizes: a file over :data:`MAX_PIXELS` pixels is refused before its pixels are decoded. A JPEG whose target size
(``target(h, w)``: the size it will be resized to) is at least 4x smaller on both sides is decoded by libjpeg at
1/2, 1/4 or 1/8 scale (``PIL.Image.draft``), never below twice the target, so the bicubic resize that follows still
downsamples: a 6000 x 4000 photo for the 480 x 720 preset decodes at 1500 x 1000, and decode + resize take 14.6x
less time and +94 MB instead of +822 MB (``python -m benchmarks.image_decode``; docs/reliability.md). The condition
image of the pipeline must be at least :data:`MIN_SIDE` pixels on its shorter side (``min_side``): a smaller one is
refused rather than silently upscaled from a few pixels.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import read_bytes

#: Background a transparent pixel is composited over (white, as image-to-3D inputs with a cut-out object expect).
ALPHA_BACKGROUND = (255, 255, 255)
#: The shorter side a condition image must have at least (pixels): the pipeline refuses a smaller one.
MIN_SIDE = 16
#: The most pixels an image file may have (Pillow's own decompression-bomb threshold, ~9500 x 9500).
MAX_PIXELS = 89_478_485
#: An image whose target is this many times smaller on both sides is decoded at reduced size (JPEG only).
DRAFT_FACTOR = 4

#: What a caller may hand in as one image.
ImageLike = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray
#: (source height, source width) -> (height, width) the image will be resized to.
TargetSize = Callable[[int, int], tuple[int, int]]


def _int_range(a: np.ndarray) -> int:
    """The largest value of the range 32-bit integer pixels really use (module docstring)."""
    hi = int(a.max()) if a.size else 0
    if hi <= 255:
        return 255
    if hi <= 65535:
        return 65535
    return 2**31 - 1 if a.dtype.kind == "i" and a.dtype.itemsize <= 4 else 2**32 - 1 if hi < 2**32 else 2**63 - 1


def _to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """Pixel values of any numeric dtype -> uint8 of the same shape (module docstring)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if np.isfinite(a).any() else (np.nan, np.nan)
            nan = "" if np.isfinite(a).all() else ", NaN/inf"
            raise InputError(f"{what}: float pixels must lie in [0, 1] (found [{lo:g}, {hi:g}]{nan}); scale them to "
                             "[0, 1] or pass uint8 / uint16")
        return np.round(a.astype(np.float64) * 255.0).astype(np.uint8)
    if a.dtype.kind in "iu":
        if a.size and a.min() < 0:
            raise InputError(f"{what}: integer pixels hold negative values (min {int(a.min())}); pass unsigned "
                             "pixel values")
        top = 65535 if a.dtype.itemsize == 2 else 255 if a.dtype.itemsize == 1 else _int_range(a)
        if top == 255:
            return a.astype(np.uint8)
        return np.round(a.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    raise InputError(f"{what}: pixel dtype {a.dtype}; pass uint8, uint16 or floats in [0, 1]")


def array_to_rgb8(image: Any, what: str = "image") -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 2) grey + alpha, (H, W, 3) or (H, W, 4) RGBA pixels of any numeric dtype ->
    (H, W, 3) uint8 RGB (module docstring: scaling and compositing)."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 2, 3, 4) or min(a.shape[:2]) < 1:
        raise InputError(f"{what}: expected an (H, W, 3) image (or (H, W), (H, W, 4) RGBA), got shape {a.shape}")
    a = _to_uint8(a, what)
    color, alpha = (a[..., :1], a[..., 1:2]) if a.shape[-1] == 2 else (a[..., :3], a[..., 3:4] if a.shape[-1] == 4
                                                                         else None)
    if color.shape[-1] == 1:
        color = np.repeat(color, 3, axis=-1)
    if alpha is not None:
        c, al = color.astype(np.uint32), alpha.astype(np.uint32)
        bg = np.asarray(ALPHA_BACKGROUND, np.uint32)
        color = ((c * al + bg * (255 - al) + 127) // 255).astype(np.uint8)  # rounded, exact in integers
    return np.ascontiguousarray(color)


def pil_to_rgb8(im: Any, what: str = "image") -> np.ndarray:
    """A Pillow image in any mode -> (H, W, 3) uint8 RGB, EXIF orientation applied (module docstring)."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F", "1", "L", "RGB", "RGBA", "LA"):
        arr = np.asarray(im)
        if mode.startswith("I;16"):
            arr = arr.astype(np.uint16)
        return array_to_rgb8(arr, what)
    if mode in ("La", "PA") or (mode == "P" and "transparency" in im.info) or mode == "RGBa":
        return array_to_rgb8(np.asarray(im.convert("RGBA")), what)
    return array_to_rgb8(np.asarray(im.convert("RGB")), what)


def _orientation_swaps(im: Any) -> bool:
    try:
        return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # a damaged EXIF block: exif_transpose reports it (or ignores it) later
        return False


def decode_image(path: str | os.PathLike, target: TargetSize | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """An image file (PNG, JPEG, TIFF, WebP, ... whatever Pillow reads) -> ((H, W, 3) uint8 RGB, ``{source_height,
    source_width, draft_scale}``). Read through :func:`fourdnex_jax.utils.files.read_bytes` (a regular file within
    ``LIMITS['image']``); more than :data:`MAX_PIXELS` pixels, a missing, empty, truncated or undecodable file
    raises :class:`~fourdnex_jax.utils.errors.InputError` naming it. ``target``: see the module docstring."""
    from PIL import Image, UnidentifiedImageError

    data = read_bytes(path, "image")
    name = os.fspath(path)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise InputError(f"{name}: {w} x {h} pixels, over the {MAX_PIXELS} an image may have; resize it "
                                 "first")
            scale = 1
            if target is not None and im.format == "JPEG":
                swap = _orientation_swaps(im)
                th, tw = target(w, h) if swap else target(h, w)
                th, tw = (tw, th) if swap else (th, tw)  # in stored orientation
                if w >= DRAFT_FACTOR * tw and h >= DRAFT_FACTOR * th:
                    im.draft(None, (max(1, 2 * tw), max(1, 2 * th)))
                    scale = w // im.size[0]
            im.load()  # a truncated file fails here, not half-way through a later resize
            return pil_to_rgb8(im, name), {"source_height": h, "source_width": w, "draft_scale": scale}
    except InputError:
        raise
    except UnidentifiedImageError as e:
        raise InputError(f"{name}: not a PNG/JPEG image (unrecognised content, {len(data)} bytes); pass an image "
                         "file") from e
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise InputError(f"{name}: not a readable PNG/JPEG image ({type(e).__name__}: {e}); re-export it or pass "
                         "another file") from e
    except MemoryError as e:
        raise InputError(f"{name}: decoding needs more memory than is free; resize the image first") from e


def load_image(image: ImageLike, *, target: TargetSize | None = None, min_side: int | None = None,
               what: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """One image as the pipeline takes it -- a path, a PIL image or an array -> ((H, W, 3) uint8 RGB, a record of
    the decode: ``source`` (``file`` / ``pil`` / ``array``) and, for files, what :func:`decode_image` reports).
    ``min_side``: refuse an image whose shorter side is smaller (:data:`MIN_SIDE` for the pipeline)."""
    if isinstance(image, (str, os.PathLike)):
        what = what or os.fspath(image)
        rgb, info = decode_image(image, target)
        info = {"source": "file", **info}
    elif hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "getexif"):  # a PIL image
        what = what or "image (PIL)"
        rgb, info = pil_to_rgb8(image, what), {"source": "pil"}
    else:
        what = what or "image (array)"
        rgb, info = array_to_rgb8(image, what), {"source": "array"}
    h, w = (info["source_height"], info["source_width"]) if "source_height" in info else rgb.shape[:2]
    if min_side is not None and min(h, w) < min_side:
        raise InputError(f"{what}: {h} x {w} pixels, below the {min_side} pixels a side the pipeline needs (it "
                         "would be upscaled from almost nothing); pass a larger image")
    return rgb, info
