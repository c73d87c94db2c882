"""Tiny 4DNeX DiT for CPU tests and benchmarks (2 layers, dim 64); the bundled demo's DiT is this config with
4 heads (dim 128), FFN 256 and 4 layers, trained whole (the exact command: docs/tiny_model.md).

Its sampling preset is ``fourdnex_jax.recipe.SAMPLING_PRESETS["tiny"]`` (recorded in checkpoints/tiny).
Variants (``--config configs/tiny.py:optim=reference_effective``): ``optim`` names the optimizer preset (default
``reference_declared``, what the shipped tiny model was trained with, at its own LR / warmup / weight decay).
"""

from fourdnex_jax.config import base_config, finalize, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, optim="reference_declared")
    config = base_config()
    config.name = "tiny"

    config.model.num_heads = 2
    config.model.head_dim = 32
    config.model.num_layers = 2
    config.model.ffn_dim = 128
    config.model.text_dim = 32
    config.model.image_dim = 24
    config.model.added_kv_proj_dim = 64
    config.model.lora_rank = 4
    config.model.lora_alpha = 2.0

    config.train.num_steps = 300
    config.train.global_batch_size = 8
    config.train.log_every = 10
    config.train.checkpoint_every = 100

    config.optim.preset = arg.optim
    config.optim.learning_rate = 1e-2
    config.optim.warmup_steps = 20
    config.optim.weight_decay = 0.0

    config.data.text_len = 16  # = the tiny sampling preset's text_len
    config.data.synthetic_clips = 32
    config.data.synthetic_frames = 9  # latent 3 x 8 x 12 per modality
    config.data.synthetic_height = 64
    config.data.synthetic_width = 96
    return finalize(config)
