"""TPU splash attention (Pallas) behind the ``dot_product_attention`` interface.

``splash_attention(q, k, v)`` with q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype; no causal
mask (Wan attends over every token). How the kernel is fed:
  * layout: the kernel is per sample and head-major, q (H, Lq, D), k/v (H, Lk, D); the batch is ``jax.vmap``-ed.
  * scale: the kernel computes ``softmax(q k^T)`` without the 1/sqrt(D) factor, so q is scaled here (in fp32,
    rounded once to q's dtype; exact up to that rounding for bf16 inputs).
  * blocks: q and k/v lengths must be multiples of the (q, kv) block sizes, which must be multiples of 128 (the TPU
    lane width). Defaults: ``min(512, L rounded up to 128)`` per side (35,100 tokens -> 512 with 228 padded rows,
    512 text tokens -> 512, 257 CLIP tokens -> 384). The backward kernels use the same blocks.
  * padding: ``pad_to_blocks`` (shared with ``chunked``) pads q and k/v up to block multiples; padded query rows are
    computed and dropped, padded keys get zero weight through kv segment ids (real keys 0, padded keys 1, every
    query 0), so no query row is ever fully masked.
  * non-TPU backends run the kernel with ``interpret=True`` (Pallas interpreter; slow, for tests only).
  * under a mesh (``jax.set_mesh``) the kernel runs inside ``jax.shard_map``: batch over ``data``/``fsdp`` and heads
    over ``tensor`` where they divide (:func:`~fourdnex_jax.ops.attention.reference.batch_head_axes`), queries over
    ``context`` where the length divides (keys/values are then gathered over ``context``: every device attends its
    query shard to all keys); Pallas kernels cannot be split
    by the SPMD partitioner, so without this every device would run the whole batch.

Numerics: fp32 softmax statistics and accumulation inside the kernel; for bf16 inputs the probabilities are
rounded to bf16 before the P.V matmul (the kernel's choice), so bf16 outputs differ from the ``xla`` reference by
a few bf16 ulps (tested bound in tests/ops/test_attention_backends.py).
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from fourdnex_jax.ops.attention.reference import CONTEXT_AXIS, batch_head_axes, pad_to_blocks, round_up

LANES = 128  # TPU lane width: every splash block size is a multiple of it
DEFAULT_MAX_BLOCK = 512


def default_block_size(length: int, max_block: int = DEFAULT_MAX_BLOCK) -> int:
    """Block size for a sequence of ``length`` tokens: ``length`` rounded up to 128, capped at ``max_block``."""
    return min(max_block, round_up(max(length, 1), LANES))


def _check_block(name: str, block: int) -> int:
    if not isinstance(block, numbers.Integral) or isinstance(block, bool) or block <= 0 or block % LANES:
        raise ValueError(f"splash attention: {name}={block!r} must be a positive multiple of {LANES} (TPU lane "
                         f"width), e.g. {LANES}, {2 * LANES} or {4 * LANES}; pass None to pick it from the length")
    return int(block)


@functools.lru_cache(maxsize=64)
def _kernel(num_heads: int, lq: int, lk: int, block_q: int, block_kv: int, interpret: bool):
    """Splash kernel for padded lengths (``lq``, ``lk``) with a full (non-causal) mask, cached: building it walks
    the block grid in numpy (mask info for the forward, dq and dkv kernels) at trace time. Built under
    ``ensure_compile_time_eval`` so its mask-info arrays are concrete constants, not tracers of the first trace
    that asked for it (a cached tracer would leak into every later trace)."""
    # Imported where used: the kernel's module path has moved between jax releases, and importing the attention
    # package (every backend, e.g. cuDNN on a GPU with a newer jax) must not depend on it.
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    mask = sa.MultiHeadMask([sa.FullMask((lq, lk)) for _ in range(num_heads)])
    blocks = sa.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv,
                           block_q_dkv=block_q, block_kv_dkv=block_kv, block_kv_dkv_compute=block_kv,
                           block_q_dq=block_q, block_kv_dq=block_kv)
    with jax.ensure_compile_time_eval():
        return sa.make_splash_mha_single_device(mask, block_sizes=blocks, interpret=interpret)


def _local_splash(q, k, v, *, block_q: int, block_kv: int, interpret: bool):
    """Splash attention of device-local q (B, Lq, H, D), k/v (B, Lk, H, D): pad, scale, run, unpad."""
    lq, d = q.shape[1], q.shape[-1]
    padded = pad_to_blocks(q, k, v, block_q=block_q, block_kv=block_kv)
    qp = (padded.q.astype(jnp.float32) * d ** -0.5).astype(q.dtype)
    segment_ids = None
    if padded.kv_valid is not None:
        from jax.experimental.pallas.ops.tpu import splash_attention as sa

        segment_ids = sa.SegmentIds(q=jnp.zeros((padded.q.shape[1],), jnp.int32),
                                    kv=jnp.asarray(~padded.kv_valid, jnp.int32))
    kernel = _kernel(q.shape[2], padded.q.shape[1], padded.k.shape[1], block_q, block_kv, interpret)
    heads_major = lambda x: jnp.swapaxes(x, 1, 2)  # (B, L, H, D) <-> (B, H, L, D)
    out = jax.vmap(lambda qi, ki, vi: kernel(qi, ki, vi, segment_ids=segment_ids))(
        heads_major(qp), heads_major(padded.k), heads_major(padded.v))
    return heads_major(out)[:, :lq].astype(q.dtype)


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, block_q: int | None = None,
                     block_kv: int | None = None, interpret: bool | None = None) -> jax.Array:
    """Non-causal multi-head attention with the Pallas TPU splash kernel.

    q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype. ``block_q``/``block_kv``: kernel tile sizes
    (multiples of 128; None = ``default_block_size`` of the device-local query / the key length). ``interpret``:
    None = run the Pallas interpreter on any backend other than TPU.
    """
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    b, lq, h, _ = q.shape
    mesh = jax.sharding.get_abstract_mesh()
    context = None
    if not mesh.empty and CONTEXT_AXIS in mesh.axis_names and mesh.shape[CONTEXT_AXIS] > 1 \
            and lq % mesh.shape[CONTEXT_AXIS] == 0:
        context = CONTEXT_AXIS
    local_lq = lq // mesh.shape[CONTEXT_AXIS] if context else lq
    block_q = _check_block("block_q", block_q) if block_q is not None else default_block_size(local_lq)
    block_kv = _check_block("block_kv", block_kv) if block_kv is not None else default_block_size(k.shape[1])
    local = functools.partial(_local_splash, block_q=block_q, block_kv=block_kv, interpret=interpret)
    if mesh.empty:
        return local(q, k, v)
    batch, heads = batch_head_axes(mesh, b, h)
    q_spec, kv_spec = P(batch, context, heads, None), P(batch, None, heads, None)
    # check_vma=False: the Pallas call carries no varying-manual-axes annotations (as in ring attention).
    return jax.shard_map(local, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                         check_vma=False)(q, k, v)
