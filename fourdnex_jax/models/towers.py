"""The frozen conditioning models ("towers": Wan VAE, UMT5 text encoder, CLIP image encoder) in one module, and the
encode functions that the encode step (:mod:`fourdnex_jax.data.encode`) and the sampling pipeline
(:mod:`fourdnex_jax.pipelines.image_to_4d`) both call, so the training condition and the sampling condition are
one computation.

The functions are pure (traceable): ``fn(towers, *arrays)``. A caller places the towers' state by the logical
axis rules (:func:`fourdnex_jax.sharding.state_shardings`) and jits them with its own shardings (e.g. through
:func:`jit_encoder`). Shapes (NTHWC video, (B, L, D) tokens):
  * :func:`encode_prompts`: token ids / attention mask (B, Lt) int32 -> UMT5 embeddings (B, Lt, text_dim) fp32,
    zero at and past each prompt's length (Wan's recipe);
  * :func:`encode_images`: CLIP pixels (B, S, S, 3) -> ``hidden_states[-2]`` (B, Li, image_dim) fp32 (Wan's
    ViT-H/14 at S = 224: Li = 257);
  * :func:`encode_condition`: a condition video (B, T, H, W', 3) in [-1, 1] -> the VAE posterior mode,
    VAE-normalised, (B, T', H/s, W'/s, z_dim) fp32 (the 4DNeX condition latent: W' = 2W, RGB | XYZ init);
  * :func:`encode_posterior`: videos (N, T, H, W, 3) in [-1, 1] -> VAE-normalised posterior mean and standard
    deviation, each (N, T', H/s, W/s, z_dim) fp32 (what the encode step stores for RGB and XYZ clips; the 4DNeX
    XYZ latent normalisation is the recipe's and is applied by the caller).
T' = 1 + (T - 1) / 4 and s = the VAE's spatial factor (8 for Wan's VAE).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.text_encoder import wan_prompt_embeds


class Towers(nnx.Module):
    """The frozen encoders in one module, so one ``nnx.split`` places all of them: ``vae`` (``WanVAE``),
    ``text_encoder`` (``UMT5Encoder``), ``image_encoder`` (``CLIPVisionTower``)."""

    def __init__(self, vae, text_encoder, image_encoder):
        self.vae, self.text_encoder, self.image_encoder = vae, text_encoder, image_encoder


#: Parameters of the VAE that play no part in encoding (a decoder-only fine-tune keeps every latent valid).
VAE_DECODER_SIDE = ("decoder", "post_quant_conv")


def fingerprint(towers: Towers) -> dict[str, str]:
    """What identifies the towers that encoded a dataset: ``{"vae", "text_encoder", "image_encoder"}`` ->
    :func:`~fourdnex_jax.models.params.digest` of each (the VAE's encoding side and its latent statistics only), so
    a training run can tell whether a bundle's towers are the ones its data was encoded with."""
    from fourdnex_jax.models.params import digest

    v = towers.vae.config
    return {"vae": digest(towers.vae, lambda p: not p.startswith(VAE_DECODER_SIDE),
                          extra=f"{list(v.latents_mean)}{list(v.latents_std)}"),
            "text_encoder": digest(towers.text_encoder), "image_encoder": digest(towers.image_encoder)}


def encode_prompts(towers: Towers, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """ids, mask (B, Lt) int32 -> UMT5 prompt embeddings (B, Lt, text_dim) fp32, zero past each prompt."""
    return wan_prompt_embeds(towers.text_encoder, ids, mask).astype(jnp.float32)


def encode_images(towers: Towers, pixels: jax.Array) -> jax.Array:
    """CLIP-preprocessed pixels (B, S, S, 3) -> CLIP ``hidden_states[-2]`` (B, Li, image_dim) fp32."""
    return towers.image_encoder(pixels).astype(jnp.float32)


def encode_condition(towers: Towers, cond_video: jax.Array) -> jax.Array:
    """Condition video (B, T, H, W', 3) in [-1, 1] -> VAE posterior mode, VAE-normalised (B, T', h, w', z) fp32."""
    vae = towers.vae
    return vae.normalize_latents(vae.encode(cond_video).mode().astype(jnp.float32))


def encode_posterior(towers: Towers, video: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Videos (N, T, H, W, 3) in [-1, 1] -> (mean, std), each (N, T', h, w, z) fp32 in VAE-normalised units:
    ``normalize(posterior mean)`` and ``posterior std / latents_std``, so ``mean + std * eps`` is a normalised
    posterior sample."""
    vae = towers.vae
    dist = vae.encode(video)
    inv_std = 1.0 / jnp.asarray(vae.config.latents_std, jnp.float32)
    mean = vae.normalize_latents(dist.mean.astype(jnp.float32))
    std = jnp.exp(0.5 * dist.logvar.astype(jnp.float32)) * inv_std
    return mean, std


def jit_encoder(fn: Callable, graphdef: nnx.GraphDef, select: Callable = lambda m: m, **jit_kwargs) -> Callable:
    """``jax.jit`` of ``(state, *arrays) -> fn(select(nnx.merge(graphdef, state)), *arrays)``; ``select`` picks the
    :class:`Towers` out of a larger module; ``jit_kwargs`` (e.g. ``out_shardings``) are the caller's."""
    return jax.jit(lambda state, *arrays: fn(select(nnx.merge(graphdef, state)), *arrays), **jit_kwargs)
