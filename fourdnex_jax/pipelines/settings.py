"""Sampling settings of the image-to-4D pipeline: the bundle's preset, explicit overrides, and the run's knobs.

Where each value comes from:

* the **preset** (the :class:`~fourdnex_jax.recipe.SamplingPreset` fields: frames, pixel area, steps, CFG,
  negative prompt, text length, flow shift, solver, sigma schedule) is a property of the trained model, recorded in
  its bundle
  (``manifest.json: sampling_preset``, read by :mod:`fourdnex_jax.pipelines.bundle`);
* ``config.sample`` holds every field of :class:`SampleSettings`; a preset field left ``None`` takes the bundle's
  value, a set one (``--config.sample.num_steps=8``) overrides it;
* the run's knobs (seed, batch size, resize mode, fast paths) have their defaults here and in ``config.sample``.

:func:`check_model` rejects settings a model cannot run (frames not ``1 + 4k``, an area below one latent patch)
from the models' configs alone, so a CLI can fail before any weights load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fourdnex_jax.recipe import SamplingPreset
from fourdnex_jax.sampling.flow_matching import SOLVERS, make_schedule
from fourdnex_jax.sampling.unipc import OFFICIAL_SIGMA_SCHEDULE, UniPCConfig, check_sigma_schedule
from fourdnex_jax.utils import bounds

#: ``weight_quant`` values: 'none' (the checkpoint's dtypes) or 'int8' (weight-only, the DiT's block linears).
WEIGHT_QUANT = ("none", "int8")
#: ``resize_mode`` values: 'aspect' (4DNeX: H x W follow the image's aspect ratio at ``max_area``, Pillow bicubic,
#: no crop) or 'cover_crop' (cover the preset's 2:3 frame, centre crop: how the training clips were made).
RESIZE_MODES = ("aspect", "cover_crop")
#: The fields a bundle's preset supplies.
PRESET_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingPreset))


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Resolved sampling settings (no field is optional). Sizes are per modality, in pixels.

    ``max_area``: H * W of each modality; the image decides the aspect ratio (:mod:`fourdnex_jax.pipelines.inputs`).
    ``sigma_schedule``: the UniPC flow-sigma formula (:data:`~fourdnex_jax.sampling.unipc.SIGMA_SCHEDULES`;
    ``"diffusers_0_34"``, the official 4DNeX one, unless the preset or an override says otherwise).
    ``seed``: every image's seed unless seeds are given (the official rule: the same seed for every image, so an
    image's result does not depend on its position in a list), ``0 <= seed < 2**31``.
    ``batch_size``: images per sampling call per batch shard (the mesh's ``data`` x ``fsdp`` shards; per pair of
    ``data`` shards when CFG's two branches go over ``data``). ``release_after_use``: each model's weights are
    deleted from the devices once the call no longer needs them (text encoder after the prompts, CLIP after the
    images, the DiT before the VAE decode), so peak memory is the largest stage, not the sum; the pipeline then
    serves one call. ``weight_quant``: 'none' | 'int8' (a quantised copy of
    the DiT; the caller's model is untouched). ``step_cache_interval``: 0 = no step cache (the exact sampler);
    k >= 1 = the transformer blocks run in full every k steps and at the last step, the steps between reuse the
    cached block residual (k = 1: every step full, bit-identical to 0). ``stream_blocks``: the DiT's and UMT5's
    stacked block weights stay in host memory and each block is brought to the device one block ahead of its use
    (:mod:`fourdnex_jax.models.streaming`; the same values as resident weights). ``decode_tile``: (h, w) latent
    pixels per tile of the spatially tiled VAE decode (``WanVAE.decode(tile=...)``, the same result as the whole
    decode, less memory); (0, 0) decodes whole frames."""

    num_frames: int
    max_area: int
    num_steps: int
    guidance_scale: float
    negative_prompt: str
    text_len: int
    flow_shift: float
    solver: str
    sigma_schedule: str = OFFICIAL_SIGMA_SCHEDULE
    seed: int = 42
    batch_size: int = 1
    resize_mode: str = "aspect"
    weight_quant: str = "none"
    step_cache_interval: int = 0
    release_after_use: bool = False
    stream_blocks: bool = False
    decode_tile: tuple[int, int] = (0, 0)

    def __post_init__(self):
        object.__setattr__(self, "decode_tile", tuple(self.decode_tile))
        bounds.check_dataclass(self, "sampling settings")
        if (len(self.decode_tile) != 2 or any(not isinstance(v, int) or isinstance(v, bool) or v < 0
                                              for v in self.decode_tile)
                or (0 in self.decode_tile and self.decode_tile != (0, 0))):
            raise ValueError(f"decode_tile={self.decode_tile!r}: use (h, w) latent pixels >= 1, or (0, 0) for whole "
                             "frames")
        positive = {"num_frames": self.num_frames, "max_area": self.max_area, "num_steps": self.num_steps,
                    "text_len": self.text_len, "batch_size": self.batch_size}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: use an integer >= 1")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r}; use one of {SOLVERS}")
        check_sigma_schedule(self.sigma_schedule)
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode={self.resize_mode!r}; use one of {RESIZE_MODES}")
        if self.weight_quant not in WEIGHT_QUANT:
            raise ValueError(f"weight_quant={self.weight_quant!r}; use one of {WEIGHT_QUANT}")
        if int(self.step_cache_interval) < 0:
            raise ValueError(f"step_cache_interval={self.step_cache_interval}; use 0 (off) or k >= 1 (full DiT "
                             "evaluation every k steps)")
        if not 0 <= int(self.seed) < 2**31:
            raise ValueError(f"seed={self.seed} out of range: use 0 <= seed < 2**31")
        if not isinstance(self.negative_prompt, str):
            raise ValueError(f"negative_prompt={self.negative_prompt!r}: use a string")

    @classmethod
    def from_preset(cls, preset: SamplingPreset, **overrides: Any) -> SampleSettings:
        """The preset's values, then ``overrides`` (any field)."""
        return cls(**{**preset.to_dict(), **overrides})

    @classmethod
    def from_config(cls, sample: Mapping[str, Any], preset: SamplingPreset) -> SampleSettings:
        """From ``config.sample`` (every field present, no other key): preset fields that are ``None`` take
        ``preset``'s value."""
        values = dict(sample.to_dict() if hasattr(sample, "to_dict") else sample)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(values) - names), sorted(names - set(values))
        if unknown or missing:
            raise ValueError(f"config.sample: unknown keys {unknown}, missing keys {missing}")
        for name, value in values.items():
            if value is None:
                if name not in PRESET_FIELDS:
                    raise ValueError(f"config.sample.{name} is None; only the preset fields {PRESET_FIELDS} "
                                     "may be left to the bundle")
                values[name] = getattr(preset, name)
        return cls(**values)

    @property
    def preset(self) -> SamplingPreset:
        return SamplingPreset(**{name: getattr(self, name) for name in PRESET_FIELDS})

    def overrides_of(self, preset: SamplingPreset) -> dict[str, Any]:
        """The preset fields whose value differs from ``preset``'s (what a run changed)."""
        return {k: getattr(self, k) for k in PRESET_FIELDS if getattr(self, k) != getattr(preset, k)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def tile(self) -> tuple[int, int] | None:
        """``decode_tile`` as ``WanVAE.decode``'s ``tile`` (None: whole frames)."""
        return None if self.decode_tile == (0, 0) else self.decode_tile

    def schedule(self, scheduler: UniPCConfig = UniPCConfig()):
        """The solver schedule these settings sample with (timesteps, sigmas, coefficient table): ``solver`` with
        ``num_steps``, ``flow_shift`` and ``sigma_schedule`` on the model's UniPC config ``scheduler`` (the bundle's
        ``scheduler/scheduler_config.json``). The one place the pipeline, the plan and the tests get it from."""
        return make_schedule(self.solver, self.num_steps, self.flow_shift, scheduler, self.sigma_schedule)


def size_multiple(transformer_config, vae_config) -> tuple[int, int]:
    """(height, width) step of a pixel size the model runs at: the VAE's spatial factor times the DiT's patch
    (16 x 16 for Wan2.1: 8 x 2)."""
    f = vae_config.spatial_factor
    return f * transformer_config.patch_size[1], f * transformer_config.patch_size[2]


def check_model(settings: SampleSettings, transformer_config, vae_config) -> None:
    """Raises ValueError naming the setting when the model cannot run ``settings``: frames not ``1 + kt``
    (t = the VAE's temporal factor), an area below one (multiple x multiple) patch, or a DiT that is not in the
    4DNeX width layout."""
    if transformer_config.modality_layout != "width":
        raise ValueError(f"the 4DNeX pipeline needs the width layout, the DiT has "
                         f"{transformer_config.modality_layout!r}")
    t = vae_config.temporal_factor
    if (settings.num_frames - 1) % t:
        raise ValueError(f"num_frames={settings.num_frames}: this model needs 1 + {t}k frames (the VAE compresses "
                         f"time {t}x after the first frame), e.g. {1 + t * max(1, (settings.num_frames - 1) // t)}")
    mh, mw = size_multiple(transformer_config, vae_config)
    if settings.max_area < mh * mw:
        raise ValueError(f"max_area={settings.max_area}: below one {mh} x {mw} latent patch of this model")
