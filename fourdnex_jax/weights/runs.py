"""A ``fourdnex train`` run folder read back: the metadata of a checkpoint, its saved arrays and the trained DiT.

The trainer (:mod:`fourdnex_jax.training.checkpoint`) writes ``WORKDIR/checkpoints/<step>`` with the items
:data:`ITEMS`: ``state`` (train state), ``data`` (iterator state) and ``meta`` (JSON: the reference to the frozen
base, the config, mesh, process count, the dataset and the towers that encoded it). Reading lives here, with the
other load paths, so the pipelines (a run as ``--checkpoint``, ``fourdnex bundle``) use it without the trainer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

#: Folder of a run that holds its orbax checkpoints, and the items of each step.
CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "data", "meta")


def _manager(workdir: str | os.PathLike) -> ocp.CheckpointManager:
    """A read-only view of a run's checkpoints (creates nothing). Process-local: reading needs no other process, so
    the manager syncs with none (a default manager waits at a barrier for every process of a multi-process job,
    which hangs when only process 0 reads, e.g. for the trainer's closing hint)."""
    directory = Path(workdir).absolute() / CHECKPOINT_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint under {directory} (not a `fourdnex train` run folder)")
    me = jax.process_index()
    return ocp.CheckpointManager(os.fspath(directory), options=ocp.CheckpointManagerOptions(
        create=False, read_only=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=me, active_processes={me})), item_names=ITEMS)


def read_meta(workdir: str | os.PathLike, step: int | None = None) -> tuple[int, dict]:
    """(step, metadata) of the latest (or given) checkpoint of a run."""
    manager = _manager(workdir)
    try:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {Path(workdir).absolute() / CHECKPOINT_DIR}")
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    finally:
        manager.close()
    return step, dict(meta)


def _state_dir(workdir: str | os.PathLike, step: int | None) -> tuple[int, Path]:
    """(step, the ``state`` item folder of that step; default the latest)."""
    if step is None:
        manager = _manager(workdir)
        step = manager.latest_step()
        manager.close()
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {Path(workdir).absolute() / CHECKPOINT_DIR}")
    return step, Path(workdir).absolute() / CHECKPOINT_DIR / str(step) / "state"


def _restore_items(path: Path, target: Mapping[str, Any]) -> dict:
    """The items of ``target`` (``{key: pytree of ShapeDtypeStruct with shardings}``) of a saved train state
    folder, each array read straight into its target's sharding; the other items are not read."""
    return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
        item=dict(target), restore_args=jax.tree.map(lambda t: ocp.ArrayRestoreArgs(sharding=t.sharding),
                                                     dict(target)), partial_restore=True))


def stored_tree(path: Path) -> dict:
    """The array metadata tree of a saved train state folder (through the item handler: the checkpointer's
    ``metadata`` would also look for a step-level ``_CHECKPOINT_METADATA`` in the item folder and log a warning)."""
    meta = ocp.StandardCheckpointHandler().metadata(Path(path).absolute())
    return getattr(meta, "tree", meta)


def leaf_shapes(tree) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{'a/0/b': (shape, dtype)}`` of the array leaves of a pytree (arrays, ShapeDtypeStructs or orbax array
    metadata; optax states' lists, tuples and named tuples become index / field names)."""
    return {"/".join(_key_name(k) for k in path): (tuple(int(d) for d in leaf.shape), str(np.dtype(leaf.dtype)))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if hasattr(leaf, "shape")}


def load_state_arrays(workdir: str | os.PathLike, step: int | None = None, keys: tuple[str, ...] = ("trainable",)
                      ) -> tuple[int, dict[str, np.ndarray]]:
    """(step, ``{key/path: array}``) of the items ``keys`` of a run's saved train state (``trainable``,
    ``opt_state``: the Adam moments, ``step``, ...), as numpy on the host (no mesh needed)."""
    step, path = _state_dir(workdir, step)
    tree = stored_tree(path)
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = {k: jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=dev), tree[k])
              for k in keys}
    restored = _restore_items(path, target)
    return step, {"/".join(_key_name(k) for k in path): np.asarray(v)
                  for path, v in jax.tree_util.tree_leaves_with_path(restored)}


def _key_name(key) -> str:
    """One step of a pytree path as text (dict key, list index or attribute: optax states hold all three)."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def load_trainable(workdir: str | os.PathLike, step: int | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """(step, ``{path: array}``) of the trained adapter (LoRA + domain embeddings) of a run, as numpy on the host
    (no mesh needed): what inference merges into a model with :func:`fourdnex_jax.models.params.assign`."""
    step, arrays = load_state_arrays(workdir, step, ("trainable",))
    return step, {p.split("/", 1)[1]: v for p, v in arrays.items()}


def load_trained_model(workdir: str | os.PathLike, step: int | None = None, mesh: jax.sharding.Mesh | None = None,
                       rules=None, **overrides):
    """The trained :class:`WanTransformer3D` of a run: the base as referenced by the checkpoint (random from the
    config seed, or the converted folder) plus the trained tensors (the adapter, or every weight of a
    ``trainable='full'`` run). With ``mesh``, every parameter is placed as ``rules`` (default
    :data:`fourdnex_jax.sharding.DEFAULT_LOGICAL_AXIS_RULES`) shard it, read (or, for a random base, initialised)
    straight into its shards; otherwise on the first local device. ``overrides``: execution fields of the model
    config (e.g. ``attention='xla'``)."""
    from flax import nnx

    from fourdnex_jax import sharding as mesh_lib
    from fourdnex_jax.models import params
    from fourdnex_jax.models.transformer import WanTransformer3D, WanTransformerConfig

    rules = mesh_lib.DEFAULT_LOGICAL_AXIS_RULES if rules is None else rules
    step, meta = read_meta(workdir, step)
    cfg = WanTransformerConfig.from_dict(_model_dict(meta["config"]["model"])).replace(**overrides)
    base = meta["base"]
    seed = int(base.get("seed", 0))
    abstract = nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(seed)))
    variables = params.flat_variables(abstract)
    targets = mesh_lib.sharded_targets(variables, mesh, rules)
    trained = _restore_trainable(workdir, step, targets)
    rest = {p: t for p, t in targets.items() if p not in trained}
    if base["kind"] == "random":  # the seed's initial values, computed straight into their shards
        shardings = {p: t.sharding for p, t in rest.items()}
        values = jax.jit(lambda: {p: v[...] for p, v in params.flat_variables(
            WanTransformer3D(cfg, rngs=nnx.Rngs(seed))).items() if p in rest}, out_shardings=shardings)()
    else:
        from fourdnex_jax.weights.restore import restore_params

        _, values = restore_params(base["path"], "transformer", mesh, rules, config=cfg,
                                   param_filter=lambda path, var: params.path_str(path) in rest)
        missing = sorted(set(rest) - set(values))
        if missing:
            raise ValueError(f"{workdir}: the base {base['path']} lacks {missing[:5]}")
    return params.materialize(abstract, {**values, **trained})


def _restore_trainable(workdir, step: int, targets: Mapping[str, jax.ShapeDtypeStruct]) -> dict[str, jax.Array]:
    """The ``trainable`` item of a run's checkpoint ``step``, each array restored into ``targets[path]``'s
    sharding (its paths must be model paths)."""
    from fourdnex_jax.utils.tree import flatten, nest

    _, path = _state_dir(workdir, step)
    stored = flatten(stored_tree(path)["trainable"])
    unknown = sorted(set(stored) - set(targets))
    if unknown:
        raise ValueError(f"{workdir}: checkpoint step {step} trains tensors the model does not have: {unknown[:5]}")
    restored = _restore_items(path, {"trainable": nest({p: targets[p] for p in stored})})
    return flatten(restored["trainable"])


def _model_dict(d: Mapping[str, Any]) -> dict:
    out = dict(d)
    for k in ("patch_size", "lora_targets"):
        out[k] = tuple(out[k])
    return out
