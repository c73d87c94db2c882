"""Lazy, torch-free reading of (sharded) safetensors checkpoints, with errors that name the bad file.

A diffusers model folder holds either ``<name>.safetensors`` or shards listed in ``<name>.safetensors.index.json``
(``{"weight_map": {key: shard_file}}``). :class:`SafetensorsSource` opens every shard's header up front (cheap),
so a truncated or corrupt file is reported before any conversion work, and reads one tensor at a time (bf16 comes
back as ``ml_dtypes.bfloat16`` numpy arrays, bit-exact).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from safetensors import safe_open


class CheckpointFileError(ValueError):
    """A checkpoint file is missing, truncated or corrupt; the message names it."""


def _open(path: Path):
    try:
        return safe_open(str(path), framework="numpy")
    except FileNotFoundError as e:
        raise CheckpointFileError(f"checkpoint file not found: {path}") from e
    except Exception as e:  # safetensors raises SafetensorError / OSError subclasses for corrupt or short files
        size = path.stat().st_size if path.exists() else -1
        raise CheckpointFileError(
            f"cannot read safetensors file {path} ({size} bytes): {e}. The file is truncated or corrupt; "
            "download or convert it again.") from e


def model_files(directory: str | os.PathLike, name: str) -> tuple[list[Path], dict[str, str] | None]:
    """The safetensors files of a model folder and the index's ``weight_map`` (None for a single file).

    Raises :class:`CheckpointFileError` for a missing folder/file, an unreadable index or a listed shard that does
    not exist."""
    directory = Path(directory)
    index = directory / f"{name}.safetensors.index.json"
    single = directory / f"{name}.safetensors"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointFileError(f"{index} is not a valid safetensors index (need a 'weight_map'): {e}") from e
        missing = [s for s in shards if not (directory / s).exists()]
        if missing:
            raise CheckpointFileError(f"{index} lists {len(missing)} shard(s) that do not exist: {missing}")
        return [directory / s for s in shards], weight_map
    if single.exists():
        return [single], None
    raise CheckpointFileError(f"no {name}.safetensors or {name}.safetensors.index.json in {directory}")


def check_index(directory: str | os.PathLike, name: str, weight_map: dict[str, str], where: dict[str, Path]) -> None:
    """Raises unless every tensor sits in the shard the index names and the index lists every tensor
    (``where``: tensor key -> the shard file it was found in)."""
    directory = Path(directory)
    wrong = sorted(k for k, s in weight_map.items() if where.get(k) != directory / s)
    extra = sorted(set(where) - set(weight_map))
    if wrong or extra:
        raise CheckpointFileError(f"{directory / (name + '.safetensors.index.json')} disagrees with the shards' "
                                  f"contents: {len(wrong)} key(s) not where the index says {wrong[:10]}, "
                                  f"{len(extra)} not in the index {extra[:10]}")


class SafetensorsSource:
    """A :class:`fourdnex_jax.loaders.mapping.TensorSource` over one or more safetensors files."""

    def __init__(self, files: Iterable[str | os.PathLike]):
        self._handles = {}
        self._where: dict[str, Path] = {}
        for f in files:
            path = Path(f)
            handle = _open(path)
            self._handles[path] = handle
            for key in handle.keys():
                if key in self._where:
                    raise CheckpointFileError(f"tensor {key!r} appears in both {self._where[key]} and {path}")
                self._where[key] = path
        self._meta: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

    @classmethod
    def from_model_dir(cls, directory: str | os.PathLike, name: str = "diffusion_pytorch_model") -> "SafetensorsSource":
        """Opens ``directory/<name>.safetensors`` or the shards of ``directory/<name>.safetensors.index.json``."""
        files, weight_map = model_files(directory, name)
        source = cls(files)
        if weight_map is not None:
            check_index(directory, name, weight_map, source._where)
        return source

    @property
    def files(self) -> list[Path]:
        return list(self._handles)

    def keys(self) -> Iterable[str]:
        return self._where.keys()

    def _slice_meta(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        if key not in self._meta:
            sl = self._handles[self._where[key]].get_slice(key)
            dtype = sl.get_dtype()
            self._meta[key] = (tuple(sl.get_shape()), _np_dtype(dtype))
        return self._meta[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return self._slice_meta(key)[0]

    def dtype(self, key: str) -> np.dtype:
        return self._slice_meta(key)[1]

    def get(self, key: str) -> np.ndarray:
        path = self._where[key]
        try:
            return self._handles[path].get_tensor(key)
        except Exception as e:
            raise CheckpointFileError(f"cannot read tensor {key!r} from {path}: {e}") from e


def _np_dtype(name: str) -> np.dtype:
    import ml_dtypes

    table = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
             "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
             "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2}
    if name not in table:
        raise CheckpointFileError(f"unsupported safetensors dtype {name}")
    return np.dtype(table[name])
