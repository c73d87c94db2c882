"""Wan2.1 video VAE (diffusers ``AutoencoderKLWan``, z_dim 16) in Flax NNX, NTHWC layout."""

from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.models.vae.mapping import abstract_vae, export_to_diffusers, vae_weight_mapping
from fourdnex_jax.models.vae.model import LatentDist, WanVAE

__all__ = ["WanVAEConfig", "WanVAE", "LatentDist", "vae_weight_mapping", "export_to_diffusers",
           "abstract_vae"]
