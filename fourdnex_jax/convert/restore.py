"""Restoring converted models from ``tools/convert.py torch-to-jax`` output, directly into a mesh sharding.

Each parameter's target is ``jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))`` with ``spec``
derived from the parameter's logical axis names and ``logical_axis_rules`` (default: the config's
``DEFAULT_LOGICAL_AXIS_RULES``); orbax reads every device's shard straight from disk. ``mesh=None`` restores onto
the first local device. The transformer is restored from its base checkpoint plus, if present, the adapter
checkpoint; without one the trainable adapter gets its initial values (``initial_trainable``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh

from fourdnex_jax.config import DEFAULT_LOGICAL_AXIS_RULES
from fourdnex_jax.convert.models import SPECS
from fourdnex_jax.convert.orbax_io import restore_flat, sharded_targets
from fourdnex_jax.convert.torch_to_jax import ADAPTER_CHECKPOINT
from fourdnex_jax.loaders.transformer import initial_trainable, materialize
from fourdnex_jax.models import params
from fourdnex_jax.models.transformer import TRAINABLE

#: Config fields that may differ from the converted config at restore time (execution / numerics of compute).
RESTORE_OVERRIDABLE = frozenset({"compute_dtype", "scan_layers", "remat_policy", "attention", "attention_chunk_size"})


def read_config(directory: str | Path, name: str) -> tuple[Any, str]:
    """Our config of model ``name`` and its parameter dtype, from ``configs/<name>.json``."""
    path = Path(directory) / "configs" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: was {name} converted into {directory}?")
    return SPECS[name].config_from_json(json.loads(path.read_text()))


def restore_model(directory: str | Path, name: str, mesh: Mesh | None = None,
                  rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES, **overrides: Any) -> nnx.Module:
    """The model ``name`` ('transformer', 'vae', 'text_encoder', 'image_encoder') of a converted folder, every
    parameter placed as the rules shard it on ``mesh``. ``overrides``: transformer execution fields only
    (:data:`RESTORE_OVERRIDABLE`)."""
    directory = Path(directory)
    spec = SPECS[name]
    config, param_dtype = read_config(directory, name)
    if overrides:
        bad = sorted(set(overrides) - RESTORE_OVERRIDABLE) if name == "transformer" else sorted(overrides)
        if bad:
            raise ValueError(f"cannot override {bad} at restore; allowed for the transformer: "
                             f"{sorted(RESTORE_OVERRIDABLE)}")
        config = config.replace(**overrides)
    abstract = spec.abstract(config, param_dtype)
    variables = params.flat_variables(abstract, spec.param_filter)
    values: dict[str, Any] = restore_flat(directory / name, sharded_targets(variables, mesh, rules))
    if name == "transformer":
        trainable = params.flat_variables(abstract, TRAINABLE)
        if trainable:
            targets = sharded_targets(trainable, mesh, rules)
            if (directory / ADAPTER_CHECKPOINT).exists():
                values.update(restore_flat(directory / ADAPTER_CHECKPOINT, targets))
            else:
                fresh = initial_trainable(config)
                values.update({p: jax.device_put(v, targets[p].sharding) for p, v in fresh.items()})
    return materialize(abstract, values)
