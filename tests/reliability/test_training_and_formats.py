"""Training never throws progress away (issue 26, class 1): a config change that alters shapes or meaning is refused
by the config comparison before any restore and moves nothing; only a checkpoint that fails its own integrity check
(file index with sha256, orbax metadata) is set aside; settings that are not finite or mean nothing stop before step
1; a garbage ``metrics.jsonl`` line or a malformed iterator state gets one line; one trainer per run folder.

The default tier checks each rule in-process on small orbax checkpoints; the ``integration`` tests run
``fourdnex train`` end to end (2 fake CPU devices)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from fourdnex_jax.config import load_config_file, validate
from fourdnex_jax.testing.training import TINY, random_dataset, run_train
from fourdnex_jax.training import checkpoint as ckpt_lib
from fourdnex_jax.training import resume as resume_lib
from fourdnex_jax.training.metrics import MetricsWriter
from fourdnex_jax.training.trainer import LOCK_FILE, Trainer, lock_run_folder
from fourdnex_jax.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and "Traceback" not in text, text
    return text


# ------------------------------------------------------------------------------------- config comparison (unit)
@pytest.mark.parametrize("key,saved,new", [("model.lora_rank", 4, 8), ("train.trainable", "adapter", "full"),
                                           ("model.num_layers", 2, 3)])
def test_shape_changing_keys_are_refused_by_the_comparison(key, saved, new):
    section, name = key.split(".")
    a = {"train": {"num_steps": 4}, "model": {}}
    b = {"train": {"num_steps": 4}, "model": {}}
    a[section][name], b[section][name] = saved, new
    with pytest.raises(InputError) as e:
        resume_lib.check_resume(a, b, 2, "/runs/x")
    line = _one_line(e.value)
    assert key in line and repr(saved) in line and repr(new) in line


# --------------------------------------------------------------------------------- checkpoint integrity (unit)
def _tiny_checkpoint(tmp_path: Path, steps=(1, 2), index=True) -> ckpt_lib.Checkpointer:
    ck = ckpt_lib.Checkpointer(tmp_path, max_to_keep=5, async_save=False)
    for s in steps:
        ck.save(s, {"w": jnp.arange(4096, dtype=jnp.float32) * s, "step": jnp.int32(s)}, {"next_index": s},
                {"config": {"seed": 0}, "base": {"kind": "random", "seed": 0}})
    if index:
        ck.wait()
    return ck


def _data_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and "/d/" in str(p)
                  and p.stat().st_size > 1000)


def test_every_committed_step_gets_a_file_index_with_digests(tmp_path):
    ck = _tiny_checkpoint(tmp_path)
    for s in (1, 2):
        assert (ck.step_dir(s) / "fourdnex_files.json").is_file()
        assert ck.damage(s) is None
    ck.close()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "symlink"])
def test_damage_is_what_fails_the_index(tmp_path, how):
    ck = _tiny_checkpoint(tmp_path)
    target = _data_files(ck.step_dir(2))[0]
    if how == "flip":  # same size, one bit
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 1
        target.write_bytes(bytes(raw))
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[:-10])
    elif how == "delete":
        target.unlink()
    else:  # a same-size file of random bytes outside the checkpoint
        outside = tmp_path.parent / f"{tmp_path.name}-outside.bin"
        outside.write_bytes(os.urandom(target.stat().st_size))
        target.unlink()
        target.symlink_to(outside)
    problem = ck.damage(2)
    assert problem is not None and target.name in problem, problem
    assert ck.damage(1) is None
    ck.close()


def test_a_step_without_index_is_judged_by_orbax_metadata(tmp_path):
    ck = _tiny_checkpoint(tmp_path, steps=(1,))
    (ck.step_dir(1) / "fourdnex_files.json").unlink()  # killed between the commit and the index
    assert ck.damage(1) is None
    (ck.step_dir(1) / "state" / "_METADATA").write_bytes(b"\0garbage")
    assert "unreadable" in ck.damage(1)
    ck.close()


def test_stored_shapes_are_read_from_metadata_only(tmp_path):
    ck = _tiny_checkpoint(tmp_path, steps=(1,))
    assert ck.stored_arrays(1) == {"step": ((), "int32"), "w": ((4096,), "float32")}
    ck.close()


# --------------------------------------------------------------------------------------- iterator state (unit)
@pytest.mark.parametrize("state,why", [([1, 2], "not a JSON object"), ({"next_index": -3}, ">= 0"),
                                       ({"next_index": "4"}, ">= 0"), ({"next_index": 1.5}, ">= 0"),
                                       ({"next_index": True}, ">= 0"), ({}, "keys")])
def test_malformed_iterator_state_is_one_line(state, why):
    with pytest.raises(InputError, match=why) as e:
        resume_lib.check_iterator_state(state, {"next_index": 0}, "run/checkpoints/4/data/metadata")
    assert "run/checkpoints/4/data/metadata" in _one_line(e.value)


def test_well_formed_iterator_state_passes():
    resume_lib.check_iterator_state({"next_index": 7}, {"next_index": 0}, "x")


# -------------------------------------------------------------------------------------------- metrics (unit)
def test_garbage_metrics_lines_are_skipped_and_reported_once(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1}\n\xff\xfe\n{"step": 1e400}\n[1]\n{"step": 2}\n'
                                             b'{"step": 3}\n{"step": 4, "lo')
    MetricsWriter(tmp_path, tensorboard=False, keep_until_step=2).close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b'{"step": 1}\n{"step": 2}\n'
    err = capsys.readouterr().err
    assert err.count("skipped 3 unreadable line") == 1, err


# ------------------------------------------------------------------------------------------ settings (unit)
@pytest.mark.parametrize("key,value", [("optim.learning_rate", float("nan")), ("optim.learning_rate", float("inf")),
                                       ("optim.learning_rate", -1e-4), ("train.max_to_keep", 0),
                                       ("train.num_steps", 0), ("optim.b2", 1.0), ("optim.eps", 0.0),
                                       ("train.checkpoint_every", 0), ("train.global_batch_size", 0)])
def test_meaningless_training_settings_stop_before_step_1(key, value):
    config = load_config_file(TINY)
    section, name = key.split(".")
    config[section][name] = value
    with pytest.raises(InputError) as e:
        validate(config, "--config")
    line = _one_line(e.value)
    assert key in line and repr(value) in line and "use " in line


def test_trainer_checks_settings_before_anything_else(tmp_path):
    config = load_config_file(TINY)
    config.optim.learning_rate = float("nan")
    with pytest.raises(InputError, match="optim.learning_rate=nan"):
        Trainer(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing written


# ------------------------------------------------------------------------------------------------ lock (unit)
def test_second_trainer_on_one_folder_is_refused(tmp_path):
    held = lock_run_folder(tmp_path)
    config = load_config_file(TINY)
    config.data.dir = str(tmp_path / "nowhere")
    with pytest.raises(InputError, match="in use by another `fourdnex train`") as e:
        Trainer(config, tmp_path)
    assert str(os.getpid()) in _one_line(e.value)
    held.close()
    lock_run_folder(tmp_path).close()  # released: the next trainer gets it


@pytest.mark.integration
def test_lock_is_released_by_kill_9(tmp_path):
    code = ("import sys, time; from fourdnex_jax.training.trainer import lock_run_folder; "
            "f = lock_run_folder(__import__('pathlib').Path(sys.argv[1])); print('locked', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"pid {proc.pid}"):
            lock_run_folder(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    lock_run_folder(tmp_path).close()
    assert (tmp_path / LOCK_FILE).exists()


# --------------------------------------------------------------------------------- end to end (integration)
#: Generous: a shared 2-core machine under load runs one tiny training subprocess in minutes.
TIMEOUT = 1500
COMMON = ("--config.train.checkpoint_every=2", "--config.train.global_batch_size=4",
          "--config.train.grad_accum_steps=2", "--config.sharding.mesh_shape=(1,-1,1,1)",
          "--config.optim.decay_steps=8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return random_dataset(tmp_path_factory.mktemp("rand"))


@pytest.mark.integration
def test_config_change_on_resume_is_refused_and_moves_nothing(data, tmp_path):
    work = tmp_path / "run"
    run_train(work, data, *COMMON, "--config.train.num_steps=2", timeout=TIMEOUT)
    before = _snapshot(work / "checkpoints")
    for flags, key in ((["--config.model.lora_rank=8"], "model.lora_rank"),
                       (["--config.train.trainable=full", "--config.model.lora_rank=0"], "train.trainable"),
                       (["--config.model.lora_rank=8", "--config.train.resume_allow_changes=*"], "other shapes")):
        out = run_train(work, data, *COMMON, "--config.train.num_steps=4", *flags, check=False, timeout=TIMEOUT)
        assert out.returncode == 1, out.stderr[-2000:]
        assert "Traceback" not in out.stderr + out.stdout, out.stderr[-3000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("fourdnex train: error: cannot resume") and key in last, last
        assert _snapshot(work / "checkpoints") == before  # nothing moved, nothing written
    assert not (work / "checkpoints" / "corrupt").exists()
    ok = run_train(work, data, *COMMON, "--config.train.num_steps=4", timeout=TIMEOUT)  # the original config goes on
    assert "at step 2" in ok.stdout, ok.stdout[-2000:]


@pytest.mark.integration
def test_flipped_byte_in_the_newest_step_falls_back_bit_identically(data, tmp_path):
    straight = tmp_path / "straight"
    run_train(straight, data, *COMMON, "--config.train.num_steps=4", timeout=TIMEOUT)
    _, want = ckpt_lib.load_trainable(straight)
    work = tmp_path / "run"
    run_train(work, data, *COMMON, "--config.train.num_steps=4", timeout=TIMEOUT)
    target = _data_files(work / "checkpoints" / "4")[0]
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 1
    target.write_bytes(bytes(raw))
    out = run_train(work, data, *COMMON, "--config.train.num_steps=4", timeout=TIMEOUT)
    assert "checkpoint step 4 is damaged on disk" in out.stdout and target.name in out.stdout, out.stdout[-2000:]
    assert "at step 2" in out.stdout and "Traceback" not in out.stderr
    step, got = ckpt_lib.load_trainable(work)
    assert step == 4
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


@pytest.mark.integration
def test_nan_learning_rate_fails_before_training(data, tmp_path):
    out = run_train(tmp_path / "run", data, "--config.optim.learning_rate=nan", check=False, timeout=TIMEOUT)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("fourdnex train: error: --config: optim.learning_rate=nan")
    assert not (tmp_path / "run" / "checkpoints").exists()
