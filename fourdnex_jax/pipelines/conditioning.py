"""The 4DNeX image condition in latent space: the guided mask and the 36-channel DiT input.

DiT input channels (Wan I2V): ``[noisy latent (16) | mask (4) | condition latent (16)]``. The condition latent is
the VAE encoding of the first frame ([RGB | slanted-plane XYZ init] for 4DNeX) followed by zero frames. The mask
marks what is known: 1 on the first latent frame of RGB, **0.5** on the first latent frame of XYZ (the XYZ init is
a prior, not an observation), 0 elsewhere; its 4 channels are the 4 pixel frames folded into each latent frame
(Wan's temporal compression), all equal on latent frame 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fourdnex_jax.models.transformer import layouts

RGB_FIRST_FRAME_MASK = 1.0
XYZ_FIRST_FRAME_MASK = 0.5
MASK_CHANNELS = 4


def guided_mask(batch: int, frames: int, height: int, width: int, layout: str) -> jax.Array:
    """The fused (B, T', H', W', 4) mask of one RGB and one XYZ latent, each (B, T, H, W), in ``layout``."""
    first = jnp.zeros((batch, frames, height, width, MASK_CHANNELS), jnp.float32).at[:, 0].set(1.0)
    if layout == "none":
        return first * RGB_FIRST_FRAME_MASK
    return layouts.fuse(first * RGB_FIRST_FRAME_MASK, first * XYZ_FIRST_FRAME_MASK, layout)


def dit_input(noisy: jax.Array, mask: jax.Array, condition: jax.Array) -> jax.Array:
    """Concatenates (B, T, H, W, 16), (..., 4), (..., 16) into the 36-channel DiT input."""
    if not (noisy.shape[:-1] == mask.shape[:-1] == condition.shape[:-1]):
        raise ValueError(f"shapes differ: noisy {noisy.shape}, mask {mask.shape}, condition {condition.shape}")
    return jnp.concatenate([noisy, mask.astype(noisy.dtype), condition.astype(noisy.dtype)], axis=-1)
