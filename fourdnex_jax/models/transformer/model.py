"""The Wan2.1 video DiT (diffusers ``WanTransformer3DModel``, image-to-video form) with the 4DNeX adaptations.

Input/output (NTHWC, one layout inside and out):
  latents (B, T, H, W, in_channels) -> velocity (B, T, H, W, out_channels)
For 4DNeX (``modality_layout='width'``) W is the fused RGB|XYZ latent width and in_channels = 36 = 16 noisy + 4 mask
+ 16 condition channels. ``timestep`` (B,) is used in fp32; ``text_embeds`` (B, Lt, text_dim) (Lt = 512 in Wan);
``image_embeds`` (B, 257, image_dim) CLIP penultimate hidden states (I2V only).

Blocks are created once with a leading ``layers`` axis (``nnx.vmap``) and run with ``nnx.scan`` (compile time flat
in depth) under a named remat policy; ``scan_layers=False`` unrolls a Python loop over the *same* stacked
parameters (for debugging), so checkpoints and weight tables never depend on the execution mode.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models import streaming
from fourdnex_jax.models.layers import Dense, LayerNorm, make_param, torch_linear_init
from fourdnex_jax.models.remat import remat_policy
from fourdnex_jax.models.stacking import stack_layers
from fourdnex_jax.models.transformer import layouts
from fourdnex_jax.models.transformer.block import BLOCK_LINEARS, TOKENS, WanBlock
from fourdnex_jax.models.transformer.config import WanTransformerConfig
from fourdnex_jax.models.transformer.embeddings import ConditionEmbedder
from fourdnex_jax.models.transformer.rope import rope_cos_sin
from fourdnex_jax.sharding import with_logical_constraint


class DomainEmbedding(nnx.Param):
    """4DNeX's learnable modality embeddings (2, dim): trained together with LoRA, kept in fp32."""


#: Filters of the two parameter groups: the trainable adapter (LoRA + domain embeddings) and the frozen base.
TRAINABLE = nnx.Any(nnx.LoRAParam, DomainEmbedding)
FROZEN = nnx.All(nnx.Param, nnx.Not(TRAINABLE))

#: What training updates (``config.train.trainable``) -> (trainable filter, frozen filter). ``adapter``: LoRA +
#: domain embeddings over the frozen base (4DNeX's recipe); ``full``: every parameter (the reference's
#: ``--training_type sft``; also what training a small model from scratch needs), nothing frozen.
TRAINABLE_MODES = {"adapter": (TRAINABLE, FROZEN), "full": (nnx.Param, nnx.Nothing)}


class PatchEmbedding(nnx.Module):
    """Non-overlapping 3D patches -> tokens: diffusers' ``Conv3d(kernel=stride=patch)`` as one matmul.

    ``kernel`` (pt, ph, pw, C_in, D) is the Conv3d weight (D, C_in, pt, ph, pw) transposed; tokens (B, L,
    pt*ph*pw*C_in) come from :func:`layouts.patchify`."""

    def __init__(self, cfg: WanTransformerConfig, *, rngs: nnx.Rngs):
        pt, ph, pw = cfg.patch_size
        fan_in = cfg.in_channels * pt * ph * pw
        self.compute_dtype = cfg.compute_jnp_dtype
        self.kernel = make_param(torch_linear_init(fan_in), rngs.params(), (pt, ph, pw, cfg.in_channels, cfg.dim),
                                 cfg.param_jnp_dtype, ("patch_t", "patch_h", "patch_w", "latent_channels", "embed"))
        self.bias = make_param(torch_linear_init(fan_in), rngs.params(), (cfg.dim,), cfg.param_jnp_dtype, ("embed",))

    def __call__(self, patches: jax.Array) -> jax.Array:
        dtype = self.compute_dtype
        kernel = self.kernel[...].reshape(-1, self.kernel.shape[-1]).astype(dtype)
        y = jnp.dot(patches.astype(dtype), kernel, preferred_element_type=jnp.float32)
        return (y + self.bias[...].astype(jnp.float32)).astype(dtype)


class DiTTokens(NamedTuple):
    """What :meth:`WanTransformer3D.embed` hands to the blocks and the head (values of one trace, not a pytree to
    pass through ``jit``: ``grid`` is static).

    ``x`` (B, L, D) patch tokens (+ domain embeddings) in the compute dtype, L = T' * H' * W' patches;
    ``temb`` (B, D) timestep embedding (the head's modulation); ``timestep_proj`` (B, 6, D) (the blocks' AdaLN input);
    ``text`` (B, Lt, D) and ``image`` (B, Li, D) or None: the projected cross-attention context; ``rope``
    (cos, sin), each (L, head_dim // 2) fp32, of the token positions; ``grid`` (T', H', W') the patch grid."""

    x: jax.Array
    temb: jax.Array
    timestep_proj: jax.Array
    text: jax.Array
    image: jax.Array | None
    rope: tuple[jax.Array, jax.Array]
    grid: tuple[int, int, int]


class WanTransformer3D(nnx.Module):
    """See the module docstring. Parameter names mirror diffusers' (``blocks`` stacked over layers).

    The forward is three methods that ``__call__`` composes: :meth:`embed` (tokens, RoPE, condition embeddings),
    :meth:`run_blocks` (the stacked blocks) and :meth:`head` (norm, modulation, projection, unpatchify). A sampler
    that reuses a block residual (the step cache) calls them directly: ``head(embed(...).x + residual, ...)``."""

    def __init__(self, cfg: WanTransformerConfig, *, rngs: nnx.Rngs):
        unmatched = [t for t in cfg.lora_targets
                     if cfg.lora_rank and not any(m == t or m.endswith("." + t) for m in BLOCK_LINEARS)]
        if unmatched:
            raise ValueError(f"LoRA target(s) {unmatched} match no Linear of a Wan block {BLOCK_LINEARS}")
        self.config = cfg
        d = cfg.dim
        self.patch_embedding = PatchEmbedding(cfg, rngs=rngs)
        self.condition_embedder = ConditionEmbedder(cfg, rngs=rngs)

        self.blocks = stack_layers(lambda layer_rngs: WanBlock(cfg, rngs=layer_rngs), cfg.num_layers, rngs)
        self.norm_out = LayerNorm(d, eps=cfg.eps, affine=False)
        self.proj_out = Dense(d, cfg.out_channels * math.prod(cfg.patch_size), axes=("embed", "patch_out"),
                              param_dtype=cfg.param_jnp_dtype, compute_dtype=cfg.compute_jnp_dtype, rngs=rngs)
        self.scale_shift_table = make_param(lambda k, s, t: jax.random.normal(k, s, t) / d ** 0.5, rngs.params(),
                                            (2, d), jnp.float32, ("modulation_table", "embed"))
        self.domain_embeddings = (
            make_param(nnx.initializers.zeros, None, (2, d), jnp.float32, ("domains", "embed"), DomainEmbedding)
            if cfg.domain_embeddings else None)

    # ------------------------------------------------------------------------------------------------------------
    def __call__(self, latents: jax.Array, timestep: jax.Array, text_embeds: jax.Array,
                 image_embeds: jax.Array | None = None) -> jax.Array:
        """velocity (B, T, H, W, out_channels) in the compute dtype = ``head(run_blocks(embed(...)))``; arguments as
        :meth:`embed`."""
        tokens = self.embed(latents, timestep, text_embeds, image_embeds)
        return self.head(self.run_blocks(tokens), tokens)

    def embed(self, latents: jax.Array, timestep: jax.Array, text_embeds: jax.Array,
              image_embeds: jax.Array | None = None) -> DiTTokens:
        """Everything before the blocks: patch tokens (+ domain embeddings), RoPE tables, condition embeddings.

        ``latents`` (B, T, H, W, in_channels) NTHWC, ``timestep`` (B,), ``text_embeds`` (B, Lt, text_dim),
        ``image_embeds`` (B, Li, image_dim) or None (T2V). See :class:`DiTTokens` for what is returned."""
        cfg = self.config
        if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
            raise ValueError(f"latents must be (B, T, H, W, {cfg.in_channels}) NTHWC, got {latents.shape}")
        batch = latents.shape[0]
        if timestep.shape != (batch,):
            raise ValueError(f"timestep must have shape ({batch},), got {timestep.shape}")
        grid = layouts.patch_grid(latents.shape, cfg.patch_size)
        ct = cfg.compute_jnp_dtype

        x = self.patch_embedding(layouts.patchify(latents.astype(ct), cfg.patch_size))
        if self.domain_embeddings is not None:
            ids = layouts.domain_ids(cfg.modality_layout, grid, batch)
            x = (x.astype(jnp.float32) + self.domain_embeddings[...][ids]).astype(ct)
        x = with_logical_constraint(x, TOKENS)  # under a mesh: batch x sequence split from the first block on
        rope = rope_cos_sin(layouts.position_ids(cfg.modality_layout, grid), cfg.head_dim, cfg.rope_max_seq_len,
                            cfg.rope_theta)
        temb, timestep_proj, text, image = self.condition_embedder(timestep, text_embeds, image_embeds)
        return DiTTokens(x, temb, timestep_proj, text, image, rope, grid)

    def run_blocks(self, tokens: DiTTokens) -> jax.Array:
        """The stacked blocks on ``tokens.x`` (B, L, D) -> (B, L, D) in the compute dtype, scanned or unrolled, with
        the configured remat; context, modulation and RoPE from ``tokens``. With ``stream_blocks`` the scan brings
        each block's weights to the device one block ahead (:func:`fourdnex_jax.models.streaming.stream_scan`), so
        they may live in host memory; the values computed are the resident scan's."""
        cfg = self.config
        text, image, timestep_proj, rope = tokens.text, tokens.image, tokens.timestep_proj, tokens.rope

        def layer(block: WanBlock, h: jax.Array) -> jax.Array:
            return block(h, text, image, timestep_proj, rope)

        if cfg.remat_policy != "none":
            layer = nnx.remat(layer, policy=remat_policy(cfg.remat_policy), prevent_cse=not cfg.scan_layers,
                              graph=False)

        if cfg.stream_blocks:  # the block weights may be in host memory: each one fetched a block ahead
            graphdef, state = nnx.split(self.blocks)
            return streaming.stream_scan(lambda weights, h: layer(nnx.merge(graphdef, weights), h), state, tokens.x)

        if cfg.scan_layers:
            @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry, graph=False)
            def scan_layers(block: WanBlock, h: jax.Array) -> jax.Array:
                return layer(block, h)

            return scan_layers(self.blocks, tokens.x)

        x = tokens.x
        graphdef, state = nnx.split(self.blocks)
        for i in range(cfg.num_layers):
            x = layer(nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state)), x)
        return x

    def head(self, h: jax.Array, tokens: DiTTokens) -> jax.Array:
        """The output head: block output ``h`` (B, L, D) -> velocity (B, T, H, W, out_channels) in the compute dtype
        (fp32 norm, timestep shift/scale from ``tokens.temb``, projection, unpatchify on ``tokens.grid``)."""
        cfg = self.config
        shift, scale = jnp.split(self.scale_shift_table[...][None] + tokens.temb.astype(jnp.float32)[:, None], 2,
                                 axis=1)
        h = (self.norm_out(h.astype(jnp.float32)) * (1 + scale) + shift).astype(cfg.compute_jnp_dtype)
        return layouts.unpatchify(self.proj_out(h), tokens.grid, cfg.patch_size)
