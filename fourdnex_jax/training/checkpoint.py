"""Training checkpoints: one orbax ``CheckpointManager`` step = train state + data iterator state + metadata.

Items of step ``N`` (``WORKDIR/checkpoints/N``):
  * ``state``: the whole train state (:mod:`fourdnex_jax.training.state`: step, trainable fp32, optimizer state,
    RNG key, NaN counters), sharded arrays written by every host (``StandardSave``);
  * ``data``: the grain iterator state after ``N`` batches (``iterator.get_state()`` as JSON; equal on every host by
    construction, see :mod:`fourdnex_jax.data.loader`), captured when ``save`` is called, so an async save stays
    consistent; the one place iterator positions are checkpointed;
  * ``meta``: JSON with the *reference* to the frozen base (``{"kind": "random", "seed": s}`` or
    ``{"kind": "checkpoint", "path": dir}``: the base is never copied), the config, mesh and process count.

Saves are asynchronous (``train.async_checkpoint``): orbax writes into a temporary folder and renames it when
complete, so a process killed mid-save leaves the previous step as the latest one. Restore takes abstract targets
with the *current* mesh's shardings, so a run resumes on a different mesh shape or host count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

# The read side of a run (metadata, saved arrays, the trained DiT) lives with the other load paths, where the
# pipelines can use it too; re-exported here for the trainer's callers.
from fourdnex_jax.weights.runs import (  # noqa: F401
    CHECKPOINT_DIR,
    ITEMS,
    load_state_arrays,
    load_trainable,
    load_trained_model,
    read_meta,
)


class Checkpointer:
    def __init__(self, workdir: str | os.PathLike, *, max_to_keep: int = 2, async_save: bool = True):
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                               create=True)
        self.manager = ocp.CheckpointManager(os.fspath(self.directory), options=options,
                                             item_names=ITEMS)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def quarantine(self, step: int) -> Path:
        """Moves the folder of ``step`` to ``checkpoints/corrupt/<step>`` (kept for inspection, out of orbax's
        sight, so the step can be written again) and reloads the manager's step list."""
        dest = self.directory / "corrupt" / str(step)
        if dest.exists():
            dest = dest.with_name(f"{step}-{os.getpid()}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.directory / str(step), dest)
        self.manager.reload()
        return dest

    def save(self, step: int, state: Mapping[str, Any], iterator_state: Mapping[str, Any] | None,
             meta: Mapping[str, Any]) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(dict(state)),
            data=ocp.args.JsonSave(_jsonable(iterator_state or {})),
            meta=ocp.args.JsonSave(_jsonable(meta))))

    def restore(self, step: int, abstract_state: Mapping[str, Any]) -> tuple[dict, dict, dict]:
        """(train state placed as ``abstract_state``'s shardings, iterator state, metadata) of ``step``."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(dict(abstract_state)), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return dict(out["state"]), dict(out["data"]), dict(out["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
