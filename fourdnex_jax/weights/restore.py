"""The one restore path: a model of a converted folder / bundle / training export, straight into its mesh sharding.

Each parameter's target is ``jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))`` with ``spec``
from the parameter's logical axis names and the rules (:func:`fourdnex_jax.sharding.sharded_targets`; default
:data:`fourdnex_jax.sharding.DEFAULT_LOGICAL_AXIS_RULES`); orbax reads every device's shard straight from disk, so
nothing is materialised whole on one device. ``mesh=None`` restores onto the first local device. The transformer is
restored from its base checkpoint plus the adapter checkpoint whenever its config has trainable parameters (LoRA,
domain embeddings): a missing ``transformer_adapter/`` is an error (it would sample with an untrained adapter; a
training start takes its initial values from :func:`~fourdnex_jax.weights.registry.initial_trainable` and restores
the base only, ``param_filter=FROZEN``). A missing or damaged checkpoint folder or config raises
:class:`~fourdnex_jax.utils.errors.InputError` naming the folder and the missing part.

Users: :func:`fourdnex_jax.pipelines.bundle.load_bundle` (:func:`restore_model`) and the trainer's frozen base
(:func:`fourdnex_jax.training.state.restore_base`: :func:`restore_params` with the run's config and
``param_filter=FROZEN``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from fourdnex_jax.models import params
from fourdnex_jax.models.streaming import HOST_MEMORY
from fourdnex_jax.models.transformer import TRAINABLE
from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES, sharded_targets
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import read_json
from fourdnex_jax.utils.schema import check_dataclass_values
from fourdnex_jax.weights.orbax import file_index_problems, restore_flat
from fourdnex_jax.weights.registry import ADAPTER_CHECKPOINT, CONFIGS_DIR, SPECS

#: Config fields that may differ from the converted config at restore time (execution / numerics of compute).
RESTORE_OVERRIDABLE = frozenset({"compute_dtype", "scan_layers", "remat_policy", "attention", "attention_chunk_size",
                                 "stream_blocks"})


#: Files every orbax checkpoint folder written by :func:`fourdnex_jax.weights.orbax.save_flat` holds.
CHECKPOINT_FILES = ("_METADATA", "manifest.ocdbt")


def checkpoint_problems(directory: str | Path, name: str) -> list[str]:
    """What is missing from the checkpoint folder ``directory/name`` (empty when it looks complete)."""
    folder = Path(directory) / name
    if not folder.is_dir():
        return [f"{folder}/ missing"]
    missing = [f"{folder / f} missing" for f in CHECKPOINT_FILES if not (folder / f).is_file()]
    return missing or file_index_problems(folder)


def read_config(directory: str | Path, name: str) -> tuple[Any, str]:
    """Our config of model ``name`` and its parameter dtype, from ``configs/<name>.json``."""
    path = Path(directory) / CONFIGS_DIR / f"{name}.json"
    if not path.is_file():
        raise InputError(f"{path} not found: {directory} has no {name} config (was {name} converted into it? "
                         "convert it again, or pass the right folder)")
    try:
        obj = read_json(path, what=f"{name} config", fix="the folder is damaged: convert it again")
        if not isinstance(obj, dict) or not isinstance(obj.get("config"), dict):
            raise InputError(f"{path}: not a config file of this version (no 'config' object); convert again")
        check_dataclass_values(SPECS[name].config_class, obj["config"], str(path))
        return SPECS[name].config_from_json(obj)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e}); the folder is damaged: convert it again") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a {name} config of this version ({type(e).__name__}: {e}); convert it "
                         "again") from e


def _restore_checked(directory: Path, name: str, targets: dict) -> dict:
    """:func:`restore_flat` of ``directory/name`` with every problem as an InputError naming the folder."""
    problems = checkpoint_problems(directory, name)
    if problems:
        raise InputError(f"damaged model folder {directory}: {'; '.join(problems)}; copy or convert the folder "
                         "again")
    try:
        return restore_flat(directory / name, targets)
    except InputError:
        raise
    except Exception as e:  # orbax / tensorstore raise many types for a damaged folder; all mean the same here
        # the first line, without tensorstore's spec dump
        msg = str(e).strip().splitlines()[:1] or [""]
        msg = [msg[0].split(" See full TensorStore details")[0]]
        raise InputError(f"cannot read checkpoint {directory / name} ({type(e).__name__}: "
                         f"{' '.join(msg)[:400]}); the folder is damaged or from another model: copy or convert it "
                         "again") from e


#: Transformer config fields that define the adapter and how the DiT lays out its tokens, not the base's
#: parameters: a training run restoring the frozen base only (``param_filter=FROZEN``) may set them differently
#: from the converted folder (e.g. 4DNeX's LoRA r64 + domain embeddings + width layout on a plain Wan2.1 base). The
#: base's parameter paths, shapes and dtypes are still checked against the checkpoint.
ADAPTER_FIELDS = frozenset({"lora_rank", "lora_alpha", "lora_targets", "domain_embeddings", "modality_layout"})


def _resolve_config(directory: Path, name: str, config: Any, overrides: dict[str, Any]
                    ) -> tuple[Any, str, list[str]]:
    """The config to build, its parameter dtype and the :data:`ADAPTER_FIELDS` where the caller's ``config``
    differs from the stored one: the stored config with ``overrides``, or the caller's ``config`` after checking
    that only :data:`RESTORE_OVERRIDABLE` and adapter fields differ from the stored one."""
    stored, param_dtype = read_config(directory, name)
    if config is not None:
        if overrides:
            raise ValueError("pass either config= or overrides, not both")
        ours = {k: v for k, v in config.to_dict().items() if k not in RESTORE_OVERRIDABLE}
        theirs = {k: v for k, v in stored.to_dict().items() if k not in RESTORE_OVERRIDABLE}
        diff = sorted(k for k in ours if ours[k] != theirs.get(k))
        architecture = sorted(set(diff) - ADAPTER_FIELDS)
        if architecture:
            raise ValueError(f"base checkpoint {directory} differs from the config in {architecture} (its "
                             "architecture; convert the matching model or change the config)")
        return config, param_dtype, diff
    if overrides:
        bad = sorted(set(overrides) - RESTORE_OVERRIDABLE) if name == "transformer" else sorted(overrides)
        if bad:
            raise ValueError(f"cannot override {bad} at restore; allowed for the transformer: "
                             f"{sorted(RESTORE_OVERRIDABLE)}")
        stored = stored.replace(**overrides)
    return stored, param_dtype, []


def restore_params(directory: str | Path, name: str, mesh: Mesh | None = None,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES, *, config: Any = None,
                   param_filter: nnx.filterlib.Filter = ..., host_blocks: bool = False, **overrides: Any
                   ) -> tuple[nnx.Module, dict[str, jax.Array]]:
    """``(abstract model, {path: array})`` of model ``name`` ('transformer', 'vae', 'text_encoder',
    'image_encoder'), every array placed as the rules shard it on ``mesh``.

    ``config``: the config the caller's model has (e.g. the training run's): it must equal the stored one except in
    the :data:`RESTORE_OVERRIDABLE` fields, and the model is built from it. Otherwise the stored config is used,
    with ``overrides`` (transformer execution fields only). ``param_filter``: which parameters to return; a
    checkpoint none of whose parameters is selected is not read (``FROZEN``: the DiT base without its adapter).
    Selected adapter parameters need the folder's adapter checkpoint (module docstring). ``host_blocks``: the
    stacked ``blocks`` are restored into host memory (streamed weights: they never occupy the device)."""
    directory = Path(directory)
    spec = SPECS[name]
    config, param_dtype, adapter_diff = _resolve_config(directory, name, config, overrides)
    abstract = spec.abstract(config, param_dtype)
    wanted = set(params.flat_variables(abstract, param_filter))
    values: dict[str, Any] = {}
    base = params.flat_variables(abstract, spec.param_filter)
    trainable = params.flat_variables(abstract, TRAINABLE) if name == "transformer" else {}
    if adapter_diff and wanted & set(trainable):  # the stored adapter was made for the stored config
        raise ValueError(f"base checkpoint {directory} differs from the config in {adapter_diff}: its adapter "
                         "cannot be restored into this config (restore the base only: param_filter=FROZEN)")
    def targets_of(variables):
        targets = sharded_targets(variables, mesh, rules)
        if host_blocks:
            targets = {p: t.update(sharding=t.sharding.with_memory_kind(HOST_MEMORY)) if p.startswith("blocks/")
                       else t for p, t in targets.items()}
        return targets

    if wanted & set(base):
        values.update(_restore_checked(directory, name, targets_of(base)))
    if wanted & set(trainable):
        targets = targets_of(trainable)
        if (directory / ADAPTER_CHECKPOINT).exists():
            values.update(_restore_checked(directory, ADAPTER_CHECKPOINT, targets))
        else:
            raise InputError(
                f"{directory / ADAPTER_CHECKPOINT}/ missing: the transformer config of {directory} has a trained "
                f"adapter ({'LoRA rank ' + str(config.lora_rank) if config.lora_rank else ''}"
                f"{', ' if config.lora_rank and config.domain_embeddings else ''}"
                f"{'domain embeddings' if config.domain_embeddings else ''}) that would be sampled untrained; copy "
                "the folder again with transformer_adapter/ (or convert with --adapter)")
    return abstract, {p: v for p, v in values.items() if p in wanted}


def restore_model(directory: str | Path, name: str, mesh: Mesh | None = None,
                  rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES, *, config: Any = None,
                  **overrides: Any) -> nnx.Module:
    """The model ``name`` of a converted folder with all its parameters (see :func:`restore_params`)."""
    abstract, values = restore_params(directory, name, mesh, rules, config=config, **overrides)
    return params.materialize(abstract, values)
