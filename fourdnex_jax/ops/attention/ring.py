"""Context-parallel (sequence-sharded) attention: ring attention over the mesh's context axis (``jax.shard_map``).

``ring_attention(q, k, v)`` with q, k, v (B, L, H, D) under a mesh that has a context axis
(:data:`~fourdnex_jax.ops.attention.reference.CONTEXT_AXIS`) of size n > 1:
  * self-attention (Lk == Lq): each device holds L/n queries and L/n keys/values; the key/value blocks travel
    around the ring (``lax.ppermute``, n - 1 hops) while every device accumulates its queries' output with an
    online softmax (running max and sum in fp32), so no device ever holds more than one key block or the
    (L/n x L) logits. Within a block the queries are processed in chunks of ``chunk_size`` under
    ``jax.checkpoint`` (the ``chunked`` implementation's memory bound, per block);
  * cross-attention (text/CLIP keys, Lk != Lq): queries stay sharded, the short keys/values are replicated over
    context; plain chunked attention per device.
Batch is sharded over the mesh's data/fsdp axes and heads over tensor where they divide
(:func:`~fourdnex_jax.ops.attention.reference.batch_head_axes`). The sequence length must divide by n (35,100
tokens: n in 2, 3, 4, 5, 6, 9, 10, 12, 13, ...). Without a mesh, or with a context axis of size 1, this is the
``chunked`` implementation. Numerics equal the ``xla`` reference up to the summation order (fp32 logits/softmax,
one rounding at the end); tested forward and gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from fourdnex_jax.ops.attention.reference import CONTEXT_AXIS, batch_head_axes, chunked


def _block_stats(q, k, v, chunk_size):
    """Unnormalised output (B, Lq, H, D), row max and row sum (B, H, Lq) of q against one key block, fp32."""
    scale = q.shape[-1] ** -0.5

    def one(qc):
        s = jnp.einsum("bqhd,bkhd->bhqk", qc.astype(jnp.float32), k.astype(jnp.float32)) * scale
        m = s.max(-1)
        p = jnp.exp(s - m[..., None])
        return jnp.einsum("bhqk,bkhd->bqhd", p, v.astype(jnp.float32)), m, p.sum(-1)

    b, lq, h, d = q.shape
    if lq <= chunk_size:
        return one(q)
    n = -(-lq // chunk_size)
    pad = n * chunk_size - lq
    qc = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, n, chunk_size, h, d).swapaxes(0, 1)
    o, m, l = jax.lax.map(jax.checkpoint(one), qc)
    o = o.swapaxes(0, 1).reshape(b, n * chunk_size, h, d)[:, :lq]
    m = jnp.moveaxis(m, 0, 2).reshape(b, h, n * chunk_size)[..., :lq]
    l = jnp.moveaxis(l, 0, 2).reshape(b, h, n * chunk_size)[..., :lq]
    return o, m, l


def _local_attention(q, k, v, chunk_size):
    o, _, l = _block_stats(q, k, v, chunk_size)
    return (o / jnp.swapaxes(l, 1, 2)[..., None]).astype(q.dtype)


def _ring_local(q, k, v, *, n, chunk_size):
    perm = [(i, (i + 1) % n) for i in range(n)]

    def step(carry, _):
        o, m, l, k, v = carry
        ob, mb, lb = _block_stats(q, k, v, chunk_size)
        m2 = jnp.maximum(m, mb)
        a, c = jnp.exp(m - m2), jnp.exp(mb - m2)
        o = o * jnp.swapaxes(a, 1, 2)[..., None] + ob * jnp.swapaxes(c, 1, 2)[..., None]
        l = l * a + lb * c
        k, v = jax.lax.ppermute(k, CONTEXT_AXIS, perm), jax.lax.ppermute(v, CONTEXT_AXIS, perm)
        return (o, m2, l, k, v), None

    b, lq, h, d = q.shape
    init = (jnp.zeros((b, lq, h, d), jnp.float32), jnp.full((b, h, lq), -jnp.inf, jnp.float32),
            jnp.zeros((b, h, lq), jnp.float32), k, v)
    (o, _, l, _, _), _ = jax.lax.scan(step, init, None, length=n)
    return (o / jnp.swapaxes(l, 1, 2)[..., None]).astype(q.dtype)


def ring_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, chunk_size: int = 1024) -> jax.Array:
    """q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype, sequence-parallel over the current
    mesh's context axis (module docstring)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or CONTEXT_AXIS not in mesh.axis_names or mesh.shape[CONTEXT_AXIS] == 1:
        return chunked(q, k, v, chunk_size)
    n = mesh.shape[CONTEXT_AXIS]
    b, lq, h, _ = q.shape
    if lq % n:
        raise ValueError(f"ring attention: sequence length {lq} is not divisible by the context axis ({n})")
    batch, heads = batch_head_axes(mesh, b, h)
    q_spec = P(batch, CONTEXT_AXIS, heads, None)
    if k.shape[1] == lq:
        fn = lambda q, k, v: _ring_local(q, k, v, n=n, chunk_size=chunk_size)
        kv_spec = q_spec
    else:
        fn = lambda q, k, v: _local_attention(q, k, v, chunk_size)
        kv_spec = P(batch, None, heads, None)
    return jax.shard_map(fn, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec), out_specs=q_spec,
                         check_vma=False)(q, k, v)
