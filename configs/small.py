"""Small 4DNeX DiT: Wan's real head_dim (128) and RoPE split, 4 layers; for CPU benchmarks and parity."""

from fourdnex_jax.config import base_config, finalize


def get_config(arg=None):
    del arg
    config = base_config()
    config.name = "small"
    m = config.model
    m.num_heads, m.head_dim, m.num_layers, m.ffn_dim = 4, 128, 4, 1536
    m.text_dim, m.image_dim, m.added_kv_proj_dim = 256, 128, 512
    m.lora_rank, m.lora_alpha = 16, 8.0
    s = config.smoke
    s.latent_frames, s.latent_height, s.latent_width, s.text_len, s.num_steps = 5, 16, 24, 64, 4
    t, o, d = config.train, config.optim, config.data
    t.num_steps, t.global_batch_size, t.log_every, t.checkpoint_every = 200, 8, 10, 100
    o.learning_rate, o.warmup_steps = 1e-3, 20
    d.text_len = 64
    d.synthetic_dir, d.synthetic_clips = "out/data/synthetic_small", 32
    d.synthetic_frames, d.synthetic_height, d.synthetic_width = 17, 128, 192  # latent 5 x 16 x 24 per modality
    return finalize(config)
