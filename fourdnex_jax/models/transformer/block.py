"""One Wan DiT block: AdaLN self-attention with 3D RoPE, cross-attention (text + CLIP image branch), GELU-tanh FFN.

Numerics follow diffusers' ``WanTransformerBlock`` exactly: the residual stream is kept in the compute dtype,
while norms, the AdaLN modulation (``scale_shift_table + timestep_proj``) and the gated residual adds are computed
in fp32 and rounded once ("fp32 once"); the cross-attention residual is added in the compute dtype, as the
reference does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from fourdnex_jax.models.layers import Dense, LayerNorm, RMSNorm, make_param
from fourdnex_jax.models.transformer.config import WanTransformerConfig
from fourdnex_jax.models.transformer.embeddings import FeedForward, gelu_tanh
from fourdnex_jax.models.transformer.rope import apply_rope
from fourdnex_jax.ops.attention import dot_product_attention
from fourdnex_jax.sharding import with_logical_constraint

# Logical axes of the activations, constrained where sharding propagation alone could replicate them (no-ops
# outside a mesh): the residual stream (B, L, D) and q/k/v (B, L, H, Dh) split over batch x sequence (x heads).
TOKENS = ("batch", "length", None)
QKV = ("batch", "length", "heads", None)
CONTEXT_KV = ("batch", None, "heads", None)  # cross-attention keys/values: short text/CLIP context, not split
FFN_HIDDEN = ("batch", "length", "mlp")

# diffusers module names (inside a block) of every Linear that LoRA may target.
BLOCK_LINEARS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                 "attn2.to_v", "attn2.to_out.0", "attn2.add_k_proj", "attn2.add_v_proj", "ffn.net.0.proj",
                 "ffn.net.2")


def lora_targeted(cfg: WanTransformerConfig, module_name: str) -> bool:
    """peft's rule: a target matches a module whose name equals it or ends with '.' + target."""
    return cfg.lora_rank > 0 and any(module_name == t or module_name.endswith("." + t) for t in cfg.lora_targets)


class Attention(nnx.Module):
    """Wan attention. Self-attention (``cross=False``) rotates q/k with RoPE; cross-attention attends to text and,
    for I2V, separately to CLIP tokens through ``add_k_proj``/``add_v_proj``; the two outputs are summed.

    Q/K RMSNorm spans all heads (dim = heads * head_dim), as ``qk_norm='rms_norm_across_heads'``."""

    def __init__(self, cfg: WanTransformerConfig, name: str, *, cross: bool, rngs: nnx.Rngs):
        d, dt, ct = cfg.dim, cfg.param_jnp_dtype, cfg.compute_jnp_dtype
        self.num_heads = cfg.num_heads
        self.implementation = cfg.attention
        self.chunk_size = cfg.attention_chunk_size

        def dense(proj: str, din: int, axes):
            return Dense(din, d, axes=axes, param_dtype=dt, compute_dtype=ct, rngs=rngs,
                         lora_rank=cfg.lora_rank if lora_targeted(cfg, f"{name}.{proj}") else 0,
                         lora_scale=cfg.lora_scale)

        self.to_q = dense("to_q", d, ("embed", "heads"))
        self.to_k = dense("to_k", d, ("embed", "heads"))
        self.to_v = dense("to_v", d, ("embed", "heads"))
        self.to_out = dense("to_out.0", d, ("heads", "embed"))
        self.norm_q = RMSNorm(d, eps=cfg.eps, param_dtype=dt)
        self.norm_k = RMSNorm(d, eps=cfg.eps, param_dtype=dt)
        if cross and cfg.added_kv_proj_dim is not None:
            self.add_k_proj = dense("add_k_proj", cfg.added_kv_proj_dim, ("embed", "heads"))
            self.add_v_proj = dense("add_v_proj", cfg.added_kv_proj_dim, ("embed", "heads"))
            self.norm_added_k = RMSNorm(d, eps=cfg.eps, param_dtype=dt)
        else:
            self.add_k_proj = self.add_v_proj = self.norm_added_k = None

    def _heads(self, x: jax.Array) -> jax.Array:
        b, l, _ = x.shape
        return x.reshape(b, l, self.num_heads, -1)

    def _attend(self, q, k, v):
        return dot_product_attention(q, k, v, implementation=self.implementation, chunk_size=self.chunk_size)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, image_context: jax.Array | None = None,
                 rope: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
        """x (B, L, D); context (B, Lt, D) for cross-attention (None: self); image_context (B, Li, D);
        rope: (cos, sin) each (L, head_dim/2). Returns (B, L, D)."""
        kv_in = x if context is None else context
        kv_axes = QKV if context is None else CONTEXT_KV
        q = with_logical_constraint(self._heads(self.norm_q(self.to_q(x))), QKV)
        k = with_logical_constraint(self._heads(self.norm_k(self.to_k(kv_in))), kv_axes)
        v = with_logical_constraint(self._heads(self.to_v(kv_in)), kv_axes)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        q, k, v = (checkpoint_name(t, n) for t, n in ((q, "query"), (k, "key"), (v, "value")))
        out = self._attend(q, k, v)
        if image_context is not None and self.add_k_proj is not None:
            k_img = with_logical_constraint(self._heads(self.norm_added_k(self.add_k_proj(image_context))), CONTEXT_KV)
            v_img = with_logical_constraint(self._heads(self.add_v_proj(image_context)), CONTEXT_KV)
            out = out + self._attend(q, k_img, v_img)
        out = checkpoint_name(out, "attention_out")
        b, l = out.shape[:2]
        return self.to_out(out.reshape(b, l, -1))


class WanBlock(nnx.Module):
    """x (B, L, D) -> (B, L, D), modulated by ``timestep_proj`` (B, 6, D)."""

    def __init__(self, cfg: WanTransformerConfig, *, rngs: nnx.Rngs):
        d, dt, ct = cfg.dim, cfg.param_jnp_dtype, cfg.compute_jnp_dtype
        self.norm1 = LayerNorm(d, eps=cfg.eps, affine=False)
        self.attn1 = Attention(cfg, "attn1", cross=False, rngs=rngs)
        self.norm2 = LayerNorm(d, eps=cfg.eps, affine=True) if cfg.cross_attn_norm else None
        self.attn2 = Attention(cfg, "attn2", cross=True, rngs=rngs)
        self.norm3 = LayerNorm(d, eps=cfg.eps, affine=False)
        self.ffn = FeedForward(d, cfg.ffn_dim, d, act=gelu_tanh, param_dtype=dt, compute_dtype=ct, rngs=rngs,
                               hidden_activation_axes=FFN_HIDDEN,
                               lora_rank=cfg.lora_rank, lora_scale=cfg.lora_scale,
                               lora_on=(lora_targeted(cfg, "ffn.net.0.proj"), lora_targeted(cfg, "ffn.net.2")))
        # AdaLN table: kept in fp32 like diffusers (_keep_in_fp32_modules); torch shape (1, 6, D) stored as (6, D).
        self.scale_shift_table = make_param(lambda k, s, t: jax.random.normal(k, s, t) / d ** 0.5, rngs.params(),
                                            (6, d), jnp.float32, ("modulation_table", "embed"))

    def __call__(self, x: jax.Array, text: jax.Array, image: jax.Array | None, timestep_proj: jax.Array,
                 rope: tuple[jax.Array, jax.Array]) -> jax.Array:
        mod = self.scale_shift_table[...][None] + timestep_proj.astype(jnp.float32)  # (B, 6, D) fp32
        shift, scale, gate, c_shift, c_scale, c_gate = (mod[:, i:i + 1] for i in range(6))
        dtype = x.dtype
        x = with_logical_constraint(x, TOKENS)

        h = (self.norm1(x.astype(jnp.float32)) * (1 + scale) + shift).astype(dtype)
        x = (x.astype(jnp.float32) + self.attn1(h, rope=rope) * gate).astype(dtype)

        h = x if self.norm2 is None else self.norm2(x.astype(jnp.float32)).astype(dtype)
        x = x + self.attn2(h, context=text, image_context=image)

        h = (self.norm3(x.astype(jnp.float32)) * (1 + c_scale) + c_shift).astype(dtype)
        x = (x.astype(jnp.float32) + self.ffn(h).astype(jnp.float32) * c_gate).astype(dtype)
        return with_logical_constraint(x, TOKENS)
