"""4DNeX on Wan2.1-I2V-14B-480P: the released model's architecture and its LoRA (r=64, alpha=32 -> scale 0.5).

49 frames at 480x720 per modality -> latent 13 x 60 x 90 per modality, 13 x 60 x 180 fused (width layout),
35,100 tokens after 1x2x2 patches. Frozen base in bf16, adapter in fp32, full remat and chunked attention.
"""

from fourdnex_jax.config import base_config, finalize


def get_config(arg=None):
    del arg
    config = base_config()
    config.name = "wan21_i2v_14b_480p"
    m = config.model  # architecture defaults of base_config are Wan2.1-I2V-14B's
    m.lora_rank, m.lora_alpha = 64, 32.0
    m.param_dtype, m.compute_dtype = "bfloat16", "bfloat16"
    m.remat_policy, m.attention = "full", "chunked"
    # 4DNeX training (scripts/finetune.sh): global batch 8, AdamW 2e-5 (0.9, 0.95), wd 1e-4, clip 1.0, 100 warmup
    # steps then linear decay (DeepSpeed WarmupDecayLR), checkpoint every 500 steps, keep 2. Base weights from
    # tools/convert.py torch-to-jax output, data from the encode step (set both on the command line).
    config.train.global_batch_size, config.train.checkpoint_every, config.train.max_to_keep = 8, 500, 2
    config.data.text_len = 512
    return finalize(config)
