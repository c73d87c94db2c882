"""UMT5 encoder (transformers ``UMT5EncoderModel``) in Flax NNX, and Wan's prompt-embedding step.

Shapes: ``input_ids`` / ``attention_mask`` (B, L) integer; outputs (B, L, d_model). The residual stream is kept in
fp32 (identical to transformers in fp32; in bf16 runs transformers also ends up with an fp32 stream because it keeps
``wo`` in fp32). Attention logits, position bias and softmax are fp32. UMT5 does not scale ``q . k`` by
``1/sqrt(d_kv)`` (the scale is folded into the trained weights) and gives every layer its own relative position bias
table. Layers are stacked on a leading 'layers' axis and run with ``jax.lax.scan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.models.layers import Axes, Dense, make_param
from fourdnex_jax.models.stacking import scan_layers, stack_layers
from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.models.text_encoder.tokenizer import clean_prompt

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),  # transformers' NewGELU: tanh approximation
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}

_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


class T5LayerNorm(nnx.Module):
    """T5's scale-only RMS norm over the last axis: ``scale * x * rsqrt(mean(x^2) + eps)``, no mean, no bias.

    Written here rather than reusing ``layers.RMSNorm`` because the dtypes differ: transformers' ``UMT5LayerNorm``
    returns the *weight's* dtype (it rounds the normalised fp32 value to a half-precision weight's dtype, else keeps
    fp32), whereas ``RMSNorm`` returns the input's dtype. Both agree when input and weight share a dtype; they differ
    for an fp32 residual stream with bf16 weights, which is exactly the bf16 UMT5 case.
    """

    def __init__(self, dim: int, *, eps: float, param_dtype: jnp.dtype = jnp.float32, axes: Axes = ("embed",)):
        self.eps = eps
        self.scale = make_param(nnx.initializers.ones, None, (dim,), param_dtype, axes)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        w = self.scale[...]
        if w.dtype in _HALF:
            y = y.astype(w.dtype)
        return w * y


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 bucket index of ``key_pos - query_pos``, shape (query_length, key_length), int32.

    Half the buckets encode the sign; of each half, the first ``num_buckets // 4`` are exact distances and the rest
    are log-spaced up to ``max_distance``. Computed in numpy float32 with the same operation order as transformers
    (fp32 log, divide by an fp32-rounded ``log(max_distance / max_exact)``, truncate), so bucket edges that fall
    exactly on an integer distance round the same way."""
    if num_buckets < 4:
        raise ValueError(f"relative_attention_num_buckets must be >= 4, got {num_buckets}")
    rel = np.arange(key_length, dtype=np.int64)[None, :] - np.arange(query_length, dtype=np.int64)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    dist = np.abs(rel)
    max_exact = half // 2
    # Clamp below at max_exact only to keep log() finite; those entries take the exact branch anyway.
    ratio = np.maximum(dist, max_exact).astype(np.float32) / np.float32(max_exact)
    log_ratio = np.log(ratio) / np.float32(math.log(max_distance / max_exact))
    log_ratio = log_ratio * np.float32(half - max_exact)
    large = np.minimum(max_exact + log_ratio.astype(np.int64), half - 1)
    buckets = buckets + np.where(dist < max_exact, dist, large)
    return buckets.astype(np.int32)


class UMT5Attention(nnx.Module):
    """Bidirectional self-attention with a learned per-layer relative position bias.

    x (B, L, d_model), buckets (L, L) int, key_mask (B, L) bool (False = padding key) -> (B, L, d_model)."""

    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype: jnp.dtype, compute_dtype: jnp.dtype | None):
        d, inner = config.d_model, config.inner_dim
        self.num_heads, self.head_dim = config.num_heads, config.d_kv
        dense = dict(rngs=rngs, use_bias=False, param_dtype=param_dtype, compute_dtype=compute_dtype)
        self.q = Dense(d, inner, axes=("embed", "heads"), **dense)
        self.k = Dense(d, inner, axes=("embed", "heads"), **dense)
        self.v = Dense(d, inner, axes=("embed", "heads"), **dense)
        self.o = Dense(inner, d, axes=("heads", "embed"), **dense)
        self.relative_attention_bias = make_param(
            nnx.initializers.normal(d ** -0.5), rngs.params(),
            (config.relative_attention_num_buckets, config.num_heads), param_dtype, ("relpos_buckets", "heads"))

    def __call__(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array) -> jax.Array:
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, n, self.num_heads, self.head_dim)
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        bias = jnp.take(self.relative_attention_bias[...].astype(jnp.float32), buckets, axis=0)  # (q, k, heads)
        logits = logits + jnp.transpose(bias, (2, 0, 1))[None]
        # Padding keys get the dtype minimum, as transformers' additive mask does; queries are never fully masked
        # because every prompt keeps at least its EOS token.
        logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return self.o(out.astype(v.dtype).reshape(b, n, self.num_heads * self.head_dim))


class UMT5FeedForward(nnx.Module):
    """T5 FFN: ``wo(act(wi_0 x) * wi_1 x)`` when gated, else ``wo(act(wi x))``. (B, L, d_model) -> same."""

    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype: jnp.dtype, compute_dtype: jnp.dtype | None):
        d, f = config.d_model, config.d_ff
        dense = dict(rngs=rngs, use_bias=False, param_dtype=param_dtype, compute_dtype=compute_dtype)
        self.act = ACTIVATIONS[config.activation]
        self.gated = config.is_gated
        if self.gated:
            self.wi_0 = Dense(d, f, axes=("embed", "mlp"), **dense)
            self.wi_1 = Dense(d, f, axes=("embed", "mlp"), **dense)
        else:
            self.wi = Dense(d, f, axes=("embed", "mlp"), **dense)
        self.wo = Dense(f, d, axes=("mlp", "embed"), **dense)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(h)


class UMT5Block(nnx.Module):
    """Pre-norm residual block: ``x += attn(norm(x)); x += ffn(norm(x))``. x (B, L, d_model) fp32 -> same."""

    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype: jnp.dtype, compute_dtype: jnp.dtype | None):
        kw = dict(param_dtype=param_dtype, compute_dtype=compute_dtype)
        self.attn_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon, param_dtype=param_dtype)
        self.attn = UMT5Attention(config, rngs=rngs, **kw)
        self.ffn_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon, param_dtype=param_dtype)
        self.ffn = UMT5FeedForward(config, rngs=rngs, **kw)
        self.compute_dtype = compute_dtype

    def _in(self, y: jax.Array) -> jax.Array:
        return y if self.compute_dtype is None else y.astype(self.compute_dtype)

    def __call__(self, x: jax.Array, buckets: jax.Array, key_mask: jax.Array) -> jax.Array:
        x = x + self.attn(self._in(self.attn_norm(x)), buckets, key_mask).astype(x.dtype)
        return x + self.ffn(self._in(self.ffn_norm(x))).astype(x.dtype)


class UMT5Encoder(nnx.Module):
    """``UMT5EncoderModel``: token embedding, ``num_layers`` blocks, final norm.

    ``param_dtype`` is the storage dtype; ``compute_dtype`` (default: fp32) the dtype of matmul inputs. Parity with
    transformers is exact up to float rounding in fp32; bf16 follows the same recipe but not transformers' choice of
    keeping ``wo`` in fp32."""

    def __init__(self, config: UMT5Config, *, rngs: nnx.Rngs, param_dtype: jnp.dtype = jnp.float32,
                 compute_dtype: jnp.dtype | None = None):
        self.config = config
        self.token_embedding = make_param(nnx.initializers.normal(1.0), rngs.params(),
                                          (config.vocab_size, config.d_model), param_dtype, ("vocab", "embed"))
        self.blocks = stack_layers(
            lambda r: UMT5Block(config, rngs=r, param_dtype=param_dtype, compute_dtype=compute_dtype),
            config.num_layers, rngs)
        self.final_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon, param_dtype=param_dtype)
        # the blocks' weights may live in host memory, each brought to the device a block ahead (models.streaming)
        self.stream_blocks = False

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """input_ids, attention_mask (B, L) (mask 1 = real token, 0 = padding) -> last hidden state (B, L, d_model).

        Padding positions are computed too (they attend to the real tokens), as in transformers."""
        n = input_ids.shape[1]
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        key_mask = attention_mask > 0
        cfg = self.config
        buckets = jnp.asarray(relative_position_buckets(n, n, cfg.relative_attention_num_buckets,
                                                        cfg.relative_attention_max_distance))
        x = jnp.take(self.token_embedding[...], input_ids, axis=0).astype(jnp.float32)
        x = scan_layers(self.blocks, x, buckets, key_mask, stream=self.stream_blocks)
        return self.final_norm(x)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Alias of ``__call__``: (B, L) ids and mask -> (B, L, d_model)."""
        return self(input_ids, attention_mask)


def wan_prompt_embeds(model: UMT5Encoder, input_ids: jax.Array, attention_mask: jax.Array,
                      dtype: jnp.dtype | None = None) -> jax.Array:
    """The encoder half of diffusers' ``WanPipeline._get_t5_prompt_embeds`` (ids already padded to 512).

    (B, L) ids and mask -> (B, L, D): encode *with* the mask, cast to ``dtype``, then zero every position at or
    past the prompt's real length ``sum(mask)``, so the DiT's cross-attention sees exact zeros there."""
    emb = model(input_ids, attention_mask)
    if dtype is not None:
        emb = emb.astype(dtype)
    seq_lens = jnp.sum(attention_mask > 0, axis=1)
    keep = jnp.arange(input_ids.shape[1])[None, :] < seq_lens[:, None]
    return jnp.where(keep[..., None], emb, jnp.zeros((), emb.dtype))


def encode_prompts(model: UMT5Encoder, tokenizer, prompts: str | list[str], max_sequence_length: int = 512,
                   dtype: jnp.dtype | None = None) -> jax.Array:
    """Whole ``_get_t5_prompt_embeds``: clean and tokenize ``prompts`` (padding/truncating to
    ``max_sequence_length``, which must stay 512 for Wan I2V), encode, zero past each prompt's length.

    ``tokenizer`` is a :class:`fourdnex_jax.models.text_encoder.tokenizer.UMT5Tokenizer`. Returns (B, 512, D)."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    ids, mask = tokenizer([clean_prompt(p) for p in prompts], max_length=max_sequence_length)
    return wan_prompt_embeds(model, jnp.asarray(ids), jnp.asarray(mask), dtype)
