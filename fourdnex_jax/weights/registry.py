"""What differs per model on disk: folder and weight-file names, config classes, weight table, abstract model,
the key renames a checkpoint may need before it meets the table; and the layout of a converted folder / bundle.

Layout (``fourdnex convert`` output, a bundle, a training run's export)::

    <model>/                  orbax checkpoint of each model of :data:`SPECS` (the DiT: its FROZEN base)
    transformer_adapter/      orbax checkpoint of the DiT's TRAINABLE adapter (:data:`ADAPTER_CHECKPOINT`)
    configs/<model>.json      our config dataclass as JSON + the parameter dtype (:data:`CONFIGS_DIR`)
    source_configs/<model>/   the source ``config.json``, verbatim (:data:`SOURCE_CONFIGS_DIR`)
    tokenizer/ scheduler/ image_processor/   copied verbatim (:data:`COPIED_COMPONENTS`)
    manifest.json             written last (:mod:`fourdnex_jax.weights.manifest`)

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
``encoder.embed_tokens.weight`` is read through it as ``shared.weight``. The loaders of
:mod:`fourdnex_jax.weights.from_diffusers` apply the same renames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models import params
from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.image_encoder.mapping import clip_vision_mapping, legacy_renames
from fourdnex_jax.models.image_encoder.model import CLIPVisionTower
from fourdnex_jax.models.mapping import WeightMapping
from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.models.text_encoder.mapping import tied_renames, umt5_mapping
from fourdnex_jax.models.text_encoder.model import UMT5Encoder
from fourdnex_jax.models.transformer import FROZEN, TRAINABLE, WanTransformer3D, WanTransformerConfig
from fourdnex_jax.models.transformer.mapping import base_mapping
from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.models.vae.mapping import vae_weight_mapping
from fourdnex_jax.models.vae.model import WanVAE

#: Non-weight components copied verbatim.
COPIED_COMPONENTS = ("tokenizer", "scheduler", "image_processor")
#: The orbax checkpoint of the DiT's trainable adapter (LoRA + domain embeddings), next to its frozen base.
ADAPTER_CHECKPOINT = "transformer_adapter"
#: ``configs/<model>.json``: our config of each model and its parameter dtype.
CONFIGS_DIR = "configs"
#: ``source_configs/<model>/config.json``: the converted source's config, verbatim (the export writes it back).
SOURCE_CONFIGS_DIR = "source_configs"


#: Config keys that newer transformers / diffusers versions write and that cannot change the module we build, per
#: component, with the reason. They are accepted (and recorded in the manifest: ``models.<name>.accepted_config_keys``)
#: whatever their value; every other key the config classes do not know is still refused, and so is any change of a
#: key they do know (a changed ``d_model`` builds another model, whose weights then fail the strict table).
CONFIG_DRIFT_KEYS: dict[str, dict[str, str]] = {
    "text_encoder": {
        "scale_decoder_outputs": "decoder-only (transformers >= 5: scales the decoder's output before the LM head); "
                                 "the UMT5 encoder never reads it",
    },
}


def split_config_drift(component: str, hf: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config without the accepted drift keys, {key: {'value', 'why'}} of those found)`` of a source
    ``config.json`` dict (:data:`CONFIG_DRIFT_KEYS`)."""
    allowed = CONFIG_DRIFT_KEYS.get(component, {})
    kept = {k: v for k, v in hf.items() if k not in allowed}
    accepted = {k: {"value": hf[k], "why": allowed[k]} for k in sorted(allowed) if k in hf}
    return kept, accepted


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
        rename=tied_renames),
    "image_encoder": ModelSpec(
        "image_encoder", "model", CLIPVisionConfig, lambda hf, dt: CLIPVisionConfig.from_hf_config(hf),
        clip_vision_mapping,
        lambda cfg, dt: CLIPVisionTower(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.dtype(dt), compute_dtype=None),
        rename=legacy_renames),
}


def abstract_model(cfg: WanTransformerConfig, seed: int = 0) -> WanTransformer3D:
    """The DiT with ``jax.ShapeDtypeStruct`` leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(seed)))


def initial_trainable(cfg: WanTransformerConfig, seed: int = 0) -> dict[str, jax.Array]:
    """Initial values of the DiT's trainable adapter only (``{path: array}``), without materialising the base (XLA
    drops the unused base initialisers from the jitted construction)."""
    state = jax.jit(lambda: nnx.state(WanTransformer3D(cfg, rngs=nnx.Rngs(seed)), TRAINABLE))()
    return {p: v[...] for p, v in params.flat_variables(state).items()}
