"""From training to inference in one command: a `fourdnex train` run folder becomes a bundle (`fourdnex bundle`)
or goes straight to `fourdnex generate --checkpoint RUN`; its towers come from --base (a random-base run names
none)."""

import json
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.testing.training import random_dataset, run_train
from tests.helpers import run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.integration
def test_training_run_to_bundle_and_to_generate(tmp_path):
    from fourdnex_jax.models import params
    from fourdnex_jax.models.transformer import TRAINABLE
    from fourdnex_jax.pipelines.bundle import load_bundle
    from fourdnex_jax.training.checkpoint import load_trainable

    run = tmp_path / "run"
    run_train(run, random_dataset(tmp_path / "data"), "--config.train.num_steps=2",
              "--config.train.checkpoint_every=2", "--config.train.global_batch_size=2", devices=1)
    tiny = ROOT / "checkpoints" / "tiny"

    refused = run_cli("bundle", "--run", run, "--out", tmp_path / "b0", timeout=900)
    assert refused.returncode == 1 and "pass --base BUNDLE" in refused.stderr, refused.stderr
    made = run_cli("bundle", "--run", run, "--base", tiny, "--out", tmp_path / "b", timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    bundle = load_bundle(tmp_path / "b")
    step, trained = load_trainable(run)
    got = {p: np.asarray(v[...]) for p, v in params.flat_variables(bundle.transformer, TRAINABLE).items()}
    assert step == 2 and got.keys() == trained.keys()
    assert all(np.array_equal(got[p], trained[p]) for p in trained)
    assert bundle.info["training_run"] == str(run) and bundle.preset == load_bundle(tiny).preset

    gen = run_cli("generate", "--checkpoint", run, "--base", tiny, "--image",
                    ROOT / "examples" / "synth_heldout_000000.png", "--out", tmp_path / "g", "--nopostprocess",
                    "--config.sample.num_steps=1", timeout=900)
    assert gen.returncode == 0, gen.stderr[-3000:]
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["bundle"]["training_run"] == str(run) and summary["bundle"]["training_step"] == 2
