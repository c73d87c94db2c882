"""grain input pipelines over the TFDS array_record datasets (``tfds`` data sources, no TensorFlow).

:func:`make_dataset` builds, in this order: source -> per-host shard (records ``process_index::process_count``, so
hosts never overlap) -> shuffle by seed (a new permutation every epoch, the same for the same seed) -> repeat ->
decode (``map``) -> batch -> iteration with ``num_threads`` reader threads and optional ``num_workers``
worker processes (``mp_prefetch``).

Resuming: the iterator's state (``it.get_state()`` / ``it.set_state(state)``) is a small dict; saving it with orbax
(:func:`save_iterator` / :func:`restore_iterator`, ``grain.checkpoint.CheckpointSave/Restore`` items of a
``CheckpointManager``) and restoring it into a freshly built iterator continues with exactly the next batch.

Threads vs processes: on the 2-core development machine worker processes are slower (large arrays are copied
through shared memory; see ``tools/data_benchmark.py`` for the measured numbers), so ``num_workers=0`` is the
default; use workers on TPU/GPU hosts with many cores and CPU-heavy decoding. ``mp_prefetch`` needs absl flags to be
parsed and an ``if __name__ == '__main__'`` guard in scripts (workers are spawned); :func:`make_iterator` parses
the flags when needed.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import grain
import numpy as np

from fourdnex_jax.data import tfds_builders


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)


def decode_clip(ex: dict[str, Any]) -> dict[str, Any]:
    """A ``clips6d`` record -> model-ready arrays: ``rgb`` float32 in [-1, 1], ``xyz`` float32 in [-1, 1], masks,
    cameras and normalisation constants unchanged, text fields as str (batched into numpy object-free arrays)."""
    out = dict(ex)
    out["rgb"] = ex["rgb"].astype(np.float32) / 127.5 - 1.0
    out["xyz"] = ex["xyz"].astype(np.float32)
    for k in ("caption", "clip_id", "source", "normalization", "intrinsics_mode", "prompt"):
        if k in out:
            out[k] = _text(out[k])
    return out


def decode_encoded(ex: dict[str, Any], text_len: int = 512) -> dict[str, Any]:
    """An ``encoded6d`` record -> float32 latents and embeddings; ``text_embeds`` zero-padded to ``text_len``
    (Wan's fixed 512-token prompt embedding)."""
    out = {k: (v.astype(np.float32) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
           for k, v in ex.items()}
    emb = out["text_embeds"]
    if emb.shape[0] > text_len:
        raise ValueError(f"text embedding of {emb.shape[0]} tokens exceeds text_len={text_len}")
    out["text_embeds"] = np.concatenate([emb, np.zeros((text_len - emb.shape[0], emb.shape[1]), emb.dtype)])
    for k in ("prompt", "clip_id"):
        out[k] = _text(out[k])
    return out


def host_shard() -> tuple[int, int]:
    """(process_index, process_count) of this host from JAX (0, 1 without ``jax.distributed``)."""
    import jax

    return jax.process_index(), jax.process_count()


def make_dataset(source, *, batch_size: int, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 shard_index: int | None = None, shard_count: int | None = None,
                 decode: Callable[[dict], dict] | None = decode_clip, drop_remainder: bool = True) -> grain.MapDataset:
    """A grain MapDataset of batches over a random-access ``source`` (e.g. :func:`tfds_builders.data_source`).

    ``shard_index/shard_count`` default to this JAX process's index and count. ``num_epochs=None`` repeats
    forever. Text fields batch into numpy unicode arrays."""
    if shard_index is None or shard_count is None:
        shard_index, shard_count = host_shard()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
    ds = grain.MapDataset.source(source)
    ds = ds[shard_index::shard_count]
    if len(ds) == 0:
        raise ValueError(f"host shard {shard_index}/{shard_count} of a {len(source)}-record source is empty")
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if decode is not None:
        ds = ds.map(decode)
    return ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=_batch)


def _batch(examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out = {}
    for k in examples[0]:
        vals = [ex[k] for ex in examples]
        out[k] = np.asarray(vals, dtype=np.str_) if isinstance(vals[0], str) else np.stack(vals)
    return out


def make_iterator(ds: grain.MapDataset, *, num_threads: int = 2, prefetch: int = 4, num_workers: int = 0,
                  worker_buffer: int = 2) -> grain.DatasetIterator:
    """Iterator with ``num_threads`` reader threads, and ``num_workers`` worker processes when > 0."""
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS(["fourdnex_jax"])  # mp_prefetch reads absl flags
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                               per_worker_buffer_size=worker_buffer))
    return iter(it_ds)


def clips_loader(dataset_dir: str | os.PathLike, split: str = "train", **kwargs) -> grain.MapDataset:
    """:func:`make_dataset` over a built ``clips6d`` dataset folder."""
    return make_dataset(tfds_builders.data_source(dataset_dir, split), **kwargs)


# -- orbax --------------------------------------------------------------------------------------------------------
def checkpoint_manager(directory: str | os.PathLike, max_to_keep: int = 2):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(os.fspath(directory), options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=False), item_names=("data",))


def save_iterator(manager, step: int, iterator) -> None:
    """Saves the iterator state as item ``data`` of step ``step`` (one JSON per process)."""
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()


def restore_iterator(manager, iterator, step: int | None = None):
    """Restores the state saved at ``step`` (default: latest) into ``iterator`` (built like the saved one)."""
    import orbax.checkpoint as ocp

    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError("no checkpoint to restore the data iterator from")
    manager.restore(step, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(iterator)))
    return iterator
