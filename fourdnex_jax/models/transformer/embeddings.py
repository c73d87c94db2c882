"""Condition embeddings of the Wan DiT: timestep sinusoid + MLP + 6-way modulation, text and CLIP-image projections.

Parameter names follow diffusers' ``WanTimeTextImageEmbedding`` so the weight table reads one-to-one.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.layers import Dense, LayerNorm
from fourdnex_jax.models.transformer.config import WanTransformerConfig
from fourdnex_jax.sharding import with_logical_constraint


def timestep_sinusoid(timesteps: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """(B,) timesteps -> (B, dim) fp32 ``[cos, sin]`` embedding (diffusers ``Timesteps(flip_sin_to_cos=True,
    downscale_freq_shift=0)``). Timesteps are used in fp32: never rounded to bf16."""
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half
    args = timesteps.astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


def gelu_tanh(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x.astype(jnp.float32), approximate=True).astype(x.dtype)


def gelu_exact(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x.astype(jnp.float32), approximate=False).astype(x.dtype)


def silu(x: jax.Array) -> jax.Array:
    return jax.nn.silu(x.astype(jnp.float32)).astype(x.dtype)


class MLP(nnx.Module):
    """``linear_2(act(linear_1(x)))`` (diffusers ``TimestepEmbedding`` / ``PixArtAlphaTextProjection``)."""

    def __init__(self, din: int, dhidden: int, dout: int, *, act, in_axis: str, param_dtype, compute_dtype,
                 rngs: nnx.Rngs):
        self.act = act
        self.linear_1 = Dense(din, dhidden, axes=(in_axis, "embed"), param_dtype=param_dtype,
                              compute_dtype=compute_dtype, rngs=rngs)
        self.linear_2 = Dense(dhidden, dout, axes=("embed_in", "embed"), param_dtype=param_dtype,
                              compute_dtype=compute_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))


class FeedForward(nnx.Module):
    """``proj_out(act(proj_in(x)))`` (diffusers ``FeedForward``: ``net.0.proj`` and ``net.2``)."""

    def __init__(self, din: int, dhidden: int, dout: int, *, act, in_axis: str = "embed", hidden_axis: str = "mlp",
                 out_axis: str = "embed", param_dtype, compute_dtype, rngs: nnx.Rngs, lora_rank: int = 0,
                 lora_scale: float = 1.0,
                 lora_on: tuple[bool, bool] = (False, False), hidden_activation_axes: tuple | None = None):
        self.act = act
        # logical axes the hidden activation is constrained to under a mesh (None: left to propagation)
        self.hidden_activation_axes = hidden_activation_axes
        self.proj_in = Dense(din, dhidden, axes=(in_axis, hidden_axis), param_dtype=param_dtype,
                             compute_dtype=compute_dtype, rngs=rngs,
                             lora_rank=lora_rank if lora_on[0] else 0, lora_scale=lora_scale)
        self.proj_out = Dense(dhidden, dout, axes=(hidden_axis, out_axis), param_dtype=param_dtype,
                              compute_dtype=compute_dtype, rngs=rngs,
                              lora_rank=lora_rank if lora_on[1] else 0, lora_scale=lora_scale)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.act(self.proj_in(x))
        if self.hidden_activation_axes is not None:
            h = with_logical_constraint(h, self.hidden_activation_axes)
        return self.proj_out(h)


class ImageEmbedding(nnx.Module):
    """CLIP tokens (B, 257, image_dim) -> (B, 257, dim): fp32 LayerNorm, exact-GELU MLP, fp32 LayerNorm."""

    def __init__(self, cfg: WanTransformerConfig, *, rngs: nnx.Rngs):
        dt, ct = cfg.param_jnp_dtype, cfg.compute_jnp_dtype
        self.norm1 = LayerNorm(cfg.image_dim, eps=1e-5, affine=True, axes=("image_embed",))
        self.ff = FeedForward(cfg.image_dim, cfg.image_dim, cfg.dim, act=gelu_exact, in_axis="image_embed",
                              hidden_axis="image_mlp", param_dtype=dt, compute_dtype=ct, rngs=rngs)
        self.norm2 = LayerNorm(cfg.dim, eps=1e-5, affine=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm2(self.ff(self.norm1(x)))


class ConditionEmbedder(nnx.Module):
    """Timestep, text and image conditioning.

    Returns ``temb`` (B, dim) in compute dtype, ``timestep_proj`` (B, 6, dim) (the per-block AdaLN input),
    text (B, Lt, dim) and image (B, Li, dim) context (image None for T2V).
    """

    def __init__(self, cfg: WanTransformerConfig, *, rngs: nnx.Rngs):
        dt, ct = cfg.param_jnp_dtype, cfg.compute_jnp_dtype
        self.freq_dim = cfg.freq_dim
        self.compute_dtype = ct
        # diffusers keeps time_embedder in fp32 (_keep_in_fp32_modules); time_proj follows the model dtype.
        self.time_embedder = MLP(cfg.freq_dim, cfg.dim, cfg.dim, act=silu, in_axis="freq", param_dtype=jnp.float32,
                                 compute_dtype=jnp.float32, rngs=rngs)
        self.time_proj = Dense(cfg.dim, 6 * cfg.dim, axes=("embed_in", "modulation"), param_dtype=dt,
                               compute_dtype=ct, rngs=rngs)
        self.text_embedder = MLP(cfg.text_dim, cfg.dim, cfg.dim, act=gelu_tanh, in_axis="text_embed",
                                 param_dtype=dt, compute_dtype=ct, rngs=rngs)
        self.image_embedder = ImageEmbedding(cfg, rngs=rngs) if cfg.image_dim is not None else None

    def __call__(self, timestep: jax.Array, text: jax.Array, image: jax.Array | None):
        temb = self.time_embedder(timestep_sinusoid(timestep, self.freq_dim)).astype(self.compute_dtype)
        timestep_proj = self.time_proj(silu(temb))
        timestep_proj = timestep_proj.reshape(timestep_proj.shape[0], 6, -1)
        text = self.text_embedder(text.astype(self.compute_dtype))
        if image is not None:
            if self.image_embedder is None:
                raise ValueError("image embeddings given to a text-to-video transformer (image_dim is None)")
            image = self.image_embedder(image.astype(self.compute_dtype))
        elif self.image_embedder is not None:
            raise ValueError("this image-to-video transformer needs image_embeds (CLIP hidden states)")
        return temb, timestep_proj, text, image
