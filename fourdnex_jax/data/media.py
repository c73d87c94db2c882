"""Reading (and, for tests and tools, writing) the files of the annotation layouts through ``etils.epath``
(local paths and ``gs://`` alike): .npy/.npz arrays (never pickled), PNG masks and frames, mp4 videos.

Images and masks use Pillow; videos use PyAV (FFmpeg). Both are imported lazily, so the rest of the data layer
works without them. Every decode error surfaces as an exception the caller maps to a bad example.
"""

from __future__ import annotations

import io
import os

import numpy as np
from etils import epath

PathLike = str | os.PathLike


def _bytes(path: PathLike) -> bytes:
    return epath.Path(path).read_bytes()


def load_npy(path: PathLike) -> np.ndarray:
    """One .npy array (``allow_pickle=False``)."""
    return np.load(io.BytesIO(_bytes(path)), allow_pickle=False)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays of an .npz, fully read (so a truncated member fails here, not later)."""
    with np.load(io.BytesIO(_bytes(path)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def read_image(path: PathLike) -> np.ndarray:
    """PNG/JPEG -> (H, W, 3) uint8 RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(_bytes(path))) as im:
        return np.asarray(im.convert("RGB"))


def read_mask(path: PathLike) -> np.ndarray:
    """A mask PNG (any mode) -> (H, W) bool, True where the (first channel of the) pixel is non-zero."""
    from PIL import Image

    with Image.open(io.BytesIO(_bytes(path))) as im:
        arr = np.asarray(im)
    return (arr[..., 0] if arr.ndim == 3 else arr) > 0


def write_png(path: PathLike, image: np.ndarray) -> None:
    """(H, W) bool/uint8 or (H, W, 3) uint8 -> PNG (bool masks are written as 0/255)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    epath.Path(path).write_bytes(buf.getvalue())


def read_video(path: PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Frames [start, stop) of a video file -> (T, H, W, 3) uint8 RGB. Raises ValueError if no frame decodes."""
    import av

    frames = []
    with av.open(io.BytesIO(_bytes(path))) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if stop is not None and i >= stop:
                break
            if i >= start:
                frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise ValueError(f"{path}: no decodable frames in [{start}, {stop})")
    return np.stack(frames)


def write_video(path: PathLike, frames: np.ndarray, fps: int = 24, codec: str = "libx264") -> None:
    """(T, H, W, 3) uint8 -> mp4 (yuv420p; H and W must be even). For tests and visualisation only: the
    lossy codec changes pixel values."""
    import av

    frames = np.asarray(frames, np.uint8)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    epath.Path(path).write_bytes(buf.getvalue())
