"""Resumable, atomic sharded processing: the expensive half of dataset preparation.

Inputs are cut into fixed shards (``shard_size`` items, in input order). Each shard is processed on its own
(optionally in worker processes) and written as ``shard-XXXXX-of-NNNNN.npz`` (the shard's examples stacked per
field, text fields as numpy unicode arrays: no pickle) and then ``shard-XXXXX-of-NNNNN.json`` (counts and skip
reasons). Both are written through a temporary file and an atomic rename, and the JSON marks the shard finished,
so an interrupted run leaves no half-written shard visible and a rerun skips finished shards. The shard plan is
stored in ``plan.json``; a rerun with different inputs or shard size is refused instead of mixing shards. With a
``fingerprint`` (of each input's files: size and mtime), a finished shard records the digest of its inputs
(``inputs`` in its JSON) and is processed again when an input changed on disk (a clip fixed after it was skipped).

Fields whose first dimension varies between examples (e.g. text embeddings cut at the prompt length) are padded
with zeros to the longest in the shard and their lengths stored as ``{field}__len``; :func:`iter_staged` restores
them.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fourdnex_jax.data.errors import SkipStats, as_bad_example
from fourdnex_jax.media.io import atomic_save_json, atomic_save_npz
from fourdnex_jax.utils.progress import Progress

LEN_SUFFIX = "__len"


def shard_name(i: int, n: int) -> str:
    return f"shard-{i:05d}-of-{n:05d}"


def _stack(examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key in examples[0]:
        vals = [np.asarray(ex[key]) for ex in examples]
        if vals[0].dtype.kind in "USO":
            out[key] = np.asarray([str(v) for v in vals], dtype=np.str_)
            continue
        shapes = {v.shape for v in vals}
        if len(shapes) > 1:  # ragged along axis 0: pad, remember lengths
            if len({s[1:] for s in shapes}) > 1 or vals[0].ndim == 0:
                raise ValueError(f"field {key!r} has incompatible shapes {sorted(shapes)}")
            m = max(v.shape[0] for v in vals)
            out[key + LEN_SUFFIX] = np.asarray([v.shape[0] for v in vals], np.int64)
            vals = [np.concatenate([v, np.zeros((m - v.shape[0],) + v.shape[1:], v.dtype)]) for v in vals]
        out[key] = np.stack(vals)
    return out


def _process_shard(fn: Callable[[Any], dict[str, Any]], items: Sequence[tuple[str, Any]]):
    """Runs ``fn`` on each item of one shard once (no retries); returns (examples, stats dict)."""
    stats = SkipStats()
    examples = []
    for item_id, payload in items:
        try:
            ex = fn(payload)
        except Exception as exc:  # noqa: BLE001 - counted and skipped
            stats.record_bad(item_id, as_bad_example(exc))
            continue
        stats.record_ok()
        examples.append(ex)
    return examples, stats.to_dict()


def write_shard(stage_dir: Path, name: str, examples: list[dict[str, Any]], stats: dict[str, Any],
                inputs: str | None = None) -> None:
    if examples:
        atomic_save_npz(stage_dir / f"{name}.npz", **_stack(examples))
    else:  # a redone shard whose examples are now all skipped: its previous examples must not stay visible
        (stage_dir / f"{name}.npz").unlink(missing_ok=True)
    atomic_save_json(stage_dir / f"{name}.json", {"num_examples": len(examples), **stats,
                                                  **({"inputs": inputs} if inputs else {})})


def _run_shard(fn, items, stage_dir, name, inputs=None):  # worker entry point: process and write, return the stats
    examples, stats = _process_shard(fn, items)
    write_shard(Path(stage_dir), name, examples, stats, inputs)
    return stats


def stage(items: Sequence[tuple[str, Any]], fn: Callable[[Any], dict[str, Any]], stage_dir: str | os.PathLike, *,
          shard_size: int = 64, num_workers: int = 0, label: str = "prepare", progress: bool = True,
          fingerprint: Callable[[Any], str] | None = None) -> tuple[SkipStats, dict[str, int]]:
    """Processes ``items`` ((id, payload) pairs) with ``fn(payload) -> example`` into staged shards.

    ``fn`` must be picklable (a module-level function or ``functools.partial``) when ``num_workers > 0``
    (spawned worker processes). Returns the merged skip statistics (finished shards of a previous run included)
    and ``{'shards': n, 'done_before': k, 'written': m}``. ``fingerprint(payload)``: a digest of an input's files;
    a finished shard is redone when one of its inputs' digests changed (module docstring)."""
    stage_dir = Path(stage_dir)
    shards, todo, total = plan_shards(items, stage_dir, shard_size, fingerprint)
    n = len(shards)
    bar = Progress(len(items), label) if progress else None
    if bar:
        bar.update(sum(len(s[2]) for s in shards) - sum(len(s[2]) for s in todo))
    if num_workers > 0 and len(todo) > 1:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=num_workers, mp_context=ctx) as pool:
            futs = {pool.submit(_run_shard, fn, s[2], str(stage_dir), s[1], s[3]): s for s in todo}
            for fut in cf.as_completed(futs):
                total.merge(fut.result())
                if bar:
                    bar.update(len(futs[fut][2]), total.summary())
    else:
        for _, name, chunk, inputs in todo:
            total.merge(_run_shard(fn, chunk, str(stage_dir), name, inputs))
            if bar:
                bar.update(len(chunk), total.summary())
    return total, {"shards": n, "done_before": n - len(todo), "written": len(todo)}


def plan_shards(items: Sequence[tuple[str, Any]], stage_dir: str | os.PathLike, shard_size: int,
                fingerprint: Callable[[Any], str] | None = None):
    """Cuts ``items`` into shards, records/validates ``plan.json``. Returns (all shards, shards still to do,
    statistics of the finished ones); a shard is ``(index, name, items, inputs digest or None)``; a finished shard
    whose recorded inputs digest differs from the current one is still to do."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    n = max(1, -(-len(items) // shard_size))
    plan = {"num_items": len(items), "shard_size": shard_size, "num_shards": n,
            "ids_sha256": hashlib.sha256("\n".join(i for i, _ in items).encode()).hexdigest()}
    plan_path = stage_dir / "plan.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        if old != plan:
            raise ValueError(f"{stage_dir} holds shards of another input list or shard size ({old} != {plan}); "
                             "use a fresh staging directory")
    else:
        atomic_save_json(plan_path, plan)
    shards = []
    for i in range(n):
        chunk = list(items[i * shard_size:(i + 1) * shard_size])
        digest = (hashlib.sha256("\n".join(fingerprint(p) for _, p in chunk).encode()).hexdigest()
                  if fingerprint is not None else None)
        shards.append((i, shard_name(i, n), chunk, digest))
    done = {}
    for _, name, _, digest in shards:
        path = stage_dir / f"{name}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if digest is None or record.get("inputs") == digest:
                done[name] = record
    todo = [s for s in shards if s[1] not in done]
    total = SkipStats()
    for record in done.values():
        total.merge(record)
    return shards, todo, total


def staged_shards(stage_dir: str | os.PathLike) -> list[Path]:
    """The finished shards' npz files, in shard order (shards whose examples were all skipped have none)."""
    stage_dir = Path(stage_dir)
    done = sorted(p.with_suffix("") for p in stage_dir.glob("shard-*.json"))
    return [p.with_suffix(".npz") for p in done if p.with_suffix(".npz").exists()]


def is_complete(stage_dir: str | os.PathLike) -> bool:
    stage_dir = Path(stage_dir)
    plan = json.loads((stage_dir / "plan.json").read_text())
    return len(list(stage_dir.glob("shard-*.json"))) == plan["num_shards"]


def iter_staged(stage_dir: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yields the staged examples (dicts of numpy arrays / str) in shard order."""
    for path in staged_shards(stage_dir):
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        lens = {k[: -len(LEN_SUFFIX)]: v for k, v in data.items() if k.endswith(LEN_SUFFIX)}
        keys = [k for k in data if not k.endswith(LEN_SUFFIX)]
        for i in range(len(data[keys[0]])):
            ex = {}
            for k in keys:
                v = data[k][i]
                if k in lens:
                    v = v[: lens[k][i]]
                ex[k] = str(v) if data[k].dtype.kind == "U" else v
            yield ex
