"""The 4DNeX recipe: every value that makes a Wan2.1 I2V model a 4DNeX model, in one place.

Data preparation, the encode step, training and the pipeline all import these; no other module defines them.
Values follow the reference code (3DTopia/4DNeX @ 1101bc6):

* prompt: ``caption + " POINTMAP_STYLE."`` at train and inference time (:func:`training_prompt`);
* XYZ latents only: ``x_hat = (x - mu) / sigma`` with ``mu = -0.13``, ``sigma = 1.70`` after Wan's VAE latent
  normalisation; inference undoes it (``x_hat * 1.70 - 0.13``) on the XYZ half before decoding;
* first-frame XYZ condition: the slanted plane :func:`xyz_init_pointmap` (x, y = linspace(-1, 1), z = -y);
* condition video (pixel space): frame 0 = ``[RGB | XYZ init]`` (H x 2W), then T - 1 zero frames
  (:func:`condition_video`); its latent is VAE-normalised only (no XYZ mu/sigma, reference quirk 8);
* guided mask (latent space, 4 channels = Wan's 4 pixel frames per latent frame): 1.0 on the first latent frame of
  the RGB half, **0.5** on the first latent frame of the XYZ half (the init is a prior, not an observation), 0
  elsewhere (:func:`guided_mask`); DiT input = ``[noisy (16) | mask (4) | condition (16)]`` (:func:`dit_input`);
* modality layout: width fusion, ``[RGB | XYZ]`` along the latent width (:data:`MODALITY_LAYOUT`);
* LoRA: rank 64, alpha 32; the effective scale is ``alpha / rank`` (:func:`effective_lora_scale`; the released
  adapter carries no alpha metadata, so diffusers loads it at peft scaling 1.0 and ``fuse_lora(lora_scale=0.5)``
  gives the same 0.5);
* sampling presets (:data:`SAMPLING_PRESETS`): the 14B model's (49 frames, area 480 x 720, 50 UniPC steps with flow
  shift 3.0 and the official sigma schedule of diffusers 0.34.0, CFG 5.0, empty negative prompt, 512 text tokens)
  and the shipped tiny model's;
* optimizer presets (:data:`OPTIMIZER_PRESETS`, selected by ``config.optim.preset``), below.

Optimizer: what the reference effectively ran (the one place this evidence is cited). ``scripts/finetune.sh`` runs
accelerate + DeepSpeed ZeRO-2 with ``configs_zero/zero2.yaml``, whose optimizer is DeepSpeed ``AdamW``
(``torch_adam: true``, ``lr``/``weight_decay`` "auto") and whose scheduler is ``WarmupDecayLR`` (all "auto").
``core/finetune/utils/optimizer_utils.py:34-43`` returns accelerate's ``DummyOptim(params, lr, betas=(0.9, 0.95),
eps, weight_decay)``; ``Accelerator._prepare_deepspeed`` fills only ``lr`` and ``weight_decay`` from it into the
"auto" fields, so the betas never reach the optimizer, which runs torch's defaults **(0.9, 0.999)**, eps 1e-8, with lr
2e-5 and
weight decay 1e-4 (``core/finetune/schemas/args.py`` defaults) and gradient clipping at 1.0 (``max_grad_norm``).
``core/finetune/trainer.py:285-329`` builds
``DummyScheduler(total_num_steps=..., num_warmup_steps=...)``, but that class's keyword is ``warmup_num_steps``:
the warmup lands in ``**kwargs``, DeepSpeed's warmup is 0, clamped to 2 steps (the first two updates at LR 0, which
move no parameter but enter Adam's moments), and ``total_num_steps`` is counted on the unsharded loader times the
process count, at least 8x the real run on 8 GPUs, so the linear decay keeps the LR >= 87.5% of the peak for the
whole run: **effectively constant 2e-5**. ``reference_effective`` (the default) is that run, a constant LR from the
first step; ``reference_declared`` is what the code declares (betas (0.9, 0.95), 100 warmup steps, then linear
decay to 0 at the end of the run; the warmup is linear here, DeepSpeed's default warmup curve is logarithmic).

All tensors are NTHWC: latents (B, T, H, W, C), videos (B, T, H, W, 3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fourdnex_jax.models.transformer import layouts

POINTMAP_SUFFIX = " POINTMAP_STYLE."  # appended to every caption at train and inference time by 4DNeX
XYZ_LATENT_MEAN, XYZ_LATENT_STD = -0.13, 1.70  # 4DNeX: x_hat = (x - mu) / sigma on XYZ latents only
RGB_FIRST_FRAME_MASK = 1.0
XYZ_FIRST_FRAME_MASK = 0.5
MASK_CHANNELS = 4
MODALITY_LAYOUT = "width"  # 4DNeX fuses RGB and XYZ along the latent width
XYZ_NORMALIZATION = "reference"  # 4DNeX's pixel-space pointmap normalisation (fourdnex_jax.geometry.normalize)


def training_prompt(caption: str) -> str:
    """The prompt 4DNeX trains and samples with: the caption plus ``" POINTMAP_STYLE."``."""
    return caption.rstrip() + POINTMAP_SUFFIX


def xyz_init_pointmap(height: int, width: int) -> np.ndarray:
    """4DNeX ``generate_uniform_pointmap(H, W) * 2 - 1``: (H, W, 3) float32 with x = linspace(-1, 1) across the
    width, y = linspace(-1, 1) down the height and z = -y (+1 on the top row)."""
    x = np.broadcast_to(np.linspace(-1, 1, width, dtype=np.float32)[None, :], (height, width))
    y = np.broadcast_to(np.linspace(-1, 1, height, dtype=np.float32)[:, None], (height, width))
    return np.stack([x, y, -y], -1)


def condition_video(rgb0: np.ndarray, num_frames: int) -> np.ndarray:
    """First frames (B, H, W, 3) in [-1, 1] -> (B, T, H, 2W, 3): [RGB | XYZ init] then T - 1 zero frames."""
    b, h, w, _ = rgb0.shape
    first = np.concatenate([rgb0, np.broadcast_to(xyz_init_pointmap(h, w), rgb0.shape)], axis=2)
    out = np.zeros((b, num_frames, h, 2 * w, 3), np.float32)
    out[:, 0] = first
    return out


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


def condition_in_layout(cond_width: jax.Array, layout: str) -> jax.Array:
    """The stored condition latent (B, T, H, 2W, C) is width-fused ([RGB frame 0 | XYZ init] encoded as one image);
    other layouts regroup its halves."""
    if layout == "width":
        return cond_width
    rgb, xyz = layouts.split(cond_width, "width")
    return rgb if layout == "none" else layouts.fuse(rgb, xyz, layout)


def repeat_for_layout(a: jax.Array, layout: str) -> jax.Array:
    """Per-sample conditioning (B, L, D) (text/image embeddings) for the 'batch' layout, which doubles the batch."""
    return jnp.repeat(a, 2, axis=0) if layout == "batch" else a


def effective_lora_scale(lora_alpha: float, lora_rank: int) -> float:
    """peft's LoRA scaling ``alpha / rank`` (0 without an adapter): 32 / 64 = 0.5 for 4DNeX."""
    return float(lora_alpha) / int(lora_rank) if lora_rank else 0.0


def _strict(cls, d: Mapping[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown, missing = sorted(set(d) - names), sorted(names - set(d))
    if unknown or missing:
        raise ValueError(f"{cls.__name__}: unknown keys {unknown}, missing keys {missing}")
    return cls(**d)


@dataclasses.dataclass(frozen=True)
class SixDSpec:
    """The 6D (RGB + XYZ) contract a trained model depends on; bundles record it."""

    prompt_suffix: str = POINTMAP_SUFFIX
    xyz_latent_mean: float = XYZ_LATENT_MEAN
    xyz_latent_std: float = XYZ_LATENT_STD
    rgb_first_frame_mask: float = RGB_FIRST_FRAME_MASK
    xyz_first_frame_mask: float = XYZ_FIRST_FRAME_MASK
    layout: str = MODALITY_LAYOUT
    xyz_normalization: str = XYZ_NORMALIZATION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SixDSpec:
        """Exactly the fields of :meth:`to_dict`; unknown or missing keys raise ValueError."""
        return _strict(cls, d)


#: The UniPC sigma schedules by the diffusers version whose formula they follow (fourdnex_jax/sampling/unipc.py);
#: the official 4DNeX run uses diffusers 0.34.0's.
SIGMA_SCHEDULES = ("diffusers_0_34", "diffusers_0_37")
OFFICIAL_SIGMA_SCHEDULE = "diffusers_0_34"


def check_sigma_schedule(name: str) -> str:
    """``name`` if it is one of :data:`SIGMA_SCHEDULES`, else ValueError naming the choices."""
    if name not in SIGMA_SCHEDULES:
        raise ValueError(f"sigma_schedule={name!r}; use one of {SIGMA_SCHEDULES} ('diffusers_0_34': the official "
                         "4DNeX schedule, diffusers 0.34.0; 'diffusers_0_37': the formula of diffusers >= 0.37)")
    return name


@dataclasses.dataclass(frozen=True)
class SamplingPreset:
    """What a model is meant to be sampled with: frames per video, the per-modality pixel area, the solver.

    ``sigma_schedule``: the UniPC flow-sigma formula by diffusers version
    (:data:`SIGMA_SCHEDULES`); default ``"diffusers_0_34"``, the one the official
    4DNeX code runs. A bundle written before this field existed gets that default
    (:func:`fourdnex_jax.pipelines.bundle.read_presets`)."""

    num_frames: int
    max_area: int  # H * W per modality; H and W follow the image's aspect ratio
    num_steps: int
    guidance_scale: float
    negative_prompt: str
    text_len: int  # prompt embeddings zero-padded to this many tokens
    flow_shift: float
    solver: str  # 'unipc' | 'euler'
    sigma_schedule: str = OFFICIAL_SIGMA_SCHEDULE  # 'diffusers_0_34' (official 4DNeX) | 'diffusers_0_37'

    def __post_init__(self):
        check_sigma_schedule(self.sigma_schedule)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SamplingPreset:
        """Exactly the fields of :meth:`to_dict`; unknown or missing keys raise ValueError."""
        return _strict(cls, d)


SAMPLING_PRESETS = {
    # 4DNeX inference.py + core/inference/wan.py: 49 frames, area 480 x 720, 50 steps, CFG 5.0, empty negative.
    "wan21_i2v_14b_480p": SamplingPreset(num_frames=49, max_area=480 * 720, num_steps=50, guidance_scale=5.0,
                                         negative_prompt="", text_len=512, flow_shift=3.0, solver="unipc",
                                         sigma_schedule="diffusers_0_34"),
    # The shipped tiny model (checkpoints/tiny): 9 frames at 32 x 48, no CFG (it never saw a dropped caption).
    "tiny": SamplingPreset(num_frames=9, max_area=32 * 48, num_steps=20, guidance_scale=1.0, negative_prompt="",
                           text_len=16, flow_shift=3.0, solver="unipc", sigma_schedule="diffusers_0_34"),
}


@dataclasses.dataclass(frozen=True)
class OptimizerPreset:
    """AdamW + global-norm clipping and the LR schedule (linear warmup from 0 over ``warmup_steps``, then constant
    or linear decay to ``end_learning_rate`` at the end of the run)."""

    learning_rate: float
    b1: float
    b2: float
    eps: float
    weight_decay: float
    grad_clip_norm: float
    schedule: str  # 'constant' | 'linear_decay'
    warmup_steps: int
    end_learning_rate: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SCHEDULES = ("constant", "linear_decay")

OPTIMIZER_PRESETS = {
    # What the reference's DeepSpeed run effectively used (module docstring).
    "reference_effective": OptimizerPreset(learning_rate=2e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                                           grad_clip_norm=1.0, schedule="constant", warmup_steps=0,
                                           end_learning_rate=2e-5),
    # What the reference's scripts declare (optimizer_utils.py betas, --lr_warmup_steps 100, WarmupDecayLR to 0).
    "reference_declared": OptimizerPreset(learning_rate=2e-5, b1=0.9, b2=0.95, eps=1e-8, weight_decay=1e-4,
                                          grad_clip_norm=1.0, schedule="linear_decay", warmup_steps=100,
                                          end_learning_rate=0.0),
}
