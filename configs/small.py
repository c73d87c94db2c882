"""Small 4DNeX DiT: Wan's real head_dim (128) and RoPE split, 4 layers; for CPU benchmarks and parity.

Variants (``--config configs/small.py:optim=reference_effective``): ``optim`` names the optimizer preset (default
``reference_declared``, at the small model's own LR and warmup).
"""

from fourdnex_jax.config import base_config, finalize, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, optim="reference_declared")
    config = base_config()
    config.name = "small"

    config.model.num_heads = 4
    config.model.head_dim = 128
    config.model.num_layers = 4
    config.model.ffn_dim = 1536
    config.model.text_dim = 256
    config.model.image_dim = 128
    config.model.added_kv_proj_dim = 512
    config.model.lora_rank = 16
    config.model.lora_alpha = 8.0

    config.train.num_steps = 200
    config.train.global_batch_size = 8
    config.train.log_every = 10
    config.train.checkpoint_every = 100

    config.optim.preset = arg.optim
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 20

    config.data.text_len = 64
    config.data.synthetic_clips = 32
    config.data.synthetic_frames = 17  # latent 5 x 16 x 24 per modality
    config.data.synthetic_height = 128
    config.data.synthetic_width = 192
    return finalize(config)
