"""The tiny-VAE trainer: exact resume, a schedule planned inside the time budget, settings checked on resume."""

from __future__ import annotations

import numpy as np
import pytest

from fourdnex_jax.models import params
from fourdnex_jax.training import vae as vae_train
from fourdnex_jax.utils.errors import InputError


def _clips(n=4, t=5, h=8, w=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, t, h, w, 3)).astype(np.float32),
            rng.uniform(-1, 1, (n, t, h, w, 3)).astype(np.float32))


def _weights(vae):
    return {p: np.asarray(v[...]) for p, v in params.flat_variables(vae).items()}


def test_learning_rate_warms_up_then_decays_to_the_floor_at_the_last_step():
    lrs = [vae_train.learning_rate(k, 100, 10, 1.0) for k in range(1, 121)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:99], lrs[10:100]))  # monotone decay after warm-up
    assert lrs[99] == pytest.approx(vae_train.FLOOR) and lrs[119] == pytest.approx(vae_train.FLOOR)


def test_time_budget_plans_the_last_step_inside_the_budget():
    s = vae_train.VAETrainSettings(steps=10_000, max_minutes=10.0)
    # 60 s spent at step 40, 2 s/step: 540 s left -> 0.95 * 270 more steps
    assert vae_train.plan_last_step(s, 40, 60.0, 2.0) == 40 + int(0.95 * 540 / 2.0)
    assert vae_train.plan_last_step(s, 40, 60.0, 1e-4) == 10_000  # never beyond --steps
    assert vae_train.plan_last_step(s, 40, 599.0, 2.0) == 2 * s.warmup  # at least a warm-up and a decay


def test_resumed_run_takes_exactly_the_uninterrupted_steps(tmp_path):
    rgb, xyz = _clips()
    s = vae_train.VAETrainSettings(steps=6, batch=2, frames=5, lr=1e-3, spatial_factor=2, checkpoint_minutes=1e9)
    log = lambda m: None  # noqa: E731 - a sink
    whole = vae_train.build_vae(s)
    rec_whole = vae_train.fit(whole, rgb, xyz, s, state_dir=tmp_path / "a", log=log)
    part = vae_train.build_vae(s)
    first = vae_train.fit(part, rgb, xyz, s, state_dir=tmp_path / "b", stop_after=3, log=log)
    assert first["stopped"] == "stop_after" and first["steps"] == 3
    resumed = vae_train.build_vae(s)  # a fresh process: new model, state from the checkpoint
    rec = vae_train.fit(resumed, rgb, xyz, s, state_dir=tmp_path / "b", log=log)
    assert rec["steps"] == 6 and rec["resumes"] == 1 and rec_whole["steps"] == 6
    a, b = _weights(whole), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], _weights(vae_train.build_vae(s))[k]) for k in a)  # it did train


def test_resume_refuses_other_settings(tmp_path):
    rgb, xyz = _clips()
    s = vae_train.VAETrainSettings(steps=4, batch=2, frames=5, spatial_factor=2)
    vae_train.fit(vae_train.build_vae(s), rgb, xyz, s, state_dir=tmp_path, stop_after=1, log=lambda m: None)
    other = vae_train.VAETrainSettings(steps=4, batch=2, frames=5, spatial_factor=2, lr=5e-4)
    with pytest.raises(InputError, match=r"lr 0.001 -> 0.0005"):
        vae_train.fit(vae_train.build_vae(other), rgb, xyz, other, state_dir=tmp_path, log=lambda m: None)
