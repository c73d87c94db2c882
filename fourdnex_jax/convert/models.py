"""What differs per converted model: folder and weight-file names, config classes, weight table, abstract model,
and the key renames a checkpoint may need before it meets the table.

=================  ===================  ==========================  =========================================
component          weights              config (ours)               table
=================  ===================  ==========================  =========================================
``transformer``    diffusion_pytorch_   ``WanTransformerConfig``    ``transformer.mapping.base_mapping``
                   model*.safetensors                               (frozen base only; the adapter is apart)
``vae``            diffusion_pytorch_   ``WanVAEConfig``            ``vae.mapping.vae_weight_mapping``
                   model*.safetensors
``text_encoder``   model*.safetensors   ``UMT5Config``              ``text_encoder.mapping.umt5_mapping``
``image_encoder``  model*.safetensors   ``CLIPVisionConfig``        ``image_encoder.mapping.clip_vision_mapping``
=================  ===================  ==========================  =========================================

Renames (recorded in the manifest so the export writes the original key names back): CLIP checkpoints saved by
transformers 4 prefix keys with ``vision_model.``; a UMT5 checkpoint holding only the tied
``encoder.embed_tokens.weight`` is read through it as ``shared.weight``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.loaders.mapping import WeightMapping
from fourdnex_jax.models import params
from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.image_encoder.mapping import LEGACY_PREFIX, clip_vision_mapping
from fourdnex_jax.models.image_encoder.model import CLIPVisionTower
from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.models.text_encoder.mapping import SHARED_KEY, TIED_KEY, umt5_mapping
from fourdnex_jax.models.text_encoder.model import UMT5Encoder
from fourdnex_jax.models.transformer import FROZEN, WanTransformer3D, WanTransformerConfig
from fourdnex_jax.models.transformer.mapping import base_mapping
from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.models.vae.mapping import vae_weight_mapping
from fourdnex_jax.models.vae.model import WanVAE

#: Non-weight components copied verbatim.
COPIED_COMPONENTS = ("tokenizer", "scheduler", "image_processor")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str  # also the diffusers subfolder
    weight_name: str  # safetensors file stem
    config_class: type
    config_from_source: Callable[[Mapping[str, Any], str], Any]  # (source config.json, param_dtype) -> config
    mapping: Callable[[Any], WeightMapping]
    build: Callable[[Any, str], nnx.Module]  # (config, param_dtype) -> model (call under nnx.eval_shape)
    param_filter: Any = nnx.Param
    rename: Callable[[Iterable[str]], dict[str, str]] = lambda keys: {}  # source key -> table key (changed only)

    def abstract(self, config: Any, param_dtype: str) -> nnx.Module:
        return nnx.eval_shape(lambda: self.build(config, param_dtype))

    def variables(self, config: Any, param_dtype: str) -> dict[str, nnx.Variable]:
        """``{path: abstract Variable}`` of the parameters this checkpoint holds."""
        return params.flat_variables(self.abstract(config, param_dtype), self.param_filter)

    def config_to_json(self, config: Any, param_dtype: str) -> dict:
        return {"class": self.config_class.__name__, "param_dtype": param_dtype,
                "config": _jsonable(dataclasses.asdict(config))}

    def config_from_json(self, obj: Mapping[str, Any]) -> tuple[Any, str]:
        if obj.get("class") != self.config_class.__name__:
            raise ValueError(f"{self.name}: config class {obj.get('class')!r}, expected {self.config_class.__name__}")
        values = dict(obj["config"])
        if self.config_class is WanTransformerConfig:
            return WanTransformerConfig.from_dict(values), obj["param_dtype"]
        return self.config_class(**values), obj["param_dtype"]


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _clip_rename(keys: Iterable[str]) -> dict[str, str]:
    return {k: k[len(LEGACY_PREFIX):] for k in keys if k.startswith(LEGACY_PREFIX)}


def _umt5_rename(keys: Iterable[str]) -> dict[str, str]:
    keys = set(keys)
    return {TIED_KEY: SHARED_KEY} if SHARED_KEY not in keys and TIED_KEY in keys else {}


def _transformer_config(hf: Mapping[str, Any], param_dtype: str) -> WanTransformerConfig:
    # Base conversion: plain Wan (no 4DNeX layout, no adapter); the adapter step replaces these fields.
    return WanTransformerConfig.from_diffusers_config(hf, modality_layout="none", domain_embeddings=False,
                                                      param_dtype=param_dtype, compute_dtype=param_dtype)


SPECS: dict[str, ModelSpec] = {
    "transformer": ModelSpec(
        "transformer", "diffusion_pytorch_model", WanTransformerConfig, _transformer_config, base_mapping,
        lambda cfg, dt: WanTransformer3D(cfg.replace(param_dtype=dt), rngs=nnx.Rngs(0)), param_filter=FROZEN),
    "vae": ModelSpec(
        "vae", "diffusion_pytorch_model", WanVAEConfig, lambda hf, dt: WanVAEConfig.from_diffusers_config(hf),
        vae_weight_mapping, lambda cfg, dt: WanVAE(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(dt))),
    "text_encoder": ModelSpec(
        "text_encoder", "model", UMT5Config, lambda hf, dt: UMT5Config.from_hf_config(hf), umt5_mapping,
        lambda cfg, dt: UMT5Encoder(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(dt), compute_dtype=None),
        rename=_umt5_rename),
    "image_encoder": ModelSpec(
        "image_encoder", "model", CLIPVisionConfig, lambda hf, dt: CLIPVisionConfig.from_hf_config(hf),
        clip_vision_mapping,
        lambda cfg, dt: CLIPVisionTower(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(dt), compute_dtype=None),
        rename=_clip_rename),
}
