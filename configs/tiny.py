"""Tiny 4DNeX DiT for CPU tests, smoke runs and the bundled demo (2 layers, dim 64)."""

from fourdnex_jax.config import base_config, finalize


def get_config(arg=None):
    del arg
    config = base_config()
    config.name = "tiny"
    m = config.model
    m.num_heads, m.head_dim, m.num_layers, m.ffn_dim = 2, 32, 2, 128
    m.text_dim, m.image_dim, m.added_kv_proj_dim = 32, 24, 64
    m.lora_rank, m.lora_alpha = 4, 2.0
    s = config.smoke
    s.latent_frames, s.latent_height, s.latent_width, s.text_len, s.num_steps = 3, 8, 12, 16, 4
    t, o, d = config.train, config.optim, config.data
    t.num_steps, t.global_batch_size, t.log_every, t.checkpoint_every = 300, 8, 10, 100
    o.learning_rate, o.warmup_steps, o.weight_decay = 1e-2, 20, 0.0
    d.text_len = 16
    d.synthetic_dir, d.synthetic_clips = "out/data/synthetic_tiny", 32
    d.synthetic_frames, d.synthetic_height, d.synthetic_width = 9, 64, 96  # latent 3 x 8 x 12 per modality
    p = config.sample  # the bundled tiny model (checkpoints/tiny): 9 frames at 64 x 96 per modality
    p.num_frames, p.height, p.width, p.num_steps, p.text_len = 9, 64, 96, 20, 16  # text_len = data.text_len
    # No CFG: the tiny model never saw a dropped caption in training (the trainer has no caption dropout), so it has
    # no unconditional branch to extrapolate from; on the validation scenes CFG 5.0 raised the pointmap error from
    # 0.57 to 0.86 (docs/tiny_model.md).
    p.guidance_scale = 1.0
    return finalize(config)
