"""Reading and writing media and arrays: images (PNG/JPEG), mp4 videos, .npy/.npz arrays and JSON.

Reads go through ``etils.epath`` (local paths and ``gs://`` alike). Every writer is atomic: a local file is
written to a temporary sibling, synced and renamed over the target with ``os.replace``, so a reader never sees a
half-written output; a remote object store (``gs://``) makes the one upload atomic itself. Parent folders are
created. Images use Pillow and videos PyAV (FFmpeg), both imported lazily so the rest of the package works without
them; every decode error surfaces as an exception.

A folder of outputs is published as a unit by :func:`publish_dir` (written into a hidden temporary sibling, then
renamed over the target), so a killed writer leaves the previous complete result or none.

Frames are (T, H, W, 3) uint8 RGB; images (H, W, 3) uint8 RGB (masks (H, W) bool). Readers of user input raise
:class:`~fourdnex_jax.utils.errors.InputError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np
from etils import epath

from fourdnex_jax.utils.errors import InputError, OutputExistsError
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


def check_output_dir(path: PathLike, overwrite: bool = False, *, flag: str = "--out") -> Path:
    """Checks that ``path`` can receive a result published by :func:`publish_dir` (call it before any work):
    a file there, or a non-empty folder without ``overwrite``, raises
    :class:`~fourdnex_jax.utils.errors.InputError` / :class:`~fourdnex_jax.utils.errors.OutputExistsError`."""
    path = Path(path)
    if path.is_file() or (path.exists() and not path.is_dir()):
        raise InputError(f"{flag} {path}: is a file, not a folder; pass a folder path (it is created)")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"{flag} {path}: already holds a result; it is kept: pass --overwrite to replace it "
                                "(overwrite=True in Python) or choose another folder")
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, not a folder; choose another path")
            break
    return path


def _remove_stale(path: Path) -> None:
    """Temporary / retired siblings of ``path`` left by a killed publish (hidden names, never a result)."""
    import shutil

    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in path.parent.glob(f".{path.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def publish_dir(path: PathLike, overwrite: bool = False, *, flag: str = "--out") -> Iterator[Path]:
    """Writes a folder as a unit: yields a fresh hidden sibling ``.NAME.tmp-XXXX`` to write into; on a clean exit it
    is fsynced and renamed to ``path``. So ``path`` holds either the previous complete result or the new complete
    one, never a mix, whatever point a kill -9 hits (between the two renames of an overwrite ``path`` is briefly
    absent: none rather than a mix). The previous result is kept unless ``overwrite`` (checked first, by
    :func:`check_output_dir`); on an exception the temporary folder is removed and ``path`` is untouched. A
    local path only."""
    with cleanup_region():  # Ctrl-C here unwinds, so the temporary folder is removed (utils/interrupts.py)
        with _publish_dir(path, overwrite, flag) as tmp:
            yield tmp


@contextlib.contextmanager
def _publish_dir(path: PathLike, overwrite: bool, flag: str) -> Iterator[Path]:
    import shutil

    final = check_output_dir(path, overwrite, flag=flag)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp creates 0700; the published folder gets ordinary permissions
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            retired = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
            os.replace(final, retired / "result")
            os.replace(tmp, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root`` on disk before the publishing rename (so a power loss cannot publish
    a folder of empty files)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


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
    return epath.Path(path).read_bytes()


def load_npy(path: PathLike) -> np.ndarray:
    """One .npy array (``allow_pickle=False``)."""
    return np.load(io.BytesIO(_bytes(path)), allow_pickle=False)


def load_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays of an .npz, fully read (so a truncated member fails here, not later)."""
    with np.load(io.BytesIO(_bytes(path)), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


#: Background a transparent pixel is composited over (white, as image-to-3D inputs with a cut-out object expect).
ALPHA_BACKGROUND = (255, 255, 255)


def _read_input_bytes(path: PathLike, what: str) -> bytes:
    try:
        data = _bytes(path)
    except FileNotFoundError as e:
        raise InputError(f"{os.fspath(path)}: no such {what} file; check the path") from e
    except IsADirectoryError as e:
        raise InputError(f"{os.fspath(path)}: is a folder, not a {what} file; pass the file itself") from e
    except PermissionError as e:
        raise InputError(f"{os.fspath(path)}: cannot read the {what} file (permission denied); fix its "
                         "permissions") from e
    if not data:
        raise InputError(f"{os.fspath(path)}: the {what} file is empty; re-export it")
    return data


def image_to_rgb8(im) -> np.ndarray:
    """A decoded Pillow image in any mode -> (H, W, 3) uint8 RGB: 16-bit greyscale (``I;16*``, ``I``) scaled by
    255/65535 (rounded), palette / LA / RGBA / transparent images composited over :data:`ALPHA_BACKGROUND`, every
    other mode (L, 1, CMYK, YCbCr, 48-bit RGB, which Pillow reads as 8-bit) through Pillow's RGB conversion."""
    from PIL import Image

    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        grey = np.asarray(im).astype(np.float64)
        grey = np.round(np.clip(grey, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
    if mode == "F":
        raise InputError("32-bit float images are not read (their range is unknown); convert to 8/16-bit PNG, or "
                         "pass an array in [0, 1] to the Python API")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGBA", im.size, (*ALPHA_BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(bg, im).convert("RGB"))
    return np.asarray(im.convert("RGB"))


def read_image(path: PathLike) -> np.ndarray:
    """PNG/JPEG (any mode) -> (H, W, 3) uint8 RGB, EXIF orientation applied (:func:`image_to_rgb8` says how each
    mode converts). A missing, empty, truncated or undecodable file raises
    :class:`~fourdnex_jax.utils.errors.InputError` naming it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    data = _read_input_bytes(path, "image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a truncated file fails here, not half-way through a later resize
            oriented = ImageOps.exif_transpose(im)
            return image_to_rgb8(oriented)
    except InputError as e:
        raise InputError(f"{os.fspath(path)}: {e}") from e
    except UnidentifiedImageError as e:
        raise InputError(f"{os.fspath(path)}: not a PNG/JPEG image (unrecognised content, {len(data)} bytes); pass "
                         "an image file") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{os.fspath(path)}: not a readable PNG/JPEG image ({type(e).__name__}: {e}); re-export "
                         "it or pass another file") from e


def check_image(path: PathLike) -> tuple[int, int]:
    """Decodes ``path`` fully (as :func:`read_image`) and returns its (H, W); raises InputError like it."""
    return read_image(path).shape[:2]


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

    data = _read_input_bytes(path, what)
    if not data.startswith(b"PK\x03\x04"):
        kind = "a single .npy array" if data.startswith(b"\x93NUMPY") else f"a file starting with {data[:8]!r}"
        raise InputError(f"{os.fspath(path)}: not an .npz archive ({kind}); pass the .npz written by np.savez "
                         "(e.g. a result's pointmaps.npz)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise InputError(f"{os.fspath(path)}: holds object (pickled) arrays, which are never loaded; save "
                             "plain numeric arrays with np.savez") from e
        raise InputError(f"{os.fspath(path)}: not a readable .npz archive ({e}); save the arrays with np.savez") \
            from e
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise InputError(f"{os.fspath(path)}: truncated or corrupt .npz archive ({type(e).__name__}: {e}); write "
                         "it again") from e


def read_mask(path: PathLike) -> np.ndarray:
    """A mask PNG (any mode) -> (H, W) bool, True where the (first channel of the) pixel is non-zero."""
    from PIL import Image

    with Image.open(io.BytesIO(_bytes(path))) as im:
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
