"""Loading a diffusers / transformers model folder (or an in-memory torch state dict) into each model.

One function per model, each strict through the model's weight table (a :class:`~fourdnex_jax.models.mapping.
WeightMappingError` lists every missing, unexpected, mis-shaped or wrongly typed tensor before any data is read):

  * :func:`load_transformer` / :func:`transformer_from_source`: ``WanTransformer3DModel`` -> :class:`WanTransformer3D`
    (plus :func:`apply_adapter` for a peft LoRA state dict and the 4DNeX domain embeddings);
  * :func:`load_vae_from_diffusers`: ``AutoencoderKLWan`` -> :class:`WanVAE`;
  * :func:`load_umt5_from_hf`: ``UMT5EncoderModel`` -> :class:`UMT5Encoder`;
  * :func:`load_clip_vision_from_hf`: ``CLIPVisionModel(WithProjection)`` -> :class:`CLIPVisionTower`.

The frozen weights are never randomly initialised: each model is built abstractly (``nnx.eval_shape``), tensors are
read one at a time from the source (:class:`~fourdnex_jax.weights.safetensors.SafetensorsSource` for a folder), and
only the DiT's trainable adapter (LoRA, domain embeddings) gets initial values. Key renames a checkpoint may need
before it meets the table (CLIP's ``vision_model.`` prefix, UMT5's tied embedding) are those of
:data:`fourdnex_jax.weights.registry.SPECS`, shared with the converter.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.models import params
from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
from fourdnex_jax.models.image_encoder.mapping import clip_vision_mapping
from fourdnex_jax.models.image_encoder.model import CLIPVisionTower
from fourdnex_jax.models.mapping import DictSource, RenamedSource, TensorSource, WeightMapping
from fourdnex_jax.models.text_encoder.config import UMT5Config
from fourdnex_jax.models.text_encoder.mapping import umt5_mapping
from fourdnex_jax.models.text_encoder.model import UMT5Encoder
from fourdnex_jax.models.transformer import FROZEN, DomainEmbedding, WanTransformer3D, WanTransformerConfig, mapping
from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.models.vae.layers import DEFAULT_PRECISION
from fourdnex_jax.models.vae.mapping import vae_weight_mapping
from fourdnex_jax.models.vae.model import WanVAE
from fourdnex_jax.utils.files import read_json
from fourdnex_jax.utils.progress import Progress
from fourdnex_jax.weights.registry import SPECS, abstract_model, initial_trainable, split_config_drift
from fourdnex_jax.weights.safetensors import CheckpointFileError, SafetensorsSource

Checkpoint = str | os.PathLike | Mapping[str, Any] | TensorSource


def _to_numpy(t: Any) -> np.ndarray:
    """numpy view of a numpy array or a torch tensor (bf16 kept bit-exact as ``ml_dtypes.bfloat16``)."""
    if type(t).__module__.startswith("torch"):
        t = t.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            import ml_dtypes
            import torch

            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(t)


class StateDictSource(DictSource):
    """A :class:`TensorSource` over ``{key: torch.Tensor | np.ndarray}`` (a torch ``state_dict()``)."""

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._tensors[key].shape)

    def dtype(self, key: str) -> np.dtype:
        t = self._tensors[key]
        if type(t).__module__.startswith("torch"):
            return _to_numpy(t[(0,) * t.ndim] if t.ndim else t).dtype  # one element: cheap, exact dtype mapping
        return np.dtype(t.dtype)

    def get(self, key: str) -> np.ndarray:
        return _to_numpy(self._tensors[key])


def is_folder(checkpoint: Any) -> bool:
    return isinstance(checkpoint, (str, os.PathLike))


def open_source(checkpoint: Checkpoint, weight_name: str) -> TensorSource:
    """A model folder (``<weight_name>.safetensors`` or its sharded index), a state dict, or a source as is."""
    if is_folder(checkpoint):
        return SafetensorsSource.from_model_dir(checkpoint, weight_name)
    if isinstance(checkpoint, Mapping):
        return StateDictSource(checkpoint)
    return checkpoint


def read_config_json(directory: str | os.PathLike) -> dict[str, Any]:
    """``config.json`` of a diffusers / transformers model folder (:class:`CheckpointFileError` if absent/invalid)."""
    path = Path(directory) / "config.json"
    if not os.path.lexists(path):
        raise CheckpointFileError(f"{path} not found: a model folder needs its config.json")
    return read_json(path, what="model config", fix="download the model folder again")


def _renamed(component: str, source: TensorSource) -> TensorSource:
    """``source`` seen through the component's key renames (unchanged when there are none)."""
    renames = SPECS[component].rename(source.keys())
    return RenamedSource(source, lambda k: renames.get(k, k)) if renames else source


def load_into_abstract(make_model: Callable[[], nnx.Module], table: WeightMapping, source: TensorSource,
                       progress: Callable[[str], None] | None = None) -> nnx.Module:
    """Builds the model abstractly (no random init, no memory), converts ``source`` strictly through ``table``
    and returns the concrete model holding the converted arrays."""
    abstract = nnx.eval_shape(make_model)
    flat = table.to_jax(source, params.targets_of(abstract), progress=progress)
    variables = params.flat_variables(abstract)
    for path, value in flat.items():
        variables[path].set_value(jnp.asarray(value))
    return abstract


# -- the DiT ------------------------------------------------------------------------------------------------------
def transformer_from_source(cfg: WanTransformerConfig, source: TensorSource, *, seed: int = 0,
                            progress: bool = False) -> WanTransformer3D:
    """Builds the model with base weights from ``source`` (diffusers state-dict keys), adapter freshly initialised.

    Raises :class:`~fourdnex_jax.models.mapping.WeightMappingError` listing every missing/unexpected/mis-shaped key.
    """
    abstract = abstract_model(cfg, seed)
    table = mapping.base_mapping(cfg)
    bar = Progress(len(table.expected_torch_keys()), "loading transformer") if progress else None
    values: dict[str, Any] = table.to_jax(source, params.targets_of(abstract, FROZEN),
                                          (lambda key: bar.update()) if bar else None)
    values.update(initial_trainable(cfg, seed))
    return params.materialize(abstract, values)


def load_transformer(directory: str | os.PathLike, *, seed: int = 0, progress: bool = True,
                     **overrides: Any) -> WanTransformer3D:
    """Loads a diffusers-layout ``WanTransformer3DModel`` folder (``config.json`` + safetensors, sharded or not).

    ``overrides`` set the non-architecture fields (``modality_layout``, ``domain_embeddings``, LoRA, dtypes,
    execution); architecture comes from ``config.json`` and must map strictly."""
    hf, _ = split_config_drift("transformer", read_config_json(directory))
    cfg = WanTransformerConfig.from_diffusers_config(hf, **overrides)
    source = SafetensorsSource.from_model_dir(directory, SPECS["transformer"].weight_name)
    return transformer_from_source(cfg, source, seed=seed, progress=progress)


def apply_adapter(model: WanTransformer3D, lora: Mapping[str, np.ndarray] | None = None,
                  domain_embeddings: np.ndarray | None = None) -> None:
    """Writes a peft/diffusers LoRA state dict (keys with or without ``transformer.``) and/or 4DNeX domain
    embeddings (2, dim) into ``model`` in place, strictly (every targeted module must be present)."""
    cfg = model.config
    if lora is not None:
        targets = params.targets_of(model, nnx.LoRAParam)
        values = mapping.lora_mapping(cfg).to_jax(DictSource(mapping.strip_prefix(dict(lora))), targets)
        params.assign(model, values)
    if domain_embeddings is not None:
        if model.domain_embeddings is None:
            raise ValueError("the model has no domain embeddings (config.domain_embeddings=False)")
        targets = params.targets_of(model, DomainEmbedding)
        values = mapping.domain_mapping().to_jax(
            DictSource({"learnable_domain_embeddings": np.asarray(domain_embeddings)}), targets)
        params.assign(model, values)


# -- the frozen conditioning models --------------------------------------------------------------------------------
def load_vae_from_diffusers(
    source: Checkpoint,
    *,
    config: WanVAEConfig | None = None,
    param_dtype=jnp.float32,
    dtype=jnp.float32,
    precision=DEFAULT_PRECISION,
    progress: Callable[[str], None] | None = None,
) -> WanVAE:
    """Builds a :class:`WanVAE` holding the weights of a diffusers ``AutoencoderKLWan``.

    ``source``: a diffusers model folder (``config.json`` + ``diffusion_pytorch_model.safetensors`` or shards), a
    state dict ``{key: tensor or array}``, or any :class:`TensorSource`. For a folder the config is read from
    ``config.json`` (a given ``config`` must then agree with it); otherwise ``config`` is required. Raises
    :class:`fourdnex_jax.models.mapping.WeightMappingError` listing every missing, unexpected or mis-shaped tensor
    before any data is read. Parameters are cast to ``param_dtype``.
    """
    if is_folder(source):
        file_config = WanVAEConfig.from_diffusers_config(split_config_drift("vae", read_config_json(source))[0])
        if config is not None and config != file_config:
            raise ValueError(f"config given does not match {Path(source) / 'config.json'}: {config} != {file_config}")
        config = file_config
    elif config is None:
        raise ValueError("config is required when loading from a state dict or tensor source")
    tensors = open_source(source, SPECS["vae"].weight_name)
    return load_into_abstract(lambda: WanVAE(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, dtype=dtype,
                                             precision=precision), vae_weight_mapping(config), tensors, progress)


def _hf_config(checkpoint: Checkpoint) -> dict:
    if not is_folder(checkpoint):
        raise ValueError("a config is required when loading from a state dict or tensor source")
    return read_config_json(checkpoint)


def load_umt5_from_hf(
    checkpoint: Checkpoint,
    config: UMT5Config | None = None,
    *,
    param_dtype: jnp.dtype = jnp.float32,
    compute_dtype: jnp.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> UMT5Encoder:
    """A :class:`UMT5Encoder` from a transformers folder (``config.json`` + ``model.safetensors`` or shards, e.g.
    Wan's ``text_encoder/``), a torch ``state_dict()`` or any tensor source (then ``config`` is required).

    Strict: raises :class:`fourdnex_jax.models.mapping.WeightMappingError` listing every missing, unexpected or
    mis-shaped tensor before converting anything. Weights are cast to ``param_dtype``."""
    if config is None:
        config = UMT5Config.from_hf_config(split_config_drift("text_encoder", _hf_config(checkpoint))[0])
    source = _renamed("text_encoder", open_source(checkpoint, SPECS["text_encoder"].weight_name))
    return load_into_abstract(
        lambda: UMT5Encoder(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, compute_dtype=compute_dtype),
        umt5_mapping(config), source, progress)


def load_clip_vision_from_hf(
    checkpoint: Checkpoint,
    config: CLIPVisionConfig | None = None,
    *,
    param_dtype: jnp.dtype = jnp.float32,
    compute_dtype: jnp.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> CLIPVisionTower:
    """A :class:`CLIPVisionTower` from a transformers folder (``config.json`` + ``model.safetensors`` or shards, e.g.
    Wan's ``image_encoder/``), a torch ``state_dict()`` or a tensor source (then ``config`` is required).

    Strict: raises :class:`fourdnex_jax.models.mapping.WeightMappingError` listing every missing, unexpected or
    mis-shaped tensor before converting anything."""
    if config is None:
        config = CLIPVisionConfig.from_hf_config(split_config_drift("image_encoder", _hf_config(checkpoint))[0])
    source = _renamed("image_encoder", open_source(checkpoint, SPECS["image_encoder"].weight_name))
    return load_into_abstract(
        lambda: CLIPVisionTower(config, rngs=nnx.Rngs(0), param_dtype=param_dtype, compute_dtype=compute_dtype),
        clip_vision_mapping(config), source, progress)
