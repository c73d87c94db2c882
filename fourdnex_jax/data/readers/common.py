"""Helpers shared by the annotation readers: error mapping, npz clips, RGB sources (at their own resolution)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
from etils import epath

from fourdnex_jax.data.errors import BadExample, as_bad_example
from fourdnex_jax.data.temporal import parse_clip_range
from fourdnex_jax.media import io as media_io

T = TypeVar("T")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")


def read(fn: Callable[[], T], what: str) -> T:
    """Runs one file read; any failure becomes a :class:`BadExample` naming ``what``."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every reader failure becomes one BadExample
        bad = as_bad_example(exc)
        raise BadExample(bad.reason, f"{what}: {bad.detail}") from None


def require(path: epath.Path, reason: str = "missing_file") -> epath.Path:
    if not path.exists():
        raise BadExample(reason, f"{path} does not exist")
    return path


def list_npz_clips(root: str | epath.Path) -> list[epath.Path]:
    """The ``*.npz`` clip files of an annotation folder (one clip per file), sorted."""
    return sorted(epath.Path(root).glob("*.npz"), key=str)


def load_npz_keys(path: epath.Path, keys: tuple[str, ...]) -> dict:
    """Loads one clip ``.npz`` (no pickles); a missing file, an unreadable file or a missing key is a
    :class:`BadExample`."""
    z = read(lambda: media_io.load_npz(require(path)), str(path))
    missing = [k for k in keys if k not in z]
    if missing:
        raise BadExample("corrupt_file", f"{path.name} lacks {missing} (has {sorted(z)})")
    return z


def rgb_uint8(images: np.ndarray) -> np.ndarray:
    """Frames as stored by annotation tools -> (T, H, W, 3) uint8 (floats in [0, 1] or [-1, 1] are rescaled)."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise BadExample("shape_mismatch", f"images must be (T, H, W, 3), got {a.shape}")
    if a.dtype == np.uint8:
        return a
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise BadExample("corrupt_file", "non-finite RGB values")
    if a.min() < 0:
        a = (a + 1) / 2
    if a.max() <= 1.0 + 1e-6:
        a = a * 255.0
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def read_rgb_source(source: str | epath.Path, num_frames: int, clip_id: str = "",
                    frame_pattern: str | None = None) -> np.ndarray:
    """The first ``num_frames`` RGB frames from a video file (the frame range in ``clip_id``'s name,
    ``..._{start}-{end}``, selects the source frames) or from an image folder (sorted, or ``frame_pattern``
    formatted with the frame index). Raises ``missing_frames`` when fewer frames exist."""
    src = epath.Path(source)
    if src.suffix.lower() in VIDEO_SUFFIXES:
        rng = parse_clip_range(clip_id)
        start = rng[0] if rng else 0
        frames = read(lambda: media_io.read_video(src, start, start + num_frames), f"video {src}")
    else:
        if frame_pattern is not None:
            files = [src / frame_pattern.format(i) for i in range(num_frames)]
            missing = [f.name for f in files if not f.exists()]
            if missing:
                raise BadExample("missing_frames", f"{src}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        else:
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if src.exists() else []
            files = files[:num_frames]
        frames_list = [read(lambda f=f: media_io.read_image(f), f"frame {f}") for f in files]
        if not frames_list:
            raise BadExample("missing_frames", f"no frames in {src}")
        shapes = {f.shape for f in frames_list}
        if len(shapes) != 1:
            raise BadExample("shape_mismatch", f"frames of different sizes in {src}: {sorted(shapes)}")
        frames = np.stack(frames_list)
    if len(frames) < num_frames:
        raise BadExample("missing_frames", f"{src}: {len(frames)} frames, annotation has {num_frames}")
    return frames[:num_frames]
