"""cuDNN flash attention (CUDA GPUs): ``jax.nn.dot_product_attention(implementation='cudnn')`` behind the
``dot_product_attention`` interface, with errors that name the alternatives.

q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D); bf16/fp16 inputs of one dtype only (:data:`CUDNN_DTYPES`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Input dtypes cuDNN's fused attention takes.
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(D)) v with cuDNN's kernel; raises ValueError off GPU or for other dtypes."""
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
