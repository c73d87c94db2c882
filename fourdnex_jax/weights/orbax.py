"""Orbax checkpoints written array slice by array slice, and restored straight into a mesh sharding.

Why a custom orbax ``TypeHandler`` (and not the alternatives):
  * A stacked parameter of the 14B DiT (``blocks/ffn/proj_in/kernel``: 40 x 5120 x 13824 bf16 = 5.7 GB) is larger
    than what the converter may hold (one source shard plus the tensors being written), so it must be written one
    layer at a time. orbax 0.12.8 saves whole leaves only: ``ocp.partial.save`` (experimental v1) adds whole leaves
    to a pending checkpoint and refuses replacements, so it cannot fill one array piecewise.
  * Several orbax checkpoints per model (one per layer) would not restore as one stacked, sharded array; the
    restore would have to concatenate on device (twice the memory) and the layout would differ from what
    training saves.
  * Writing zarr/OCDBT through tensorstore by hand would duplicate orbax's on-disk conventions (``_METADATA``,
    ``_CHECKPOINT_METADATA``, OCDBT process folders, commit marker) and break silently when they change.
  * orbax's documented extension point is the ``TypeHandler``: :class:`_StreamingHandler` subclasses orbax's own
    ``NumpyHandler`` and only replaces *how the bytes get in*: it asks orbax for the array's tensorstore spec
    (``build_array_write_spec``, the same call ``NumpyHandler`` makes) with a write shape of one layer
    ``(1, *rest)`` for stacked arrays (so every chunk belongs to one layer and a layer is written without
    read-modify-write), opens the array, and lets a :class:`Filler` write slices as the source produces them. It
    reports the type string ``np.ndarray``, so ``_METADATA`` is exactly what ``NumpyHandler`` writes and any
    orbax reader (``StandardCheckpointer``, ``CheckpointManager`` items, restore with ``ShapeDtypeStruct``
    targets) restores the result without knowing it was streamed. Everything else (temporary directory, OCDBT
    merge, ``_CHECKPOINT_METADATA``, commit marker, atomic rename) is orbax's own save path. The handler is put in
    a private ``TypeHandlerRegistry`` passed to ``PyTreeCheckpointHandler``; orbax's global registry is untouched.

Restore: :func:`restore_flat` takes ``jax.ShapeDtypeStruct(..., sharding=NamedSharding(mesh, spec))`` targets
(:func:`fourdnex_jax.sharding.sharded_targets` builds them from an abstract NNX state and the logical-axis rules)
and hands them to orbax, whose ``ArrayHandler`` reads each device's shard from tensorstore directly (nothing is
materialised replicated on one device).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from orbax.checkpoint import future as ocp_future
from orbax.checkpoint._src.serialization import ocdbt_utils, type_handlers
from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils
from orbax.checkpoint._src.serialization import type_handler_registry as registry_lib

from fourdnex_jax.utils.tree import flatten, nest
from fourdnex_jax.weights import integrity

#: Bytes of slices handed to tensorstore but not yet written, before the filler waits (bounds host memory).
PENDING_WRITE_BYTES = 512 * 2**20
#: Storage chunk size (orbax ``SaveArgs.chunk_byte_size``). Measured on this 2-core VM: writing 33 MB layer slices
#: into OCDBT reached 0.16 GB/s as one chunk per slice and 0.45 GB/s as 8 MB chunks (tensorstore encodes and writes
#: chunks concurrently); restore is unaffected.
CHUNK_BYTES = 8 * 2**20


class Filler(Protocol):
    """Produces the data of a set of :class:`LazyArray` leaves: ``fill`` writes every slice of every store."""

    async def fill(self, stores: Mapping[str, SliceWriter]) -> None: ...


@dataclasses.dataclass(frozen=True, eq=False)
class LazyArray:
    """A checkpoint leaf whose data a :class:`Filler` writes later. ``path``: '/'-joined parameter path.
    ``stacked``: leading axis = layers, written (and chunked) one layer at a time."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    filler: Filler
    stacked: bool = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class SliceWriter:
    """Writes into one open tensorstore array with a bound on bytes in flight (shared by all writers of a save)."""

    def __init__(self, store: ts.TensorStore, leaf: LazyArray, pending: collections.deque):
        self.store, self.leaf, self._pending = store, leaf, pending
        self.written = 0  # slices (stacked) or whole arrays written

    async def write(self, index: int | None, value: np.ndarray) -> None:
        """``index``: layer of a stacked array (None: the whole array). ``value`` may be a strided view; it must
        not be modified afterwards."""
        want = self.leaf.shape[1:] if index is not None else self.leaf.shape
        if tuple(value.shape) != tuple(want) or np.dtype(value.dtype) != np.dtype(self.leaf.dtype):
            raise ValueError(f"{self.leaf.path}[{index}]: got {value.shape} {value.dtype}, need {want} "
                             f"{self.leaf.dtype}")
        target = self.store if index is None else self.store[index]
        fut = target.write(value, can_reference_source_data_indefinitely=True)
        self._pending.append((fut, value.nbytes))
        self.written += 1
        while sum(n for _, n in self._pending) > PENDING_WRITE_BYTES:
            done, _ = self._pending.popleft()
            await done

    @staticmethod
    async def drain(pending: collections.deque) -> None:
        while pending:
            done, _ = pending.popleft()
            await done

    @property
    def complete(self) -> bool:
        return self.written == (self.leaf.shape[0] if self.leaf.stacked else 1)


class _StreamingHandler(type_handlers.NumpyHandler):
    """See the module docstring."""

    def typestr(self) -> str:
        return "np.ndarray"  # restores as a plain numpy leaf / into any jax.Array target

    async def serialize(self, values: Sequence[LazyArray], infos, args=None):
        args = args or [ocp.SaveArgs()] * len(values)
        return [ocp_future.CommitFutureAwaitingContractedSignals(self._write_all(values, infos, args),
                                                                 name="fourdnex_streaming_handler")]

    async def _write_all(self, values: Sequence[LazyArray], infos, args) -> None:
        pending: collections.deque = collections.deque()
        by_filler: dict[int, tuple[Filler, dict[str, SliceWriter]]] = {}
        for leaf, info, arg in zip(values, infos, args):
            await info.await_path_creation()
            if arg.chunk_byte_size is None:
                arg = dataclasses.replace(arg, chunk_byte_size=CHUNK_BYTES)
            write_shape = (1, *leaf.shape[1:]) if leaf.stacked else tuple(leaf.shape)
            spec = ts_utils.build_array_write_spec(
                info=info, arg=arg, global_shape=tuple(leaf.shape), local_shape=write_shape, dtype=leaf.dtype,
                use_ocdbt=info.is_ocdbt_checkpoint,
                process_index=ocdbt_utils.get_process_index_for_subdir(use_ocdbt=info.is_ocdbt_checkpoint),
                metadata_key=self._metadata_key).json
            store = await ts.open(ts.Spec(spec), create=True, open=True, context=info.ts_context)
            by_filler.setdefault(id(leaf.filler), (leaf.filler, {}))[1][leaf.path] = SliceWriter(store, leaf, pending)
        for filler, writers in by_filler.values():
            await filler.fill(writers)
        await SliceWriter.drain(pending)
        incomplete = [w.leaf.path for _, ws in by_filler.values() for w in ws.values() if not w.complete]
        if incomplete:
            raise RuntimeError(f"the source did not provide all data for {len(incomplete)} array(s): {incomplete[:10]}")


def _registry() -> Any:
    return registry_lib.create_type_handler_registry(*registry_lib._DEFAULT_TYPE_HANDLERS,  # noqa: SLF001 - no API
                                                     (LazyArray, _StreamingHandler()))


# ----------------------------------------------------------------------------------------------------------------
def save_flat(directory: str | os.PathLike, flat: Mapping[str, np.ndarray | LazyArray], *,
              use_compression: bool = False) -> Path:
    """Saves ``{path: numpy array or LazyArray}`` as one orbax PyTree checkpoint at ``directory`` (must not exist).

    Compression is off by default: weights barely compress (bf16 noise-like mantissas) and zstd would cost CPU that
    bounds conversion speed; orbax reads either."""
    directory = Path(directory).absolute()
    handler = ocp.PyTreeCheckpointHandler(type_handler_registry=_registry(), use_compression=use_compression)
    with ocp.Checkpointer(handler) as checkpointer:
        checkpointer.save(directory, args=ocp.args.PyTreeSave(nest(flat)))
    write_file_index(directory)
    return directory


#: The file index (sizes + sha256) that :func:`save_flat` writes next to orbax's own files, checked before a read:
#: :mod:`fourdnex_jax.weights.integrity` (orbax ignores the extra file).
FILE_INDEX = integrity.FILE_INDEX
write_file_index = integrity.write_file_index
file_index_problems = integrity.file_index_problems


def array_metadata(directory: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{path: (shape, dtype)}`` of a checkpoint, from its metadata only."""
    meta = ocp.StandardCheckpointer().metadata(Path(directory).absolute())
    tree = getattr(meta, "item_metadata", meta)
    tree = getattr(tree, "tree", tree)
    return {p: (tuple(m.shape), np.dtype(m.dtype)) for p, m in flatten(tree).items()}


def open_array(directory: str | os.PathLike, path: str) -> ts.TensorStore:
    """Opens one array of a checkpoint for reading (slices can then be read lazily: ``store[i].read().result()``)."""
    name = path.replace("/", ".")
    spec = {"driver": "zarr", "kvstore": ts_utils.build_kvstore_tspec(str(Path(directory).absolute()), name=name,
                                                                      use_ocdbt=True),
            "recheck_cached_data": False, "recheck_cached_metadata": False}
    return ts.open(spec, open=True, read=True, context=ts_utils.get_ts_context(use_ocdbt=True)).result()


def restore_flat(directory: str | os.PathLike, targets: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
    """Restores exactly ``targets`` (paths, shapes and dtypes must match the checkpoint; all problems listed)."""
    directory = Path(directory).absolute()
    stored = array_metadata(directory)
    problems = [f"missing in checkpoint: {p}" for p in sorted(set(targets) - set(stored))]
    problems += [f"not in the model: {p}" for p in sorted(set(stored) - set(targets))]
    for p in sorted(set(stored) & set(targets)):
        shape, dtype = stored[p]
        if shape != tuple(targets[p].shape) or dtype != np.dtype(targets[p].dtype):
            problems.append(f"{p}: checkpoint has {shape} {dtype}, model needs {tuple(targets[p].shape)} "
                            f"{np.dtype(targets[p].dtype)}")
    if problems:
        raise ValueError(f"checkpoint {directory} does not match the model:\n  - " + "\n  - ".join(problems))
    restored = ocp.StandardCheckpointer().restore(directory, nest(targets))
    return flatten(restored)
