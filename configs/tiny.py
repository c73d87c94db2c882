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
    return finalize(config)
