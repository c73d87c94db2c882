"""int8 weight-only quantisation of the Wan DiT's block linears, and its memory figures.

What is quantised: every :class:`~fourdnex_jax.models.layers.Dense` inside the stacked transformer blocks -- the
self-attention projections ``attn1.to_q/to_k/to_v/to_out``, the cross-attention ones ``attn2.to_q/to_k/to_v/to_out``
and ``add_k_proj/add_v_proj`` (I2V), and the FFN ``proj_in/proj_out``: about 99% of the 14B model's weights. Left in
their dtypes: norms, the patch embedding, the condition embedder (timestep MLP, ``time_proj``, text and image
projections), the modulation tables, the output head, LoRA factors (fp32, still applied unmerged next to the int8
kernel) and the domain embeddings.

Scheme: symmetric, per output channel. For a kernel ``w`` (..., in, out) (stacked kernels carry the leading
``layers`` axis), ``scale = max_in |w| / 127`` (..., out) in fp32 (1 where a column is all zero) and
``q = clip(round(w / scale), -127, 127)`` int8, so every weight is off by at most ``scale / 2``. The layer computes
``y = (x @ q) * scale + bias`` (see :class:`~fourdnex_jax.models.layers.Dense`). Both new parameters keep logical
axis names: ``q`` the kernel's (e.g. ``('layers', 'embed', 'heads')``), ``scale`` the kernel's without the input
axis (``('layers', 'heads')``), so the logical axis rules (:mod:`fourdnex_jax.sharding`) place them like the
original.

Memory: :func:`memory_report` counts the parameter bytes of a config's DiT in its parameter dtype and int8-quantised,
from abstract models (``nnx.eval_shape``: nothing is allocated), e.g. Wan2.1-I2V-14B in bf16 vs int8.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.models.layers import Dense
from fourdnex_jax.models.transformer import WanTransformer3D

#: Largest int8 magnitude used (symmetric range; -128 is never produced).
QMAX = 127


@jax.jit
def quantize_kernel(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``kernel`` (..., in, out) any float dtype -> (q int8 (..., in, out), scale fp32 (..., out)) with
    ``kernel ~= q * scale[..., None, :]`` and ``|kernel - q * scale| <= scale / 2`` elementwise."""
    w = kernel.astype(jnp.float32)
    amax = jnp.max(jnp.abs(w), axis=-2)
    scale = jnp.where(amax > 0, amax / QMAX, 1.0)
    q = jnp.clip(jnp.round(w / scale[..., None, :]), -QMAX, QMAX).astype(jnp.int8)
    return q, scale


def dequantize_kernel(q: jax.Array, scale: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """The kernel ``q * scale`` (..., in, out) in ``dtype`` (for tests and inspection; layers never build it)."""
    return (q.astype(jnp.float32) * scale[..., None, :].astype(jnp.float32)).astype(dtype)


def quantizable_layers(model: nnx.Module) -> list[tuple[tuple, Dense]]:
    """``(path, Dense)`` of every linear that :func:`quantize_int8` quantises: the Dense layers under ``blocks``."""
    if not isinstance(getattr(model, "blocks", None), nnx.Module):
        raise TypeError(f"{type(model).__name__} has no stacked 'blocks'; quantize_int8 expects a WanTransformer3D")
    return [(path, m) for path, m in nnx.iter_graph(model)
            if isinstance(m, Dense) and len(path) > 1 and path[0] == "blocks"]


def quantize_int8(model: nnx.Module) -> nnx.Module:
    """An int8 copy of a :class:`~fourdnex_jax.models.transformer.WanTransformer3D` whose block linears are
    quantised (module docstring); ``model`` itself is never modified. Already-quantised layers stay as they are.

    The copy shares every array it does not quantise with ``model`` (JAX arrays are immutable; only the new int8
    kernels and their scales are allocated), so quantising a loaded model costs the int8 bytes, not a second full
    model. Works on concrete models (the arrays are quantised where they live; to fit a card that cannot hold the
    bf16 model, load and quantise on the host first) and inside ``nnx.eval_shape`` (abstract). LoRA must not be
    merged into the kernels: the adapter stays in fp32 and runs unmerged next to the int8 kernel."""
    merged = [".".join(map(str, p)) for p, d in quantizable_layers(model) if d.lora_merged]
    if merged:
        raise ValueError(f"LoRA is merged into {len(merged)} kernel(s) (e.g. {merged[0]}); call "
                         "fourdnex_jax.models.lora.unmerge_lora(model) before quantize_int8 (LoRA stays fp32 and "
                         "unmerged next to the int8 kernel)")
    graphdef, state = nnx.split(model)
    # tree.map rebuilds every Variable around the same array: the copy's Variables are its own, no data copied
    copy = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))
    for _, dense in quantizable_layers(copy):
        quantize_dense(dense)
    return copy


def quantize_dense(dense: Dense) -> bool:
    """Quantises one :class:`Dense` (kernel (..., in, out)) in place: int8 ``kernel`` with the old logical axes,
    fp32 ``kernel_scale`` (..., out) with the kernel's axes minus the input axis. False when already quantised."""
    if dense.kernel_scale is not None:
        return False
    if dense.lora_merged:
        raise ValueError("LoRA is merged into this kernel; unmerge it first (fourdnex_jax.models.lora.unmerge_lora)")
    old = dense.kernel
    axes = tuple(old.get_metadata().get("out_sharding") or (None,) * old.ndim)
    q, scale = quantize_kernel(old[...])
    dense.kernel = nnx.Param(q, out_sharding=axes, eager_sharding=False)
    dense.kernel_scale = nnx.Param(scale, out_sharding=axes[:-2] + axes[-1:], eager_sharding=False)
    return True


# -- memory figures ------------------------------------------------------------------------------------------------
def _bytes_by_group(model: nnx.Module) -> dict[str, Any]:
    """Parameter bytes of an (abstract or concrete) model: ``bytes`` (all ``nnx.Param``, LoRA included),
    ``block_linears_bytes`` (the quantisable kernels, with their scales once quantised), ``other_bytes``,
    ``parameters`` (element count) and ``bytes_per_dtype``."""
    quant = {path + (leaf,) for path, _ in quantizable_layers(model) for leaf in ("kernel", "kernel_scale")}
    per_dtype: dict[str, int] = collections.Counter()
    linears = rest = count = 0
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        n = int(np.prod(var.shape, dtype=np.int64))
        b = n * np.dtype(var.dtype).itemsize
        count += n
        per_dtype[np.dtype(var.dtype).name] += b
        if tuple(path) in quant:
            linears += b
        else:
            rest += b
    return {"bytes": linears + rest, "block_linears_bytes": linears, "other_bytes": rest, "parameters": count,
            "bytes_per_dtype": dict(sorted(per_dtype.items()))}


def memory_report(cfg) -> dict[str, Any]:
    """Parameter bytes of the DiT of ``cfg`` (a ``WanTransformerConfig``) as configured (``param_dtype``; LoRA and
    "keep in fp32" modules in fp32) and with :func:`quantize_int8`, from abstract models only. Keys ``'base'`` and
    ``'int8'`` (each :func:`_bytes_by_group`: ``bytes``, ``block_linears_bytes``, ``other_bytes``,
    ``bytes_per_dtype``), ``'param_dtype'``, ``'quantized_layers'`` and ``'saving'`` (1 - int8 / base)."""
    def build(quantize: bool):
        def make():
            model = WanTransformer3D(cfg, rngs=nnx.Rngs(0))
            return quantize_int8(model) if quantize else model
        return nnx.eval_shape(make)

    base, quant = build(False), build(True)
    rb, rq = _bytes_by_group(base), _bytes_by_group(quant)
    return {"param_dtype": cfg.param_dtype, "base": rb, "int8": rq, "quantized_layers": len(quantizable_layers(quant)),
            "saving": 1.0 - rq["bytes"] / rb["bytes"]}


def format_memory_report(report: dict[str, Any], name: str = "") -> str:
    """A few human-readable lines of :func:`memory_report` (GiB = 2**30 bytes)."""
    g = lambda b: f"{b / 2**30:8.2f} GiB"
    lines = [f"DiT parameter memory{' of ' + name if name else ''} (abstract, nothing allocated):"]
    for key, label in (("base", f"as configured ({report['param_dtype']})"), ("int8", "int8 weight-only")):
        r = report[key]
        lines.append(f"  {label:<28} {g(r['bytes'])}  (block linears {g(r['block_linears_bytes'])}, other "
                     f"{g(r['other_bytes'])})")
    lines.append(f"  saving {100 * report['saving']:.1f}% over {report['quantized_layers']} stacked block linears")
    return "\n".join(lines)
