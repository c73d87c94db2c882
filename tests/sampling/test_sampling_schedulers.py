"""UniPC multistep and flow-matching Euler in JAX against diffusers' schedulers: exact timesteps/sigmas, and every
step's update on random model outputs (the JAX state machine with host-computed coefficients vs diffusers' step).

Two diffusers versions are pinned: the official 4DNeX pin, diffusers 0.34.0, through the fixture recorded from it
(``tests/fixtures/official_0_34``, ``record.py`` there: the ``diffusers_0_34`` sigma schedule, the default, and
0.34's solver steps), and the installed diffusers (>= 0.37, the oracle environment) for the ``diffusers_0_37``
schedule. The two schedules differ (module docstring of :mod:`fourdnex_jax.sampling.unipc`)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourdnex_jax.sampling import flow_matching as fm
from fourdnex_jax.sampling import unipc

OFFICIAL = Path(__file__).resolve().parents[1] / "fixtures" / "official_0_34"
ROOT = Path(__file__).resolve().parents[2]
WAN_SCHEDULER = {  # Wan2.1-I2V-14B-480P-Diffusers scheduler/scheduler_config.json
    "_class_name": "UniPCMultistepScheduler", "_diffusers_version": "0.33.0.dev0", "beta_end": 0.02,
    "beta_schedule": "linear", "beta_start": 0.0001, "disable_corrector": [], "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero", "flow_shift": 3.0, "lower_order_final": True, "num_train_timesteps": 1000,
    "predict_x0": True, "prediction_type": "flow_prediction", "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0, "solver_order": 2, "solver_p": None, "solver_type": "bh2", "steps_offset": 0,
    "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None, "use_beta_sigmas": False,
    "use_exponential_sigmas": False, "use_flow_sigmas": True, "use_karras_sigmas": False,
}


def test_wan_unipc_timesteps_documented():
    cfg = unipc.UniPCConfig.from_diffusers_config(WAN_SCHEDULER)
    ts, sig = unipc.unipc_sigmas(50, cfg)  # the default: the official schedule (diffusers 0.34.0)
    assert ts[:4].tolist() == [999, 992, 985, 978] and ts[-3:].tolist() == [160, 111, 57]
    assert sig.dtype == np.float32 and sig[-1] == 0 and abs(sig[1] - 0.99291) < 1e-5
    ts37, _ = unipc.unipc_sigmas(50, cfg, "diffusers_0_37")
    assert ts37[:4].tolist() == [999, 993, 986, 979] and ts37[-3:].tolist() == [162, 113, 60]
    assert unipc.unipc_sigmas(4, cfg)[0].tolist() == [999, 899, 749, 499]
    assert unipc.unipc_sigmas(4, cfg, "diffusers_0_37")[0].tolist() == [999, 900, 750, 500]
    orders = unipc.unipc_schedule(50).orders
    assert orders[0] == 1 and orders[-1] == 1 and (orders[1:-1] == 2).all()
    with pytest.raises(ValueError, match="sigma_schedule='diffusers_0_42'; use one of"):
        fm.make_schedule("unipc", 4, 3.0, sigma_schedule="diffusers_0_42")


def _official(name):
    versions = json.loads((OFFICIAL / "versions.json").read_text())
    assert (versions["diffusers"], versions["transformers"]) == ("0.34.0", "4.49.0"), versions
    return OFFICIAL / name


@pytest.mark.parametrize("row", json.loads((OFFICIAL / "schedules.json").read_text()),
                         ids=lambda r: f"{r['solver']}-{r['num_steps']}-shift{r['flow_shift']}")
def test_official_schedule_matches_diffusers_0_34(row):
    """Timesteps and sigmas of diffusers 0.34.0's ``set_timesteps`` (recorded), exactly: UniPC with the default
    ``diffusers_0_34`` schedule; Euler (the same formula in 0.34.0 and today's diffusers)."""
    _official("schedules.json")
    ours = fm.make_schedule(row["solver"], row["num_steps"], row["flow_shift"])
    assert str(ours.timesteps.dtype) == row["timesteps_dtype"]
    np.testing.assert_array_equal(ours.timesteps, np.asarray(row["timesteps"], row["timesteps_dtype"]))
    np.testing.assert_array_equal(ours.sigmas, np.asarray(row["sigmas"], np.float32))
    if row["solver"] == "unipc" and row["num_steps"] > 1:  # the other schedule is really another one
        other = fm.make_schedule("unipc", row["num_steps"], row["flow_shift"], sigma_schedule="diffusers_0_37")
        assert not np.array_equal(other.sigmas, ours.sigmas)


@pytest.mark.parametrize("steps,shift", [(4, 3.0), (7, 5.0)])
def test_official_unipc_steps_match_diffusers_0_34(steps, shift):
    """Every UniPC step of diffusers 0.34.0 (recorded on seeded model outputs) with our coefficient table."""
    data = np.load(_official("unipc_steps.npz"))
    to_nthwc = lambda a: np.moveaxis(a, -4, -1)  # noqa: E731  (..., C, T, H, W) -> (..., T, H, W, C)
    schedule = fm.make_schedule("unipc", steps, shift)
    mine = _run_jax(schedule, to_nthwc(data[f"n{steps}_x0"]), list(to_nthwc(data[f"n{steps}_outputs"])))
    errs = [_rel(a, b) for a, b in zip(mine, to_nthwc(data[f"n{steps}_samples"]))]
    print(f"unipc {steps} steps shift {shift} vs diffusers 0.34.0: max per-step rel L2 {max(errs):.2e}")
    assert len(errs) == steps and max(errs) <= 1e-6, errs


def test_generate_with_the_14b_preset_samples_the_official_timesteps(tmp_path):
    """What ``fourdnex generate --config configs/wan21_i2v_14b_480p.py --checkpoint BUNDLE`` builds for a bundle of
    the 14B preset (manifest + configs + scheduler only, no weights): the official 50 timesteps and sigmas; a bundle
    written before ``sigma_schedule`` existed gets the same; ``sigma_schedule=diffusers_0_37`` the other."""
    from fourdnex_jax.config import load_config_file
    from fourdnex_jax.models.transformer import WanTransformerConfig
    from fourdnex_jax.models.vae import WanVAEConfig
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.recipe import SAMPLING_PRESETS, SixDSpec
    from fourdnex_jax.weights import manifest as manifest_lib
    from fourdnex_jax.weights.registry import SPECS

    official = next(r for r in json.loads(_official("schedules.json").read_text())
                    if (r["solver"], r["num_steps"], r["flow_shift"]) == ("unipc", 50, 3.0))
    preset = SAMPLING_PRESETS["wan21_i2v_14b_480p"]
    assert (preset.solver, preset.num_steps, preset.sigma_schedule) == ("unipc", 50, "diffusers_0_34")
    manifest = manifest_lib.new_manifest("bundle", tmp_path)
    manifest["sampling_preset"], manifest["recipe"] = preset.to_dict(), SixDSpec().to_dict()
    legacy = dict(manifest, sampling_preset={k: v for k, v in preset.to_dict().items() if k != "sigma_schedule"})
    sample = load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py").sample
    for name, m in (("current", manifest), ("legacy", legacy)):
        d = tmp_path / name
        manifest_lib.write_manifest(d, m)
        for model, cfg in (("transformer", WanTransformerConfig()), ("vae", WanVAEConfig())):
            (d / "configs").mkdir(exist_ok=True)
            (d / "configs" / f"{model}.json").write_text(json.dumps(SPECS[model].config_to_json(cfg, "bfloat16")))
        (d / "scheduler").mkdir()
        (d / "scheduler" / "scheduler_config.json").write_text(json.dumps(WAN_SCHEDULER))
        settings = bundle_lib.resolve_settings(d, sample)  # as cli/generate.py
        assert settings.sigma_schedule == "diffusers_0_34"
        schedule = settings.schedule(bundle_lib.read_scheduler(d))  # as ImageTo4D
        np.testing.assert_array_equal(schedule.timesteps, np.asarray(official["timesteps"], np.int64))
        np.testing.assert_array_equal(schedule.sigmas, np.asarray(official["sigmas"], np.float32))
        notes = bundle_lib.preset_notes(manifest_lib.read_manifest(d))
        assert (name == "legacy") == ("sigma_schedule" in notes)
    sample.sigma_schedule = "diffusers_0_37"  # --config.sample.sigma_schedule=diffusers_0_37
    other = bundle_lib.resolve_settings(tmp_path / "current", sample).schedule(
        bundle_lib.read_scheduler(tmp_path / "current"))
    assert other.timesteps[:4].tolist() == [999, 993, 986, 979]
    sample.sigma_schedule = "diffusers_0_42"
    with pytest.raises(ValueError, match="sigma_schedule='diffusers_0_42'; use one of"):
        bundle_lib.resolve_settings(tmp_path / "current", sample)


def _run_jax(schedule, x0, outputs):
    init, step = fm.solver_fns(schedule.solver)
    step = jax.jit(step)
    state = init(jnp.asarray(x0))
    xs = []
    for i, v in enumerate(outputs):
        state = step(state, jnp.asarray(v), jnp.asarray(schedule.table[i]))
        xs.append(np.asarray(state.x))
    return xs


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.oracle
@pytest.mark.parametrize("solver,steps,shift", [("unipc", 50, 3.0), ("unipc", 4, 3.0), ("unipc", 7, 5.0),
                                                ("unipc", 1, 3.0), ("euler", 50, 3.0), ("euler", 5, 1.0)])
def test_solver_matches_diffusers(solver, steps, shift):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    # the installed diffusers (the oracle environment, >= 0.37): its flow-sigma formula is 'diffusers_0_37'; the
    # official one (0.34.0) is pinned by the fixture tests above
    major_minor = tuple(int(v) for v in diffusers.__version__.split(".")[:2])
    sigma_schedule = "diffusers_0_37" if major_minor >= (0, 37) else "diffusers_0_34"
    if solver == "unipc":
        sched = diffusers.UniPCMultistepScheduler(**{k: v for k, v in WAN_SCHEDULER.items() if not k.startswith("_")}
                                                  | {"flow_shift": shift})
    else:
        sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    ours = fm.make_schedule(solver, steps, shift, sigma_schedule=sigma_schedule)
    # exact schedule
    np.testing.assert_array_equal(ours.timesteps, sched.timesteps.numpy())
    assert ours.timesteps.dtype == sched.timesteps.numpy().dtype
    np.testing.assert_array_equal(ours.sigmas, sched.sigmas.numpy())
    # every step on random model outputs (smooth-ish: a fixed direction plus noise, like a denoiser)
    rng = np.random.default_rng(steps)
    shape = (2, 3, 4, 6, 16)
    x = rng.standard_normal(shape).astype(np.float32)
    target = rng.standard_normal(shape).astype(np.float32)
    outputs, theirs, xt = [], [], torch.from_numpy(x.transpose(0, 4, 1, 2, 3).copy())
    for i, t in enumerate(sched.timesteps):
        v = (torch.from_numpy(target.transpose(0, 4, 1, 2, 3).copy()) * -1 + xt) * 0.7 \
            + 0.3 * torch.from_numpy(rng.standard_normal(xt.shape).astype(np.float32))
        outputs.append(v.numpy().transpose(0, 2, 3, 4, 1).copy())
        xt = sched.step(v, t, xt, return_dict=False)[0]
        theirs.append(xt.numpy().transpose(0, 2, 3, 4, 1).copy())
    mine = _run_jax(ours, x, outputs)
    errs = [_rel(a, b) for a, b in zip(mine, theirs)]
    print(f"{solver} {steps} steps shift {shift} vs diffusers {diffusers.__version__}: max per-step rel L2 "
          f"{max(errs):.2e}")
    assert max(errs) <= 1e-6, errs


def test_unipc_config_rejects_unsupported():
    with pytest.raises(ValueError, match="unknown"):
        unipc.UniPCConfig.from_diffusers_config({**WAN_SCHEDULER, "bogus": 1})
    with pytest.raises(ValueError, match="use_flow_sigmas"):
        unipc.UniPCConfig.from_diffusers_config({**WAN_SCHEDULER, "use_flow_sigmas": False})


@pytest.mark.parametrize("sigma_schedule", unipc.SIGMA_SCHEDULES)
def test_unipc_exact_on_linear_flow(sigma_schedule):
    """A model that predicts the exact velocity of a straight path recovers its endpoint from a start on the path
    (UniPC is exact there). The start is the path's point at the first sigma: the official schedule begins at
    shift(0.999) = 0.99967 (shift 3), not at 1, so pure noise is not on the path there."""
    rng = np.random.default_rng(0)
    x1, noise = rng.standard_normal((2, 4, 8)).astype(np.float32)
    sch = fm.make_schedule("unipc", 10, 3.0, sigma_schedule=sigma_schedule)
    init, step = fm.solver_fns("unipc")
    state = init(jnp.asarray((1 - sch.sigmas[0]) * x1 + sch.sigmas[0] * noise))
    for i in range(10):
        state = step(state, jnp.asarray(noise - x1), jnp.asarray(sch.table[i]))
    np.testing.assert_allclose(np.asarray(state.x), x1, atol=1e-5)
