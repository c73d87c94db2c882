"""Multi-head dot-product attention behind one interface (this module is the dispatcher only).

Shapes: q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D) in q's dtype. No masks: Wan attends over every
token (self-attention), all 512 text tokens and all 257 CLIP tokens (cross-attention).

Implementations (``IMPLEMENTATIONS``), one module each; every backend imports ``reference`` and never this module:
  * ``xla``: the reference (``reference.attend``). Logits, softmax and the weighted sum in fp32, one rounding at
    the end (what torch's CPU SDPA does for bf16 inputs).
  * ``chunked``: the same math over query chunks (``reference.chunked``), so the (Lq, Lk) logits of one chunk
    only are live: needed at 35,100 tokens, where full logits are ~5 GB per head.
  * ``ring``: context-parallel ring attention over the mesh's context axis (``ring.py``); ``chunked`` without
    such an axis.
  * ``splash``: the Pallas TPU splash kernel (``splash.py``); interpreted (slow) on other backends.
  * ``cudnn``: ``jax.nn.dot_product_attention(implementation='cudnn')`` (``cudnn.py``), CUDA GPUs only, bf16/fp16
    inputs only.
  * ``auto``: picked at trace time by ``resolve_implementation`` from ``jax.default_backend()``, the mesh and the
    dtype.

Kernels with block-size constraints pad through ``reference.pad_to_blocks`` (the one padding helper): padded query
rows are computed and dropped, padded keys are reported in ``kv_valid`` for the kernel to mask. Mesh axis names
come from :data:`fourdnex_jax.sharding.MESH_AXES` (``reference.CONTEXT_AXIS`` etc.).
"""

from __future__ import annotations

import jax

from fourdnex_jax.ops.attention.cudnn import CUDNN_DTYPES, cudnn_attention
from fourdnex_jax.ops.attention.reference import attend, chunked, context_size
from fourdnex_jax.ops.attention.ring import ring_attention
from fourdnex_jax.ops.attention.splash import splash_attention

IMPLEMENTATIONS = ("xla", "chunked", "ring", "splash", "cudnn", "auto")


def resolve_implementation(implementation: str, q: jax.Array, k: jax.Array, *, chunk_size: int = 1024) -> str:
    """The concrete implementation that ``implementation`` means for these q (B, Lq, H, D), k (B, Lk, H, D) now.

    ``auto`` (decided at trace time): TPU -> ``splash``; else a mesh context axis > 1 that divides Lq ->
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
    n = context_size()
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
    ``block_kv``: splash tile sizes (multiples of 128; None = from the sequence lengths, see ``splash.py``).
    """
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or (q.shape[0], q.shape[2:]) != (k.shape[0], k.shape[2:]):
        raise ValueError(f"attention expects q (B, Lq, H, D) and k = v (B, Lk, H, D) with equal B, H, D; got "
                         f"q {q.shape}, k {k.shape}, v {v.shape}")
    implementation = resolve_implementation(implementation, q, k, chunk_size=chunk_size)
    if implementation == "xla":
        return attend(q, k, v)
    if implementation == "chunked":
        return chunked(q, k, v, chunk_size)
    if implementation == "ring":
        return ring_attention(q, k, v, chunk_size=chunk_size)
    if implementation == "splash":
        return splash_attention(q, k, v, block_q=block_q, block_kv=block_kv)
    return cudnn_attention(q, k, v)
