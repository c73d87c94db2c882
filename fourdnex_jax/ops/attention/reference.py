"""The reference attention math and the helpers every attention backend shares.

Shapes: q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype; no masks.
  * :func:`attend` (the ``xla`` implementation): logits, softmax and the weighted sum in fp32, one rounding at the
    end (what torch's CPU SDPA does for bf16 inputs);
  * :func:`chunked`: the same math over query chunks (``lax.map`` + checkpoint), so the (Lq, Lk) logits of one
    chunk only are live: needed at 35,100 tokens, where full logits are ~5 GB per head;
  * :func:`pad_to_blocks` (the one padding helper of the block kernels) and :class:`PaddedQKV`;
  * :func:`batch_head_axes`: the mesh axes a ``shard_map`` backend splits batch and heads over. The axis names come
    from :data:`fourdnex_jax.sharding.MESH_AXES`.
Backends (``ring``, ``splash``, ``cudnn``) import this module, never the dispatcher
(:mod:`fourdnex_jax.ops.attention`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fourdnex_jax.sharding import MESH_AXES

#: The mesh axes by role (the names and order of :data:`fourdnex_jax.sharding.MESH_AXES`): batch over data x fsdp,
#: the token sequence over context (ring attention, splash queries), heads over tensor.
DATA_AXIS, FSDP_AXIS, CONTEXT_AXIS, HEAD_AXIS = MESH_AXES
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``n`` (static Python ints)."""
    return -(-n // multiple) * multiple


class PaddedQKV(NamedTuple):
    """q (B, Lq', H, D), k/v (B, Lk', H, D) zero-padded along the sequence axis to block multiples.

    ``kv_valid``: static bool (Lk',), True for real keys; None when no key was padded. Zero keys are NOT neutral
    (their logit is 0, not -inf): a kernel must give every ``~kv_valid`` key zero weight. Padded query rows are
    harmless (each row's softmax is independent); slice the output back to ``[:, :Lq]``."""

    q: jax.Array
    k: jax.Array
    v: jax.Array
    kv_valid: np.ndarray | None


def pad_to_blocks(q: jax.Array, k: jax.Array, v: jax.Array, *, block_q: int, block_kv: int = 1) -> PaddedQKV:
    """Pad q's length (axis 1) to a multiple of ``block_q`` and k/v's to a multiple of ``block_kv`` (1: no key
    padding). Shapes (B, L, H, D); see :class:`PaddedQKV` for the masking contract."""
    pad = lambda x, n: x if n == x.shape[1] else jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
    lk = k.shape[1]
    lk_pad = round_up(lk, block_kv)
    kv_valid = None if lk_pad == lk else np.arange(lk_pad) < lk
    return PaddedQKV(pad(q, round_up(q.shape[1], block_q)), pad(k, lk_pad), pad(v, lk_pad), kv_valid)


def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The ``xla`` reference: softmax(q k^T / sqrt(D)) v in fp32, rounded once to q's dtype."""
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(jnp.float32)).astype(q.dtype)


def chunked(q: jax.Array, k: jax.Array, v: jax.Array, chunk_size: int) -> jax.Array:
    """:func:`attend` over chunks of ``chunk_size`` query rows (each under ``jax.checkpoint``); equal to it up to
    the summation order."""
    b, lq, h, d = q.shape
    if lq <= chunk_size:
        return attend(q, k, v)
    qp = pad_to_blocks(q, k, v, block_q=chunk_size).q  # keys are never padded here (block_kv=1)
    n = qp.shape[1] // chunk_size
    qc = qp.reshape(b, n, chunk_size, h, d).swapaxes(0, 1)
    out = jax.lax.map(jax.checkpoint(lambda qi: attend(qi, k, v)), qc)
    return out.swapaxes(0, 1).reshape(b, n * chunk_size, h, d)[:, :lq]


def context_size() -> int:
    """The size of the current mesh's context axis (1 without a mesh or without that axis)."""
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty or CONTEXT_AXIS not in mesh.axis_names else mesh.shape[CONTEXT_AXIS]


def batch_head_axes(mesh, batch: int, heads: int) -> tuple[tuple[str, ...] | None, str | None]:
    """(batch mesh axes, head mesh axis) for a ``shard_map`` over ``mesh``: the longest prefix of the batch axes
    (size > 1, present in the mesh) whose product divides ``batch``, or None; the head axis when present and it
    divides ``heads``, else None."""
    axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names and mesh.shape[a] > 1)
    while axes and batch % int(np.prod([mesh.shape[a] for a in axes])):
        axes = axes[:-1]
    head = HEAD_AXIS if HEAD_AXIS in mesh.axis_names and heads % mesh.shape[HEAD_AXIS] == 0 else None
    return axes or None, head
