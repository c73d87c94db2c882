"""Reading torch ``.pt``/``.pth`` files without torch and without executing code.

The format ``torch.save`` writes (since torch 1.6) is an uncompressed zip with one top-level folder:
``<archive>/data.pkl`` (a protocol-2 pickle of the object), ``<archive>/data/<key>`` (the raw little-endian bytes of
each storage), ``<archive>/byteorder``, ``<archive>/version``. In the pickle a tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`` where
``storage`` is a persistent id ``('storage', torch.<Type>Storage, key, location, numel)``; an ``nn.Parameter``
wraps that in ``torch._utils._rebuild_parameter``; dicts are ``collections.OrderedDict`` or plain dicts.

:class:`_RestrictedUnpickler` resolves *only* those names, each to a numpy builder defined here; any other global
(``os.system``, ``builtins.eval``, ``torch.nn.Module``, ...) raises :class:`PtFormatError` before anything is
called. Tensors come back as numpy arrays (bf16 as ``ml_dtypes.bfloat16``), bit-exact, strided views resolved.
The legacy (pre-1.6, non-zip) format is refused.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np


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
                raw = self._zip.read(name)
            except KeyError as e:
                raise PtFormatError(f"{self._path}: storage record {name} is missing") from e
            if len(raw) != int(numel) * stype.dtype.itemsize:
                raise PtFormatError(f"{self._path}: storage {name} has {len(raw)} bytes, expected {numel} x "
                                    f"{stype.dtype} (truncated or corrupt)")
            self._storages[key] = np.frombuffer(raw, stype.dtype)
        return self._storages[key]


def load_pt(path: str | os.PathLike) -> Any:
    """The object stored in a torch zip checkpoint, tensors as numpy arrays (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
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
            unpickler = _RestrictedUnpickler(archive.read(pkls[0]), archive, prefix, path)
            try:
                return unpickler.load()
            except PtFormatError:
                raise
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
