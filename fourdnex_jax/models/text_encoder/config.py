"""Architecture of the UMT5 text encoder (encoder stack only, as Wan uses it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

# Keys of a transformers ``UMT5Config`` dict that do not change the encoder's computation: run-time switches,
# decoder/generation settings, token ids (the tokenizer owns those) and file bookkeeping. They are accepted and dropped.
HF_BOOKKEEPING_KEYS = frozenset({
    # _attn_implementation_autoset: written by transformers 4.48-4.50 (4.49.0 is the official 4DNeX pin) into the
    # config.json of a model that picked its attention kernel; bookkeeping only
    "_attn_implementation_autoset",
    "_name_or_path", "architectures", "model_type", "transformers_version", "torch_dtype", "dtype",
    "tokenizer_class", "output_past", "use_cache", "is_encoder_decoder", "num_decoder_layers",
    "decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id", "initializer_factor",
    "dropout_rate", "classifier_dropout", "scalable_attention", "tie_word_embeddings", "return_dict",
    "output_hidden_states", "output_attentions", "chunk_size_feed_forward", "id2label", "label2id",
    "problem_type", "gradient_checkpointing", "n_positions",
    # derived from feed_forward_proj by transformers; checked for consistency below, not stored
    "dense_act_fn", "is_gated_act",
    # must be False for an encoder; checked below
    "is_decoder",
})

# feed_forward_proj -> (gated, activation name in ``model.ACTIVATIONS``). transformers maps "gated-gelu" to the tanh
# approximation ("gelu_new") for backward compatibility with the original T5.1.1/UMT5 checkpoints.
FEED_FORWARD = {
    "gated-gelu": (True, "gelu_new"),
    "gated-relu": (True, "relu"),
    "gated-silu": (True, "silu"),
    "relu": (False, "relu"),
    "gelu": (False, "gelu"),
    "gelu_new": (False, "gelu_new"),
}


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """UMT5 encoder hyper-parameters (names as in transformers' ``UMT5Config``).

    Attention inner width is ``num_heads * d_kv`` (not necessarily ``d_model``); every layer owns a relative position
    bias table of ``relative_attention_num_buckets x num_heads`` (UMT5, unlike T5, which shares layer 0's)."""

    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARD:
            raise ValueError(f"feed_forward_proj {self.feed_forward_proj!r} not supported; use one of "
                             f"{sorted(FEED_FORWARD)}")
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @property
    def is_gated(self) -> bool:
        return FEED_FORWARD[self.feed_forward_proj][0]

    @property
    def activation(self) -> str:
        return FEED_FORWARD[self.feed_forward_proj][1]

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any]) -> UMT5Config:
        """From a transformers ``config.json`` dict. Unknown keys raise; :data:`HF_BOOKKEEPING_KEYS` are dropped after
        consistency checks (an encoder must not be a decoder; ``dense_act_fn``/``is_gated_act`` must agree with
        ``feed_forward_proj``)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in hf if k not in fields and k not in HF_BOOKKEEPING_KEYS)
        if unknown:
            raise ValueError(f"unknown UMT5 config key(s) {unknown}: refusing to guess their effect")
        if hf.get("is_decoder", False):
            raise ValueError("is_decoder=True: this is the UMT5 *encoder*; a decoder config cannot be loaded")
        cfg = cls(**{k: v for k, v in hf.items() if k in fields})
        if "is_gated_act" in hf and bool(hf["is_gated_act"]) != cfg.is_gated:
            raise ValueError(f"is_gated_act={hf['is_gated_act']} contradicts "
                             f"feed_forward_proj={cfg.feed_forward_proj!r}")
        if "dense_act_fn" in hf and hf["dense_act_fn"] != cfg.activation:
            # transformers recomputes dense_act_fn from feed_forward_proj; a stored value that disagrees means the
            # file was edited by hand and we cannot tell which one the author meant.
            raise ValueError(f"dense_act_fn={hf['dense_act_fn']!r} contradicts feed_forward_proj="
                             f"{cfg.feed_forward_proj!r} (which implies {cfg.activation!r})")
        return cfg

    @classmethod
    def umt5_xxl(cls) -> UMT5Config:
        """google/umt5-xxl encoder as shipped in Wan2.1's ``text_encoder/`` (about 5.7 B parameters)."""
        return cls()

    @classmethod
    def tiny(cls, vocab_size: int = 64) -> UMT5Config:
        """A test-size encoder (inner width 32 != d_model 24 on purpose, to catch transposed projections)."""
        return cls(vocab_size=vocab_size, d_model=24, d_kv=8, d_ff=40, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20)
