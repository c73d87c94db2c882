"""4DNeX on Wan2.1-I2V-14B-480P: the released model's architecture and its LoRA (r=64, alpha=32 -> scale 0.5).

49 frames at 480x720 per modality -> latent 13 x 60 x 90 per modality, 13 x 60 x 180 fused (width layout),
35,100 tokens after 1x2x2 patches. Frozen base in bf16, adapter in fp32, full remat and chunked attention.
Base weights from the ``fourdnex convert`` output, data from the encode step (set both on the command line).

Variants (``--config configs/wan21_i2v_14b_480p.py:optim=reference_declared``): ``optim`` names the optimizer
preset (default ``reference_effective``, see ``fourdnex_jax.recipe``).
"""

from fourdnex_jax.config import base_config, finalize, parse_arg


def get_config(arg=None):
    arg = parse_arg(arg, optim="reference_effective")
    config = base_config()
    config.name = "wan21_i2v_14b_480p"

    # The architecture defaults of base_config are Wan2.1-I2V-14B's.
    config.model.lora_rank = 64
    config.model.lora_alpha = 32.0
    config.model.param_dtype = "bfloat16"
    config.model.compute_dtype = "bfloat16"
    config.model.remat_policy = "full"
    config.model.attention = "chunked"

    # 4DNeX training (scripts/finetune.sh): global batch 8 (8 GPUs x 1), checkpoint every 500 steps, keep 2.
    config.train.global_batch_size = 8
    config.train.checkpoint_every = 500
    config.train.max_to_keep = 2

    config.optim.preset = arg.optim

    config.data.text_len = 512
    return finalize(config)
