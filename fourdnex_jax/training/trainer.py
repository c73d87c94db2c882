"""The training loop (``fourdnex train``): builds mesh, state, the input pipeline over ``config.data.dir`` (an
``encoded6d`` dataset; the trainer never builds one) and the step from a config, resumes from the latest checkpoint
of the work directory, trains, logs, checkpoints and applies the NaN/inf policy.

Resume: the newest checkpoint that passes its integrity check (:meth:`~fourdnex_jax.training.checkpoint.Checkpointer.
damage`: file index with sizes and sha256, orbax metadata) is used; a damaged newer one is moved to
``checkpoints/corrupt/`` with a message. Before anything is restored, its saved config must match the new one
wherever a change would break exactness (:mod:`fourdnex_jax.training.resume`), its base must be this run's, its
stored array shapes must be the ones this config builds and its data-iterator state must be well-formed: each
mismatch is one error line and moves nothing (a changed config never throws the run's progress away). A step that
passes all of that and still fails to restore is reported, not moved. ``metrics.jsonl`` drops the lines past the
resumed step (a killed run logged steps that are then trained again) and skips unreadable lines, saying so once.

One writer per run folder: the trainer holds an advisory lock (``fcntl.flock`` on ``OUT/train.lock``) for its
lifetime; a second trainer on the same ``--out`` is refused. The OS releases the lock when the process ends, even
by ``kill -9``, so a stale lock never blocks a resume.

NaN/inf policy (``train.nan_policy``): the step itself drops a non-finite update (state unchanged, batch
consumed). ``skip``: training goes on (and stops with an error after ``train.max_nan_skips`` consecutive skips);
``stop``: raises :class:`NonFiniteError` before any further checkpoint is written, so no saved state ever
includes the offending step. The host reads the metrics only on log steps, before a checkpoint and at the end (as
big_vision does): each step's metrics stay on the device until then, and at most :data:`MAX_IN_FLIGHT` steps run
ahead of the host, so the device never waits for a host round trip; the NaN/inf policy is applied to every step's
flag, in order, when they are read.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import jax

from fourdnex_jax import sharding as mesh_lib
from fourdnex_jax.config import model_config, validate
from fourdnex_jax.data import encode as encode_lib
from fourdnex_jax.data import loader
from fourdnex_jax.models.transformer import flops
from fourdnex_jax.training import checkpoint as ckpt_lib
from fourdnex_jax.training import metrics as metrics_lib
from fourdnex_jax.training import optimizer as optim_lib
from fourdnex_jax.training import resume as resume_lib
from fourdnex_jax.training import state as state_lib
from fourdnex_jax.training import step as step_lib
from fourdnex_jax.utils import xla_cache
from fourdnex_jax.utils.devices import peak_tflops
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.quiet import quiet_library_threads

#: Test hook: SIGKILL this process right after ``save()`` of this step returned (async write in flight).
KILL_AFTER_SAVE_ENV = "FOURDNEX_KILL_AFTER_SAVE_STEP"
#: Steps dispatched ahead of the host between reads (bounds the inputs queued on the devices).
MAX_IN_FLIGHT = 2


class NonFiniteError(FloatingPointError):
    pass


LOCK_FILE = "train.lock"


def lock_run_folder(workdir: Path):
    """Takes the run folder's writer lock (module docstring); returns the open lock file (keep it open: closing it
    releases the lock). A folder another trainer holds raises InputError."""
    import fcntl

    workdir.mkdir(parents=True, exist_ok=True)
    f = open(workdir / LOCK_FILE, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read(64).strip() or "?"
        f.close()
        raise InputError(f"{workdir} is in use by another `fourdnex train` (pid {holder}, holding {workdir / LOCK_FILE}"
                         "); wait for it to finish or stop it, or train into another --out folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


class Trainer:
    def __init__(self, config, workdir: str | os.PathLike, *, verbose: bool = True):
        self.config = validate(config)
        xla_cache.install()  # a compilation cache JAX was pointed at (JAX_COMPILATION_CACHE_DIR) is checked first
        self.workdir = Path(workdir)
        self.verbose = verbose and jax.process_index() == 0
        # one writer per run folder (process 0 speaks for the run; the other hosts write only their shards)
        self._lock = lock_run_folder(self.workdir) if jax.process_index() == 0 else None
        t = config.train
        self.cfg = model_config(config)
        self.mesh = mesh_lib.make_mesh(config.sharding)
        self.rules = mesh_lib.rules_of(config.sharding)
        self.parts = state_lib.ModelParts.build(self.cfg, config.seed, t.trainable)
        self.tx, self.schedule = optim_lib.make_optimizer(config.optim, t.num_steps)
        self.state_sh = state_lib.state_shardings(self.parts, self.tx, self.mesh, self.rules)
        self.frozen_sh = self.parts.frozen_shardings(self.mesh, self.rules)
        if not config.data.dir:
            raise ValueError("config.data.dir is empty: give an encoded6d dataset folder (the encode step's output), "
                             "or run `fourdnex train --synthetic` to build and use the synthetic one")
        self.dataset_dir = Path(config.data.dir)
        if not (self.dataset_dir / "dataset_info.json").is_file():
            raise InputError(f"config.data.dir {self.dataset_dir}: no encoded6d dataset there (no dataset_info.json); "
                             "give the folder the encode step wrote (.../encoded6d/<config>/<version>), or train "
                             "with --synthetic")
        self.batch_shapes = loader.global_batch_shapes(loader.dataset_spec(self.dataset_dir), t.global_batch_size,
                                                       t.grad_accum_steps, config.data.text_len)
        dp = mesh_lib.data_parallel_size(self.mesh, self.rules)
        micro = t.global_batch_size // t.grad_accum_steps
        if micro % dp:
            raise ValueError(f"micro batch {micro} is not a multiple of the data-parallel size {dp} "
                             f"(mesh {dict(self.mesh.shape)})")
        self.batch_sh = step_lib.batch_shardings(self.mesh, self.rules, self.batch_shapes)
        step_fn = step_lib.build_train_step(self.parts, self.tx, self.schedule, grad_accum_steps=t.grad_accum_steps,
                                            sample_posterior=config.data.sample_posterior)
        self.step_fn = step_lib.jit_train_step(step_fn, self.state_sh, self.frozen_sh, self.batch_sh, self.mesh)
        self.checkpointer = ckpt_lib.Checkpointer(self.workdir, max_to_keep=t.max_to_keep,
                                                  async_save=t.async_checkpoint)
        # the base: referenced, never copied into training checkpoints; frozen ('adapter') or the initial values of
        # the trained tensors ('full', read only when the run starts fresh)
        self.frozen, initial_base = {}, None
        if t.base_checkpoint:
            self.base_ref = {"kind": "checkpoint", "path": os.path.abspath(t.base_checkpoint)}
            if t.trainable == "adapter":
                self.frozen = state_lib.restore_base(t.base_checkpoint, self.parts, self.mesh, self.rules)
            else:
                def initial_base():
                    return state_lib.restore_base(t.base_checkpoint, self.parts, self.mesh, self.rules)
        else:
            self.base_ref = {"kind": "random", "seed": int(config.seed)}
            self.frozen = state_lib.init_frozen(self.parts, self.frozen_sh, config.seed)
        ds = loader.make_train_dataset(loader.data_source(self.dataset_dir, config.data.split),
                                       global_batch=t.global_batch_size, grad_accum_steps=t.grad_accum_steps,
                                       seed=config.seed, text_len=config.data.text_len)
        self.iterator = loader.make_iterator(ds, num_threads=config.data.num_threads,
                                             num_workers=config.data.num_workers)
        restored = self._restore_latest()
        if restored is None:
            self.state = state_lib.init_state(self.parts, self.tx, self.state_sh, config.seed,
                                              initial_base() if initial_base else None)
            self.start_step = 0
        else:
            latest, (self.state, it_state) = restored
            self.iterator.set_state(it_state)
            self.start_step = int(jax.device_get(self.state["step"]))
            self._log(f"resumed from {self.checkpointer.directory / str(latest)} at step {self.start_step}")
        layout_shape = self.batch_shapes["cond_latent"][2:]  # the fused (T, H, 2W, C) latent of one sample
        grid = flops.token_grid(self.cfg, layout_shape[:3])
        self.flops_per_sample = flops.train_flops(self.cfg, grid, text_len=config.data.text_len,
                                                  image_tokens=self.batch_shapes["image_embeds"][2])
        self.tokens_per_sample = math.prod(grid)
        self.peak = peak_tflops(jax.devices()[0].device_kind, t.peak_tflops_per_device)
        self.writer = metrics_lib.MetricsWriter(self.workdir, enabled=jax.process_index() == 0,
                                                keep_until_step=self.start_step)

    def _restore_latest(self):
        """``(step, (state, iterator state))`` of the newest intact checkpoint, or None when there is none (module
        docstring). Damaged steps (:meth:`Checkpointer.damage`) are moved aside with a message; every other reason
        a step cannot be resumed raises InputError before anything is restored, and moves nothing."""
        abstract = state_lib.abstract_state(self.parts, self.tx, self.state_sh)
        moved = []
        for step in sorted(self.checkpointer.manager.all_steps(), reverse=True):
            damage = self.checkpointer.damage(step)
            if damage is not None:
                dest = self.checkpointer.quarantine(step)
                moved.append(f"step {step} ({damage})")
                print(f"train: checkpoint step {step} is damaged on disk ({damage}); moved to {dest}, falling back "
                      "to the previous one", flush=True)
                continue
            it_state = self._check_resumable(step, abstract)
            try:
                with quiet_library_threads():
                    state = self.checkpointer.restore_state(step, abstract)
            except Exception as e:  # noqa: BLE001 -- orbax / tensorstore raise many types
                reason = " ".join(str(e).split(" See full TensorStore details")[0].split())[:300]
                raise InputError(f"checkpoint step {step} of {self.checkpointer.directory} passes its integrity "
                                 f"check but does not restore ({type(e).__name__}: {reason}); nothing was moved: "
                                 "rerun with --verbose for the details, or train into a new --out folder") from e
            return step, (state, it_state)
        if moved:
            raise InputError(f"no intact checkpoint in {self.checkpointer.directory} ({'; '.join(moved)}; moved to "
                             "checkpoints/corrupt/); start a new --out folder, or delete checkpoints/corrupt/ to "
                             "train from the start here")
        return None

    def _check_resumable(self, step: int, abstract) -> dict:
        """Everything that must hold before step ``step`` is restored (base, config, array shapes, iterator
        state); returns the iterator state. InputError (one line) otherwise."""
        where = self.checkpointer.step_dir(step)
        try:
            meta = self.checkpointer.read_item(step, "meta")
            it_state = self.checkpointer.read_item(step, "data")
        except (OSError, ValueError) as e:  # passed the integrity check, so written like this by a writer
            raise InputError(f"checkpoint {where}: unreadable item ({type(e).__name__}: {e}); nothing was moved: "
                             "train into a new --out folder") from e
        if meta.get("base") != self.base_ref:
            raise InputError(f"checkpoint step {step} of {self.workdir} was trained on base {meta.get('base')}, "
                             f"this run uses {self.base_ref}; use a new --out folder or the same "
                             "train.base_checkpoint")
        saved_config = meta.get("config")
        if not isinstance(saved_config, dict):
            raise InputError(f"checkpoint {where}/meta/metadata has no config; nothing was moved: train into a new "
                             "--out folder")
        resume_lib.check_resume(saved_config, self.config.to_dict(), step, str(self.workdir))
        stored, wanted = self.checkpointer.stored_arrays(step), ckpt_lib.leaf_shapes(abstract)
        changed = [f"{p}: saved {stored.get(p, '<absent>')}, now {wanted.get(p, '<absent>')}"
                   for p in sorted(set(stored) | set(wanted)) if stored.get(p) != wanted.get(p)]
        if changed:
            raise InputError(f"cannot resume {self.workdir} (step {step}): this config builds a train state of "
                             f"other shapes ({len(changed)} arrays; {changed[0]}); nothing was moved: restore the "
                             "saved config, or train into a new --out folder")
        resume_lib.check_iterator_state(it_state, self.iterator.get_state(), f"{where}/data/metadata")
        return it_state

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"train: {msg}", flush=True)

    def meta(self) -> dict[str, Any]:
        return {"base": self.base_ref, "config": self.config.to_dict(), "mesh": dict(self.mesh.shape),
                "process_count": jax.process_count(), "dataset": str(self.dataset_dir),
                "towers": encode_lib.read_towers_record(self.dataset_dir)}  # which towers encoded the data

    def save(self, step: int) -> None:
        self.checkpointer.save(step, self.state, self.iterator.get_state(), self.meta())
        if os.environ.get(KILL_AFTER_SAVE_ENV) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)

    def _check(self, step: int, m: dict) -> None:
        """The NaN/inf policy for step ``step``'s host metrics ``m`` (steps checked in order: ``self._nan_streak``
        counts consecutive non-finite ones, as the state's ``nan_skips`` does)."""
        if bool(m["finite"]):
            self._nan_streak = 0
            return
        t = self.config.train
        self._nan_streak += 1
        self._log(f"step {step}: non-finite loss/gradient (loss {float(m['loss'])}, |g| {float(m['grad_norm'])}); "
                  f"update dropped ({t.nan_policy})")
        if t.nan_policy == "stop":
            raise NonFiniteError(f"non-finite loss or gradient at step {step}; nothing saved after it")
        if self._nan_streak >= t.max_nan_skips:
            raise NonFiniteError(f"{self._nan_streak} consecutive non-finite steps (max_nan_skips "
                                 f"{t.max_nan_skips})")

    def _read(self, pending: list, history: list) -> dict | None:
        """Reads the metrics of the ``pending`` steps (one transfer), applies the NaN/inf policy to each in order,
        records their losses in ``history`` and empties ``pending``; the last step's host metrics (None if none)."""
        if not pending:
            return None
        host = jax.device_get([m for _, m in pending])
        for (step, _), m in zip(pending, host):
            self._check(step, m)
            history.append({"step": step, "loss": float(m["loss"])})
        pending.clear()
        return host[-1]

    def run(self, num_steps: int | None = None, stop_after: int | None = None) -> dict[str, Any]:
        """Trains up to step ``num_steps`` (default ``train.num_steps``); ``stop_after``: return after that many
        steps of this call (no final save; for tests and time-boxed runs). Returns a summary."""
        t = self.config.train
        total = int(num_steps or t.num_steps)
        step = self.start_step
        history = []
        pending = []  # (step, device metrics) of the steps not read yet
        self._nan_streak = int(jax.device_get(self.state["nan_skips"]))  # a resumed run keeps its streak
        t_window, n_window, first_time = time.perf_counter(), 0, None
        done_here = 0
        try:
            while step < total and (stop_after is None or done_here < stop_after):
                local = next(self.iterator)
                batch = loader.to_global(local, self.batch_sh, t.global_batch_size, t.grad_accum_steps)
                t0 = time.perf_counter()
                self.state, metrics = self.step_fn(self.state, self.frozen, batch)
                step += 1
                done_here += 1
                pending.append((step, metrics))
                if first_time is None:
                    jax.block_until_ready(metrics)
                    first_time = time.perf_counter() - t0
                    self._log(f"first step (compile + run) {first_time:.1f}s")
                    t_window, n_window = time.perf_counter(), 0
                else:
                    n_window += 1
                if len(pending) > MAX_IN_FLIGHT:  # wait for the device, without a transfer
                    jax.block_until_ready(pending[-1 - MAX_IN_FLIGHT][1])
                if step % t.log_every == 0 or step == total:
                    m = self._read(pending, history)
                    dt = (time.perf_counter() - t_window) / max(n_window, 1)
                    samples = t.global_batch_size / dt
                    tflops = samples * self.flops_per_sample / jax.device_count() / 1e12
                    scalars = {k: float(m[k]) for k in ("loss", "grad_norm", "learning_rate", "param_norm")}
                    scalars.update(step_time=dt, tokens_per_s=samples * self.tokens_per_sample,
                                   tflops_per_device=tflops, mfu=(tflops / self.peak if self.peak else None),
                                   skipped=float(jax.device_get(self.state["skipped"])))
                    self.writer.write(step, scalars)
                    if self.verbose:
                        self.writer.console(step, total, scalars)
                    t_window, n_window = time.perf_counter(), 0
                if step % t.checkpoint_every == 0 or step == total:
                    self._read(pending, history)  # the NaN/inf policy before anything is saved
                    self.save(step)
            self._read(pending, history)
        finally:
            self.checkpointer.wait()
        return {"start_step": self.start_step, "end_step": step, "first_step_s": first_time, "history": history}

    def close(self) -> None:
        self.checkpointer.close()
        self.writer.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
