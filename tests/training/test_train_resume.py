"""Exact resume: N+M steps straight == N steps, save, process killed (SIGKILL while an async save is in flight),
restore, M steps: bit-identical trainable parameters and optimizer moments on CPU, and every step logged once in
metrics.jsonl. Subprocesses, 2 fake devices."""

import json
import signal

import numpy as np
import pytest

from fourdnex_jax.testing.training import random_dataset, run_train
from fourdnex_jax.training import checkpoint

pytestmark = pytest.mark.integration  # `fourdnex train` subprocesses, killed and resumed

STATE = ("trainable", "opt_state")
COMMON = ("--config.train.num_steps=6", "--config.train.checkpoint_every=2", "--config.train.global_batch_size=4",
          "--config.train.grad_accum_steps=2", "--config.sharding.mesh_shape=(1,-1,1,1)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return random_dataset(tmp_path_factory.mktemp("rand"))


def test_resume_after_kill_during_async_save_is_bit_identical(data, tmp_path):
    straight = tmp_path / "straight"
    run_train(straight, data, *COMMON)
    killed = tmp_path / "killed"
    out = run_train(killed, data, *COMMON, env={"FOURDNEX_KILL_AFTER_SAVE_STEP": "4"}, check=False)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    resumed = run_train(killed, data, *COMMON)
    assert "resumed from" in resumed.stdout
    step_a, a = checkpoint.load_state_arrays(straight, keys=STATE)
    step_b, b = checkpoint.load_state_arrays(killed, keys=STATE)
    assert step_a == step_b == 6 and a.keys() == b.keys()
    assert any(k.startswith("opt_state/") for k in a) and any(k.startswith("trainable/") for k in a)
    for k in a:  # trainable parameters and the optimizer's moments
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert any(np.abs(v).max() > 0 for k, v in a.items() if "lora_b" in k)  # it did train
    assert any(np.abs(v).max() > 0 for k, v in a.items() if k.startswith("opt_state/"))
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7)), steps  # no duplicate lines for the steps trained again after the kill


@pytest.mark.slow
def test_resume_after_kill_between_saves_is_bit_identical(data, tmp_path):
    sync = ("--config.train.async_checkpoint=False",)
    run_train(tmp_path / "a", data, *COMMON, *sync)
    out = run_train(tmp_path / "b", data, *COMMON, *sync, env={"FOURDNEX_KILL_AFTER_SAVE_STEP": "2"}, check=False)
    assert out.returncode == -signal.SIGKILL
    run_train(tmp_path / "b", data, *COMMON, *sync)
    _, a = checkpoint.load_state_arrays(tmp_path / "a", keys=STATE)
    _, b = checkpoint.load_state_arrays(tmp_path / "b", keys=STATE)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
