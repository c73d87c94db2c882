"""Weight table between transformers' ``UMT5EncoderModel`` state dict and :class:`UMT5Encoder`.

Torch keys are those transformers writes (``shared.weight``, ``encoder.block.{i}...``). ``encoder.embed_tokens.weight``
is the same tensor as ``shared.weight`` (tied embeddings): it may be present and is ignored; a checkpoint that holds
only ``encoder.embed_tokens.weight`` is read through it (:func:`tied_renames`; the loader is
:func:`fourdnex_jax.weights.from_diffusers.load_umt5_from_hf`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fourdnex_jax.models.mapping import Rule, WeightMapping
from fourdnex_jax.models.text_encoder.config import UMT5Config

SHARED_KEY = "shared.weight"
TIED_KEY = "encoder.embed_tokens.weight"

LINEAR = "o i -> i o"


def umt5_mapping(config: UMT5Config) -> WeightMapping:
    """The strict two-way table for ``config`` (gated FFNs have wi_0/wi_1, plain ones wi)."""
    blk = "encoder.block.{i}.layer"
    ffn = ["wi_0", "wi_1", "wo"] if config.is_gated else ["wi", "wo"]
    rules = [
        Rule(SHARED_KEY, "token_embedding"),
        Rule(f"{blk}.0.layer_norm.weight", "blocks/attn_norm/scale"),
        *[Rule(f"{blk}.0.SelfAttention.{p}.weight", f"blocks/attn/{p}/kernel", LINEAR) for p in "qkvo"],
        Rule(f"{blk}.0.SelfAttention.relative_attention_bias.weight", "blocks/attn/relative_attention_bias"),
        Rule(f"{blk}.1.layer_norm.weight", "blocks/ffn_norm/scale"),
        *[Rule(f"{blk}.1.DenseReluDense.{p}.weight", f"blocks/ffn/{p}/kernel", LINEAR) for p in ffn],
        Rule("encoder.final_layer_norm.weight", "final_norm/scale"),
    ]
    # TIED_KEY: transformers' tied copy of shared.weight (see module docstring).
    return WeightMapping(rules, num_layers=config.num_layers, ignore=[rf"^{re.escape(TIED_KEY)}$"])


def tied_renames(keys: Iterable[str]) -> dict[str, str]:
    """``{TIED_KEY: SHARED_KEY}`` when a checkpoint holds the embedding only under its tied name, else ``{}``."""
    keys = set(keys)
    return {TIED_KEY: SHARED_KEY} if SHARED_KEY not in keys and TIED_KEY in keys else {}
