"""Step cache: skip the DiT's transformer blocks on some sampling steps and reuse the last full step's block residual.

Rule (fixed schedule, chosen over a data-dependent TeaCache threshold so shapes and the number of DiT block
evaluations are known before sampling and no ``lax.cond`` or host sync is needed): with interval ``k``, step ``i``
of ``n`` evaluates the blocks in full when ``i % k == 0`` or ``i == n - 1`` (the last step, which sets the fine
detail, is always full); every other step is *cached*. ``k = 1`` makes every step full.

What a cached step still computes: the patch embedding of the *current* noisy input, the condition embeddings of
the current timestep and the output head (norm, timestep modulation, projection). Only the blocks are replaced:
``h = x_embedded + residual`` with ``residual = blocks(x) - x`` (fp32, (B, L, D), CFG pairs included) from the last
full step, as TeaCache/FasterCache-style residual caching does. So a cached step costs the embeddings + head,
a few percent of a full step.

:func:`forward` mirrors :meth:`WanTransformer3D.__call__ <fourdnex_jax.models.transformer.WanTransformer3D>`
operation by operation (tests check it is bit-identical to it) with the block stack split out. The two compiled
step functions of the pipeline are ``full`` (returns the new residual) and ``cached`` (takes it); the host picks one
per step from :func:`full_evaluation_schedule`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fourdnex_jax.models.transformer import layouts
from fourdnex_jax.models.transformer.rope import rope_cos_sin


def full_evaluation_schedule(num_steps: int, interval: int) -> np.ndarray:
    """(num_steps,) bool: True where the blocks run in full (module docstring). ``interval >= 1``."""
    if interval < 1:
        raise ValueError(f"step cache interval must be >= 1 (1: every step full), got {interval}")
    i = np.arange(num_steps)
    return (i % interval == 0) | (i == num_steps - 1)


def forward(dit, latents: jax.Array, timestep: jax.Array, text_embeds: jax.Array, image_embeds: jax.Array | None,
            residual: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """The DiT forward of ``dit`` (a ``WanTransformer3D``) with the block stack either run or replaced.

    ``latents`` (B, T, H, W, in_channels), ``timestep`` (B,), ``text_embeds`` (B, Lt, text_dim), ``image_embeds``
    (B, Li, image_dim) or None, as :meth:`WanTransformer3D.__call__`. ``residual=None``: full evaluation, returns
    (velocity (B, T, H, W, out_channels) in the compute dtype, residual (B, L, D) fp32 = blocks' output - input).
    ``residual`` given: cached evaluation, the blocks are skipped and ``(velocity, None)`` returned."""
    cfg = dit.config
    if latents.ndim != 5 or latents.shape[-1] != cfg.in_channels:
        raise ValueError(f"latents must be (B, T, H, W, {cfg.in_channels}) NTHWC, got {latents.shape}")
    batch = latents.shape[0]
    grid = layouts.patch_grid(latents.shape, cfg.patch_size)
    ct = cfg.compute_jnp_dtype

    x = dit.patch_embedding(layouts.patchify(latents.astype(ct), cfg.patch_size))
    if dit.domain_embeddings is not None:
        ids = layouts.domain_ids(cfg.modality_layout, grid, batch)
        x = (x.astype(jnp.float32) + dit.domain_embeddings[...][ids]).astype(ct)
    temb, timestep_proj, text, image = dit.condition_embedder(timestep, text_embeds, image_embeds)

    if residual is None:
        rope = rope_cos_sin(layouts.position_ids(cfg.modality_layout, grid), cfg.head_dim, cfg.rope_max_seq_len,
                            cfg.rope_theta)
        h = dit.run_blocks(x, text, image, timestep_proj, rope)
        new_residual = h.astype(jnp.float32) - x.astype(jnp.float32)
    else:
        if residual.shape != x.shape:
            raise ValueError(f"cached residual of shape {residual.shape}, the tokens are {x.shape}")
        h = (x.astype(jnp.float32) + residual).astype(ct)
        new_residual = None

    shift, scale = jnp.split(dit.scale_shift_table[...][None] + temb.astype(jnp.float32)[:, None], 2, axis=1)
    h = (dit.norm_out(h.astype(jnp.float32)) * (1 + scale) + shift).astype(ct)
    return layouts.unpatchify(dit.proj_out(h), grid, cfg.patch_size), new_residual
