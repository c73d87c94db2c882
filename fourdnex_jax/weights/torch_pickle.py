"""Torch ``.pt``/``.pth`` files without torch and without executing code: reading (:func:`load_pt`) and writing
(:func:`save_pt`).

Reading. The format ``torch.save`` writes (since torch 1.6) is an uncompressed zip with one top-level folder:
``<archive>/data.pkl`` (a protocol-2 pickle of the object), ``<archive>/data/<key>`` (the raw little-endian bytes of
each storage), ``<archive>/byteorder``, ``<archive>/version``. In the pickle a tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`` where
``storage`` is a persistent id ``('storage', torch.<Type>Storage, key, location, numel)``; an ``nn.Parameter``
wraps that in ``torch._utils._rebuild_parameter``; dicts are ``collections.OrderedDict`` or plain dicts.

:class:`_RestrictedUnpickler` resolves *only* those names, each to a numpy builder defined here; any other global
(``os.system``, ``builtins.eval``, ``torch.nn.Module``, ...) raises :class:`PtFormatError` before anything is
called. Tensors come back as numpy arrays (bf16 as ``ml_dtypes.bfloat16``), bit-exact, strided views resolved.
The legacy (pre-1.6, non-zip) format is refused. What a read allocates is bounded by the file: records must be
stored uncompressed (as ``torch.save`` writes them: no zip bomb), each storage must hold exactly its declared bytes,
and a tensor may not have more elements than its storage (no zero-stride blow-up).

Writing. The zip format ``torch.save`` produces, readable by ``torch.load(path, weights_only=True)`` (and by
:func:`load_pt`). The pickle is emitted opcode by opcode (protocol 2, the opcodes ``torch.save`` itself emits
for a tensor: ``_rebuild_tensor_v2`` with a ``('storage', torch.<Type>Storage, key, 'cpu', numel)`` persistent id,
contiguous strides, ``requires_grad=False`` and an empty ``OrderedDict`` of hooks). Storage records are 64-byte aligned
like
torch's own writer does (zip extra-field padding), so ``torch.load(..., weights_only=True, mmap=True)`` works too.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import secrets
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from fourdnex_jax.media.io import atomic_write
from fourdnex_jax.utils.files import check_regular


class PtFormatError(ValueError):
    """The file is not a plain-tensor torch zip checkpoint, or it references code we refuse to run."""


STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32), "DoubleStorage": np.dtype(np.float64), "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16), "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16), "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
}


class _StorageType:
    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size, stride, requires_grad=False, hooks=None,
                       metadata=None) -> np.ndarray:
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or offset < 0:
        raise PtFormatError(f"invalid tensor geometry size={size} stride={stride} offset={offset}")
    if 0 in size:
        return np.zeros(size, storage.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage.size:
        raise PtFormatError(f"tensor (size={size}, stride={stride}, offset={offset}) reads past its storage of "
                            f"{storage.size} elements (truncated file?)")
    numel = int(np.prod(size, dtype=object))
    if numel > storage.size:  # overlapping (e.g. zero) strides: a tiny file could ask for any amount of memory
        raise PtFormatError(f"tensor (size={size}, stride={stride}) has {numel} elements but its storage only "
                            f"{storage.size}: overlapping strides are not weights; re-save the tensors contiguously "
                            "(tensor.contiguous()) with torch.save")
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=tuple(s * item for s in stride))
    return np.array(view)  # own, contiguous copy


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None) -> np.ndarray:
    return data


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(io.BytesIO(data))
        self._zip, self._prefix, self._path = archive, prefix, path
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise PtFormatError(f"{self._path}: refusing to load global {module}.{name}: only plain tensors, parameters "
                            "and (Ordered)dicts of them can be read without executing code")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise PtFormatError(f"{self._path}: unsupported persistent id {pid!r}")
        _, stype, key, _location, numel = pid
        if key not in self._storages:
            name = f"{self._prefix}data/{key}"
            try:
                info = self._zip.getinfo(name)
            except KeyError as e:
                raise PtFormatError(f"{self._path}: storage record {name} is missing") from e
            _check_stored(info, self._path)
            raw = self._zip.read(info)
            if len(raw) != int(numel) * stype.dtype.itemsize:
                raise PtFormatError(f"{self._path}: storage {name} has {len(raw)} bytes, expected {numel} x "
                                    f"{stype.dtype} (truncated or corrupt)")
            self._storages[key] = np.frombuffer(raw, stype.dtype)
        return self._storages[key]


def _check_stored(info: zipfile.ZipInfo, path: Path) -> None:
    """``torch.save`` stores its records uncompressed; a compressed record is refused before it is inflated (a
    small file must not decompress into gigabytes), and so is one claiming more bytes than the file holds."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise PtFormatError(f"{path}: record {info.filename} is compressed ({info.compress_type}); torch.save never "
                            "compresses, so this is not a torch checkpoint (or a zip bomb): re-save it with "
                            "torch.save")
    if info.file_size > path.stat().st_size:
        raise PtFormatError(f"{path}: record {info.filename} claims {info.file_size} bytes, more than the file "
                            f"({path.stat().st_size} bytes): truncated or corrupt; download or save it again")


def load_pt(path: str | os.PathLike) -> Any:
    """The object stored in a torch zip checkpoint, tensors as numpy arrays (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    check_regular(path, ".pt")  # a pipe or device is refused, never opened for reading (it would block)
    if not zipfile.is_zipfile(path):
        raise PtFormatError(f"{path} is not a torch zip checkpoint (legacy pre-1.6 format or not a .pt file); "
                            "re-save it with torch.save from torch >= 1.6")
    try:
        with zipfile.ZipFile(path) as archive:
            pkls = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise PtFormatError(f"{path}: expected one <archive>/data.pkl, found {pkls}")
            prefix = pkls[0][: -len("data.pkl")]
            if prefix + "byteorder" in archive.namelist():
                order = archive.read(prefix + "byteorder").decode().strip()
                if order != "little":
                    raise PtFormatError(f"{path}: byte order {order!r} is not supported")
            _check_stored(archive.getinfo(pkls[0]), path)
            unpickler = _RestrictedUnpickler(archive.read(pkls[0]), archive, prefix, path)
            try:
                return unpickler.load()
            except PtFormatError as e:
                if str(path) in str(e):
                    raise
                raise PtFormatError(f"{path}: {e}") from e
            except Exception as e:  # malformed pickle: report, never fall back to a permissive loader
                raise PtFormatError(f"{path}: cannot decode data.pkl: {type(e).__name__}: {e}") from e
    except zipfile.BadZipFile as e:
        raise PtFormatError(f"{path}: corrupt zip archive ({e})") from e


def load_pt_tensor(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """One tensor from a ``.pt`` file holding a bare tensor/parameter or a dict: ``key`` if given, else the dict's
    only entry."""
    obj = load_pt(path)
    if isinstance(obj, np.ndarray):
        return obj
    if isinstance(obj, dict):
        if key is not None and key in obj:
            value = obj[key]
        elif len(obj) == 1:
            value = next(iter(obj.values()))
        else:
            raise PtFormatError(f"{path} holds a dict with keys {sorted(obj)}; expected a single tensor"
                                + (f" or key {key!r}" if key else ""))
        if isinstance(value, np.ndarray):
            return value
    raise PtFormatError(f"{path} does not hold a tensor (got {type(obj).__name__})")


# --------------------------------------------------------------------------------------------------------------
_STORAGE_NAMES = {v: k for k, v in STORAGE_DTYPES.items()}
_ALIGN = 64


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])  # BININT1
    if -2**31 <= n < 2**31:
        return b"J" + struct.pack("<i", n)  # BININT
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _tuple(items: list[bytes]) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _tensor(array: np.ndarray, key: str) -> bytes:
    stype = _STORAGE_NAMES.get(array.dtype)
    if stype is None:
        raise ValueError(f"dtype {array.dtype} has no torch storage type")
    shape = array.shape
    strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
    storage = _tuple([_str("storage"), _global("torch", stype), _str(key), _str("cpu"), _int(array.size)]) + b"Q"
    hooks = _global("collections", "OrderedDict") + b")R"  # OrderedDict()
    args = _tuple([storage, _int(0), _tuple([_int(s) for s in shape]), _tuple([_int(s) for s in strides]),
                   b"\x89", hooks])  # NEWFALSE = requires_grad
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _pickle(obj: np.ndarray | Mapping[str, np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    storages: list[np.ndarray] = []

    def tensor(a) -> bytes:
        a = np.ascontiguousarray(np.asarray(a))
        storages.append(a)
        return _tensor(a, str(len(storages) - 1))

    if isinstance(obj, Mapping):
        body = _global("collections", "OrderedDict") + b")R("  # OrderedDict(), MARK
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"dict keys must be str, got {k!r}")
            body += _str(k) + tensor(v)
        body += b"u"  # SETITEMS
    else:
        body = tensor(obj)
    return b"\x80\x02" + body + b".", storages


def save_pt(path: str | os.PathLike, obj: np.ndarray | Mapping[str, np.ndarray]) -> Path:
    """Writes a numpy array (or a ``{str: array}`` dict, loaded as an ``OrderedDict``) as a torch ``.pt`` file,
    atomically."""
    path = Path(path)
    data, storages = _pickle(obj)
    archive = "archive"
    records = [("data.pkl", data), (".format_version", b"1"), (".storage_alignment", str(_ALIGN).encode()),
               ("byteorder", b"little")]
    records += [(f"data/{i}", a.reshape(-1).view(np.uint8).tobytes()) for i, a in enumerate(storages)]
    records += [("version", b"3\n"), (".data/serialization_id", str(secrets.randbits(128)).encode())]

    def write(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            for name, payload in records:
                info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                if name.startswith("data/"):
                    data_at = z.fp.tell() + 30 + len(info.filename.encode()) + 4
                    pad = -data_at % _ALIGN
                    info.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad  # torch's own padding field id
                z.writestr(info, payload)

    return atomic_write(path, write)
