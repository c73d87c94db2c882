"""Merging LoRA into the frozen base weights, and how the reference's two LoRA scales compose.

A LoRA'd :class:`~fourdnex_jax.models.layers.Dense` computes ``x @ W + b + s * (x @ A) @ B`` with
``s = lora_alpha / lora_rank`` (peft's ``scaling``). Merging writes ``W + f * s * A @ B`` into the kernel, where ``f``
is diffusers' ``fuse_lora(lora_scale=f)`` factor (1.0 = merge exactly what training used).

The 4DNeX reference: training uses r=64, alpha=32 (s = 0.5). The released ``pytorch_lora_weights.safetensors`` has
no alpha metadata, so diffusers/peft load it with alpha = r (s = 1.0), and inference calls
``fuse_lora(lora_scale=0.5)``: the effective factor is f * s = 0.5 * 1.0 = 0.5 — the training scale. Loading a file
that *does* carry alpha=32 and fusing at 0.5 would give 0.25. In this package the effective scale is always
``lora_alpha / lora_rank`` of the config (0.5 for 4DNeX), and ``fuse_scale`` defaults to 1.0; to mimic
``fuse_lora(lora_scale=f)`` on a file loaded with scaling s, set alpha/r = s and pass ``fuse_scale=f``.

In bf16, merge followed by unmerge is exact only up to bf16 rounding of the kernel; keep an fp32 copy when that
matters.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.layers import Dense


def lora_layers(model: nnx.Module) -> Iterator[tuple[tuple, Dense]]:
    """(path, Dense) for every Dense with a LoRA branch (stacked block layers appear once, with a layer axis)."""
    for path, module in nnx.iter_modules(model):
        if isinstance(module, Dense) and module.lora_a is not None:
            yield path, module


def _delta(layer: Dense, factor: float) -> jnp.ndarray:
    a, b = layer.lora_a[...], layer.lora_b[...]
    return jnp.einsum("...ir,...ro->...io", a, b) * (layer.lora_scale * factor)


def merge_lora(model: nnx.Module, fuse_scale: float = 1.0) -> int:
    """Adds ``fuse_scale * scale * A @ B`` to each LoRA'd kernel (fp32 math, one rounding) and disables the
    branch. Returns the number of merged layers; merging twice is an error."""
    n = 0
    for path, layer in lora_layers(model):
        if layer.lora_merged:
            raise ValueError(f"LoRA of {path} is already merged")
        k = layer.kernel[...]
        layer.kernel[...] = (k.astype(jnp.float32) + _delta(layer, fuse_scale)).astype(k.dtype)
        layer.lora_merged = True
        layer.merged_fuse_scale = float(fuse_scale)
        n += 1
    return n


def unmerge_lora(model: nnx.Module) -> int:
    """Subtracts what :func:`merge_lora` added and re-enables the LoRA branches."""
    n = 0
    for path, layer in lora_layers(model):
        if not layer.lora_merged:
            raise ValueError(f"LoRA of {path} is not merged")
        k = layer.kernel[...]
        layer.kernel[...] = (k.astype(jnp.float32) - _delta(layer, layer.merged_fuse_scale)).astype(k.dtype)
        layer.lora_merged = False
        n += 1
    return n
