"""Experiment configs: ``ml_collections`` ConfigDicts defined by small Python files under ``configs/``.

Every config file has ``get_config(arg=None)`` returning :func:`base_config` with its changes; the result is
*locked*, so ``--config.x=y`` command-line overrides and code can change values but never add keys (a typo is an
error, not a silently ignored setting). ``config.model`` holds exactly the fields of
:class:`~fourdnex_jax.models.transformer.WanTransformerConfig`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import ml_collections

from fourdnex_jax.models.transformer import WanTransformerConfig

# Logical axis -> mesh axes (maxtext style). Used by the sharded training/inference code; every logical name that
# a parameter of the package carries must appear here (tests check it).
DEFAULT_LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("layers", None),
    ("embed", "fsdp"),
    ("embed_in", None),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("modulation", "tensor"),
    ("modulation_table", None),
    ("lora_rank", None),
    ("domains", None),
    ("text_embed", None),
    ("image_embed", None),
    ("image_mlp", None),
    ("freq", None),
    ("patch_t", None),
    ("patch_h", None),
    ("patch_w", None),
    ("latent_channels", None),
    ("patch_out", None),
    # VAE convolutions (kernels (t, h, w, in, out)) and the encoders' embeddings: the frozen conditioning models
    # are small next to the DiT; shard only their widest axes.
    ("conv_t", None),
    ("conv_h", None),
    ("conv_w", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("vocab", "tensor"),
    ("positions", None),
    ("relpos_buckets", None),
)


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
    config.sharding.mesh_axes = ("data", "fsdp", "context", "tensor")
    config.sharding.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES
    # The smoke run (tools/smoke.py): latent shape per modality (T, H, W) and flow-matching sampling settings.
    config.smoke = ml_collections.ConfigDict()
    config.smoke.latent_frames = 13
    config.smoke.latent_height = 60
    config.smoke.latent_width = 90
    config.smoke.text_len = 512
    config.smoke.num_steps = 50
    config.smoke.guidance_scale = 5.0
    config.smoke.flow_shift = 3.0
    # Image-to-4D sampling (tools/generate.py): per-modality video size, solver and guidance (4DNeX: 49 frames,
    # 480 x 720 per modality, 50 UniPC steps with flow_shift 3.0, CFG 5.0 with an empty negative prompt, seed 42).
    config.sample = ml_collections.ConfigDict()
    config.sample.num_frames = 49
    config.sample.height = 480
    config.sample.width = 720
    config.sample.num_steps = 50
    config.sample.solver = "unipc"  # 'unipc' (Wan's scheduler) | 'euler'
    config.sample.flow_shift = 3.0
    config.sample.guidance_scale = 5.0
    config.sample.negative_prompt = ""
    config.sample.seed = 42
    config.sample.text_len = 512  # prompt embeddings are zero-padded to this length (Wan: 512)
    config.sample.batch_size = 1  # images per sampling call per device (data-parallel over devices)
    config.sample.xyz_normalization = "reference"  # how the training XYZ was normalised (recorded in outputs)
    # --- sharded LoRA training (fourdnex_jax.training, tools/train.py, tools/plan.py) ---------------------------
    config.train = ml_collections.ConfigDict()
    config.train.num_steps = 5000
    config.train.global_batch_size = 8  # samples per optimizer step (all hosts, all micro-batches)
    config.train.grad_accum_steps = 1  # micro-batches per step (global_batch_size must be a multiple)
    config.train.log_every = 10
    config.train.checkpoint_every = 500
    config.train.max_to_keep = 2
    config.train.async_checkpoint = True
    config.train.nan_policy = "skip"  # skip: drop the update of a non-finite step; stop: raise, never save it
    config.train.max_nan_skips = 20  # consecutive skipped steps before stopping anyway
    config.train.base_checkpoint = ""  # converted folder (tools/convert.py); "" = random base from config.seed
    config.train.peak_tflops_per_device = 0.0  # 0: from the device kind (MFU omitted where unknown)
    config.train.profile_steps = 0
    config.train.distributed = False  # jax.distributed.initialize (multi-host); coordinator from env when ""
    config.train.coordinator_address = ""
    config.train.num_processes = 0
    config.train.process_id = -1
    config.optim = ml_collections.ConfigDict()  # 4DNeX: DeepSpeed AdamW + WarmupDecayLR
    config.optim.learning_rate = 2e-5
    config.optim.b1 = 0.9
    config.optim.b2 = 0.95
    config.optim.eps = 1e-8
    config.optim.weight_decay = 1e-4
    config.optim.grad_clip_norm = 1.0
    config.optim.warmup_steps = 100
    config.optim.decay_steps = 0  # linear decay to end_learning_rate at this step (0: train.num_steps)
    config.optim.end_learning_rate = 0.0
    config.data = ml_collections.ConfigDict()
    config.data.dir = ""  # an encoded6d dataset folder (.../encoded6d/<config>/<version>); "" = synthetic
    config.data.split = "train"
    config.data.text_len = 512
    config.data.sample_posterior = True  # latent = mean + std * eps (a fresh VAE sample each time)
    config.data.num_threads = 2
    config.data.num_workers = 0
    config.data.synthetic_dir = "out/data/synthetic"  # where the synthetic encoded dataset is built if missing
    config.data.synthetic_clips = 32
    config.data.synthetic_frames = 49
    config.data.synthetic_height = 64
    config.data.synthetic_width = 96
    return config


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Validates the model section and locks the config against new keys."""
    model_config(config)
    config.lock()
    return config


def model_config(config: ml_collections.ConfigDict) -> WanTransformerConfig:
    """The typed transformer config of ``config.model`` (unknown keys or invalid values raise)."""
    return WanTransformerConfig.from_dict(config.model.to_dict())


def load_config_file(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
    """Imports ``path`` and returns its ``get_config(arg)`` (for scripts and tests; tools use config_flags)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"fourdnex_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import config file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg is not None else module.get_config()
