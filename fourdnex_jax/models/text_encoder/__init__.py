"""UMT5 text encoder of Wan2.1 (frozen): config, model, tokenizer and weight mapping."""

from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.models.text_encoder.mapping import umt5_mapping
from fourdnex_jax.models.text_encoder.model import UMT5Encoder, encode_prompts, wan_prompt_embeds
from fourdnex_jax.models.text_encoder.tokenizer import UMT5Tokenizer, clean_prompt

__all__ = ["UMT5Config", "UMT5Encoder", "UMT5Tokenizer", "clean_prompt", "encode_prompts", "umt5_mapping",
           "wan_prompt_embeds"]
