"""The one safetensors implementation: a lazy, torch-free reader and a streaming sharded writer.

Reading (:class:`SafetensorsSource`): a :class:`~fourdnex_jax.models.mapping.TensorSource` over a diffusers /
transformers model folder (``<name>.safetensors`` or the shards of ``<name>.safetensors.index.json``,
``{"weight_map": {key: shard_file}}``). Headers are parsed and validated up front (8-byte little-endian header
length, JSON header naming each tensor once, integer shapes and offsets inside the file, byte counts equal to shape
x itemsize, no overlaps; every listed shard
present and holding exactly the keys the index assigns to it), so a truncated or corrupt shard is named, in a
:class:`CheckpointFileError`, before any work. Tensor data is read lazily, one tensor per
:meth:`~SafetensorsSource.get`, with plain ``read`` calls into fresh numpy buffers (bf16 as ``ml_dtypes.bfloat16``,
bit-exact), never memory-mapped: pages of a mapping would count towards resident memory for as long as the mapping
lives, a plain read costs only the tensor itself. :meth:`SafetensorsSource.iter_file_order` walks each file once from
start to end, so the sha256
of every source file is computed on the bytes the conversion reads anyway (no second pass over 33 GB).

Writing (:class:`ShardedSafetensorsWriter`): the header of every shard is planned from the list of (key, shape,
dtype) before any data is written, then tensors are appended one at a time; shards are written under temporary
names and renamed when complete, the index (``weight_map`` + ``metadata.total_size``, as diffusers writes it) last.

One dtype table (:data:`DTYPES`) serves both directions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.utils.files import read_json, read_text

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn), "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
DTYPE_NAMES: dict[np.dtype, str] = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 2**20  # the safetensors format's own limit
_READ_BLOCK = 64 * 2**20


class CheckpointFileError(ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names it."""


def model_files(directory: str | os.PathLike, name: str) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a model folder and the index's ``weight_map`` (None for a single file).

    Raises :class:`CheckpointFileError` for a missing folder/file, an unreadable index or a listed shard that does
    not exist."""
    directory = Path(directory)
    index = directory / f"{name}.safetensors.index.json"
    single = directory / f"{name}.safetensors"
    if index.exists():
        try:
            read_json(index, what="safetensors index", fix="download the folder again")  # file and JSON checks
            # parsed again to refuse a tensor named twice (plain JSON keeps the last one silently)
            weight_map = json.loads(read_text(index, "json", what="safetensors index"),
                                    object_pairs_hook=_unique_keys)["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, _DuplicateKey, KeyError, TypeError, AttributeError) as e:
            raise CheckpointFileError(f"{index} is not a valid safetensors index (need a 'weight_map'): {e}") from e
        missing = [s for s in shards if not (directory / s).exists()]
        if missing:
            raise CheckpointFileError(f"{index} lists {len(missing)} shard(s) that do not exist: {missing}")
        return [directory / s for s in shards], weight_map
    if single.exists():
        return [single], None
    raise CheckpointFileError(f"no {name}.safetensors or {name}.safetensors.index.json in {directory}")


def check_index(directory: str | os.PathLike, name: str, weight_map: dict[str, str], where: dict[str, Path]) -> None:
    """Raises unless every tensor sits in the shard the index names and the index lists every tensor
    (``where``: tensor key -> the shard file it was found in)."""
    directory = Path(directory)
    wrong = sorted(k for k, s in weight_map.items() if where.get(k) != directory / s)
    extra = sorted(set(where) - set(weight_map))
    if wrong or extra:
        raise CheckpointFileError(f"{directory / (name + '.safetensors.index.json')} disagrees with the shards' "
                                  f"contents: {len(wrong)} key(s) not where the index says {wrong[:10]}, "
                                  f"{len(extra)} not in the index {extra[:10]}")


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: absolute byte ``start`` and ``nbytes`` in ``file``."""

    key: str
    file: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    start: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class FileHeader:
    path: Path
    size: int
    header_bytes: int  # 8 + JSON length: where tensor data starts
    metadata: dict[str, str]
    entries: tuple[TensorEntry, ...]  # sorted by start


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """``json.loads`` hook: a JSON object naming one key twice is an error (plain ``json`` keeps the last)."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path: str | os.PathLike) -> FileHeader:
    """Parses and validates a safetensors header; raises :class:`CheckpointFileError` naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if not stat.S_ISREG(path.stat().st_mode):  # a pipe would block, a device stream without end
            raise CheckpointFileError(f"{path}: not a regular file (a pipe, device or folder); pass the .safetensors "
                                      "file itself")
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointFileError(f"{path} ({size} bytes) is too short to be a safetensors file (truncated?)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER or 8 + n > size:
                raise CheckpointFileError(f"{path} ({size} bytes) declares a {n}-byte header: the file is truncated "
                                          "or not a safetensors file; download or convert it again")
            raw = f.read(n)
    except FileNotFoundError as e:
        raise CheckpointFileError(f"checkpoint file not found: {path}") from e
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except _DuplicateKey as e:
        raise CheckpointFileError(f"{path}: the safetensors header names {e.args[0]!r} twice (which one is meant "
                                  "is undefined: readers disagree); the file is corrupt or forged: download or "
                                  "convert it again") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointFileError(f"{path}: corrupt safetensors header ({e}); download or convert it again") from e
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointFileError(f"{path}: the safetensors __metadata__ is not a map of strings; download or "
                                  "convert it again")
    data_start = 8 + n
    entries, problems = [], []
    for key, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape, offsets = info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(_is_int(s) for s in shape) and isinstance(offsets, list)
                    and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
                raise ValueError("shape and data_offsets must be lists of integers")
            shape = tuple(shape)
            begin, end = offsets
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{key}: malformed entry {str(info)[:200]} ({e})")
            continue
        if any(d < 0 for d in shape):
            problems.append(f"{key}: negative dimension in shape {shape}")
            continue
        want = math.prod(shape) * dtype.itemsize
        if end - begin != want or begin < 0:
            problems.append(f"{key}: offsets {begin}..{end} do not hold {shape} {dtype} ({want} bytes)")
        elif data_start + end > size:
            problems.append(f"{key}: data ends at byte {data_start + end} but the file has {size} bytes (truncated)")
        entries.append(TensorEntry(key, path, shape, dtype, data_start + begin, want))
    entries.sort(key=lambda e: e.start)
    for a, b in zip(entries, entries[1:]):
        if b.start < a.start + a.nbytes:
            problems.append(f"{a.key} and {b.key} overlap")
    if problems:
        more = [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        raise CheckpointFileError(f"{path} ({size} bytes) is corrupt or truncated; download or convert it again:\n  - "
                                  + "\n  - ".join(problems[:10] + more))
    return FileHeader(path, size, data_start, dict(metadata), tuple(entries))


def _read_into(f, buf: np.ndarray, path: Path) -> None:
    view = memoryview(buf).cast("B")
    got = 0
    while got < len(view):
        n = f.readinto(view[got:got + _READ_BLOCK])
        if not n:
            raise CheckpointFileError(f"{path}: unexpected end of file (truncated while reading)")
        got += n


class SafetensorsSource:
    """See the module docstring. Implements the ``TensorSource`` protocol (``keys``/``shape``/``dtype``/``get``)."""

    def __init__(self, files: Iterable[str | os.PathLike]):
        self.headers: dict[Path, FileHeader] = {}
        self._entries: dict[str, TensorEntry] = {}
        for f in files:
            header = read_header(f)
            self.headers[header.path] = header
            for e in header.entries:
                if e.key in self._entries:
                    raise CheckpointFileError(f"tensor {e.key!r} appears in both {self._entries[e.key].file} and "
                                              f"{e.file}")
                self._entries[e.key] = e

    @classmethod
    def from_model_dir(cls, directory: str | os.PathLike, name: str = "diffusion_pytorch_model"
                       ) -> SafetensorsSource:
        """Opens ``directory/<name>.safetensors`` or the shards listed in ``directory/<name>.safetensors.index.json``
        (every listed shard must exist and hold exactly the keys the index assigns to it)."""
        files, weight_map = model_files(directory, name)
        source = cls(files)
        if weight_map is not None:
            check_index(directory, name, weight_map, {k: e.file for k, e in source._entries.items()})
        return source

    # --- TensorSource -----------------------------------------------------------------------------------------
    @property
    def files(self) -> list[Path]:
        return list(self.headers)

    def keys(self) -> Iterable[str]:
        return self._entries.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self._entries[key].shape

    def dtype(self, key: str) -> np.dtype:
        return self._entries[key].dtype

    def get(self, key: str) -> np.ndarray:
        e = self._entries[key]
        buf = np.empty(e.nbytes, np.uint8)
        with open(e.file, "rb", buffering=0) as f:
            f.seek(e.start)
            _read_into(f, buf, e.file)
        return buf.view(e.dtype).reshape(e.shape)

    @property
    def total_bytes(self) -> int:
        return sum(h.size for h in self.headers.values())

    # --- streaming ----------------------------------------------------------------------------------------------
    def iter_file_order(self, hashes: dict[str, str] | None = None,
                        on_bytes: Callable[[int], None] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """Yields ``(key, array)`` for every tensor, file by file in on-disk order, reading each file exactly once
        from its first to its last byte. ``hashes[str(path)]`` receives the file's sha256 once it has been read
        completely (only if the caller consumes the whole iterator). Each yielded array is a fresh buffer."""
        for path, header in self.headers.items():
            digest = hashlib.sha256()
            with open(path, "rb", buffering=0) as f:
                pos = 0

                def advance_to(target: int) -> None:  # read (and hash) bytes that hold no tensor: header, padding
                    nonlocal pos
                    if target > pos:
                        gap = np.empty(target - pos, np.uint8)
                        _read_into(f, gap, path)
                        digest.update(memoryview(gap))
                        pos = target

                advance_to(header.header_bytes)
                for e in header.entries:
                    advance_to(e.start)
                    buf = np.empty(e.nbytes, np.uint8)
                    _read_into(f, buf, path)
                    digest.update(memoryview(buf))
                    pos += e.nbytes
                    if on_bytes:
                        on_bytes(e.nbytes)
                    yield e.key, buf.view(e.dtype).reshape(e.shape)
                advance_to(header.size)
            if hashes is not None:
                hashes[str(path)] = digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
def _header_bytes(entries: Sequence[tuple[str, tuple[int, ...], np.dtype]], metadata: Mapping[str, str]) -> bytes:
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for key, shape, dtype in entries:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        header[key] = {"dtype": DTYPE_NAMES[np.dtype(dtype)], "shape": list(shape),
                       "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # tensor data 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(raw)) + raw


class ShardedSafetensorsWriter:
    """Writes ``entries`` (key, shape, dtype), in that order, into ``<name>.safetensors`` or, when they exceed
    ``max_shard_bytes``, into ``<name>-0000i-of-0000n.safetensors`` + ``<name>.safetensors.index.json``.
    Call :meth:`write` once per entry in order, then :meth:`close`."""

    def __init__(self, directory: str | os.PathLike, name: str,
                 entries: Sequence[tuple[str, tuple[int, ...], np.dtype]], *, max_shard_bytes: int = 5 * 2**30,
                 metadata: Mapping[str, str] | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.metadata = {"format": "pt", **(metadata or {})}
        unknown = sorted({str(np.dtype(d)) for _, _, d in entries if np.dtype(d) not in DTYPE_NAMES})
        if unknown:
            raise ValueError(f"dtypes {unknown} have no safetensors name")
        shards: list[list] = [[]]
        size = 0
        for key, shape, dtype in entries:
            n = math.prod(shape) * np.dtype(dtype).itemsize
            if shards[-1] and size + n > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append((key, tuple(shape), np.dtype(dtype)))
            size += n
        count = len(shards)
        self.shard_names = ([f"{name}.safetensors"] if count == 1 else
                            [f"{name}-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)])
        self._plan = [(fname, shard) for fname, shard in zip(self.shard_names, shards)]
        self._order = [(fname, key, shape, dtype) for fname, shard in self._plan for key, shape, dtype in shard]
        self._next = 0
        self._file = None
        self._current = None
        self.bytes_written = 0

    def _tmp(self, fname: str) -> Path:
        return self.directory / f".{fname}.tmp"

    def _open(self, fname: str) -> None:
        self._finish_file()
        shard = dict(self._plan)[fname]
        self._file = open(self._tmp(fname), "wb")
        self._file.write(_header_bytes(shard, self.metadata))
        self._current = fname

    def _finish_file(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def write(self, key: str, array: np.ndarray) -> None:
        if self._next >= len(self._order):
            raise ValueError(f"all planned tensors were written; unexpected {key!r}")
        fname, want_key, shape, dtype = self._order[self._next]
        array = np.asarray(array)
        if key != want_key or tuple(array.shape) != shape or array.dtype != dtype:
            raise ValueError(f"expected {want_key} {shape} {dtype} next, got {key} {array.shape} {array.dtype}")
        if fname != self._current:
            self._open(fname)
        self._file.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
        self.bytes_written += array.nbytes
        self._next += 1

    def close(self) -> list[Path]:
        """Checks completeness, renames the shards into place and writes the index; returns the files written."""
        if self._next != len(self._order):
            missing = [k for _, k, _, _ in self._order[self._next:]]
            raise ValueError(f"{len(missing)} planned tensor(s) never written: {missing[:10]}")
        if not self._order:
            self._open(self.shard_names[0])
        self._finish_file()
        out = []
        for fname in self.shard_names:
            os.replace(self._tmp(fname), self.directory / fname)
            out.append(self.directory / fname)
        if len(self.shard_names) > 1:
            total = sum(math.prod(s) * d.itemsize for _, _, s, d in self._order)
            out.append(atomic_save_json(self.directory / f"{self.name}.safetensors.index.json",
                                        {"metadata": {"total_size": total},
                                         "weight_map": {k: f for f, k, _, _ in self._order}}))
        return out

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        for fname in self.shard_names:
            self._tmp(fname).unlink(missing_ok=True)
