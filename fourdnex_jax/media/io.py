"""Reading and writing media and arrays: images (PNG/JPEG), mp4 videos, .npy/.npz arrays and JSON.

Reads go through ``etils.epath`` (local paths and ``gs://`` alike). Every writer is atomic: a local file is
written to a temporary sibling, synced and renamed over the target with ``os.replace``, so a reader never sees a
half-written output; a remote object store (``gs://``) makes the one upload atomic itself. Parent folders are
created. Images use Pillow and videos PyAV (FFmpeg), both imported lazily so the rest of the package works without
them; every decode error surfaces as an exception.

A folder of outputs is published as a unit by :func:`fourdnex_jax.media.publish.publish_dir` (written into a hidden
temporary sibling, marked as ours, then renamed over the target), so a killed writer leaves the previous complete
result or none. Files a user hands in are read through :mod:`fourdnex_jax.utils.files` (regular files only, size
caps) and images decoded by :mod:`fourdnex_jax.media.images`.

Frames are (T, H, W, 3) uint8 RGB; images (H, W, 3) uint8 RGB (masks (H, W) bool). Readers of user input raise
:class:`~fourdnex_jax.utils.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from etils import epath

from fourdnex_jax.media.images import ALPHA_BACKGROUND, decode_image, load_image  # noqa: F401 (re-exported)
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import check_regular, read_bytes
from fourdnex_jax.utils.interrupts import cleanup_region

PathLike = str | os.PathLike


def _is_remote(path: PathLike) -> bool:
    return "://" in os.fspath(path)


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> Path | epath.Path:
    """Calls ``write(f)`` on a binary file object whose content replaces ``path`` atomically (see module
    docstring); the final file gets the ordinary umask permissions. Returns the path (a ``pathlib.Path`` when
    local)."""
    if _is_remote(path):
        buf = io.BytesIO()
        write(buf)
        out = epath.Path(path)
        out.write_bytes(buf.getvalue())
        return out
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with cleanup_region():  # Ctrl-C here unwinds, so the temporary file is removed (utils/interrupts.py)
        return _atomic_write_local(path, write)


def _atomic_write_local(path: Path, write: Callable[[BinaryIO], Any]) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the final file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path | epath.Path:
    """``data`` as the whole content of ``path``, atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_save_npz(path: PathLike, **arrays: np.ndarray) -> Path | epath.Path:
    """An uncompressed .npz of ``arrays`` (no pickled objects), atomically."""
    return atomic_write(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def _non_finite_key(obj: Any, where: str = "$") -> str | None:
    """JSON path of the first NaN/Infinity float in ``obj`` (None if there is none)."""
    if isinstance(obj, float):
        return None if np.isfinite(obj) else where
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        hit = _non_finite_key(v, f"{where}[{k!r}]" if isinstance(k, str) else f"{where}[{k}]")
        if hit:
            return hit
    return None


def atomic_save_json(path: PathLike, obj: Any) -> Path | epath.Path:
    """``obj`` as indented JSON with sorted keys, atomically. Strict JSON only: a NaN or Infinity (which Python
    would write as bare ``NaN`` / ``Infinity``, rejected by strict parsers) is an error naming its key; the writer
    must store ``null`` and say why instead."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError as e:
        where = _non_finite_key(obj)
        if where is None:
            raise
        raise ValueError(f"{os.fspath(path)}: refusing to write the non-finite number at {where}; write null and "
                         "a status saying why instead (strict JSON has no NaN/Infinity)") from e
    return atomic_write(path, lambda f: f.write(text.encode()))


def _bytes(path: PathLike) -> bytes:
    """A data file's bytes (local or ``gs://``); a local pipe, device or folder is refused, never read."""
    if not _is_remote(path) and os.path.exists(path):
        check_regular(path, "data")
    return epath.Path(path).read_bytes()


def load_npy(path: PathLike) -> np.ndarray:
    """One .npy array (``allow_pickle=False``)."""
    return np.load(io.BytesIO(_bytes(path)), allow_pickle=False)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays of an .npz, fully read (so a truncated member fails here, not later)."""
    with np.load(io.BytesIO(_bytes(path)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_input_bytes(path: PathLike, what: str, kind: str = "image") -> bytes:
    """The bytes of a file a user handed in (:func:`fourdnex_jax.utils.files.read_bytes`: a regular file within its
    kind's size cap; every failure an InputError naming it)."""
    return read_bytes(path, kind, what=what)


def read_image(path: PathLike) -> np.ndarray:
    """An image file (any mode) -> (H, W, 3) uint8 RGB, EXIF orientation applied
    (:func:`fourdnex_jax.media.images.decode_image` says how each mode converts). A missing, empty, truncated,
    undecodable or non-regular file raises :class:`~fourdnex_jax.utils.errors.InputError` naming it."""
    return decode_image(path)[0]


def check_image(path: PathLike, min_side: int | None = None) -> tuple[int, int]:
    """Decodes ``path`` fully (a JPEG at reduced size: every byte is still decoded) and returns its source (H, W);
    raises InputError like :func:`read_image`, and for a shorter side below ``min_side``."""
    _, info = load_image(path, target=lambda h, w: (16, 16), min_side=min_side)
    return info["source_height"], info["source_width"]


def rgb_to_uint8(rgb: Any, what: str = "rgb") -> np.ndarray:
    """RGB values -> uint8 of the same shape: uint8 as is; floats in [0, 1] scaled by 255 (rounded); floats or
    integers in [0, 255] rounded. Anything else (NaN, negative, above 255, bool, object) raises InputError naming
    ``what``, instead of a cast that would wrap or darken the colours."""
    a = np.asarray(rgb)
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind not in "fiu":
        raise InputError(f"{what}: dtype {a.dtype}; store colours as uint8 in [0, 255] or floats in [0, 1]")
    if a.size == 0:
        return a.astype(np.uint8)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{what}: holds NaN/inf; store finite colours (uint8 in [0, 255] or floats in [0, 1])")
    lo, hi = float(a.min()), float(a.max())
    if lo < 0 or hi > 255:
        raise InputError(f"{what}: values span [{lo:g}, {hi:g}]; store colours as uint8 in [0, 255] or floats in "
                         "[0, 1]")
    if a.dtype.kind == "f" and hi <= 1.0:
        return np.round(a * 255.0).astype(np.uint8)
    return np.round(a).astype(np.uint8)


def load_npz_checked(path: PathLike, what: str = "arrays") -> dict[str, np.ndarray]:
    """All arrays of an .npz like :func:`load_npz`, every failure an InputError naming the file: missing, not an
    .npz (a JPEG, a text file, a single .npy), truncated, or holding pickled objects (never unpickled)."""
    import zipfile

    data = _read_input_bytes(path, what, "npz")
    if not data.startswith(b"PK\x03\x04"):
        kind = "a single .npy array" if data.startswith(b"\x93NUMPY") else f"a file starting with {data[:8]!r}"
        raise InputError(f"{os.fspath(path)}: not an .npz archive ({kind}); pass the .npz written by np.savez "
                         "(e.g. a result's pointmaps.npz)")
    try:
        _check_npz_sizes(data, path)
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except InputError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(f"{os.fspath(path)}: holds object (pickled) arrays, which are never loaded; save "
                             "plain numeric arrays with np.savez") from e
        raise InputError(f"{os.fspath(path)}: not a readable .npz archive ({e}); save the arrays with np.savez") \
            from e
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(f"{os.fspath(path)}: truncated or corrupt .npz archive ({type(e).__name__}: {e}); write "
                         "it again") from e


def load_npy_checked(path: PathLike, what: str = "array") -> np.ndarray:
    """One .npy array, every failure an InputError naming the file: missing, not an .npy, a header that steers the
    reader (object / pickled dtype, Fortran order) or declares more data than the file holds (never allocated)."""
    data = _read_input_bytes(path, what, "npz")
    name = os.fspath(path)
    if not data.startswith(b"\x93NUMPY"):
        kind = "an .npz archive" if data.startswith(b"PK\x03\x04") else f"a file starting with {data[:8]!r}"
        raise InputError(f"{name}: not an .npy array ({kind}); save one array with np.save")
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise ValueError(f"format version {version}")
        shape, fortran, dtype = read_header(buf, max_header_size=10_000)
    except (ValueError, SyntaxError, TypeError) as e:
        raise InputError(f"{name}: not a readable .npy header ({e}); save the array with np.save") from e
    if dtype.hasobject or dtype.kind not in "biuf" or fortran:
        raise InputError(f"{name}: dtype {dtype}{' in Fortran order' if fortran else ''} is not a plain numeric "
                         "C-order array (object arrays are never unpickled); save it with np.save")
    count = int(np.prod(shape, dtype=np.int64))
    if count * dtype.itemsize != len(data) - buf.tell():
        raise InputError(f"{name}: the header declares shape {tuple(shape)} {dtype} ({count * dtype.itemsize} bytes) "
                         f"but the file holds {len(data) - buf.tell()}; the file is truncated or damaged")
    return np.frombuffer(data, dtype, count, offset=buf.tell()).reshape(shape).copy()


#: An .npz may unpack to at most this multiple of its file size (or 256 MiB, whichever is more): compressed
#: members (np.savez_compressed) may not inflate without bound.
NPZ_INFLATION = 64


def _check_npz_sizes(data: bytes, path: PathLike) -> None:
    """Refuses an .npz whose members would allocate more than the file can hold: a member's array header declaring
    more bytes than the member has, or members inflating past ``NPZ_INFLATION`` x the file size."""
    import zipfile

    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = z.infolist()
        total = sum(i.file_size for i in infos)
        cap = max(256 * 2**20, NPZ_INFLATION * len(data))
        if total > cap:
            raise InputError(f"{os.fspath(path)}: its arrays unpack to {total} bytes, over {cap} ({NPZ_INFLATION}x "
                             "the file); save it with np.savez (uncompressed) or check where it came from")
        for info in infos:
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0(f))
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > info.file_size:
                    raise InputError(f"{os.fspath(path)}: member {info.filename} declares {shape} {dtype} "
                                     f"({need} bytes) but holds {info.file_size}; the file is damaged: write it "
                                     "again")


def read_mask(path: PathLike) -> np.ndarray:
    """A mask PNG (any mode) -> (H, W) bool, True where the (first channel of the) pixel is non-zero."""
    from PIL import Image

    with Image.open(io.BytesIO(read_bytes(path, "image", what="mask"))) as im:
        arr = np.asarray(im)
    return (arr[..., 0] if arr.ndim == 3 else arr) > 0


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W) bool/uint8 or (H, W, 3) uint8 -> PNG file bytes (bool masks become 0/255)."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: PathLike, image: np.ndarray) -> Path | epath.Path:
    """(H, W) bool/uint8 or (H, W, 3) uint8 -> PNG file (bool masks are written as 0/255), atomically."""
    return atomic_write_bytes(path, png_bytes(image))


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


def mp4_bytes(frames: np.ndarray, fps: int = 24, codec: str = "libx264") -> bytes:
    """(T, H, W, 3) uint8 -> mp4 file bytes, yuv420p; an odd H or W loses its last row / column (yuv420p needs
    even sizes). The lossy codec changes pixel values: for viewing, not for data."""
    import av

    frames = np.asarray(frames, np.uint8)
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
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
    return buf.getvalue()


def write_video(path: PathLike, frames: np.ndarray, fps: int = 24, codec: str = "libx264") -> Path | epath.Path:
    """(T, H, W, 3) uint8 -> mp4 file (:func:`mp4_bytes`), atomically."""
    return atomic_write_bytes(path, mp4_bytes(frames, fps, codec))
