"""Building :class:`WanTransformer3D` from diffusers-layout checkpoints (and LoRA adapters) through the weight
tables of :mod:`fourdnex_jax.models.transformer.mapping`.

The frozen base is never randomly initialised: the model is instantiated abstractly (``nnx.eval_shape``), base
tensors are read one at a time from the source, and only the trainable adapter (LoRA, domain embeddings) gets
initial values, from a jitted construction whose unused base-parameter outputs XLA removes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.io_utils import Progress
from fourdnex_jax.loaders.mapping import DictSource, TensorSource
from fourdnex_jax.loaders.safetensors_io import CheckpointFileError, SafetensorsSource
from fourdnex_jax.models import params
from fourdnex_jax.models.transformer import FROZEN, TRAINABLE, DomainEmbedding, WanTransformer3D, WanTransformerConfig
from fourdnex_jax.models.transformer import mapping


def abstract_model(cfg: WanTransformerConfig, seed: int = 0) -> WanTransformer3D:
    """The model with ``jax.ShapeDtypeStruct`` leaves: no memory is allocated."""
    return nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(seed)))


def initial_trainable(cfg: WanTransformerConfig, seed: int = 0) -> dict[str, jax.Array]:
    """Initial values of the trainable adapter only (``{path: array}``), without materialising the base."""
    state = jax.jit(lambda: nnx.state(WanTransformer3D(cfg, rngs=nnx.Rngs(seed)), TRAINABLE))()
    return {p: v[...] for p, v in params.flat_variables(state).items()}


def materialize(abstract: nnx.Module, values: Mapping[str, Any]) -> nnx.Module:
    """Replaces every leaf of an abstract module by ``values[path]`` (all paths required, shapes/dtypes checked)."""
    graphdef, state = nnx.split(abstract)
    flat = nnx.to_flat_state(state)
    missing = [params.path_str(p) for p, _ in flat if params.path_str(p) not in values]
    if missing:
        raise ValueError(f"no values for {len(missing)} parameter(s): {missing[:20]}")
    leaves = []
    for path, var in flat:
        value = jnp.asarray(values[params.path_str(path)])
        if value.shape != var.shape or value.dtype != var.dtype:
            raise ValueError(f"{params.path_str(path)}: got {value.shape}/{value.dtype}, need {var.shape}/{var.dtype}")
        leaves.append((path, var.replace(value)))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def transformer_from_source(cfg: WanTransformerConfig, source: TensorSource, *, seed: int = 0,
                            progress: bool = False) -> WanTransformer3D:
    """Builds the model with base weights from ``source`` (diffusers state-dict keys), adapter freshly initialised.

    Raises :class:`~fourdnex_jax.loaders.mapping.WeightMappingError` listing every missing/unexpected/mis-shaped key.
    """
    abstract = abstract_model(cfg, seed)
    table = mapping.base_mapping(cfg)
    bar = Progress(len(table.expected_torch_keys()), "loading transformer") if progress else None
    values: dict[str, Any] = table.to_jax(source, params.targets_of(abstract, FROZEN),
                                          (lambda key: bar.update()) if bar else None)
    values.update(initial_trainable(cfg, seed))
    return materialize(abstract, values)


def read_diffusers_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointFileError(f"{path} not found: a diffusers model folder needs its config.json") from e
    except json.JSONDecodeError as e:
        raise CheckpointFileError(f"{path} is not valid JSON: {e}") from e


def load_transformer(directory: str | os.PathLike, *, seed: int = 0, progress: bool = True,
                     **overrides: Any) -> WanTransformer3D:
    """Loads a diffusers-layout ``WanTransformer3DModel`` folder (``config.json`` + safetensors, sharded or not).

    ``overrides`` set the non-architecture fields (``modality_layout``, ``domain_embeddings``, LoRA, dtypes,
    execution); architecture comes from ``config.json`` and must map strictly."""
    cfg = WanTransformerConfig.from_diffusers_config(read_diffusers_config(directory), **overrides)
    return transformer_from_source(cfg, SafetensorsSource.from_model_dir(directory), seed=seed, progress=progress)


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
