"""Weight mapping between diffusers ``AutoencoderKLWan`` state dicts and :class:`WanVAE` (the folder loader is
:func:`fourdnex_jax.weights.from_diffusers.load_vae_from_diffusers`).

The table is generated from the config's block plan (:func:`encoder_plan` / :func:`decoder_plan`), independently of
the NNX module tree; :meth:`WeightMapping.to_jax` then checks it strictly against both the checkpoint and the model.

Layouts (torch -> JAX):
  * ``WanCausalConv3d`` weight (O, I, T, H, W) -> kernel (T, H, W, I, O);
  * resampler ``Conv2d`` weight (O, I, H, W) -> kernel (H, W, I, O);
  * attention ``to_qkv`` / ``proj`` (1x1 ``Conv2d``) weight (O, I, 1, 1) -> kernel (I, O);
  * ``WanRMS_norm.gamma`` (C, 1, 1, 1) in residual blocks / heads, (C, 1, 1) in attention blocks -> scale (C,);
  * biases are unchanged.
Ignore list: empty. A Wan2.1 ``AutoencoderKLWan`` state dict has no buffers or unused tensors, so every key must map.
"""

from __future__ import annotations

import numpy as np
from flax import nnx

from fourdnex_jax.models.mapping import Rule, WeightMapping
from fourdnex_jax.models.params import flat_variables
from fourdnex_jax.models.vae.config import WanVAEConfig, decoder_plan, encoder_plan
from fourdnex_jax.models.vae.model import WanVAE

CONV3D = "o i t h w -> t h w i o"
CONV2D = "o i h w -> h w i o"
POINTWISE = "o i 1 1 -> i o"
GAMMA_3D = "c 1 1 1 -> c"
GAMMA_2D = "c 1 1 -> c"


def _tk(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _jp(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def conv_rules(t: str, j: str, layout: str = CONV3D) -> list[Rule]:
    """weight + bias of one conv at torch prefix ``t`` / JAX prefix ``j``."""
    return [Rule(_tk(t, "weight"), _jp(j, "kernel"), layout), Rule(_tk(t, "bias"), _jp(j, "bias"))]


def residual_rules(t: str, j: str, in_dim: int, out_dim: int) -> list[Rule]:
    """``WanResidualBlock`` <-> :class:`ResidualBlock` (an empty prefix maps a standalone block)."""
    rules = [Rule(_tk(t, "norm1.gamma"), _jp(j, "norm1/scale"), GAMMA_3D),
             *conv_rules(_tk(t, "conv1"), _jp(j, "conv1")),
             Rule(_tk(t, "norm2.gamma"), _jp(j, "norm2/scale"), GAMMA_3D),
             *conv_rules(_tk(t, "conv2"), _jp(j, "conv2"))]
    if in_dim != out_dim:
        rules += conv_rules(_tk(t, "conv_shortcut"), _jp(j, "conv_shortcut"))
    return rules


def attention_rules(t: str, j: str) -> list[Rule]:
    """``WanAttentionBlock`` <-> :class:`AttentionBlock`."""
    return [Rule(_tk(t, "norm.gamma"), _jp(j, "norm/scale"), GAMMA_2D),
            *conv_rules(_tk(t, "to_qkv"), _jp(j, "to_qkv"), POINTWISE),
            *conv_rules(_tk(t, "proj"), _jp(j, "proj"), POINTWISE)]


def resample_rules(t: str, j: str, mode: str) -> list[Rule]:
    """``WanResample`` <-> :class:`Resample` (torch ``resample.1`` is the conv after the pad/upsample)."""
    rules = conv_rules(_tk(t, "resample.1"), _jp(j, "conv"), CONV2D)
    if mode.endswith("3d"):
        rules += conv_rules(_tk(t, "time_conv"), _jp(j, "time_conv"))
    return rules


def mid_block_rules(t: str, j: str, dim: int) -> list[Rule]:
    return [*residual_rules(_tk(t, "resnets.0"), _jp(j, "resnets/0"), dim, dim),
            *attention_rules(_tk(t, "attentions.0"), _jp(j, "attentions/0")),
            *residual_rules(_tk(t, "resnets.1"), _jp(j, "resnets/1"), dim, dim)]


def vae_weight_mapping(cfg: WanVAEConfig) -> WeightMapping:
    """The strict two-way table for ``cfg`` (see the module docstring for layouts; no ignored keys)."""
    rules: list[Rule] = []
    # encoder
    plan, enc_mid = encoder_plan(cfg)
    rules += conv_rules("encoder.conv_in", "encoder/conv_in")
    for i, spec in enumerate(plan):
        t, j = f"encoder.down_blocks.{i}", f"encoder/down_blocks/{i}"
        if spec.kind == "residual":
            rules += residual_rules(t, j, spec.in_dim, spec.out_dim)
        elif spec.kind == "attention":
            rules += attention_rules(t, j)
        else:
            rules += resample_rules(t, j, spec.kind)
    rules += mid_block_rules("encoder.mid_block", "encoder/mid_block", enc_mid)
    rules += [Rule("encoder.norm_out.gamma", "encoder/norm_out/scale", GAMMA_3D),
              *conv_rules("encoder.conv_out", "encoder/conv_out")]
    # latent 1x1x1 convs
    rules += conv_rules("quant_conv", "quant_conv") + conv_rules("post_quant_conv", "post_quant_conv")
    # decoder
    dec_mid, blocks = decoder_plan(cfg)
    rules += conv_rules("decoder.conv_in", "decoder/conv_in")
    rules += mid_block_rules("decoder.mid_block", "decoder/mid_block", dec_mid)
    for i, spec in enumerate(blocks):
        t, j = f"decoder.up_blocks.{i}", f"decoder/up_blocks/{i}"
        dims = [spec.in_dim] + [spec.out_dim] * spec.num_resnets
        for r in range(spec.num_resnets):
            rules += residual_rules(f"{t}.resnets.{r}", f"{j}/resnets/{r}", dims[r], dims[r + 1])
        if spec.upsample:
            rules += resample_rules(f"{t}.upsamplers.0", f"{j}/upsampler", spec.upsample)
    rules += [Rule("decoder.norm_out.gamma", "decoder/norm_out/scale", GAMMA_3D),
              *conv_rules("decoder.conv_out", "decoder/conv_out")]
    return WeightMapping(rules, ignore=())


# ----------------------------------------------------------------------------------------------------------------
def abstract_vae(config: WanVAEConfig, **kw) -> WanVAE:
    """A shape-only :class:`WanVAE` (``nnx.eval_shape``): no memory, no random init."""
    return nnx.eval_shape(lambda: WanVAE(config, rngs=nnx.Rngs(0), **kw))


def export_to_diffusers(model: WanVAE) -> dict[str, np.ndarray]:
    """The model's parameters as a diffusers ``AutoencoderKLWan`` state dict of numpy arrays (dtypes kept)."""
    flat = {p: np.asarray(v[...]) for p, v in flat_variables(model).items()}
    return vae_weight_mapping(model.config).to_torch(flat)
