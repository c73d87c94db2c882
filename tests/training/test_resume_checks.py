"""Resume refuses a config change that breaks exactness (fourdnex_jax/training/resume.py), accepts the ones that do
not (a longer num_steps of a constant schedule, an explicitly allowed change), and falls back past a damaged newest
checkpoint to the newest intact one, saying so. Subprocesses of ``fourdnex train``, 2 fake CPU devices."""

from __future__ import annotations

import numpy as np
import pytest

from fourdnex_jax.testing.training import random_dataset, run_train
from fourdnex_jax.training import checkpoint
from fourdnex_jax.training.resume import resume_problems

# decay_steps fixed: the tiny config's linear decay then does not depend on num_steps (so a longer run is exact)
COMMON = ("--config.train.checkpoint_every=2", "--config.train.global_batch_size=4",
          "--config.train.grad_accum_steps=2", "--config.sharding.mesh_shape=(1,-1,1,1)",
          "--config.optim.decay_steps=8")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return random_dataset(tmp_path_factory.mktemp("rand"))


def test_resume_problems_rules():
    saved = {"seed": 0, "model": {"lora_alpha": 4.0, "remat_policy": "none"},
             "optim": {"preset": "reference_effective"},
             "train": {"num_steps": 4, "global_batch_size": 4, "log_every": 1}, "data": {"dir": "/a"}}
    same = {**saved, "train": {**saved["train"], "log_every": 5, "num_steps": 8},
            "model": {**saved["model"], "remat_policy": "full", "stream_blocks": True}}
    # logging, remat, block streaming (absent from a checkpoint of an older version) and a longer constant-LR run
    # are free
    assert resume_problems(saved, same, 4) == []
    changed = {**saved, "model": {**saved["model"], "lora_alpha": 8.0}, "data": {"dir": "/b"},
               "train": {**saved["train"], "global_batch_size": 2}}
    problems = resume_problems(saved, changed, 4)
    assert [p.split(":")[0] for p in problems] == ["data.dir", "model.lora_alpha", "train.global_batch_size"]
    allowed = {**changed, "train": {**changed["train"], "resume_allow_changes": "data.dir,model.*"}}
    assert [p.split(":")[0] for p in resume_problems(saved, allowed, 4)] == ["train.global_batch_size"]
    shorter = {**saved, "train": {**saved["train"], "num_steps": 2}}
    assert "below the saved step" in resume_problems(saved, shorter, 4)[0]
    decay = {**saved, "optim": {"preset": "reference_declared"}}
    longer = {**decay, "train": {**decay["train"], "num_steps": 8}}
    assert "decays over num_steps" in resume_problems(decay, longer, 4)[0]


@pytest.mark.slow
def test_resume_refuses_changes_that_break_exactness(data, tmp_path):
    work = tmp_path / "run"
    run_train(work, data, *COMMON, "--config.train.num_steps=2")
    other = random_dataset(tmp_path / "other", n=8)
    for flag, key in (("--config.model.lora_alpha=8.0", "model.lora_alpha"),
                      ("--config.train.global_batch_size=8", "train.global_batch_size"),
                      (f"--config.data.dir={other}", "data.dir"),
                      ("--config.optim.learning_rate=0.001", "optim.learning_rate")):
        out = run_train(work, data, *COMMON, "--config.train.num_steps=4", flag, check=False)
        assert out.returncode == 1, out.stderr[-2000:]
        line = out.stderr.strip().splitlines()[-1]
        assert line.startswith("fourdnex train: error: cannot resume") and key in line, line
        assert f"--config.train.resume_allow_changes={key}" in line and "Traceback" not in out.stderr
    assert checkpoint.Checkpointer(work, async_save=False).latest_step() == 2  # nothing trained or saved
    ok = run_train(work, data, *COMMON, "--config.train.num_steps=4")  # a longer run, LR independent of it
    assert "resumed from" in ok.stdout
    allowed = run_train(work, data, *COMMON, "--config.train.num_steps=6", "--config.optim.learning_rate=0.001",
                        "--config.train.resume_allow_changes=optim.learning_rate")
    assert "resumed from" in allowed.stdout


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    straight = tmp_path / "straight"
    run_train(straight, data, *COMMON, "--config.train.num_steps=4")
    _, want = checkpoint.load_trainable(straight)
    work = tmp_path / "run"
    run_train(work, data, *COMMON, "--config.train.num_steps=4")
    newest = work / "checkpoints" / "4" / "state"
    for f in newest.rglob("*"):  # every data and metadata file of the newest state: garbage
        if f.is_file():
            f.write_bytes(b"\0garbage")
    out = run_train(work, data, *COMMON, "--config.train.num_steps=4")
    assert "checkpoint step 4 is damaged on disk" in out.stdout and "falling back" in out.stdout, out.stdout[-2000:]
    assert "resumed from" in out.stdout and "at step 2" in out.stdout
    assert (work / "checkpoints" / "corrupt" / "4").is_dir()  # kept for inspection, out of the way
    step, got = checkpoint.load_trainable(work)
    assert step == 4
    for k in want:  # steps 3-4 trained again from step 2: the same bits as the straight run
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
