"""Experiment configs: ``ml_collections`` ConfigDicts defined by small Python files under ``configs/``.

Every config file has ``get_config(arg=None)`` returning :func:`base_config` with its changes; the result is
*locked*, so ``--config.x=y`` command-line overrides and code can change values but never add keys (a typo is an
error, not a silently ignored setting). ``config.model`` holds exactly the fields of
:class:`~fourdnex_jax.models.transformer.WanTransformerConfig`. Config files write one setting per line; variants
come through the config argument (``--config configs/x.py:key=value``, parsed by :func:`parse_arg`).
Fields set to ``placeholder(type)`` (None) take their value elsewhere: ``optim.*`` from the optimizer preset
(:func:`fourdnex_jax.training.optimizer.resolve`), ``sample.*`` from the bundle's sampling preset.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import ml_collections
from ml_collections.config_dict import placeholder

from fourdnex_jax.models.transformer import WanTransformerConfig
from fourdnex_jax.recipe import OPTIMIZER_PRESETS, SCHEDULES
from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, MESH_AXES
from fourdnex_jax.utils import bounds
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.schema import check_choices, check_dataclass_values


def base_config() -> ml_collections.ConfigDict:
    """Every key a config may set, with the defaults of the real 4DNeX model."""
    config = ml_collections.ConfigDict()
    config.name = "base"
    config.seed = 0
    config.model = ml_collections.ConfigDict(WanTransformerConfig().to_dict())
    config.model.patch_size = tuple(config.model.patch_size)
    config.model.lora_targets = tuple(config.model.lora_targets)
    # Optional fields are typed by their default; allow None <-> int for the I2V branch.
    config.sharding = ml_collections.ConfigDict()
    config.sharding.mesh_shape = (1, -1, 1, 1)  # data, fsdp, context, tensor (-1: all remaining devices)
    config.sharding.mesh_axes = MESH_AXES
    config.sharding.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES
    # Sampling (fourdnex generate, ImageTo4D). None = the bundle's preset (manifest.json: sampling_preset, one of
    # fourdnex_jax.recipe.SAMPLING_PRESETS).
    config.sample = ml_collections.ConfigDict()
    config.sample.num_frames = placeholder(int)  # 1 + 4k (Wan's temporal factor)
    config.sample.max_area = placeholder(int)  # pixels per modality (14B: 480 * 720)
    config.sample.num_steps = placeholder(int)
    config.sample.solver = placeholder(str)  # 'unipc' (Wan's scheduler) | 'euler'
    config.sample.flow_shift = placeholder(float)
    # UniPC flow sigmas: 'diffusers_0_34' (the official 4DNeX schedule) | 'diffusers_0_37' (diffusers >= 0.37)
    config.sample.sigma_schedule = placeholder(str)
    config.sample.guidance_scale = placeholder(float)
    config.sample.negative_prompt = placeholder(str)
    config.sample.text_len = placeholder(int)  # prompt tokens (zero-padded)
    config.sample.seed = 42
    config.sample.batch_size = 1  # images per sampling call per batch shard (data x fsdp; see SampleSettings)
    config.sample.resize_mode = "aspect"  # 'aspect' (4DNeX: aspect kept at max_area, bicubic, no crop) | 'cover_crop'
    config.sample.weight_quant = "none"  # 'none' | 'int8' (weight-only DiT block linears)
    config.sample.step_cache_interval = 0  # 0 off; k: transformer blocks in full every k steps
    config.sample.release_after_use = False  # free each model's weights once the call is past its stage
    config.sample.stream_blocks = False  # DiT / UMT5 block weights in host memory, streamed a block ahead
    config.sample.decode_tile = (0, 0)  # latent (h, w) tile of the VAE decode (exact, less memory); (0, 0): whole
    # --- sharded LoRA training (fourdnex_jax.training, fourdnex train, fourdnex plan) ---------------------------
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 5000
    config.train.global_batch_size = 8  # samples per optimizer step (all hosts, all micro-batches)
    config.train.grad_accum_steps = 1  # micro-batches per step (global_batch_size must be a multiple)
    config.train.log_every = 10
    config.train.checkpoint_every = 500
    config.train.max_to_keep = 2
    config.train.async_checkpoint = True
    config.train.nan_policy = "skip"  # skip: drop the update of a non-finite step; stop: raise, never save it
    # Resume refuses a config change that breaks exactness (fourdnex_jax/training/resume.py); list the dotted keys
    # whose change you accept (comma-separated, fnmatch patterns, "*" for all).
    config.train.resume_allow_changes = ""
    config.train.max_nan_skips = 20  # consecutive skipped steps before stopping anyway
    # adapter: LoRA + domain embeddings over a frozen base (4DNeX); full: every DiT weight (the reference's
    # --training_type sft, model.lora_rank must be 0), initialised from base_checkpoint or config.seed
    config.train.trainable = "adapter"
    config.train.base_checkpoint = ""  # converted folder (fourdnex convert); "" = random base from config.seed
    config.train.peak_tflops_per_device = 0.0  # 0: from the device kind (MFU omitted where unknown)
    config.train.profile_steps = 0
    config.train.distributed = False  # jax.distributed.initialize (multi-host); coordinator from env when ""
    config.train.coordinator_address = ""
    config.train.num_processes = 0
    config.train.process_id = -1
    # AdamW + clipping + LR schedule: a named preset of fourdnex_jax.recipe.OPTIMIZER_PRESETS ("reference_effective":
    # what the reference's DeepSpeed run effectively used, constant LR, betas (0.9, 0.999); "reference_declared":
    # what its code declares, betas (0.9, 0.95), warmup + linear decay; evidence in the recipe module docstring).
    # Every other field left None takes the preset's value; a value set here overrides it.
    config.optim = ml_collections.ConfigDict()
    config.optim.preset = "reference_effective"
    config.optim.learning_rate = placeholder(float)
    config.optim.b1 = placeholder(float)
    config.optim.b2 = placeholder(float)
    config.optim.eps = placeholder(float)
    config.optim.weight_decay = placeholder(float)
    config.optim.grad_clip_norm = placeholder(float)  # 0: no clipping
    config.optim.schedule = placeholder(str)  # 'constant' | 'linear_decay' (after the linear warmup)
    config.optim.warmup_steps = placeholder(int)
    config.optim.end_learning_rate = placeholder(float)  # linear_decay: the LR at decay_steps
    config.optim.decay_steps = 0  # linear_decay: the step the LR reaches end_learning_rate (0: train.num_steps)
    config.data = ml_collections.ConfigDict()
    config.data.dir = ""  # an encoded6d dataset folder (.../encoded6d/<config>/<version>); required to train
    config.data.split = "train"
    config.data.text_len = 512
    config.data.sample_posterior = True  # latent = mean + std * eps (a fresh VAE sample each time)
    config.data.num_threads = 2
    config.data.num_workers = 0
    # The synthetic encoded dataset (`fourdnex train --synthetic` builds it here if missing and trains on it): an
    # absolute folder, or one relative to the cache folder ($FOURDNEX_CACHE, default ~/.cache/fourdnex_jax), never
    # to the working directory; "" = synthetic/<config name> there.
    config.data.synthetic_dir = ""
    config.data.synthetic_clips = 32
    config.data.synthetic_frames = 49
    config.data.synthetic_height = 64
    config.data.synthetic_width = 96
    return config


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
    """big_vision-style config argument: ``"k1=v1,k2=v2"`` (from ``--config file.py:ARG``) over ``defaults``; values
    take the type of their default, unknown keys raise."""
    out = ml_collections.ConfigDict(defaults)
    for item in (arg or "").split(","):
        if not item.strip():
            continue
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(defaults)}")
        kind = type(defaults[key])
        out[key] = (value.strip().lower() in ("1", "true", "yes")) if kind is bool else kind(value.strip())
    return out


#: Enumerated config values (None: left to a preset). The sampling enumerations are checked by
#: :class:`fourdnex_jax.pipelines.settings.SampleSettings` against the bundle, before any weights load.
CHOICES = {
    "train.nan_policy": ("skip", "stop"),
    "train.trainable": ("adapter", "full"),
    "optim.preset": tuple(sorted(OPTIMIZER_PRESETS)),
    "optim.schedule": (None, *SCHEDULES),
}


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates the model section and locks the config against new keys."""
    model_config(config)
    config.lock()
    return config


def validate(config: ml_collections.ConfigDict, where: str = "config") -> ml_collections.ConfigDict:
    """Checks every enumerated value (:data:`CHOICES`), every numeric value's range (:data:`fourdnex_jax.utils.
    bounds.BOUNDS`: non-finite or meaningless settings such as a NaN learning rate or ``max_to_keep=0`` stop here,
    before step 1) and the model section (keys, types, values) after the overrides: a wrong value raises
    :class:`~fourdnex_jax.utils.errors.InputError` naming the key and the choices (a typo such as
    ``nan_policy=ignore`` would otherwise act as the default)."""
    check_choices(config, CHOICES, where)
    bounds.check_config(config.to_dict(), where)  # every numeric value in its range (fourdnex_jax.utils.bounds)
    model = model_config(config, where)
    if config.train.trainable == "full" and model.lora_rank:
        raise InputError(f"{where}.train.trainable='full' trains every DiT weight, so LoRA adds nothing: set "
                         f"{where}.model.lora_rank=0 (it is {model.lora_rank}), or train.trainable='adapter'")
    return config


def model_config(config: ml_collections.ConfigDict, where: str = "config") -> WanTransformerConfig:
    """The typed transformer config of ``config.model`` (unknown keys, wrong types or invalid values raise
    :class:`~fourdnex_jax.utils.errors.InputError` naming ``where.model.KEY``)."""
    values = config.model.to_dict()
    check_dataclass_values(WanTransformerConfig, values, f"{where}.model")
    try:
        return WanTransformerConfig.from_dict(values)
    except ValueError as e:
        raise InputError(f"{where}.model: {e}") from e


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """Imports ``path`` and returns its ``get_config(arg)`` (for scripts and tests; tools use config_flags)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"fourdnex_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
