"""Rectified-flow sampling: x_sigma = (1 - sigma) * x0 + sigma * noise, the DiT predicts v = noise - x0.

Sigmas run from 1 (pure noise) to 0; Wan shifts them with ``flow_shift`` (3.0 for 480p):
``sigma' = shift * s / (1 + (shift - 1) * s)``, timestep = 1000 * sigma (fp32, never rounded).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def shifted_sigmas(num_steps: int, shift: float) -> np.ndarray:
    """(num_steps + 1,) float32 sigmas from 1 to 0 (the final 0 is the clean sample)."""
    s = np.linspace(1.0, 0.0, num_steps + 1, dtype=np.float64)
    return (shift * s / (1.0 + (shift - 1.0) * s)).astype(np.float32)


def euler_step(x: jax.Array, velocity: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One Euler step of dx/dsigma = v, computed in fp32."""
    out = x.astype(jnp.float32) + (sigma_next - sigma) * velocity.astype(jnp.float32)
    return out.astype(x.dtype)


def classifier_free_guidance(v_cond: jax.Array, v_uncond: jax.Array, scale: float) -> jax.Array:
    return v_uncond + scale * (v_cond - v_uncond)
