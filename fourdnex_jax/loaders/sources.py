"""Loader plumbing shared by every model: tensor sources over torch state dicts (bf16 kept bit-exact), key
renaming, and materialising an abstract (``nnx.eval_shape``) model from converted arrays."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourdnex_jax.loaders.mapping import DictSource, TensorSource, WeightMapping
from fourdnex_jax.loaders.safetensors_io import SafetensorsSource
from fourdnex_jax.models.params import flat_variables, targets_of


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


class RenamedSource:
    """A view of another source with keys renamed by ``rename(key) -> new_key`` (must be one-to-one)."""

    def __init__(self, source: TensorSource, rename: Callable[[str], str]):
        self._source = source
        self._names: dict[str, str] = {}
        for key in source.keys():
            new = rename(key)
            if new in self._names:
                raise ValueError(f"checkpoint keys {self._names[new]!r} and {key!r} both map to {new!r}")
            self._names[new] = key

    def keys(self) -> Iterable[str]:
        return self._names.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self._source.shape(self._names[key])

    def dtype(self, key: str) -> np.dtype:
        return self._source.dtype(self._names[key])

    def get(self, key: str) -> np.ndarray:
        return self._source.get(self._names[key])


def open_source(checkpoint: str | os.PathLike | Mapping[str, Any] | TensorSource) -> TensorSource:
    """A transformers model folder (``model.safetensors`` or its sharded index), a state dict, or a source."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return SafetensorsSource.from_model_dir(checkpoint, name="model")
    if isinstance(checkpoint, Mapping):
        return StateDictSource(checkpoint)
    return checkpoint


def read_hf_config(checkpoint: Any) -> dict:
    """``config.json`` of a model folder; raises if ``checkpoint`` is not a folder (pass the config explicitly)."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError("a config is required when loading from a state dict or tensor source")
    path = Path(checkpoint) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"no config.json in {checkpoint}")
    return json.loads(path.read_text())


def load_into_abstract(make_model: Callable[[], nnx.Module], mapping: WeightMapping, source: TensorSource,
                       progress: Callable[[str], None] | None = None) -> nnx.Module:
    """Builds the model abstractly (no random init, no memory), converts ``source`` strictly through ``mapping``
    and returns the concrete model holding the converted arrays."""
    abstract = nnx.eval_shape(make_model)
    flat = mapping.to_jax(source, targets_of(abstract), progress=progress)
    variables = flat_variables(abstract)
    for path, value in flat.items():
        variables[path].set_value(jnp.asarray(value))
    return abstract
