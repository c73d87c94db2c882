"""Configuration of the Wan2.1 video DiT and its 4DNeX adaptations."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from fourdnex_jax.models.remat import REMAT_POLICIES
from fourdnex_jax.ops.attention import IMPLEMENTATIONS as ATTENTION_IMPLEMENTATIONS
from fourdnex_jax.utils import bounds

MODALITY_LAYOUTS = ("none", "width", "height", "frame", "channel", "batch")

# Keys of a diffusers `config.json` that carry no architecture (bookkeeping written by diffusers).
_DIFFUSERS_BOOKKEEPING = ("_class_name", "_diffusers_version", "_name_or_path", "_use_default_values")


@dataclasses.dataclass(frozen=True)
class WanTransformerConfig:
    """Architecture, numerics and execution settings of :class:`WanTransformer3D`.

    Architecture fields follow diffusers' ``WanTransformer3DModel`` (``num_heads`` = ``num_attention_heads``,
    ``head_dim`` = ``attention_head_dim``). ``image_dim``/``added_kv_proj_dim`` set = image-to-video (CLIP branch).

    4DNeX fields:
      * ``modality_layout``: how RGB and XYZ latents share the DiT. ``width`` (4DNeX): side by side along latent
        width, RoPE shared between halves. ``height``/``frame``: the same along height/time. ``channel``: stacked
        on channels (``in_channels``/``out_channels`` must include both). ``batch``: interleaved on the batch axis
        (sample ``2b`` is RGB, ``2b+1`` XYZ). ``none``: plain Wan I2V.
      * ``domain_embeddings``: two learnable (zero-initialised) rows added after patch embedding, row 0 to RGB
        tokens and row 1 to XYZ tokens (not available for ``none``/``channel``).
      * ``lora_rank``/``lora_alpha``/``lora_targets``: peft-style LoRA; scale = alpha / rank. Targets are suffixes
        of diffusers module names inside a block (``to_q`` matches attn1 and attn2, ``attn1.to_q`` only attn1).
    """

    # --- architecture (diffusers WanTransformer3DModel) ---
    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_heads: int = 40
    head_dim: int = 128
    in_channels: int = 36
    out_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 13824
    num_layers: int = 40
    cross_attn_norm: bool = True
    eps: float = 1e-6
    image_dim: int | None = 1280
    added_kv_proj_dim: int | None = 5120
    rope_max_seq_len: int = 1024
    rope_theta: float = 10000.0
    # --- 4DNeX adaptations ---
    modality_layout: str = "width"
    domain_embeddings: bool = True
    lora_rank: int = 0
    lora_alpha: float = 0.0
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    # --- numerics ---
    param_dtype: str = "float32"  # frozen base weights; "keep in fp32" modules and LoRA stay fp32 regardless
    compute_dtype: str = "float32"
    # --- execution ---
    scan_layers: bool = True
    remat_policy: str = "none"
    attention: str = "xla"
    attention_chunk_size: int = 1024
    # the stacked block weights may live in host memory: each block is brought to the device one block ahead of
    # its use inside the layer scan (fourdnex_jax.models.streaming; needs scan_layers)
    stream_blocks: bool = False

    def __post_init__(self):
        bounds.check_dataclass(self)
        if self.modality_layout not in MODALITY_LAYOUTS:
            raise ValueError(f"modality_layout={self.modality_layout!r}; choose one of {MODALITY_LAYOUTS}")
        if self.domain_embeddings and self.modality_layout in ("none", "channel"):
            raise ValueError(f"domain_embeddings need two token groups; layout {self.modality_layout!r} has one. "
                             "Set domain_embeddings=False.")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy={self.remat_policy!r}; choose one of {sorted(REMAT_POLICIES)}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention={self.attention!r}; choose one of {ATTENTION_IMPLEMENTATIONS}")
        if self.stream_blocks and not self.scan_layers:
            raise ValueError("stream_blocks=True streams the blocks inside the layer scan: it needs scan_layers=True")
        if (self.image_dim is None) != (self.added_kv_proj_dim is None):
            raise ValueError("image_dim and added_kv_proj_dim must be both set (I2V) or both None (T2V)")
        if self.lora_rank < 0 or (self.lora_rank > 0 and self.lora_alpha <= 0):
            raise ValueError(f"LoRA needs rank >= 0 and alpha > 0 (got rank={self.lora_rank}, alpha={self.lora_alpha})")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim={self.head_dim} must be even and >= 6 for Wan's 3-axis RoPE")
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in ("float32", "bfloat16"):
                raise ValueError(f"{name}={getattr(self, name)!r}; use 'float32' or 'bfloat16'")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    # ------------------------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def lora_scale(self) -> float:
        return self.lora_alpha / self.lora_rank if self.lora_rank else 0.0

    @property
    def param_jnp_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.param_dtype)

    @property
    def compute_jnp_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)

    def replace(self, **changes: Any) -> WanTransformerConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> WanTransformerConfig:
        """Builds a config from a plain mapping (e.g. ``config.model`` of an ml_collections config); unknown keys
        are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown transformer config key(s) {unknown}; valid keys: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_diffusers_config(cls, values: Mapping[str, Any], **overrides: Any) -> WanTransformerConfig:
        """Maps a diffusers ``WanTransformer3DModel`` ``config.json`` onto this config (strict).

        Non-architecture fields (layout, LoRA, dtypes, execution) come from ``overrides``."""
        values = {k: v for k, v in values.items() if k not in _DIFFUSERS_BOOKKEEPING}
        renames = {"num_attention_heads": "num_heads", "attention_head_dim": "head_dim"}
        unsupported = {"qk_norm": "rms_norm_across_heads", "pos_embed_seq_len": None}
        out: dict[str, Any] = {}
        problems = []
        for key, value in values.items():
            if key in unsupported:
                if value != unsupported[key]:
                    problems.append(f"{key}={value!r} is not supported (only {unsupported[key]!r})")
                continue
            name = renames.get(key, key)
            if name not in {f.name for f in dataclasses.fields(cls)} or name in _NON_ARCH_FIELDS:
                problems.append(f"unknown diffusers config key {key!r}")
                continue
            out[name] = tuple(value) if isinstance(value, list) else value
        if problems:
            raise ValueError("cannot map diffusers transformer config: " + "; ".join(problems))
        out.setdefault("image_dim", None)
        out.setdefault("added_kv_proj_dim", None)
        out.update(overrides)
        return cls(**out)

    def to_diffusers_config(self) -> dict[str, Any]:
        """The diffusers ``config.json`` content of the base architecture (inverse of ``from_diffusers_config``)."""
        return {
            "_class_name": "WanTransformer3DModel",
            "patch_size": list(self.patch_size), "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim, "in_channels": self.in_channels, "out_channels": self.out_channels,
            "text_dim": self.text_dim, "freq_dim": self.freq_dim, "ffn_dim": self.ffn_dim,
            "num_layers": self.num_layers, "cross_attn_norm": self.cross_attn_norm, "qk_norm": "rms_norm_across_heads",
            "eps": self.eps, "image_dim": self.image_dim, "added_kv_proj_dim": self.added_kv_proj_dim,
            "rope_max_seq_len": self.rope_max_seq_len, "pos_embed_seq_len": None,
        }


_NON_ARCH_FIELDS = frozenset({
    "modality_layout", "domain_embeddings", "lora_rank", "lora_alpha", "lora_targets", "param_dtype",
    "compute_dtype", "scan_layers", "remat_policy", "attention", "attention_chunk_size", "rope_theta",
    "stream_blocks"})
