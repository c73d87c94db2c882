"""Weight table between transformers' ``CLIPVisionModel`` state dict and :class:`CLIPVisionTower`.

Torch keys are written as transformers 5 names them (``embeddings.*``, ``encoder.layers.{i}.*``, ...). Checkpoints
saved by transformers 4 (Wan2.1's ``image_encoder/`` among them) prefix every key with ``vision_model.``; the loader
(:func:`fourdnex_jax.weights.from_diffusers.load_clip_vision_from_hf`) strips that prefix (:func:`legacy_renames`).
Present and ignored, each documented:
  * ``visual_projection.weight``: the projection head of ``CLIPVisionModelWithProjection`` (the class Wan's
    checkpoint was saved from); ``CLIPVisionModel`` and the Wan pipeline do not use it;
  * ``embeddings.position_ids``: a non-trainable ``arange`` buffer that old transformers versions saved.
"""

from __future__ import annotations

from collections.abc import Iterable

from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.mapping import Rule, WeightMapping

LEGACY_PREFIX = "vision_model."
LINEAR = "o i -> i o"
CONV2D = "o i h w -> h w i o"


def _norm(torch_prefix: str, jax_prefix: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"{jax_prefix}/scale"), Rule(f"{torch_prefix}.bias", f"{jax_prefix}/bias")]


def _linear(torch_prefix: str, jax_prefix: str) -> list[Rule]:
    return [Rule(f"{torch_prefix}.weight", f"{jax_prefix}/kernel", LINEAR),
            Rule(f"{torch_prefix}.bias", f"{jax_prefix}/bias")]


def clip_vision_mapping(config: CLIPVisionConfig) -> WeightMapping:
    """The strict two-way table for ``config``."""
    layer = "encoder.layers.{i}"
    rules = [
        Rule("embeddings.class_embedding", "embeddings/class_embedding"),
        Rule("embeddings.patch_embedding.weight", "embeddings/patch_kernel", CONV2D),
        Rule("embeddings.position_embedding.weight", "embeddings/position_embedding"),
        *_norm("pre_layrnorm", "pre_layernorm"),  # sic: transformers' spelling
        *_norm(f"{layer}.layer_norm1", "layers/layer_norm1"),
        *[r for p in ("q_proj", "k_proj", "v_proj", "out_proj")
          for r in _linear(f"{layer}.self_attn.{p}", f"layers/self_attn/{p}")],
        *_norm(f"{layer}.layer_norm2", "layers/layer_norm2"),
        *_linear(f"{layer}.mlp.fc1", "layers/mlp/fc1"),
        *_linear(f"{layer}.mlp.fc2", "layers/mlp/fc2"),
        *_norm("post_layernorm", "post_layernorm"),
    ]
    return WeightMapping(rules, num_layers=config.num_hidden_layers,
                         ignore=[r"^visual_projection\.weight$", r"^embeddings\.position_ids$"])


def legacy_renames(keys: Iterable[str]) -> dict[str, str]:
    """``{key: key without 'vision_model.'}`` for the prefixed keys of a transformers-4 checkpoint."""
    return {k: k[len(LEGACY_PREFIX):] for k in keys if k.startswith(LEGACY_PREFIX)}
