"""Writing torch ``.pt`` files without torch: the zip format ``torch.save`` produces, readable by
``torch.load(path, weights_only=True)`` (and by :func:`fourdnex_jax.convert.pt_reader.load_pt`).

The pickle is emitted opcode by opcode (protocol 2, the opcodes ``torch.save`` itself emits for a tensor:
``_rebuild_tensor_v2`` with a ``('storage', torch.<Type>Storage, key, 'cpu', numel)`` persistent id, contiguous
strides, ``requires_grad=False`` and an empty ``OrderedDict`` of hooks). Storage records are 64-byte aligned like
torch's own writer does (zip extra-field padding), so ``torch.load(..., weights_only=True, mmap=True)`` works too.
"""

from __future__ import annotations

import os
import secrets
import struct
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from fourdnex_jax.convert.pt_reader import STORAGE_DTYPES
from fourdnex_jax.io_utils import _atomic

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

    return _atomic(path, write)
