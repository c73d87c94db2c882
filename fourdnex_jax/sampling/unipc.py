"""UniPC multistep (Zhao et al. 2023) for flow matching, as diffusers' ``UniPCMultistepScheduler`` runs it for Wan.

Wan2.1's ``scheduler/scheduler_config.json`` (what 4DNeX samples with): ``use_flow_sigmas=True``,
``prediction_type="flow_prediction"``, ``flow_shift=3.0`` (480P), ``solver_order=2``, ``solver_type="bh2"``,
``predict_x0=True``, ``lower_order_final=True``, ``final_sigmas_type="zero"``, ``disable_corrector=[]``.

Sigma schedule: two formulas, by name (:data:`SIGMA_SCHEDULES`), because diffusers changed ``set_timesteps`` for
flow sigmas in 0.37 and the official 4DNeX code pins diffusers 0.34.0 (it does not load on >= 0.35). With
``shift(s) = shift * s / (1 + (shift - 1) s)`` (float64):

* ``"diffusers_0_34"`` (:data:`OFFICIAL_SIGMA_SCHEDULE`, the default; diffusers 0.34.0 .. 0.36.x, what 4DNeX runs):
  ``sigmas = flip(shift(1 - linspace(1, 1/1000, N + 1)))[:-1]``, i.e. ``sigma_k = shift(0.999 (N - k) / N)``, no
  nudge of the first sigma. Timesteps for N = 4, shift 3: 999, 899, 749, 499; N = 50: 999, 992, 985, 978, ...;
* ``"diffusers_0_37"`` (diffusers >= 0.37): ``s = linspace(1, 1/1000, N + 1)[:-1]``, shifted, the first sigma
  nudged to ``1 - 1e-6``, i.e. ``sigma_k = shift(1 - 0.999 k / N)``. N = 4: 999, 900, 750, 500; N = 50: 999, 993,
  986, 979, ...

Either way model timesteps are ``int64(1000 sigma)`` (truncated) and sigmas float32 with the final 0 appended.
``tests/sampling/test_sampling_schedulers.py`` pins the first against a fixture recorded from diffusers 0.34.0
(``tests/fixtures/official_0_34``) and the second against the installed diffusers (>= 0.37).

Static shapes: every step of UniPC-p (bh2, x0-prediction) is a *linear* combination of the current sample, the
sample before the previous predictor, and the last three data predictions ``m = x - sigma * v``. The coefficients
depend only on the schedule, so they are computed once on the host (float64, :func:`unipc_coefficients`) and one
compiled step (:func:`unipc_step`) serves every step, with the state ``(x, last_sample, m_{i-1}, m_{i-2})`` of fixed
shape. The orders follow diffusers: warm-up (order 1 at step 0), ``lower_order_final`` (order 1 at the last step),
corrector UniC at every step after the first (with the previous step's order), none after the last.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fourdnex_jax.utils import bounds

#: Coefficient table columns (one row per step), see :func:`unipc_step`.
COLUMNS = ("sigma", "c_self", "c_last", "c_prev", "c_prev2", "c_this", "p_x", "p_this", "p_prev")

#: Flow-sigma formulas of ``set_timesteps`` by name (module docstring); the first is the official 4DNeX one.
# the names live with the 4DNeX recipe (its presets default to the official one); re-exported here
from fourdnex_jax.recipe import OFFICIAL_SIGMA_SCHEDULE, SIGMA_SCHEDULES, check_sigma_schedule  # noqa: E402, F401

# diffusers' UniPCMultistepScheduler fields that do not change the flow-matching computation (beta schedule of the
# unused discrete-time branch, thresholding switched off, ...). Checked but ignored.
_IGNORED = frozenset({"_class_name", "_diffusers_version", "beta_start", "beta_end", "beta_schedule",
                      "trained_betas", "dynamic_thresholding_ratio", "sample_max_value", "steps_offset",
                      "rescale_betas_zero_snr", "time_shift_type", "sigma_min", "sigma_max", "solver_p"})


@dataclasses.dataclass(frozen=True)
class UniPCConfig:
    """The fields of diffusers' ``UniPCMultistepScheduler`` config this port implements (defaults: Wan2.1)."""

    num_train_timesteps: int = 1000
    solver_order: int = 2
    prediction_type: str = "flow_prediction"
    predict_x0: bool = True
    solver_type: str = "bh2"
    lower_order_final: bool = True
    disable_corrector: tuple[int, ...] = ()
    use_flow_sigmas: bool = True
    flow_shift: float = 3.0
    timestep_spacing: str = "linspace"
    final_sigmas_type: str = "zero"
    thresholding: bool = False
    use_karras_sigmas: bool = False
    use_exponential_sigmas: bool = False
    use_beta_sigmas: bool = False
    use_dynamic_shifting: bool = False
    shift_terminal: float | None = None

    def __post_init__(self):
        bounds.check_dataclass(self, "scheduler config (UniPCConfig)")
        object.__setattr__(self, "disable_corrector", tuple(int(i) for i in self.disable_corrector))
        bad = []
        if not self.use_flow_sigmas or self.prediction_type != "flow_prediction":
            bad.append("only use_flow_sigmas=True with prediction_type='flow_prediction' is ported")
        if not self.predict_x0:
            bad.append("only predict_x0=True is ported")
        if self.solver_type not in ("bh1", "bh2"):
            bad.append(f"solver_type {self.solver_type!r}")
        if self.solver_order not in (1, 2):
            bad.append(f"solver_order {self.solver_order} (1 and 2 are ported; Wan uses 2, order 3 would need a "
                       "deeper history in the step state)")
        if self.thresholding or self.use_karras_sigmas or self.use_exponential_sigmas or self.use_beta_sigmas:
            bad.append("thresholding / karras / exponential / beta sigmas are not ported")
        if self.use_dynamic_shifting or self.shift_terminal:
            bad.append("dynamic shifting / shift_terminal are not ported")
        if self.final_sigmas_type not in ("zero", "sigma_min"):
            bad.append(f"final_sigmas_type {self.final_sigmas_type!r}")
        if self.timestep_spacing != "linspace":
            bad.append(f"timestep_spacing {self.timestep_spacing!r} (flow sigmas ignore it; only 'linspace' kept)")
        if bad:
            raise ValueError("unsupported UniPC config: " + "; ".join(bad))

    @classmethod
    def from_diffusers_config(cls, cfg: Mapping[str, Any]) -> UniPCConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in cfg if k not in fields and k not in _IGNORED)
        if unknown:
            raise ValueError(f"unknown UniPCMultistepScheduler config key(s): {unknown}")
        if cfg.get("_class_name", "UniPCMultistepScheduler") != "UniPCMultistepScheduler":
            raise ValueError(f"not a UniPC config: {cfg.get('_class_name')}")
        return cls(**{k: v for k, v in cfg.items() if k in fields})

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> UniPCConfig:
        """From a diffusers ``scheduler/`` folder (``scheduler_config.json``)."""
        from fourdnex_jax.utils.files import read_json

        return cls.from_diffusers_config(read_json(Path(directory) / "scheduler_config.json",
                                                   what="scheduler config", fix="copy the scheduler folder again"))

    def to_diffusers_config(self) -> dict[str, Any]:
        out = {"_class_name": "UniPCMultistepScheduler", **dataclasses.asdict(self)}
        out["disable_corrector"] = list(self.disable_corrector)
        return out


class Schedule(NamedTuple):
    """``timesteps`` (N,) as the model receives them; ``sigmas`` (N + 1,) float32 ending in the final sigma;
    ``table`` (N, len(COLUMNS)) float32 per-step solver coefficients (solver-specific); ``orders`` (N,)."""

    solver: str
    timesteps: np.ndarray
    sigmas: np.ndarray
    table: np.ndarray
    orders: np.ndarray


def unipc_sigmas(num_steps: int, cfg: UniPCConfig = UniPCConfig(),
                 sigma_schedule: str = OFFICIAL_SIGMA_SCHEDULE) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps int64 (N,), sigmas float32 (N + 1,)) exactly as diffusers' ``set_timesteps`` makes them, in the
    version ``sigma_schedule`` names (module docstring)."""
    n_train = cfg.num_train_timesteps
    shift = lambda s: cfg.flow_shift * s / (1 + (cfg.flow_shift - 1) * s)  # noqa: E731
    if check_sigma_schedule(sigma_schedule) == "diffusers_0_34":
        s = np.flip(shift(1.0 - np.linspace(1, 1 / n_train, num_steps + 1)))[:-1].copy()
    else:
        s = shift(np.linspace(1, 1 / n_train, num_steps + 1)[:-1])
        if np.fabs(s[0] - 1) < 1e-6:
            s[0] -= 1e-6
    timesteps = (s * n_train).copy().astype(np.int64)
    last = 0.0 if cfg.final_sigmas_type == "zero" else s[-1]
    return timesteps, np.concatenate([s, [last]]).astype(np.float32)


def _orders(num_steps: int, cfg: UniPCConfig) -> np.ndarray:
    out = []
    for i in range(num_steps):
        order = min(cfg.solver_order, num_steps - i) if cfg.lower_order_final else cfg.solver_order
        out.append(min(order, min(i, cfg.solver_order) + 1))  # warm-up: lower_order_nums + 1
    return np.asarray(out, np.int64)


def _bh_terms(sig: np.ndarray, t: int, s0: int, hist: list[int], order: int, solver_type: str):
    """Shared UniP/UniC quantities (float64) for target sigma index ``t``, base ``s0`` and history indices."""
    alpha = lambda i: 1.0 - float(sig[i])  # flow sigmas: alpha = 1 - sigma
    lam = lambda i: np.log(alpha(i)) - np.log(float(sig[i]))
    with np.errstate(divide="ignore", invalid="ignore"):
        lam_t = lam(t) if float(sig[t]) > 0 else np.inf
        h = lam_t - lam(s0)
        rks = [(lam(si) - lam(s0)) / h for si in hist[: order - 1]] + [1.0]
        hh = -h
        h_phi_1 = np.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial = 1
        b_h = hh if solver_type == "bh1" else np.expm1(hh)
        R, b = [], []
        for k in range(1, order + 1):
            R.append(np.power(np.asarray(rks), k - 1))
            b.append(h_phi_k * factorial / b_h)
            factorial *= k + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
    return dict(ratio=float(sig[t]) / float(sig[s0]), alpha_t=alpha(t), h_phi_1=h_phi_1, b_h=b_h,
                rks=np.asarray(rks), R=np.asarray(R), b=np.asarray(b))


def unipc_coefficients(sigmas: np.ndarray, cfg: UniPCConfig = UniPCConfig()) -> tuple[np.ndarray, np.ndarray]:
    """Per-step coefficient table (N, len(COLUMNS)) and orders for the step function (see module docstring).

    Step i, with ``m_i = x_i - sigma_i v_i`` and the state ``(x_i, last, m_{i-1}, m_{i-2})``::

        x_c      = c_self x_i + c_last last + c_prev m_{i-1} + c_prev2 m_{i-2} + c_this m_i     (UniC)
        x_{i+1}  = p_x x_c + p_this m_i + p_prev m_{i-1}                                        (UniP)
        last <- x_c
    """
    n = len(sigmas) - 1
    orders = _orders(n, cfg)
    table = np.zeros((n, len(COLUMNS)), np.float64)
    col = {c: k for k, c in enumerate(COLUMNS)}
    for i in range(n):
        row = table[i]
        row[col["sigma"]] = sigmas[i]
        # --- corrector UniC-p with p = order of the previous step, on the previous step's interval --------------
        if i > 0 and (i - 1) not in cfg.disable_corrector:
            p = int(orders[i - 1])
            q = _bh_terms(sigmas, i, i - 1, [i - 2], p, cfg.solver_type)
            rhos = np.array([0.5]) if p == 1 else np.linalg.solve(q["R"], q["b"])
            ab = q["alpha_t"] * q["b_h"]
            row[col["c_last"]] = q["ratio"]
            row[col["c_prev"]] = -q["alpha_t"] * q["h_phi_1"] + ab * rhos[-1]
            row[col["c_this"]] = -ab * rhos[-1]
            if p == 2:
                rk = q["rks"][0]
                row[col["c_prev"]] += ab * rhos[0] / rk
                row[col["c_prev2"]] = -ab * rhos[0] / rk
        else:
            row[col["c_self"]] = 1.0
        # --- predictor UniP-p --------------------------------------------------------------------------------------
        p = int(orders[i])
        q = _bh_terms(sigmas, i + 1, i, [i - 1], p, cfg.solver_type)
        row[col["p_x"]] = q["ratio"]
        row[col["p_this"]] = -q["alpha_t"] * q["h_phi_1"]
        if p == 2:
            ab = q["alpha_t"] * q["b_h"]
            rk = q["rks"][0]
            rho = 0.5
            row[col["p_this"]] += ab * rho / rk
            row[col["p_prev"]] = -ab * rho / rk
    if not np.isfinite(table).all():
        raise FloatingPointError("non-finite UniPC coefficient (degenerate sigmas?)")
    return table.astype(np.float32), orders


def unipc_schedule(num_steps: int, cfg: UniPCConfig = UniPCConfig(),
                   sigma_schedule: str = OFFICIAL_SIGMA_SCHEDULE) -> Schedule:
    timesteps, sigmas = unipc_sigmas(num_steps, cfg, sigma_schedule)
    table, orders = unipc_coefficients(sigmas, cfg)
    return Schedule("unipc", timesteps, sigmas, table, orders)


class UniPCState(NamedTuple):
    x: jax.Array
    last: jax.Array
    m_prev: jax.Array
    m_prev2: jax.Array


def unipc_init(x: jax.Array) -> UniPCState:
    z = jnp.zeros_like(x, jnp.float32)
    return UniPCState(x.astype(jnp.float32), z, z, z)


def unipc_step(state: UniPCState, velocity: jax.Array, row: jax.Array) -> UniPCState:
    """One UniPC step (corrector for the previous step, then predictor) in fp32; ``row`` = one table row."""
    c = {name: row[k] for k, name in enumerate(COLUMNS)}
    x = state.x
    m = x - c["sigma"] * velocity.astype(jnp.float32)  # flow_prediction -> x0
    x_c = (c["c_self"] * x + c["c_last"] * state.last + c["c_prev"] * state.m_prev + c["c_prev2"] * state.m_prev2
           + c["c_this"] * m)
    x_next = c["p_x"] * x_c + c["p_this"] * m + c["p_prev"] * state.m_prev
    return UniPCState(x_next, x_c, m, state.m_prev)
