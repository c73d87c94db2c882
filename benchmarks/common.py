"""Shared parts of the DiT benchmarks: sizes, timing, agreement checks, reports, and the JAX side of a size (the
trainer's own model parts, optimizer, frozen base and train state on one device, :func:`build_jax`).

Timings (:func:`timed`, :func:`timed_interleaved`) call a function that blocks until its result is ready; the first
call (compilation) is reported apart. Reports are plain JSON (:func:`write_json`, atomic) plus a compact table
(:func:`print_table`). Nothing here imports JAX at module level: the entry points set ``JAX_PLATFORMS`` /
``XLA_FLAGS`` (:func:`apply_env`) before JAX starts its backend.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGE_TOKENS = 257  # CLIP ViT-H/14 penultimate hidden states
TEXT_LEN = 512  # diffusers' Wan attention assumes exactly 512 text tokens for I2V
#: XLA:CPU (jaxlib 0.10.2) flag that keeps reductions out of YNNPACK fusions; its softmax-backward reductions run
#: slowly there. Measured here: the medium train step 10-15% less CPU time, forward unchanged (``--xla-flags``;
#: 2026-12-02, one pinned thread: 2.18 -> 1.97 s).
TUNED_XLA_CPU_FLAGS = "--xla_cpu_experimental_ynn_fusion_type=-reduce"


class AgreementError(AssertionError):
    """JAX and PyTorch disagree on identical weights and inputs: the timings would not compare like with like."""


@dataclasses.dataclass(frozen=True)
class Size:
    """A benchmark size: a config file, per-modality latent (T, H, W) (the width-fused DiT input is (T, H, 2W)),
    model overrides and batch."""

    name: str
    config: str
    latent: tuple[int, int, int]
    model: tuple[tuple[str, Any], ...] = ()
    batch: int = 1


#: tiny / small: configs/tiny.py and configs/small.py on the tiny grid (fused latent 3 x 8 x 24: 144 tokens,
#: fewer than the 512 + 257 context tokens); medium: small's layout with 6 heads of Wan's 128 (dim 768), ffn 2048,
#: 4 layers, on a fused 3 x 16 x 48 latent (576 tokens): ~50 GFLOP forward, ~100 GFLOP adapter train step.
SIZES = {
    "tiny": Size("tiny", "configs/tiny.py", (3, 8, 12)),
    "small": Size("small", "configs/small.py", (3, 8, 12)),
    "medium": Size("medium", "configs/small.py", (3, 16, 24),
                   (("num_heads", 6), ("ffn_dim", 2048), ("text_dim", 512), ("image_dim", 256),
                    ("added_kv_proj_dim", 768))),
}


def check_agreement(what: str, err: float, tol: float) -> float:
    """Raises :class:`AgreementError` when ``err`` (a relative L2) exceeds ``tol`` or is not finite."""
    if not math.isfinite(err) or err > tol:
        raise AgreementError(f"{what}: JAX and PyTorch disagree, relative L2 {err:.3e} > {tol:.0e}; the benchmark "
                             "would not compare the same computation")
    return err


def timed(fn: Callable[[], Any], *, warmup: int, repeats: int) -> dict[str, Any]:
    """Calls ``fn`` (which must block until its result is ready) ``1 + warmup + repeats`` times. ``first_s``: the
    first call (includes compilation); ``median_s``/``min_s``: over the ``repeats`` timed calls."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def timed_within(fn: Callable[[], Any], *, repeats: int, warmup: int, deadline: float) -> dict[str, Any]:
    """:func:`timed` under a deadline (a ``time.time()``): warm-up and timed calls stop once the next one (as long
    as the last) would end past ``deadline``; one timed call always runs. ``repeats_done`` says how many ran."""
    t0 = time.perf_counter()
    fn()
    last = first = time.perf_counter() - t0
    fits = lambda: time.time() + last <= deadline
    for _ in range(warmup):
        if not fits():
            break
        t0 = time.perf_counter()
        fn()
        last = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < max(repeats, 1) and (not times or fits()):
        t0 = time.perf_counter()
        fn()
        last = time.perf_counter() - t0
        times.append(last)
    return {"first_s": first, "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
            "repeats_done": len(times), "repeats_asked": max(repeats, 1)}


def timed_interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int, repeats: int) -> dict[str, dict[str, Any]]:
    """:func:`timed` for several functions at once, their timed calls interleaved (order reversed every other
    round), so that a change of machine load hits all of them alike. ``cpu_median_s``: median process CPU time
    of a call (all threads; on a loaded machine a steadier measure of work than wall time, though it also
    counts spin-waiting threads)."""
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(max(repeats, 1)):
        for name in (list(fns) if i % 2 == 0 else list(reversed(fns))):
            c0, t0 = time.process_time(), time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {name: {"first_s": first[name], "median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts,
                   "cpu_median_s": statistics.median(cpu[name])}
            for name, ts in times.items()}


def paired_ratio(a: dict, b: dict) -> float:
    """Median over rounds of a's time / b's time (entries of one :func:`timed_interleaved` call)."""
    return statistics.median(x / y for x, y in zip(a["times_s"], b["times_s"]))


def cpu_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_size_config(size: Size, layers: int | None = None):
    """The ml_collections config of ``size`` (model overrides applied)."""
    from fourdnex_jax.config import load_config_file

    config = load_config_file(ROOT / size.config)
    for k, v in size.model:
        config.model[k] = v
    if layers is not None:
        config.model.num_layers = layers
    return config


def versions() -> dict[str, str]:
    import flax
    import jax
    import jaxlib

    out = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
           "flax": flax.__version__, "numpy": np.__version__}
    for name in ("torch", "diffusers", "peft"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def load_and_date() -> dict[str, Any]:
    """``date_utc`` (ISO 8601, seconds) and ``loadavg`` (1, 5, 15 min; None where the OS keeps none): stored with
    every figure, since timings on a shared machine depend on what else runs."""
    import datetime

    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "loadavg": load}


def host_info() -> dict[str, Any]:
    info = {"machine": platform.machine(), "processor": platform.processor(), "threads": cpu_threads(),
            **load_and_date(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    except OSError:
        info["cpu"] = None
    return info


def write_json(path: str | None, report: dict) -> None:
    if path:
        from fourdnex_jax.media.io import atomic_save_json

        atomic_save_json(path, report)
        print(f"wrote {path}", file=sys.stderr)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{1e3 * seconds:.1f}"


def add_common_args(p, default_repeats: int) -> None:
    """The flags every DiT benchmark takes: ``--xla-flags``, ``--repeats``, ``--warmup``, ``--seed``, ``--out``."""
    p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before JAX starts (recorded in the "
                   "report), e.g. " + TUNED_XLA_CPU_FLAGS)
    p.add_argument("--repeats", type=int, default=default_repeats, help="timed calls (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first (compiling) one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON report path (written atomically)")


def apply_env(args, *, cpu: bool) -> None:
    """Before JAX starts its backend (where the flags are read): ``JAX_PLATFORMS=cpu`` unless set (``cpu``), and
    ``--xla-flags`` appended to ``XLA_FLAGS``."""
    if cpu:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if getattr(args, "xla_flags", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()


# ---------------------------------------------------------------------------------------------------------------
# the JAX side of a benchmark size: the trainer's own objects
@dataclasses.dataclass
class JaxSide:
    """The trainer's objects for one size on one device: model parts, optimizer, frozen base, train state."""

    config: Any
    cfg: Any
    parts: Any
    tx: Any
    schedule: Any
    mesh: Any
    state_sh: Any
    frozen_sh: Any
    frozen: dict
    state: dict


def build_jax(config, seed: int = 0, adapter_scale: float | None = 1.0) -> JaxSide:
    """The 1-device trainer setup of ``config`` with random base weights (``seed``, created on the device) and a
    random adapter (LoRA-B ~ 0.02 N(0,1), domain embeddings ~ 0.1 N(0,1), times ``adapter_scale``, drawn on the
    host); ``adapter_scale=None`` keeps the model's own adapter initialisation (LoRA-B and domain embeddings 0)."""
    import jax

    from fourdnex_jax import sharding as mesh_lib
    from fourdnex_jax.config import model_config
    from fourdnex_jax.training import optimizer as optim_lib
    from fourdnex_jax.training import state as state_lib
    from fourdnex_jax.utils.tree import flatten, nest

    cfg = model_config(config)
    mesh = mesh_lib.make_mesh(config.sharding, devices=jax.devices()[:1], shape=(1, 1, 1, 1))
    rules = mesh_lib.rules_of(config.sharding)
    parts = state_lib.ModelParts.build(cfg, seed)
    tx, schedule = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    state_sh = state_lib.state_shardings(parts, tx, mesh, rules)
    frozen_sh = parts.frozen_shardings(mesh, rules)
    frozen = state_lib.init_frozen(parts, frozen_sh, seed)
    state = state_lib.init_state(parts, tx, state_sh, seed)
    if adapter_scale is None:
        return JaxSide(config, cfg, parts, tx, schedule, mesh, state_sh, frozen_sh, frozen, state)
    rng = np.random.default_rng(seed + 100)
    flat = {}
    for path, value in flatten(state["trainable"]).items():
        v = np.asarray(value)
        if path.endswith("lora_b"):
            v = (0.02 * adapter_scale * rng.standard_normal(v.shape)).astype(v.dtype)
        elif path.endswith("domain_embeddings"):
            v = (0.1 * adapter_scale * rng.standard_normal(v.shape)).astype(v.dtype)
        flat[path] = v
    state["trainable"] = jax.device_put(nest(flat), state_sh["trainable"])
    return JaxSide(config, cfg, parts, tx, schedule, mesh, state_sh, frozen_sh, frozen, state)


def jax_forward_fn(side: JaxSide) -> Callable:
    """jit of ``(trainable, frozen, latents, timestep, text, image) -> velocity`` (NTHWC in and out)."""
    import jax

    parts = side.parts
    return jax.jit(lambda trainable, frozen, x, t, text, image: parts.merge(trainable, frozen)(x, t, text, image))


def jax_fixed_loss_grad_fn(side: JaxSide) -> Callable:
    """jit of ``(trainable, frozen, inp, t, text, image, target) -> (loss, adapter grads)``: the train objective
    (mean squared velocity error) on fixed DiT inputs, for the gradient agreement check."""
    import jax
    import jax.numpy as jnp

    parts = side.parts

    def loss(trainable, frozen, inp, t, text, image, target):
        pred = parts.merge(trainable, frozen)(inp, t, text, image)
        return jnp.mean(jnp.square(pred.astype(jnp.float32) - target))

    return jax.jit(jax.value_and_grad(loss))


def jax_train_step_fn(side: JaxSide, batch_shapes: dict[str, tuple[int, ...]]) -> tuple[Callable, dict]:
    """The trainer's jitted step (state donated) and the batch shardings."""
    from fourdnex_jax import sharding as mesh_lib
    from fourdnex_jax.training import step as step_lib

    rules = mesh_lib.rules_of(side.config.sharding)
    batch_sh = step_lib.batch_shardings(side.mesh, rules, batch_shapes)
    fn = step_lib.build_train_step(side.parts, side.tx, side.schedule, grad_accum_steps=1,
                                   sample_posterior=side.config.data.sample_posterior)
    return step_lib.jit_train_step(fn, side.state_sh, side.frozen_sh, batch_sh, side.mesh), batch_sh


def make_inputs(cfg, latent: tuple[int, int, int], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Forward inputs (DiT input latents (B, T, H, W', 36) with W' = 2W for the fused layouts, timestep (B,),
    text (B, 512, text_dim), image (B, 257, image_dim)) and the train batch of the trainer's format
    (``(1, B, ...)``: RGB/XYZ latent means and stds (B, T, H, W, 16), the width-fused condition latent, text,
    image)."""
    rng = np.random.default_rng(seed)
    t, h, w = latent
    fused_w = w if cfg.modality_layout == "none" else 2 * w
    f32 = np.float32
    out = {
        "latents": rng.standard_normal((batch, t, h, fused_w, cfg.in_channels)).astype(f32),
        "timestep": rng.uniform(1.0, 1000.0, (batch,)).astype(f32),
        "text_embeds": rng.standard_normal((batch, TEXT_LEN, cfg.text_dim)).astype(f32),
        "image_embeds": rng.standard_normal((batch, IMAGE_TOKENS, cfg.image_dim)).astype(f32),
        "target": rng.standard_normal((batch, t, h, fused_w, cfg.out_channels)).astype(f32),
    }
    lat = (1, batch, t, h, w, cfg.out_channels)
    out["train"] = {
        "rgb_latent": rng.standard_normal(lat).astype(f32), "rgb_latent_std": rng.uniform(0.05, 0.2, lat).astype(f32),
        "xyz_latent": rng.standard_normal(lat).astype(f32), "xyz_latent_std": rng.uniform(0.05, 0.2, lat).astype(f32),
        "cond_latent": rng.standard_normal((1, batch, t, h, 2 * w, cfg.out_channels)).astype(f32),
        "text_embeds": out["text_embeds"][None], "image_embeds": out["image_embeds"][None]}
    return out
