"""CLIP vision tower (transformers ``CLIPVisionModel``) in Flax NNX, returning the hidden state Wan conditions on.

Input: normalised images (B, H, W, 3) NHWC with H = W = ``image_size`` (see :mod:`.preprocess`). Output of
:meth:`CLIPVisionTower.__call__`: transformers' ``hidden_states[-2]``, i.e. the residual stream after all but the
last encoder layer (no post-layernorm), (B, 1 + (H/patch)^2, hidden) = (B, 257, 1280) for ViT-H/14 at 224 px.
Only the layers needed are run. The residual stream is fp32; attention logits and softmax are fp32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.layers import Dense, LayerNorm, make_param, torch_linear_init
from fourdnex_jax.models.stacking import scan_layers, stack_layers

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP's sigmoid approximation
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class CLIPVisionEmbeddings(nnx.Module):
    """Non-overlapping patch projection (a stride-``patch`` conv without bias) + class token + learned positions.

    (B, H, W, C) -> (B, 1 + (H/p)*(W/p), hidden); patches in row-major (h, w) order, as torch's ``flatten(2)``."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs, param_dtype: jnp.dtype):
        p, c, d = config.patch_size, config.num_channels, config.hidden_size
        self.patch_size = p
        # (kh, kw, in, out): torch's Conv2d weight (out, in, kh, kw) re-laid-out.
        self.patch_kernel = make_param(torch_linear_init(c * p * p), rngs.params(), (p, p, c, d), param_dtype,
                                       ("conv_h", "conv_w", "conv_in", "embed"))
        self.class_embedding = make_param(nnx.initializers.normal(d ** -0.5), rngs.params(), (d,), param_dtype,
                                          ("embed",))
        self.position_embedding = make_param(nnx.initializers.normal(0.02), rngs.params(), (config.num_positions, d),
                                             param_dtype, ("positions", "embed"))

    def __call__(self, pixels: jax.Array) -> jax.Array:
        b, h, w, c = pixels.shape
        p = self.patch_size
        patches = pixels.reshape(b, h // p, p, w // p, p, c)
        kernel = self.patch_kernel[...]
        x = jnp.einsum("bhpwqc,pqcd->bhwd", patches.astype(kernel.dtype), kernel, preferred_element_type=jnp.float32)
        x = x.reshape(b, (h // p) * (w // p), -1)
        cls = jnp.broadcast_to(self.class_embedding[...].astype(jnp.float32), (b, 1, x.shape[-1]))
        return jnp.concatenate([cls, x], axis=1) + self.position_embedding[...].astype(jnp.float32)[None]


class CLIPAttention(nnx.Module):
    """Multi-head self-attention with biases, logits scaled by ``head_dim**-0.5``. (B, N, D) -> (B, N, D)."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs, param_dtype: jnp.dtype,
                 compute_dtype: jnp.dtype | None):
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        dense = dict(rngs=rngs, param_dtype=param_dtype, compute_dtype=compute_dtype)
        self.q_proj = Dense(d, d, axes=("embed", "heads"), **dense)
        self.k_proj = Dense(d, d, axes=("embed", "heads"), **dense)
        self.v_proj = Dense(d, d, axes=("embed", "heads"), **dense)
        self.out_proj = Dense(d, d, axes=("heads", "embed"), **dense)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, n, self.num_heads, self.head_dim)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) * self.head_dim ** -0.5
        probs = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return self.out_proj(out.astype(v.dtype).reshape(b, n, self.num_heads * self.head_dim))


class CLIPMLP(nnx.Module):
    """``fc2(act(fc1 x))``. (B, N, D) -> (B, N, D)."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs, param_dtype: jnp.dtype,
                 compute_dtype: jnp.dtype | None):
        dense = dict(rngs=rngs, param_dtype=param_dtype, compute_dtype=compute_dtype)
        self.act = ACTIVATIONS[config.hidden_act]
        self.fc1 = Dense(config.hidden_size, config.intermediate_size, axes=("embed", "mlp"), **dense)
        self.fc2 = Dense(config.intermediate_size, config.hidden_size, axes=("mlp", "embed"), **dense)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-norm block: ``x += attn(ln1(x)); x += mlp(ln2(x))``. x (B, N, D) fp32 -> same."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs, param_dtype: jnp.dtype,
                 compute_dtype: jnp.dtype | None):
        kw = dict(rngs=rngs, param_dtype=param_dtype, compute_dtype=compute_dtype)
        self.layer_norm1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, affine=True)
        self.self_attn = CLIPAttention(config, **kw)
        self.layer_norm2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, affine=True)
        self.mlp = CLIPMLP(config, **kw)
        self.compute_dtype = compute_dtype

    def _in(self, y: jax.Array) -> jax.Array:
        return y if self.compute_dtype is None else y.astype(self.compute_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self._in(self.layer_norm1(x))).astype(x.dtype)
        return x + self.mlp(self._in(self.layer_norm2(x))).astype(x.dtype)


class CLIPVisionTower(nnx.Module):
    """``CLIPVisionModel``: embeddings, pre-layernorm, ``num_hidden_layers`` stacked layers, post-layernorm (kept so
    checkpoints load strictly; only :meth:`pooled` uses it).

    ``param_dtype``: storage dtype of the matmul weights and embeddings (layer norms stay fp32);
    ``compute_dtype`` (default fp32): dtype of matmul inputs."""

    def __init__(self, config: CLIPVisionConfig, *, rngs: nnx.Rngs, param_dtype: jnp.dtype = jnp.float32,
                 compute_dtype: jnp.dtype | None = None):
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config, rngs=rngs, param_dtype=param_dtype)
        self.pre_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, affine=True)
        self.layers = stack_layers(
            lambda r: CLIPEncoderLayer(config, rngs=r, param_dtype=param_dtype, compute_dtype=compute_dtype),
            config.num_hidden_layers, rngs)
        self.post_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps, affine=True)

    def hidden_state(self, pixel_values: jax.Array, index: int = -2) -> jax.Array:
        """transformers' ``hidden_states[index]`` (0: embeddings after the pre-layernorm, k: after layer k;
        negative counts from the end, -1 = last layer). (B, H, W, 3) -> (B, N, D) fp32."""
        cfg = self.config
        n = cfg.num_hidden_layers
        if not -(n + 1) <= index <= n:
            raise IndexError(f"hidden state index {index} out of range for {n} layers")
        b, h, w, c = pixel_values.shape
        if (h, w, c) != (cfg.image_size, cfg.image_size, cfg.num_channels):
            raise ValueError(f"expected (B, {cfg.image_size}, {cfg.image_size}, {cfg.num_channels}) NHWC images, "
                             f"got {pixel_values.shape}")
        x = self.pre_layernorm(self.embeddings(pixel_values))
        depth = index % (n + 1)
        return scan_layers(self.layers, x, length=depth) if depth else x

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        """The Wan image embedding: ``hidden_states[-2]``, (B, H, W, 3) -> (B, 257, 1280) for ViT-H/14."""
        return self.hidden_state(pixel_values, -2)

    def pooled(self, pixel_values: jax.Array) -> jax.Array:
        """``pooler_output``: post-layernorm of the last layer's class token, (B, D)."""
        return self.post_layernorm(self.hidden_state(pixel_values, -1)[:, 0])
