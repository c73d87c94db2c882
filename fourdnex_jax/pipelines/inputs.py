"""The pipeline's inputs: the size an image is sampled at, its resize, its caption, lists of images.

Sizing (``settings.resize_mode``):

* ``'aspect'`` (default; 4DNeX ``core/inference/wan.py:110-115``, the diffusers Wan I2V recipe): H and W follow the
  image's aspect ratio at the area ``max_area``, each rounded down to a multiple of the model's step (VAE spatial
  factor x DiT patch: 16 for Wan2.1, 8 for the shipped tiny model), and the image is resized with Pillow's bicubic
  filter (bit-exact, :func:`fourdnex_jax.media.resize.resize_uint8`), nothing cropped: 720 x 480 for a 3:2 image,
  784 x 432 for 16:9, 432 x 784 for a 9:16 portrait at 480 * 720;
* ``'cover_crop'``: the image covers the preset's 2:3 (H:W) frame at ``max_area`` (480 x 720, the 4DNeX training
  frame; 64 x 96 for the tiny model) with antialiased bilinear resampling and is centre-cropped to it, as the
  training clips were made (:func:`fourdnex_jax.media.resize.cover_crop_plan`).

Images are (H, W, 3) uint8.

Initial noise (:func:`noise_latent`): the latent sampling starts from, per image, (T', h, 2w, 16) float32 (this
project's NTHWC layout) or (1, 16, T', h, 2w) float32 (the official code's NCTHW ``randn_tensor`` output, e.g.
``torch.randn((1, 16, 13, 60, 180), generator=torch.Generator().manual_seed(42)).numpy()`` for a 3:2 image at the
14B preset), so a run can start from exactly the official run's noise.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from fourdnex_jax.media.resize import BICUBIC, cover_crop_plan, resize_rgb, resize_uint8
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import read_text

#: (H, W) proportions of the frame ``'cover_crop'`` fills: the 4DNeX training clips' 480 x 720.
COVER_CROP_ASPECT = (2, 3)


def aspect_size(height: int, width: int, max_area: int, multiple: tuple[int, int]) -> tuple[int, int]:
    """(H, W) of an image of ``height x width`` pixels at the area ``max_area``, each side rounded (half to even,
    as Python's ``round``) then floored to its ``multiple``, never below one multiple."""
    if min(height, width, max_area) <= 0:
        raise ValueError(f"invalid sizes: image {height}x{width}, max_area {max_area}")
    ratio = height / width
    mh, mw = multiple
    h = round(math.sqrt(max_area * ratio)) // mh * mh
    w = round(math.sqrt(max_area / ratio)) // mw * mw
    # a side floored to 0 (a very thin image, e.g. 1 x 4000) takes one multiple, and the other side shrinks so the
    # area stays within max_area (it would be 6.4x it for the tiny preset otherwise)
    if h < mh:
        h, w = mh, max(mw, max_area // mh // mw * mw)
    elif w < mw:
        h, w = max(mh, max_area // mw // mh * mh), mw
    return h, w


def sample_size(height: int, width: int, max_area: int, multiple: tuple[int, int], mode: str) -> tuple[int, int]:
    """The (H, W) an image of ``height x width`` is sampled at under ``mode`` (module docstring)."""
    if mode == "aspect":
        return aspect_size(height, width, max_area, multiple)
    if mode == "cover_crop":
        return aspect_size(*COVER_CROP_ASPECT, max_area, multiple)
    raise ValueError(f"resize_mode={mode!r}; use 'aspect' or 'cover_crop'")


def resize_target(height: int, width: int, max_area: int, multiple: tuple[int, int], mode: str) -> tuple[int, int]:
    """The (H, W) an image of ``height x width`` is resized to under ``mode``, before any crop (the decoder may
    decode a large JPEG at reduced size down to twice this, :mod:`fourdnex_jax.media.images`)."""
    out_h, out_w = sample_size(height, width, max_area, multiple, mode)
    if mode == "cover_crop":
        plan = cover_crop_plan(height, width, out_h, out_w)
        return plan.resized_h, plan.resized_w
    return out_h, out_w


def prepare_image(image: np.ndarray, max_area: int, multiple: tuple[int, int], mode: str = "aspect"
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """(h, w, 3) uint8 -> the (H, W, 3) uint8 image to sample from, and its sizing record ``{mode, input_height,
    input_width, height, width, max_area, multiple}`` (written into summary.json)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    out_h, out_w = sample_size(h, w, max_area, multiple, mode)
    if (out_h, out_w) == (h, w):
        out = image.copy()
    elif mode == "aspect":
        out = resize_uint8(np.ascontiguousarray(image), out_h, out_w, BICUBIC)
    else:
        out = resize_rgb(image[None], cover_crop_plan(h, w, out_h, out_w))[0]
    sizing = {"mode": mode, "input_height": int(h), "input_width": int(w), "height": int(out_h),
              "width": int(out_w), "max_area": int(max_area), "multiple": [int(m) for m in multiple]}
    return out, sizing


#: Upscaling (output side / input side) from which ``generate`` says the input was small for the model.
UPSCALE_NOTE_FACTOR = 1.5


def upscale_note(sizing: dict[str, Any], name: str) -> str | None:
    """One ``note:`` line when :func:`prepare_image` enlarged the image ``name`` by :data:`UPSCALE_NOTE_FACTOR` or
    more on a side (the model then samples from interpolated pixels: the first frame and its geometry are blurred),
    else None."""
    factor = max(sizing["height"] / sizing["input_height"], sizing["width"] / sizing["input_width"])
    if factor < UPSCALE_NOTE_FACTOR:
        return None
    return (f"note: {name} is {sizing['input_height']}x{sizing['input_width']} px, upscaled {factor:.1f}x to "
            f"{sizing['height']}x{sizing['width']} for this model's sampling area: its first frame and geometry "
            "are blurred; give an image of at least that size")


def noise_latent(noise: Any, expected: tuple[int, int, int, int], source: str, image: str) -> np.ndarray:
    """``noise`` as the (T', h, 2w, C) float32 initial latent of ``image`` (whose sampling size gives ``expected``),
    from this project's layout or the official (1, C, T', h, 2w) one; anything else raises ValueError naming
    ``source`` (the argument or file) and both accepted shapes."""
    a = np.asarray(noise)
    t, h, w2, c = expected
    official = (1, c, t, h, w2)
    if a.dtype != np.float32 or a.shape not in (tuple(expected), official):
        raise InputError(f"{source}: {a.dtype} array of shape {a.shape}; {image} needs float32 of shape "
                         f"{tuple(expected)} (T', h, 2w, C) or {official} (the official NCTHW layout)")
    if not np.isfinite(a).all():
        raise InputError(f"{source}: holds NaN or infinite values; pass finite noise")
    return np.ascontiguousarray(np.moveaxis(a[0], 0, -1) if a.shape == official else a)


def caption_for_image(path: str | os.PathLike) -> str:
    """The caption stored next to an image: ``IMG.txt`` for ``IMG.png`` (stripped), or ``""`` when absent. A
    caption file that is not a regular UTF-8 text file of at most ``LIMITS['caption']`` bytes raises
    :class:`~fourdnex_jax.utils.errors.InputError` naming it (:mod:`fourdnex_jax.utils.files`)."""
    side = Path(path).with_suffix(".txt")
    return read_text(side, "caption").strip() if os.path.lexists(side) else ""


def output_name(image: str | os.PathLike) -> str:
    """The name of an ``--images`` entry's result folder under ``--out``: the image's file stem, made safe. Leading
    dots become ``_`` (the stem of ``..png`` is ``.``, which would name the output root itself; a hidden name could
    pass for a temporary folder), an empty stem becomes ``image``, and a name over 120 bytes is cut and suffixed
    with 8 hex digits of its hash (so the hidden siblings ``.NAME.tmp-XXXXXXXX`` still fit the 255-byte limit)."""
    stem = Path(image).stem
    name = stem.lstrip(".")
    name = "_" * (len(stem) - len(name)) + name or "image"
    if len(name.encode()) > 120:
        digest = hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
        name = name.encode()[:100].decode(errors="ignore") + "-" + digest
    return name


def read_image_list(path: str | os.PathLike) -> list[tuple[Path, str | None]]:
    """A list file: one ``image`` or ``image<TAB>prompt`` per line (blank lines and ``#`` comments skipped;
    relative paths are relative to the list file) -> ``[(image path, prompt or None)]``. The list must be a regular
    UTF-8 text file of at most ``LIMITS['list']`` bytes (else an InputError naming it)."""
    path = Path(path)
    items = []
    for line in read_text(path, "list", what="image list").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, prompt = line.partition("\t")
        p = Path(name.strip())
        items.append((p if p.is_absolute() else path.parent / p, prompt.strip() if prompt else None))
    return items
