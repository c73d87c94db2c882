"""Weight table between transformers' ``UMT5EncoderModel`` state dict and :class:`UMT5Encoder`, and the loader.

Torch keys are those transformers writes (``shared.weight``, ``encoder.block.{i}...``). ``encoder.embed_tokens.weight``
is the same tensor as ``shared.weight`` (tied embeddings): it may be present and is ignored; a checkpoint that holds
only ``encoder.embed_tokens.weight`` is read through it.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.loaders.mapping import Rule, TensorSource, WeightMapping
from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.loaders.sources import (RenamedSource, load_into_abstract, open_source,
                                                     read_hf_config)
from fourdnex_jax.models.text_encoder.model import UMT5Encoder

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


def _untie(source: TensorSource) -> TensorSource:
    """Reads the embedding through the tied key when ``shared.weight`` itself was not saved."""
    keys = set(source.keys())
    if SHARED_KEY not in keys and TIED_KEY in keys:
        return RenamedSource(source, lambda k: SHARED_KEY if k == TIED_KEY else k)
    return source


def load_umt5_from_hf(
    checkpoint: str | os.PathLike | Mapping[str, Any] | TensorSource,
    config: UMT5Config | None = None,
    *,
    param_dtype: jnp.dtype = jnp.float32,
    compute_dtype: jnp.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> UMT5Encoder:
    """A :class:`UMT5Encoder` from a transformers folder (``config.json`` + ``model.safetensors`` or shards, e.g.
    Wan's ``text_encoder/``), a torch ``state_dict()`` or any tensor source (then ``config`` is required).

    Strict: raises :class:`fourdnex_jax.loaders.mapping.WeightMappingError` listing every missing, unexpected or
    mis-shaped tensor before converting anything. Weights are cast to ``param_dtype``."""
    if config is None:
        config = UMT5Config.from_hf_config(read_hf_config(checkpoint))
    source = _untie(open_source(checkpoint))
    return load_into_abstract(
        lambda: UMT5Encoder(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, compute_dtype=compute_dtype),
        umt5_mapping(config), source, progress)
