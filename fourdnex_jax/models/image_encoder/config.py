"""Architecture of the CLIP vision tower (transformers ``CLIPVisionModel``) used as Wan2.1-I2V's image encoder."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# transformers ``CLIPVisionConfig`` keys that do not change the tower's forward pass (run-time switches, init scales,
# the projection head that ``CLIPVisionModel`` does not have, dropout at inference, file bookkeeping). Dropped.
HF_BOOKKEEPING_KEYS = frozenset({
    # _attn_implementation_autoset: written by transformers 4.48-4.50 (4.49.0 is the official 4DNeX pin) into the
    # config.json of a model that picked its attention kernel; bookkeeping only
    "_attn_implementation_autoset",
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "return_dict", "output_hidden_states", "output_attentions", "chunk_size_feed_forward", "id2label", "label2id",
    "problem_type", "is_encoder_decoder", "initializer_range", "initializer_factor", "projection_dim",
    "attention_dropout", "dropout", "tie_word_embeddings",
})

SUPPORTED_ACTIVATIONS = ("gelu", "quick_gelu", "gelu_new", "gelu_pytorch_tanh")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """ViT hyper-parameters (names as in transformers). Tokens: 1 class token + (image_size / patch_size)^2 patches.

    ``hidden_act``: transformers' default is "quick_gelu" (OpenAI CLIP); the OpenCLIP ViT-H/14 that Wan uses
    (``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, converted by diffusers' ``convert_wan_to_diffusers.py``) was trained
    with exact GELU and its config says "gelu", so :meth:`vit_h14` uses "gelu"."""

    hidden_size: int = 1280
    intermediate_size: int = 5120
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} not supported; use one of {SUPPORTED_ACTIVATIONS}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid ** 2 + 1

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> CLIPVisionConfig:
        """From a transformers vision ``config.json`` dict (``clip_vision_model``), or a full CLIP config (its
        ``vision_config`` is used). Unknown keys raise; :data:`HF_BOOKKEEPING_KEYS` are dropped."""
        if "vision_config" in hf:
            hf = hf["vision_config"]
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in hf if k not in fields and k not in HF_BOOKKEEPING_KEYS)
        if unknown:
            raise ValueError(f"unknown CLIP vision config key(s) {unknown}: refusing to guess their effect")
        # transformers' defaults apply to fields a config file leaves out (hidden_act defaults to quick_gelu there).
        hf_defaults = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
        return cls(**{k: hf.get(k, hf_defaults[k]) for k in fields})

    @classmethod
    def vit_h14(cls) -> CLIPVisionConfig:
        """OpenCLIP ViT-H/14 at 224 px (Wan2.1 I2V ``image_encoder/``): 257 tokens x 1280, about 632 M parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> CLIPVisionConfig:
        """A test-size tower: 32 px images, 8 px patches -> 17 tokens of width 24."""
        return cls(hidden_size=24, intermediate_size=40, num_hidden_layers=3, num_attention_heads=2,
                   image_size=32, patch_size=8)
