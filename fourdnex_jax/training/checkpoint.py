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

Integrity: once a step is committed, its file index (``N/fourdnex_files.json``: size and sha256 of every file,
:mod:`fourdnex_jax.weights.integrity`) is written, at the next save or at ``wait``/``close`` (orbax finishes an
async save in the background). :meth:`Checkpointer.damage` is the one test of "damaged on disk": a file that fails
the index, or (for a step killed before its index was written) orbax metadata that does not parse. Only a step
that fails it is ever moved aside; anything else that keeps a step from restoring is the caller's error to report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from fourdnex_jax.utils.files import read_json
from fourdnex_jax.weights import integrity

# The read side of a run (metadata, saved arrays, the trained DiT) lives with the other load paths, where the
# pipelines can use it too; re-exported here for the trainer's callers.
from fourdnex_jax.weights.runs import (  # noqa: F401
    CHECKPOINT_DIR,
    ITEMS,
    leaf_shapes,
    load_state_arrays,
    load_trainable,
    load_trained_model,
    read_meta,
    stored_tree,
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

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def index_committed(self) -> None:
        """Writes the file index of every committed step that has none (call when no save is in flight)."""
        if jax.process_index() != 0:
            return
        for step in self.manager.all_steps():
            d = self.step_dir(step)
            if d.is_dir() and not (d / integrity.FILE_INDEX).exists():
                integrity.write_file_index(d)

    def damage(self, step: int) -> str | None:
        """Why step ``step`` is damaged on disk (one phrase), or None when it passes its integrity check: every
        file of its index present with its size and sha256; without an index (a run killed between the commit
        and the index), orbax's own metadata of every item parses."""
        d = self.step_dir(step)
        report = integrity.check_folder(d)
        if report.problems:
            return report.line(limit=2)
        for item in ("meta/metadata", "data/metadata", "_CHECKPOINT_METADATA", "state/_METADATA"):
            try:
                read_json(d / item, what="checkpoint metadata")
            except (OSError, ValueError) as e:
                return f"{d / item} unreadable ({type(e).__name__})"
        try:
            stored_tree(d / "state")
        except Exception as e:  # orbax raises many types for metadata it cannot parse  # noqa: BLE001
            return f"{d / 'state'}: orbax metadata unreadable ({type(e).__name__})"
        return None

    def read_item(self, step: int, item: str) -> dict:
        """The JSON item ``meta`` or ``data`` of ``step`` (read directly: no restore, no orbax threads)."""
        obj = read_json(self.step_dir(step) / item / "metadata", what=f"checkpoint {item} item")
        if not isinstance(obj, dict):
            raise ValueError(f"{self.step_dir(step) / item / 'metadata'} is not a JSON object")
        return obj

    def stored_arrays(self, step: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """``{path: (shape, dtype)}`` of the train state of ``step``, from orbax's metadata only."""
        return leaf_shapes(stored_tree(self.step_dir(step) / "state"))

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
        self.manager.wait_until_finished()  # what orbax's save does first anyway; the previous step is committed
        self.index_committed()
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

    def restore_state(self, step: int, abstract_state: Mapping[str, Any]) -> dict:
        """The train state of ``step``, placed as ``abstract_state``'s shardings (the other items are not read)."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(dict(abstract_state)))
        return dict(self.manager.restore(step, args=args)["state"])

    def wait(self) -> None:
        self.manager.wait_until_finished()
        self.index_committed()

    def close(self) -> None:
        self.wait()
        self.manager.close()


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
