"""What a resumed run may change: the saved config (checkpoint ``meta.config``) against the new one.

Exact resume means the resumed run computes what one straight run with the new config would have; a change of any
of these breaks it, and is refused unless it is listed in ``train.resume_allow_changes`` (dotted keys, or ``*``):

* ``model.*`` -- the architecture, the LoRA (rank, alpha, targets), dtypes and the execution fields that change the
  numbers (attention implementation, compute dtype, scanned layers); only ``model.remat_policy`` (it recomputes the
  same values) and ``model.stream_blocks`` (the same weights, fetched from host memory a block ahead) may change;
* ``train.trainable`` -- what is trained ('adapter' or 'full': another train state altogether);
* ``train.global_batch_size``, ``train.grad_accum_steps`` -- the data position is counted in records of the
  saved batch size (a smaller one replays examples), and the micro-batch split changes the sums;
* ``optim.*`` -- the optimizer preset and every override (learning rate, betas, schedule, ...);
* ``data.dir``, ``data.split``, ``data.text_len``, ``data.sample_posterior`` -- another dataset;
* ``seed`` -- the data order and the posterior samples;
* ``train.num_steps`` when the learning-rate schedule depends on it (``linear_decay`` with ``decay_steps=0``: a
  longer run decays more slowly); a longer ``num_steps`` of a constant schedule is fine, a shorter one than the
  saved step cannot resume.

Everything else (logging and checkpoint intervals, NaN policy, the mesh and the number of hosts, worker counts) may
change freely.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from fourdnex_jax.utils.errors import InputError

#: Top-level sections / keys whose change breaks exactness (module docstring), as fnmatch patterns.
EXACT = ("model.*", "train.trainable", "train.global_batch_size", "train.grad_accum_steps", "optim.*", "data.dir",
         "data.split", "data.text_len", "data.sample_posterior", "seed")
#: Inside the sections above, keys that may change (they compute the same values).
FREE = ("model.remat_policy", "model.stream_blocks")


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _schedule_uses_num_steps(config: Mapping[str, Any]) -> bool:
    from fourdnex_jax.training.optimizer import resolve

    optim = _Getter(config.get("optim", {}))
    return resolve(optim).schedule == "linear_decay" and not int(optim.get("decay_steps") or 0)


class _Getter(dict):
    """A dict read like the ml_collections section :func:`~fourdnex_jax.training.optimizer.resolve` expects."""

    def __getattr__(self, name: str) -> Any:
        return self.get(name)


def resume_problems(saved: Mapping[str, Any], new: Mapping[str, Any], step: int) -> list[str]:
    """``key: saved X, now Y`` for every change of the new config (``new``, a plain dict) that breaks exact resume
    of a checkpoint at ``step`` whose config was ``saved``, minus ``train.resume_allow_changes`` of ``new``."""
    allow = [a.strip() for a in str(new.get("train", {}).get("resume_allow_changes", "") or "").split(",")
             if a.strip()]
    a, b = _flatten(saved), _flatten(new)
    problems = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key) or key == "train.resume_allow_changes":
            continue
        if not any(fnmatch.fnmatchcase(key, p) for p in EXACT) or key in FREE:
            continue
        if any(fnmatch.fnmatchcase(key, p) for p in allow):
            continue
        problems.append(f"{key}: saved {a.get(key, '<absent>')!r}, now {b.get(key, '<absent>')!r}")
    n_saved, n_new = a.get("train.num_steps"), b.get("train.num_steps")
    if n_new is not None and int(n_new) < step:
        problems.append(f"train.num_steps: now {n_new}, below the saved step {step}")
    elif n_saved != n_new and _schedule_uses_num_steps(new) and not any(
            fnmatch.fnmatchcase("train.num_steps", p) for p in allow):
        problems.append(f"train.num_steps: saved {n_saved}, now {n_new}, and the linear_decay schedule (decay_steps "
                        "0) decays over num_steps")
    return problems


def check_resume(saved: Mapping[str, Any], new: Mapping[str, Any], step: int, where: str) -> None:
    """Raises :class:`~fourdnex_jax.utils.errors.InputError` listing :func:`resume_problems` (one line)."""
    problems = resume_problems(saved, new, step)
    if problems:
        keys = ",".join(p.split(":", 1)[0] for p in problems)
        raise InputError(f"cannot resume {where} (step {step}) exactly: the config changed: {'; '.join(problems)}; "
                         f"use a new --out folder, restore the saved values, or allow the change with "
                         f"--config.train.resume_allow_changes={keys}")


def check_iterator_state(state: Any, fresh: Mapping[str, Any], where: str) -> None:
    """The data-iterator state of a checkpoint (``where``) must have the keys and types of a fresh iterator's
    ``get_state()`` (``fresh``), with non-negative integer positions; InputError (one line) otherwise (grain would
    fail deep inside with a traceback, or silently start elsewhere)."""
    def bad(why: str) -> InputError:
        return InputError(f"{where}: the data-iterator state {why}; it was not written by this trainer (or was "
                          "edited): restore the file, or train into a new --out folder")

    if not isinstance(state, Mapping):
        raise bad(f"is a {type(state).__name__}, not a JSON object")
    if set(state) != set(fresh):
        raise bad(f"has keys {sorted(state)}, expected {sorted(fresh)}")
    for key, want in fresh.items():
        got = state[key]
        if isinstance(want, bool) or not isinstance(want, (int, float, str)) or want is None:
            if type(got) is not type(want):
                raise bad(f"holds {key}={got!r} ({type(got).__name__}), expected a {type(want).__name__}")
        elif isinstance(want, int):
            if not isinstance(got, int) or isinstance(got, bool) or got < 0:
                raise bad(f"holds {key}={got!r}: expected an integer >= 0")
        elif not isinstance(got, type(want)):
            raise bad(f"holds {key}={got!r} ({type(got).__name__}), expected a {type(want).__name__}")
