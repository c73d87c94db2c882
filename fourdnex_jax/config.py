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
