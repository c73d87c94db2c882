"""Multi-head dot-product attention behind one interface.

Shapes: q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype. No masks: Wan attends over every
token (self-attention), all 512 text tokens and all 257 CLIP tokens (cross-attention).

Implementations:
  * ``xla``: the reference. Logits, softmax and the weighted sum in fp32, one rounding at the end (what torch's
    CPU SDPA does for bf16 inputs).
  * ``chunked``: the same math over query chunks (``lax.map`` + checkpoint), so the (Lq, Lk) logits of one chunk
    only are live: needed at 35,100 tokens, where full logits are ~5 GB per head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(jnp.float32)).astype(q.dtype)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "xla",
                          chunk_size: int = 1024) -> jax.Array:
    if implementation == "xla":
        return _attend(q, k, v)
    if implementation == "chunked":
        b, lq, h, d = q.shape
        if lq <= chunk_size:
            return _attend(q, k, v)
        n = -(-lq // chunk_size)
        pad = n * chunk_size - lq  # padded query rows are computed and dropped; keys are never padded
        qc = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0))).reshape(b, n, chunk_size, h, d).swapaxes(0, 1)
        out = jax.lax.map(jax.checkpoint(lambda qi: _attend(qi, k, v)), qc)
        return out.swapaxes(0, 1).reshape(b, n * chunk_size, h, d)[:, :lq]
    if implementation == "ring":
        from fourdnex_jax.ops.context_parallel import ring_attention

        return ring_attention(q, k, v, chunk_size=chunk_size)
    raise ValueError(f"unknown attention implementation {implementation!r}; use 'xla', 'chunked' or 'ring'")
