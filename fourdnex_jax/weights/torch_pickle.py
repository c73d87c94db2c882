"""Torch ``.pt``/``.pth`` files without torch and without executing code: reading (:func:`load_pt`) and writing
(:func:`save_pt`).

Reading. The format ``torch.save`` writes (since torch 1.6) is an uncompressed zip with one top-level folder:
``<archive>/data.pkl`` (a protocol-2 pickle of the object), ``<archive>/data/<key>`` (the raw little-endian bytes of
each storage), ``<archive>/byteorder``, ``<archive>/version``. In the pickle a tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`` where
``storage`` is a persistent id ``('storage', torch.<Type>Storage, key, location, numel)``; an ``nn.Parameter``
wraps that in ``torch._utils._rebuild_parameter``; dicts are ``collections.OrderedDict`` or plain dicts.

:class:`_PickleVM` interprets the pickle itself, opcode by opcode (Python's unpickler would call whatever a
global resolves to and set attributes through ``BUILD``): the data opcodes build only builtins; a global resolves
only to a marker of :data:`_GLOBALS` (``torch.<Type>Storage``, the tensor / parameter rebuilds, ``OrderedDict``);
``REDUCE`` runs only this reader's own rebuild of an allowed marker, after checking every argument's type; ``BUILD``
is accepted only on an ``OrderedDict`` this reader created with the ``{'_metadata': ...}`` state of a
``state_dict()``, which is dropped; every other opcode (``INST``, ``OBJ``, ``NEWOBJ``, ``EXT*``, text opcodes, ...)
is refused. Any other global (``os.system``, ``builtins.eval``, ``torch.nn.Module``, ...) raises
:class:`PtFormatError` before anything is called, and so does every other problem of the file (one error type).
Tensors come back as numpy arrays (bf16 as ``ml_dtypes.bfloat16``), bit-exact: a contiguous tensor is a view of its
storage (tensors of one storage share memory, as in torch), a strided one a contiguous copy. The legacy (pre-1.6,
non-zip) format is refused.

Memory is bounded by the file: records must be stored uncompressed (as ``torch.save`` writes them: no zip bomb);
each storage is read once, must hold exactly its declared bytes, and all of them together at most the archive's
size (zip records cannot alias each other's bytes); a tensor may not have more elements than its storage (no
zero-stride blow-up); copies of strided tensors total at most :data:`COPY_FACTOR` x the storages; the objects the
pickle builds are counted (at most :data:`PICKLE_OBJECT_FACTOR` x data.pkl's size + 1 MiB). A parse therefore peaks
at about (1 + COPY_FACTOR) x the file size + PICKLE_OBJECT_FACTOR x data.pkl's size + 1 MiB
(``benchmarks/pt_reader_memory.py`` measures it).

Writing. The zip format ``torch.save`` produces, readable by ``torch.load(path, weights_only=True)`` (and by
:func:`load_pt`). The pickle is emitted opcode by opcode (protocol 2, the opcodes ``torch.save`` itself emits
for a tensor: ``_rebuild_tensor_v2`` with a ``('storage', torch.<Type>Storage, key, 'cpu', numel)`` persistent id,
contiguous strides, ``requires_grad=False`` and an empty ``OrderedDict`` of hooks). Storage records are 64-byte
aligned like torch's own writer does (zip extra-field padding), so ``torch.load(..., weights_only=True,
mmap=True)`` works too.
"""

from __future__ import annotations

import collections
import math
import os
import secrets
import struct
import zipfile
from collections.abc import Callable, Mapping
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
    """What ``torch.<Type>Storage`` resolves to: a marker naming a dtype, usable only inside a persistent id."""

    def __init__(self, name: str):
        self.name, self.dtype = name, STORAGE_DTYPES[name]


class _Reducer:
    """What an allowed global resolves to: a marker the reader's ``REDUCE`` recognises by identity; never called by
    anything else (it has no ``__call__``)."""

    def __init__(self, name: str):
        self.name = name


_REBUILD_TENSOR = _Reducer("torch._utils._rebuild_tensor_v2")
_REBUILD_PARAMETER = _Reducer("torch._utils._rebuild_parameter")
_REBUILD_PARAMETER_STATE = _Reducer("torch._utils._rebuild_parameter_with_state")
_ORDERED_DICT = _Reducer("collections.OrderedDict")
_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_parameter"): _REBUILD_PARAMETER,
    ("torch._utils", "_rebuild_parameter_with_state"): _REBUILD_PARAMETER_STATE,
    ("collections", "OrderedDict"): _ORDERED_DICT,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}

#: Memory a parse may use, stated and enforced (module docstring): Python objects the pickle creates (estimated,
#: cumulative) at most ``PICKLE_OBJECT_FACTOR`` x data.pkl's size + ``PICKLE_OBJECT_SLACK`` bytes; storages at most the
#: archive's own size (each read once, into the buffer its tensors view); copies of non-contiguous tensors at most
#: ``COPY_FACTOR`` x the storages' bytes.
PICKLE_OBJECT_FACTOR = 16
PICKLE_OBJECT_SLACK = 2**20
COPY_FACTOR = 2
MAX_NDIM = 32
#: The opcodes the reader interprets: what ``torch.save`` (protocol 2) emits, plus the harmless data opcodes of
#: protocols 3-5 (bytes, short strings, memoize, frames). Everything else (INST, OBJ, NEWOBJ, EXT*, text opcodes,
#: sets, out-of-band buffers, ...) is refused.
_OPCODES = frozenset(b"\x80\x95.(012N\x88\x89JKM\x8a\x8bGX\x8c\x8dBC\x8e)t\x85\x86\x87]ael}dsuhjqr\x94c\x93RQb")


class _Mark:
    pass


_MARK = _Mark()


class _PickleVM:
    """A pickle interpreter for plain tensor files: data opcodes build only builtins (None, bool, int, float, str,
    bytes, tuple, list, dict); a global resolves only to a marker of :data:`_GLOBALS`; ``REDUCE`` runs only this
    reader's own rebuild of an allowed marker after checking every argument's type; ``BUILD`` is accepted only on
    an ``OrderedDict`` this reader created, with a ``{"_metadata": ...}`` state that is dropped (torch's
    ``state_dict()`` carries it). Nothing in the file can reach an attribute write or a call of anything else.
    Every violation raises :class:`PtFormatError`."""

    def __init__(self, data: bytes, storage: Callable[[tuple], np.ndarray], copy_budget: Callable[[], int]):
        self.data, self.pos = data, 0
        self.storage = storage
        self.copy_budget = copy_budget
        self.budget = PICKLE_OBJECT_FACTOR * len(data) + PICKLE_OBJECT_SLACK
        self.copied = 0
        self.ours: dict[int, collections.OrderedDict] = {}  # OrderedDicts made by REDUCE (kept alive: ids unique)

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PtFormatError("data.pkl ends inside an opcode (truncated)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def _charge(self, nbytes: int) -> None:
        self.budget -= nbytes
        if self.budget < 0:
            raise PtFormatError(f"data.pkl builds more objects than a tensor file of its size can need (more than "
                                f"{PICKLE_OBJECT_FACTOR} x its {len(self.data)} bytes)")

    def _pop_mark(self, stack: list, marks: list) -> list:
        if not marks:
            raise PtFormatError("data.pkl pops a mark that was never set")
        at = marks.pop()
        items = stack[at:]
        del stack[at:]
        return items

    def run(self) -> Any:
        stack: list = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        take, charge = self._take, self._charge
        u32, u64 = struct.Struct("<I"), struct.Struct("<Q")

        def pop():
            if len(stack) <= (marks[-1] if marks else 0):
                raise PtFormatError("data.pkl pops from an empty stack")
            return stack.pop()

        def top():
            if len(stack) <= (marks[-1] if marks else 0):
                raise PtFormatError("data.pkl reads an empty stack")
            return stack[-1]

        while True:
            op = take(1)[0]
            if op not in _OPCODES:
                raise PtFormatError(f"opcode {bytes([op])!r} at byte {self.pos - 1} of data.pkl is not one a "
                                    "plain tensor file uses (it could build or call objects): refused")
            charge(8)
            if op == 0x80:  # PROTO
                if take(1)[0] > 5:
                    raise PtFormatError("unknown pickle protocol")
            elif op == 0x95:  # FRAME: a length hint only
                take(8)
            elif op == ord("."):  # STOP
                if len(stack) != 1 or marks:
                    raise PtFormatError("data.pkl stops with a malformed stack")
                return stack[0]
            elif op == ord("("):
                marks.append(len(stack))
            elif op == ord("0"):
                pop()
            elif op == ord("1"):
                self._pop_mark(stack, marks)
            elif op == ord("2"):
                stack.append(top())
            elif op == ord("N"):
                stack.append(None)
            elif op in (0x88, 0x89):
                stack.append(op == 0x88)
            elif op == ord("J"):
                stack.append(struct.unpack("<i", take(4))[0])
            elif op == ord("K"):
                stack.append(take(1)[0])
            elif op == ord("M"):
                stack.append(struct.unpack("<H", take(2))[0])
            elif op in (0x8A, 0x8B):  # LONG1, LONG4
                n = take(1)[0] if op == 0x8A else u32.unpack(take(4))[0]
                if n > 16:
                    raise PtFormatError(f"a {n}-byte integer in data.pkl")
                stack.append(int.from_bytes(take(n), "little", signed=True))
            elif op == ord("G"):
                stack.append(struct.unpack(">d", take(8))[0])
            elif op in (ord("X"), 0x8C, 0x8D):  # BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
                n = (u32.unpack(take(4))[0] if op == ord("X") else take(1)[0] if op == 0x8C
                     else u64.unpack(take(8))[0])
                raw = take(n)
                charge(64 + 4 * n)
                stack.append(raw.decode("utf-8", "surrogatepass"))
            elif op in (ord("B"), ord("C"), 0x8E):  # BINBYTES, SHORT_BINBYTES, BINBYTES8
                n = (u32.unpack(take(4))[0] if op == ord("B") else take(1)[0] if op == ord("C")
                     else u64.unpack(take(8))[0])
                charge(48 + n)
                stack.append(take(n))
            elif op == ord(")"):
                stack.append(())
            elif op == ord("t"):
                items = self._pop_mark(stack, marks)
                charge(48 + 8 * len(items))
                stack.append(tuple(items))
            elif op in (0x85, 0x86, 0x87):
                n = op - 0x84
                if len(stack) - (marks[-1] if marks else 0) < n:
                    raise PtFormatError("data.pkl builds a tuple from an empty stack")
                items = stack[-n:]
                del stack[-n:]
                charge(48 + 8 * n)
                stack.append(tuple(items))
            elif op == ord("]"):
                charge(64)
                stack.append([])
            elif op == ord("l"):
                items = self._pop_mark(stack, marks)
                charge(64 + 8 * len(items))
                stack.append(items)
            elif op in (ord("a"), ord("e")):
                items = [pop()] if op == ord("a") else self._pop_mark(stack, marks)
                target = top()
                if type(target) is not list:
                    raise PtFormatError(f"data.pkl appends to a {type(target).__name__}")
                charge(8 * len(items))
                target.extend(items)
            elif op == ord("}"):
                charge(64)
                stack.append({})
            elif op == ord("d"):
                items = self._pop_mark(stack, marks)
                charge(64 + 32 * len(items))
                stack.append(self._set_items({}, items))
            elif op in (ord("s"), ord("u")):
                if op == ord("s"):
                    value, key = pop(), pop()
                    items = [key, value]
                else:
                    items = self._pop_mark(stack, marks)
                charge(32 * len(items))
                self._set_items(top(), items)
            elif op in (ord("h"), ord("j")):
                idx = take(1)[0] if op == ord("h") else u32.unpack(take(4))[0]
                if idx not in memo:
                    raise PtFormatError(f"data.pkl reads memo entry {idx} that was never stored")
                stack.append(memo[idx])
            elif op in (ord("q"), ord("r"), 0x94):
                idx = take(1)[0] if op == ord("q") else u32.unpack(take(4))[0] if op == ord("r") else len(memo)
                charge(64)
                memo[idx] = top()
            elif op in (ord("c"), 0x93):  # GLOBAL, STACK_GLOBAL
                if op == ord("c"):
                    module, name = self._line(), self._line()
                else:
                    name, module = pop(), pop()
                    if not (isinstance(module, str) and isinstance(name, str)):
                        raise PtFormatError("data.pkl names a global with a non-string")
                found = _GLOBALS.get((module, name))
                if found is None:
                    raise PtFormatError(f"refusing to load global {module[:80]}.{name[:80]}: only plain tensors, "
                                        "parameters and (Ordered)dicts of them can be read without executing code")
                stack.append(found)
            elif op == ord("Q"):  # BINPERSID
                stack.append(self.storage(pop()))
            elif op == ord("R"):
                args, func = pop(), pop()
                stack.append(self._reduce(func, args))
            elif op == ord("b"):
                state = pop()
                self._build(top(), state)

    def _line(self) -> str:
        end = self.data.find(b"\n", self.pos, self.pos + 256)
        if end < 0:
            raise PtFormatError("data.pkl names a global without a line end")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise PtFormatError("data.pkl names a global with non-ASCII bytes") from e

    @staticmethod
    def _set_items(target: Any, items: list) -> dict:
        if not isinstance(target, dict) or len(items) % 2:
            raise PtFormatError(f"data.pkl sets items on a {type(target).__name__}" if not isinstance(target, dict)
                                else "data.pkl sets an odd number of items")
        for k, v in zip(items[::2], items[1::2]):
            if type(k) not in (str, int):  # no user-defined hashing or comparison, no deep tuple hashes
                raise PtFormatError(f"data.pkl uses a {type(k).__name__} as a dict key; tensor files use strings")
            target[k] = v
        return target

    def _reduce(self, func: Any, args: Any) -> Any:
        if not isinstance(args, tuple):
            raise PtFormatError("data.pkl calls with arguments that are not a tuple")
        if func is _ORDERED_DICT:
            if args:
                raise PtFormatError("data.pkl builds an OrderedDict from arguments; torch.save passes none")
            out = collections.OrderedDict()
            self.ours[id(out)] = out
            return out
        if func is _REBUILD_TENSOR:
            return self._rebuild_tensor(args)
        if func in (_REBUILD_PARAMETER, _REBUILD_PARAMETER_STATE):
            n = 4 if func is _REBUILD_PARAMETER_STATE else 3
            if len(args) != n or not isinstance(args[0], np.ndarray) or not isinstance(args[1], bool) or \
                    not isinstance(args[2], dict):
                raise PtFormatError(f"{func.name}: arguments are not (tensor, bool, dict{', state' if n == 4 else ''})")
            return args[0]
        raise PtFormatError(f"data.pkl calls a {type(func).__name__}: only tensor and OrderedDict rebuilds are "
                            "allowed")

    def _rebuild_tensor(self, args: tuple) -> np.ndarray:
        if len(args) not in (6, 7):
            raise PtFormatError(f"_rebuild_tensor_v2 takes 6 or 7 arguments, data.pkl passes {len(args)}")
        storage, offset, size, stride, requires_grad, hooks = args[:6]
        ints = lambda t: isinstance(t, tuple) and all(type(v) is int for v in t)  # noqa: E731
        if not (isinstance(storage, np.ndarray) and type(offset) is int and ints(size) and ints(stride)
                and isinstance(requires_grad, bool) and isinstance(hooks, dict)
                and (len(args) == 6 or args[6] is None or isinstance(args[6], dict))):
            raise PtFormatError("_rebuild_tensor_v2: arguments are not (storage, int, ints, ints, bool, dict)")
        if len(size) != len(stride) or len(size) > MAX_NDIM or any(s < 0 for s in size + stride) or offset < 0:
            raise PtFormatError(f"invalid tensor geometry size={size} stride={stride} offset={offset}")
        if 0 in size:
            return np.zeros(size, storage.dtype)
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= storage.size:
            raise PtFormatError(f"tensor (size={size}, stride={stride}, offset={offset}) reads past its storage of "
                                f"{storage.size} elements (truncated file?)")
        numel = math.prod(size)
        if numel > storage.size:  # overlapping (e.g. zero) strides: a tiny file could ask for any amount of memory
            raise PtFormatError(f"tensor (size={size}, stride={stride}) has {numel} elements but its storage only "
                                f"{storage.size}: overlapping strides are not weights; re-save the tensors "
                                "contiguously (tensor.contiguous()) with torch.save")
        contiguous = [math.prod(size[i + 1:]) for i in range(len(size))]
        if all(st == c for st, c, n in zip(stride, contiguous, size) if n > 1):
            return storage[offset:offset + numel].reshape(size)  # a view: costs nothing, shares memory like torch
        self.copied += numel * storage.dtype.itemsize
        if self.copied > self.copy_budget():
            raise PtFormatError(f"the tensors' strided views copy {self.copied} bytes, more than {COPY_FACTOR} x the "
                                "storages they view: not a weights file")
        item = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=tuple(s * item for s in stride))
        return np.array(view)  # own, contiguous copy

    def _build(self, target: Any, state: Any) -> None:
        if id(target) not in self.ours or self.ours[id(target)] is not target:
            raise PtFormatError(f"data.pkl sets the state of a {type(target).__name__}: only the OrderedDicts this "
                                "reader built may get one (torch's state_dict _metadata)")
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise PtFormatError("data.pkl sets an OrderedDict state other than {'_metadata': ...}")
        # dropped: the metadata (module versions) means nothing to a reader of tensors


class _Archive:
    """The zip side of a read: storage records, each read at most once into a writable buffer, all together at
    most the archive's size (records cannot alias each other's bytes to multiply memory)."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path, size: int):
        self.zip, self.prefix, self.path, self.size = archive, prefix, path, size
        self.storages: dict[str, np.ndarray] = {}
        self.total = 0

    def storage(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and type(pid[4]) is int):
            raise PtFormatError("unsupported persistent id (expected ('storage', torch.<Type>Storage, key, "
                                "location, numel))")
        _, stype, key, _location, numel = pid
        if key in self.storages:
            if self.storages[key].dtype != stype.dtype or self.storages[key].size != numel:
                raise PtFormatError(f"storage {key} is declared twice with different types or sizes")
            return self.storages[key]
        name = f"{self.prefix}data/{key}"
        try:
            info = self.zip.getinfo(name)
        except KeyError as e:
            raise PtFormatError(f"storage record {name[:200]} is missing") from e
        _check_stored(info, self.path)
        nbytes = numel * stype.dtype.itemsize
        if numel < 0 or info.file_size != nbytes:
            raise PtFormatError(f"storage {name} has {info.file_size} bytes, expected {numel} x {stype.dtype} "
                                "(truncated or corrupt)")
        self.total += nbytes
        if self.total > self.size:
            raise PtFormatError(f"its storages declare {self.total} bytes, more than the archive's {self.size} "
                                "bytes: records overlap (not a torch.save file)")
        buf = bytearray(nbytes)
        with self.zip.open(info) as f:
            if f.readinto(buf) != nbytes:
                raise PtFormatError(f"storage {name} is truncated")
        self.storages[key] = np.frombuffer(buf, stype.dtype)
        return self.storages[key]


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
    """The object stored in a torch zip checkpoint, tensors as numpy arrays (see the module docstring). Any
    problem of the file, whatever it is, raises :class:`PtFormatError` naming it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    check_regular(path, ".pt")  # a pipe or device is refused, never opened for reading (it would block)
    size = path.stat().st_size
    try:
        if not zipfile.is_zipfile(path):
            raise PtFormatError(f"{path} is not a torch zip checkpoint (legacy pre-1.6 format or not a .pt file); "
                                "re-save it with torch.save from torch >= 1.6")
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkls = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
            if len(pkls) != 1:
                raise PtFormatError(f"{path}: expected one <archive>/data.pkl, found {pkls[:5]}")
            prefix = pkls[0][: -len("data.pkl")]
            if prefix + "byteorder" in names:
                info = archive.getinfo(prefix + "byteorder")
                _check_stored(info, path)
                order = archive.read(info)[:16].decode("ascii", "replace").strip()
                if order != "little":
                    raise PtFormatError(f"{path}: byte order {order!r} is not supported")
            info = archive.getinfo(pkls[0])
            _check_stored(info, path)
            store = _Archive(archive, prefix, path, size)
            vm = _PickleVM(archive.read(info), store.storage, lambda: COPY_FACTOR * store.total)
            return vm.run()
    except PtFormatError as e:
        if str(path) in str(e):
            raise
        raise PtFormatError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- a malformed zip or pickle, whatever breaks: one error type
        raise PtFormatError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {str(e)[:200]})") from e


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
            raise PtFormatError(f"{path} holds a dict with keys {sorted(map(str, obj))[:20]}; expected a single tensor"
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
