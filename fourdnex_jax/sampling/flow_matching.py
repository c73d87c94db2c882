"""Rectified-flow sampling: x_sigma = (1 - sigma) * x0 + sigma * noise, the DiT predicts v = noise - x0.

Sigmas run from 1 (pure noise) to 0; Wan shifts them with ``flow_shift`` (3.0 for 480p):
``sigma' = shift * s / (1 + (shift - 1) * s)``, timestep = 1000 * sigma (fp32, never rounded). Two solvers behind
one interface (:func:`make_schedule`, :func:`solver_fns`): UniPC (:mod:`fourdnex_jax.sampling.unipc`, Wan's
default) and Euler (diffusers' ``FlowMatchEulerDiscreteScheduler``, :func:`euler_schedule`), each a static-shape
step whose coefficients are one row of a precomputed table.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fourdnex_jax.sampling import unipc


def classifier_free_guidance(v_cond: jax.Array, v_uncond: jax.Array, scale: float) -> jax.Array:
    """``v_uncond + scale * (v_cond - v_uncond)`` (diffusers' order of operations)."""
    return v_uncond + scale * (v_cond - v_uncond)


# -- diffusers-exact schedules and solvers with static shapes (used by the image-to-4D pipeline) ------------------
def euler_schedule(num_steps: int, shift: float = 3.0, num_train_timesteps: int = 1000):
    """diffusers ``FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(num_steps)`` exactly: sigmas
    ``shift(linspace(1, sigma_min, N))`` with ``sigma_min = shift(1 / 1000)`` computed in float32 at construction
    (diffusers shifts twice: once in ``__init__`` for sigma_min, once in ``set_timesteps``), float32 timesteps
    ``1000 * sigma``, a final 0. Table columns: ``sigma``, ``dt = sigma_next - sigma`` (float32, as torch)."""
    t_train = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1].copy()
    s_train = t_train / np.float32(num_train_timesteps)
    s_train = shift * s_train / (1 + (shift - 1) * s_train)
    sigma_max, sigma_min = float(s_train[0]), float(s_train[-1])
    t = np.linspace(sigma_max * num_train_timesteps, sigma_min * num_train_timesteps, num_steps)
    s = t / num_train_timesteps
    s = (shift * s / (1 + (shift - 1) * s)).astype(np.float32)
    timesteps = s * np.float32(num_train_timesteps)
    sigmas = np.concatenate([s, np.zeros(1, np.float32)])
    table = np.stack([sigmas[:-1], sigmas[1:] - sigmas[:-1]], -1).astype(np.float32)
    return unipc.Schedule("euler", timesteps, sigmas, table, np.ones(num_steps, np.int64))


class EulerState(NamedTuple):
    x: jax.Array


def euler_init(x: jax.Array) -> EulerState:
    return EulerState(x.astype(jnp.float32))


def euler_table_step(state: EulerState, velocity: jax.Array, row: jax.Array) -> EulerState:
    return EulerState(state.x + row[1] * velocity.astype(jnp.float32))


SOLVERS = ("unipc", "euler")


def make_schedule(solver: str, num_steps: int, flow_shift: float, unipc_config=None,
                  sigma_schedule: str = unipc.OFFICIAL_SIGMA_SCHEDULE):
    """The :class:`~fourdnex_jax.sampling.unipc.Schedule` of ``solver`` ('unipc': Wan's default scheduler, its
    config with ``flow_shift`` replaced, sigmas by ``sigma_schedule``, one of
    :data:`~fourdnex_jax.sampling.unipc.SIGMA_SCHEDULES`; 'euler': diffusers' FlowMatchEulerDiscreteScheduler,
    whose schedule is the same in diffusers 0.34.0 and >= 0.37, so ``sigma_schedule`` is only checked)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    unipc.check_sigma_schedule(sigma_schedule)
    if solver == "unipc":
        cfg = unipc_config or unipc.UniPCConfig()
        return unipc.unipc_schedule(num_steps, dataclasses.replace(cfg, flow_shift=float(flow_shift)), sigma_schedule)
    if solver == "euler":
        return euler_schedule(num_steps, float(flow_shift))
    raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")


def solver_fns(solver: str):
    """(init, step) of ``solver``: ``init(x) -> state``, ``step(state, velocity, table_row) -> state``;
    ``state.x`` is the current sample (fp32)."""
    if solver == "unipc":
        return unipc.unipc_init, unipc.unipc_step
    if solver == "euler":
        return euler_init, euler_table_step
    raise ValueError(f"unknown solver {solver!r}; use one of {SOLVERS}")
