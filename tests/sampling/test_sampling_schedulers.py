"""UniPC multistep and flow-matching Euler in JAX against diffusers' schedulers: exact timesteps/sigmas, and every
step's update on random model outputs (the JAX state machine with host-computed coefficients vs diffusers' step)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourdnex_jax.sampling import flow_matching as fm
from fourdnex_jax.sampling import unipc

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
    ts, sig = unipc.unipc_sigmas(50, unipc.UniPCConfig.from_diffusers_config(WAN_SCHEDULER))
    assert ts[:4].tolist() == [999, 993, 986, 979] and ts[-3:].tolist() == [162, 113, 60]
    assert sig.dtype == np.float32 and sig[-1] == 0 and abs(sig[1] - 0.9933) < 1e-4
    orders = unipc.unipc_schedule(50).orders
    assert orders[0] == 1 and orders[-1] == 1 and (orders[1:-1] == 2).all()


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
    if solver == "unipc":
        sched = diffusers.UniPCMultistepScheduler(**{k: v for k, v in WAN_SCHEDULER.items() if not k.startswith("_")}
                                                  | {"flow_shift": shift})
    else:
        sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    ours = fm.make_schedule(solver, steps, shift)
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
    print(f"{solver} {steps} steps shift {shift}: max per-step rel L2 {max(errs):.2e}")
    assert max(errs) <= 1e-6, errs


def test_unipc_config_rejects_unsupported():
    with pytest.raises(ValueError, match="unknown"):
        unipc.UniPCConfig.from_diffusers_config({**WAN_SCHEDULER, "bogus": 1})
    with pytest.raises(ValueError, match="use_flow_sigmas"):
        unipc.UniPCConfig.from_diffusers_config({**WAN_SCHEDULER, "use_flow_sigmas": False})


def test_unipc_exact_on_linear_flow():
    """A model that predicts the exact velocity of a straight path recovers its endpoint (UniPC is exact there)."""
    rng = np.random.default_rng(0)
    x1, noise = rng.standard_normal((2, 4, 8)).astype(np.float32)
    sch = fm.make_schedule("unipc", 10, 3.0)
    init, step = fm.solver_fns("unipc")
    state = init(jnp.asarray(noise))
    for i in range(10):
        state = step(state, jnp.asarray(noise - x1), jnp.asarray(sch.table[i]))
    np.testing.assert_allclose(np.asarray(state.x), x1, atol=1e-5)
