"""Multi-head dot-product attention behind one interface.

Shapes: q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype. No masks: Wan attends over every
token (self-attention), all 512 text tokens and all 257 CLIP tokens (cross-attention).

Implementations (``IMPLEMENTATIONS``):
  * ``xla``: the reference. Logits, softmax and the weighted sum in fp32, one rounding at the end (what torch's
    CPU SDPA does for bf16 inputs).
  * ``chunked``: the same math over query chunks (``lax.map`` + checkpoint), so the (Lq, Lk) logits of one chunk
    only are live: needed at 35,100 tokens, where full logits are ~5 GB per head.
  * ``ring``: context-parallel ring attention over the mesh's ``context`` axis (``ops/context_parallel.py``);
    ``chunked`` without such an axis.
  * ``splash``: the Pallas TPU splash kernel (``ops/splash.py``); interpreted (slow) on other backends.
  * ``cudnn``: ``jax.nn.dot_product_attention(implementation='cudnn')``, CUDA GPUs only, bf16/fp16 inputs only.
  * ``auto``: picked at trace time by ``resolve_implementation`` from ``jax.default_backend()``, the mesh and the
    dtype.

Kernels with block-size constraints pad through ``pad_to_blocks`` (the one padding helper): padded query rows are
computed and dropped, padded keys are reported in ``kv_valid`` for the kernel to mask.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fourdnex_jax.ops.context_parallel import CONTEXT_AXIS, ring_attention

IMPLEMENTATIONS = ("xla", "chunked", "ring", "splash", "cudnn", "auto")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


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


def _attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v.astype(jnp.float32)).astype(q.dtype)


def _chunked(q: jax.Array, k: jax.Array, v: jax.Array, chunk_size: int) -> jax.Array:
    b, lq, h, d = q.shape
    if lq <= chunk_size:
        return _attend(q, k, v)
    qp = pad_to_blocks(q, k, v, block_q=chunk_size).q  # keys are never padded here (block_kv=1)
    n = qp.shape[1] // chunk_size
    qc = qp.reshape(b, n, chunk_size, h, d).swapaxes(0, 1)
    out = jax.lax.map(jax.checkpoint(lambda qi: _attend(qi, k, v)), qc)
    return out.swapaxes(0, 1).reshape(b, n * chunk_size, h, d)[:, :lq]


def _cudnn(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    if q.dtype not in CUDNN_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"attention implementation 'cudnn' needs bfloat16 or float16 q/k/v of one dtype; got "
                         f"{q.dtype}/{k.dtype}/{v.dtype}. Run the model with compute_dtype='bfloat16', or use "
                         "'chunked'/'xla' for float32 (or 'auto', which picks one of these by dtype)")
    backend = jax.default_backend()
    if backend != "gpu":
        hint = "'splash'" if backend == "tpu" else "'chunked' (long sequences) or 'xla'"
        raise ValueError(f"attention implementation 'cudnn' needs a CUDA GPU, but the JAX backend is {backend!r}; "
                         f"use {hint} here, or 'auto' to pick from the backend")
    return jax.nn.dot_product_attention(q, k, v, implementation="cudnn")


def _context_size() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    return 1 if mesh.empty or CONTEXT_AXIS not in mesh.axis_names else mesh.shape[CONTEXT_AXIS]


def resolve_implementation(implementation: str, q: jax.Array, k: jax.Array, *, chunk_size: int = 1024) -> str:
    """The concrete implementation that ``implementation`` means for these q (B, Lq, H, D), k (B, Lk, H, D) now.

    ``auto`` (decided at trace time): TPU -> ``splash``; else a mesh ``context`` axis > 1 that divides Lq ->
    ``ring``; else a GPU with bf16/fp16 inputs and head_dim a multiple of 8 up to 128 (what cuDNN's flash kernel
    takes on every architecture) -> ``cudnn``; else ``chunked`` when Lq > ``chunk_size`` (bounded logits memory),
    ``xla`` otherwise. Other names are returned unchanged after validation."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}")
    if implementation != "auto":
        return implementation
    backend = jax.default_backend()
    if backend == "tpu":
        return "splash"
    n = _context_size()
    if n > 1 and q.shape[1] % n == 0:
        return "ring"
    d = q.shape[-1]
    if backend == "gpu" and q.dtype in CUDNN_DTYPES and k.dtype == q.dtype and d % 8 == 0 and d <= 128:
        return "cudnn"
    return "chunked" if q.shape[1] > chunk_size else "xla"


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, implementation: str = "xla",
                          chunk_size: int = 1024, block_q: int | None = None,
                          block_kv: int | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(D)) v per head: q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype.

    ``chunk_size``: query rows per chunk of ``chunked`` (and of ``ring``'s per-device blocks). ``block_q``/
    ``block_kv``: splash tile sizes (multiples of 128; None = from the sequence lengths, see ``ops/splash.py``).
    """
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or (q.shape[0], q.shape[2:]) != (k.shape[0], k.shape[2:]):
        raise ValueError(f"attention expects q (B, Lq, H, D) and k = v (B, Lk, H, D) with equal B, H, D; got "
                         f"q {q.shape}, k {k.shape}, v {v.shape}")
    implementation = resolve_implementation(implementation, q, k, chunk_size=chunk_size)
    if implementation == "xla":
        return _attend(q, k, v)
    if implementation == "chunked":
        return _chunked(q, k, v, chunk_size)
    if implementation == "ring":
        return ring_attention(q, k, v, chunk_size=chunk_size)
    if implementation == "splash":
        # Imported here: it pulls in the Pallas TPU kernels, and it imports this module (pad_to_blocks).
        from fourdnex_jax.ops.splash import splash_attention

        return splash_attention(q, k, v, block_q=block_q, block_kv=block_kv)
    return _cudnn(q, k, v)
