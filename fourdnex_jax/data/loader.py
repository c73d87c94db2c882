"""grain input pipelines over the TFDS array_record datasets (``tfds`` data sources, no TensorFlow).

Two datasets:

* :func:`make_dataset` (any dataset, e.g. ``clips6d``): source -> per-host shard (records
  ``process_index::process_count``, so hosts never overlap) -> shuffle by seed (a new permutation every epoch, the
  same for the same seed) -> repeat -> decode (``map``) -> batch.
* :func:`make_train_dataset` (``encoded6d``): global batches that do not depend on the number of hosts. The
  dataset is shuffled by seed and repeated as one stream; optimizer step ``b`` consumes records
  ``b*G ... b*G+G-1`` of it (``G`` = global batch), arranged as ``(grad_accum_steps, micro_batch)``, and host ``p``
  of ``P`` reads only its columns ``[p*m, (p+1)*m)`` of every micro-batch (``m`` = micro_batch / P). So 1 host and 2
  hosts train on identical global batches (tested), and a run can resume on another host count.
  :func:`to_global` assembles the global ``(accum, micro, ...)`` arrays on the mesh.

Iteration (:func:`make_iterator`) uses ``num_threads`` reader threads and optional ``num_workers`` worker
processes (``mp_prefetch``). Resuming: ``it.get_state()`` is a small JSON-able dict; ``set_state`` on a freshly
built iterator continues with exactly the next batch (the trainer stores it with each checkpoint,
:mod:`fourdnex_jax.training.checkpoint`).

Threads vs processes: on the 2-core development machine worker processes are slower (large arrays are copied
through shared memory; see the data benchmark for the measured numbers), so ``num_workers=0`` is the default; use
workers on TPU/GPU hosts with many cores and CPU-heavy decoding. ``mp_prefetch`` needs absl flags to be parsed and
an ``if __name__ == '__main__'`` guard in scripts (workers are spawned); :func:`make_iterator` parses the flags
when needed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import grain
import jax
import numpy as np

from fourdnex_jax.data import schema, tfds_builders


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
    for k in schema.TEXT_KEYS:
        out[k] = _text(out[k])
    return out


def data_source(dataset_dir: str | os.PathLike, split: str = "train"):
    """Random-access source over a built dataset folder (``.../<name>/<config>/<version>``)."""
    return tfds_builders.data_source(dataset_dir, split)


def make_dataset(source, *, batch_size: int, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                 shard_index: int | None = None, shard_count: int | None = None,
                 decode: Callable[[dict], dict] | None = decode_clip, drop_remainder: bool = True) -> grain.MapDataset:
    """A grain MapDataset of batches over a random-access ``source`` (e.g. :func:`data_source`).

    ``shard_index/shard_count`` default to this JAX process's index and count. ``num_epochs=None`` repeats
    forever. Text fields batch into numpy unicode arrays."""
    if shard_index is None or shard_count is None:
        shard_index, shard_count = jax.process_index(), jax.process_count()
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


# -- host-count-invariant global training batches ---------------------------------------------------------------
def micro_layout(global_batch: int, grad_accum_steps: int, process_count: int) -> tuple[int, int]:
    """(micro batch, per-host columns m) with checks."""
    if global_batch % grad_accum_steps:
        raise ValueError(f"global_batch_size {global_batch} is not a multiple of grad_accum_steps {grad_accum_steps}")
    micro = global_batch // grad_accum_steps
    if micro % process_count:
        raise ValueError(f"micro batch {micro} is not a multiple of the process count {process_count}")
    return micro, micro // process_count


def make_train_dataset(source, *, global_batch: int, grad_accum_steps: int = 1, seed: int = 0, text_len: int = 512,
                       process_index: int | None = None, process_count: int | None = None) -> grain.MapDataset:
    """A grain MapDataset whose element ``b`` is this host's part of global step ``b``:
    ``{key: (accum * m, ...)}`` for the :data:`fourdnex_jax.data.schema.BATCH_KEYS` (reshape with
    :func:`to_global`)."""
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    micro, m = micro_layout(global_batch, grad_accum_steps, process_count)
    stream = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
    local = grad_accum_steps * m

    def pick(k: int):
        b, q = divmod(k, local)
        i, r = divmod(q, m)
        return stream[b * global_batch + i * micro + process_index * m + r]

    def decode(ex):
        ex = decode_encoded(ex, text_len)
        return {k: ex[k] for k in schema.BATCH_KEYS}

    n = (2 ** 62 // global_batch) * local
    return grain.MapDataset.range(n).map(pick).map(decode).batch(local, drop_remainder=True)


def to_global(local: Mapping[str, np.ndarray], shardings: Mapping[str, Any], global_batch: int,
              grad_accum_steps: int) -> dict[str, jax.Array]:
    """Host batch ``(accum*m, ...)`` -> global arrays ``(accum, micro, ...)`` sharded on the batch axis."""
    micro = global_batch // grad_accum_steps
    out = {}
    for k, v in local.items():
        v = np.asarray(v).reshape(grad_accum_steps, -1, *v.shape[1:])
        out[k] = jax.make_array_from_process_local_data(shardings[k], v, (grad_accum_steps, micro, *v.shape[2:]))
    return out


def global_batch_shapes(spec: schema.EncodedSpec, global_batch: int, grad_accum_steps: int,
                        text_len: int) -> dict[str, tuple[int, ...]]:
    """Global ``(accum, micro, ...)`` shapes of the :data:`fourdnex_jax.data.schema.BATCH_KEYS` leaves."""
    lead = (grad_accum_steps, global_batch // grad_accum_steps)
    shapes = spec.shapes(text_len)
    return {k: (*lead, *shapes[k]) for k in schema.BATCH_KEYS}


def dataset_spec(dataset_dir: str | os.PathLike) -> schema.EncodedSpec:
    """The :class:`~fourdnex_jax.data.schema.EncodedSpec` of a built ``encoded6d`` dataset folder."""
    import tensorflow_datasets as tfds

    feats = tfds.builder_from_directory(os.fspath(dataset_dir)).info.features
    t, h, w, z = feats["rgb_latent"].shape
    return schema.EncodedSpec(t, h, w, z_dim=z, text_dim=feats["text_embeds"].shape[-1],
                              image_tokens=feats["image_embeds"].shape[0], image_dim=feats["image_embeds"].shape[1],
                              latent_dtype=np.dtype(feats["rgb_latent"].np_dtype).name,
                              embed_dtype=np.dtype(feats["text_embeds"].np_dtype).name)
