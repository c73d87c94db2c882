"""The 4DNeX training objective: rectified flow matching on the fused RGB|XYZ latent (as the reference trainer).

Per sample (all in latent space, NTHWC):
  * x = fuse(RGB latent, XYZ latent) in the model's modality layout; with ``sample_posterior`` each modality is a
    fresh VAE sample ``mean + std * n`` (the stored latents are already VAE-normalised, XYZ also by the recipe's
    XYZ latent mean/std);
  * t uniform over the 1000 training timesteps 1000, 999, ..., 1 and sigma = t / 1000 (the reference's
    ``FlowMatchEulerDiscreteScheduler`` with shift 1.0; the sampling shift does not apply in training);
  * x_t = (1 - sigma) x + sigma eps, DiT input = [x_t | guided mask (1 on RGB frame 0, 0.5 on XYZ frame 0) |
    condition latent], timestep input t (fp32, never rounded);
  * loss = mean over every element of (v - (eps - x))^2 (plain MSE, RGB and XYZ halves weighted equally).

The mask, the 36-channel input and the layout helpers are the recipe's (:mod:`fourdnex_jax.recipe`); the prompt
suffix is applied by the encode step.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from fourdnex_jax.models.transformer import layouts
from fourdnex_jax.recipe import condition_in_layout, dit_input, guided_mask, repeat_for_layout

NUM_TRAIN_TIMESTEPS = 1000


def sample_timesteps(key: jax.Array, batch: int) -> tuple[jax.Array, jax.Array]:
    """(timestep, sigma), both (B,) fp32: t uniform in {1, ..., 1000}, sigma = t / 1000."""
    t = jax.random.randint(key, (batch,), 1, NUM_TRAIN_TIMESTEPS + 1).astype(jnp.float32)
    return t, t / NUM_TRAIN_TIMESTEPS


def flow_matching_inputs(batch: Mapping[str, jax.Array], key: jax.Array, layout: str, sample_posterior: bool = True):
    """(dit input (B', T, H, W', 36), timestep (B',), target (B', T, H, W', 16)) of one (micro-)batch."""
    k_rgb, k_xyz, k_t, k_noise = jax.random.split(key, 4)
    rgb = batch["rgb_latent"].astype(jnp.float32)
    xyz = batch["xyz_latent"].astype(jnp.float32)
    if sample_posterior:
        rgb = rgb + batch["rgb_latent_std"].astype(jnp.float32) * jax.random.normal(k_rgb, rgb.shape)
        xyz = xyz + batch["xyz_latent_std"].astype(jnp.float32) * jax.random.normal(k_xyz, xyz.shape)
    b, t_frames, h, w, _ = rgb.shape
    x = rgb if layout == "none" else layouts.fuse(rgb, xyz, layout)
    cond = condition_in_layout(batch["cond_latent"].astype(jnp.float32), layout)
    n = x.shape[0]
    timestep, sigma = sample_timesteps(k_t, n)
    eps = jax.random.normal(k_noise, x.shape, jnp.float32)
    s = sigma[:, None, None, None, None]
    x_t = (1.0 - s) * x + s * eps
    mask = guided_mask(b, t_frames, h, w, layout)
    return dit_input(x_t, mask, cond), timestep, eps - x


def loss_fn(model, batch: Mapping[str, jax.Array], key: jax.Array, sample_posterior: bool = True) -> jax.Array:
    """Mean-squared flow-matching error of ``model`` (a merged :class:`WanTransformer3D`) on one batch."""
    layout = model.config.modality_layout
    inp, timestep, target = flow_matching_inputs(batch, key, layout, sample_posterior)
    text = repeat_for_layout(batch["text_embeds"], layout)
    image = repeat_for_layout(batch["image_embeds"], layout) if "image_embeds" in batch else None
    pred = model(inp, timestep, text, image)
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target))
