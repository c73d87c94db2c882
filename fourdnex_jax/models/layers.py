"""Basic NNX layers shared by every model of the package.

Every parameter is created through :func:`make_param`, which attaches its *logical* axis names (``out_sharding``
metadata, e.g. ``('embed', 'heads')``). Sharding rules that map logical names to mesh axes live in the configs and
are applied by the training/inference code; models are never sharded eagerly (``eager_sharding=False``), so they
can be built with or without a mesh and abstractly with ``nnx.eval_shape``.

Dtype conventions (mirroring diffusers' mixed precision):
  * ``param_dtype``: storage dtype of a parameter (bf16 for the frozen base, fp32 for "keep in fp32" modules);
  * ``compute_dtype``: dtype of matmul inputs/outputs; matmuls accumulate in fp32 (``preferred_element_type``) and
    round once, as torch's bf16 GEMMs do;
  * norms always compute in fp32 and return the input dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

Axes = tuple[str | None, ...]
Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def make_param(
    init_fn: Initializer,
    key: jax.Array,
    shape: Sequence[int],
    dtype: jnp.dtype,
    axes: Axes,
    variable_type: type[nnx.Variable] = nnx.Param,
) -> nnx.Variable:
    """Creates a parameter annotated with logical axis names (one per dimension)."""
    if len(axes) != len(shape):
        raise ValueError(f"logical axes {axes} do not match parameter shape {tuple(shape)}")
    return variable_type(init_fn(key, tuple(shape), dtype), out_sharding=tuple(axes), eager_sharding=False)


def torch_linear_init(fan_in: int) -> Initializer:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), the scale of torch's default Linear init."""
    bound = 1.0 / max(fan_in, 1) ** 0.5

    def init(key: jax.Array, shape: Sequence[int], dtype: jnp.dtype) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Dense(nnx.Module):
    """Affine map ``y = x @ kernel + bias`` on the last axis, with an optional LoRA branch.

    Shapes: x (..., in_features) -> y (..., out_features). ``kernel`` is (in_features, out_features), the
    transpose of torch's ``Linear.weight``.

    LoRA (``lora_rank > 0``): ``y += scale * (x @ lora_a) @ lora_b`` computed in fp32 and added to the rounded base
    output, as peft does. ``lora_a`` (in, r) and ``lora_b`` (r, out) are ``nnx.LoRAParam`` in fp32; ``lora_b``
    starts at zero so a fresh adapter is the identity.

    int8 weight-only quantisation (:func:`fourdnex_jax.models.quantize.quantize_int8`): ``kernel`` becomes int8
    (in, out) and ``kernel_scale`` an fp32 (out,) per-output-channel scale (``None`` when not quantised). The
    matmul then runs on the int8 kernel converted to the compute dtype (exact: |q| <= 127) with fp32 accumulation,
    and the scale multiplies the fp32 result: ``y = (x @ q) * scale``, which is ``x @ (q * scale)`` without
    materialising the dequantised kernel (XLA fuses the conversion into the dot).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        axes: Axes,
        rngs: nnx.Rngs,
        use_bias: bool = True,
        param_dtype: jnp.dtype = jnp.float32,
        compute_dtype: jnp.dtype | None = None,
        kernel_init: Initializer | None = None,
        lora_rank: int = 0,
        lora_scale: float = 1.0,
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.compute_dtype = compute_dtype
        self.kernel_scale = nnx.data(None)  # fp32 (out,) once quantised to int8 (fourdnex_jax.models.quantize)
        init = kernel_init or torch_linear_init(in_features)
        self.kernel = make_param(init, rngs.params(), (in_features, out_features), param_dtype, axes)
        self.bias = (
            make_param(torch_linear_init(in_features), rngs.params(), (out_features,), param_dtype, (axes[-1],))
            if use_bias else None
        )
        self.lora_rank = lora_rank
        self.lora_scale = float(lora_scale)
        self.lora_merged = False
        self.merged_fuse_scale = 0.0  # fuse_scale of the merge in effect (see fourdnex_jax.models.lora)
        if lora_rank > 0:
            a_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # torch kaiming(a=sqrt(5))
            self.lora_a = make_param(a_init, rngs.params(), (in_features, lora_rank), jnp.float32,
                                     (axes[0], "lora_rank"), nnx.LoRAParam)
            self.lora_b = make_param(nnx.initializers.zeros, rngs.params(), (lora_rank, out_features), jnp.float32,
                                     ("lora_rank", axes[-1]), nnx.LoRAParam)
        else:
            self.lora_a = self.lora_b = None

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.compute_dtype or x.dtype
        y = jnp.dot(x.astype(dtype), self.kernel[...].astype(dtype), preferred_element_type=jnp.float32)
        if self.kernel_scale is not None:  # int8 kernel: per-output-channel scale on the fp32 accumulator
            y = y * self.kernel_scale[...].astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        y = y.astype(dtype)
        if self.lora_a is not None and not self.lora_merged:
            x32 = x.astype(jnp.float32)
            delta = jnp.dot(jnp.dot(x32, self.lora_a[...]), self.lora_b[...]) * self.lora_scale
            y = (y.astype(jnp.float32) + delta).astype(dtype)
        return y


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis computed in fp32 (diffusers ``FP32LayerNorm``); returns the input dtype.

    ``affine=False`` gives the parameter-free norm used for AdaLN (norm1/norm3/norm_out)."""

    def __init__(self, dim: int, *, eps: float, affine: bool, rngs: nnx.Rngs | None = None,
                 axes: Axes = ("embed",)):
        del rngs
        self.eps = eps
        if affine:
            self.scale = make_param(nnx.initializers.ones, None, (dim,), jnp.float32, axes)
            self.bias = make_param(nnx.initializers.zeros, None, (dim,), jnp.float32, axes)
        else:
            self.scale = self.bias = None

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        if self.scale is not None:
            y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
        return y.astype(x.dtype)


class RMSNorm(nnx.Module):
    """torch ``nn.RMSNorm`` semantics: ``(x * rsqrt(mean(x^2) + eps))`` in fp32, cast to the input dtype, then
    multiplied by ``scale`` in that dtype. In Wan's attention it spans all heads (dim = heads * head_dim)."""

    def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype = jnp.float32, axes: Axes = ("heads",)):
        self.eps = eps
        self.scale = make_param(nnx.initializers.ones, None, (dim,), param_dtype, axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return y.astype(x.dtype) * self.scale[...].astype(x.dtype)
