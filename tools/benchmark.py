"""DiT benchmarks: JAX (jit) against diffusers (PyTorch) on CPU, compile time against depth, the 14B forward on a GPU.

    nice -n 15 python tools/benchmark.py cpu [--sizes tiny,small,medium] [--repeats 5] [--out out/benchmark/cpu.json]
    python tools/benchmark.py compile [--layers 4 40] [--out out/benchmark/compile.json]
    python tools/benchmark.py gpu [--config configs/wan21_i2v_14b_480p.py] [--measure-steps] [--out ...]
    python tools/benchmark.py gpu --config configs/tiny.py --latent 3 8 12 --allow-cpu   (same code, tiny, on CPU)

``cpu`` (default): for each size (``SIZES``: tiny, small, medium), one model with random weights is built in JAX
and copied through the two-way weight tables (:mod:`fourdnex_jax.models.transformer.mapping`) into diffusers'
``WanTransformer3DModel`` with a peft LoRA on the same targets and the 4DNeX adaptations (domain embeddings after
the patch embedding, RoPE shared by the RGB and XYZ halves of the width-fused latent). Adapter values are random
(not the zero LoRA-B of a fresh adapter), so the LoRA path is part of the comparison; it is unmerged on both
sides, as in training. Both run fp32 on the CPU; torch gets as many threads as the cores this process may use,
which is what XLA's CPU client uses (pin both with ``taskset -c ...``). Before timing, the script checks that both
frameworks agree on identical inputs: forward output (relative L2 <= ``FORWARD_TOL``) and the loss and adapter
gradients of a fixed-input objective (<= ``GRAD_TOL``); a mismatch raises :class:`AgreementError` and nothing is
reported. Then it times (median of ``--repeats`` calls after the first (compiling) call and ``--warmup`` more;
the frameworks' calls interleaved, so that load changes hit both alike; wall time, and process CPU time too):

  * forward: JAX ``jax.jit`` of the merged model vs diffusers eager (``torch.inference_mode``) and, when it
    works here, ``torch.compile`` (its failure is recorded as ``unavailable: <reason>``);
  * train step: the trainer's own jitted step (:mod:`fourdnex_jax.training.step`: flow-matching inputs, LoRA +
    domain-embedding gradients, clipping, AdamW, NaN guard, donated state) vs the same step in PyTorch (the same
    objective with its own noise draws, ``loss.backward()``, ``clip_grad_norm_``, ``torch.optim.AdamW`` with the
    config's betas, eps and weight decay; constant LR).

Ratios are JAX time / PyTorch time (target <= 0.7, lower is better). ``compile``: lower + compile time of the
forward and of the train step with a fresh ``jax.jit`` and the persistent compilation cache disabled, scanned
layers, at 4 and 40 layers (small widths); target 40-layer <= 1.5x the 4-layer. ``gpu``: see :func:`gpu_main`.

Every subcommand prints a compact table, ends with a one-line summary and writes ``--out`` (JSON, atomic).
Timings taken on a loaded machine are provisional: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FORWARD_TOL = 1e-4  # relative L2 of the fp32 forward outputs (JAX vs diffusers)
GRAD_TOL = 1e-3  # relative L2 of the adapter gradients (all tensors together) and of the fixed-input loss
RATIO_TARGET = 0.7  # JAX / PyTorch step time
COMPILE_RATIO_TARGET = 1.5  # 40-layer / 4-layer compile time
H100_BF16_TFLOPS = 989.4  # H100 SXM / H200 dense bf16 peak
IMAGE_TOKENS = 257  # CLIP ViT-H/14 penultimate hidden states
TEXT_LEN = 512  # diffusers' Wan attention assumes exactly 512 text tokens for I2V


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


#: tiny / small: configs/tiny.py and configs/small.py on the tiny smoke grid (fused latent 3 x 8 x 24: 144 tokens,
#: fewer than the 512 + 257 context tokens); medium: small's layout with 6 heads of Wan's 128 (dim 768), ffn 2048,
#: 4 layers, on a fused 3 x 16 x 48 latent (576 tokens): ~50 GFLOP forward, ~100 GFLOP adapter train step.
SIZES = {
    "tiny": Size("tiny", "configs/tiny.py", (3, 8, 12)),
    "small": Size("small", "configs/small.py", (3, 8, 12)),
    "medium": Size("medium", "configs/small.py", (3, 16, 24),
                   (("num_heads", 6), ("ffn_dim", 2048), ("text_dim", 512), ("image_dim", 256),
                    ("added_kv_proj_dim", 768))),
}


# ---------------------------------------------------------------------------------------------------------------
# shared helpers
def rel_l2(actual, expected) -> float:
    """||actual - expected|| / ||expected|| in float64."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise AgreementError(f"shapes differ: {a.shape} vs {e.shape}")
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))


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


def host_info() -> dict[str, Any]:
    info = {"machine": platform.machine(), "processor": platform.processor(), "threads": cpu_threads(),
            "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else None
    except OSError:
        info["cpu"] = None
    return info


def write_json(path: str | None, report: dict) -> None:
    if path:
        from fourdnex_jax.io_utils import atomic_save_json

        atomic_save_json(path, report)
        print(f"wrote {path}", file=sys.stderr)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[("-" if c is None else str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _ms(seconds: float | None) -> str | None:
    return None if seconds is None else f"{1e3 * seconds:.1f}"


# ---------------------------------------------------------------------------------------------------------------
# JAX side
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


def build_jax(config, seed: int = 0, adapter_scale: float = 1.0) -> JaxSide:
    """The 1-device trainer setup of ``config`` with random base weights (``seed``) and a random adapter
    (LoRA-B ~ 0.02 N(0,1), domain embeddings ~ 0.1 N(0,1), times ``adapter_scale``)."""
    import jax

    from fourdnex_jax.config import model_config
    from fourdnex_jax.convert.orbax_io import flatten, nest
    from fourdnex_jax.training import mesh as mesh_lib
    from fourdnex_jax.training import optimizer as optim_lib
    from fourdnex_jax.training import state as state_lib

    cfg = model_config(config)
    mesh = mesh_lib.make_mesh(config.sharding, devices=jax.devices()[:1], shape=(1, 1, 1, 1))
    rules = mesh_lib.rules_of(config.sharding)
    parts = state_lib.ModelParts.build(cfg, seed)
    tx, schedule = optim_lib.make_optimizer(config.optim, config.train.num_steps)
    state_sh = state_lib.state_shardings(parts, tx, mesh, rules)
    frozen_sh = parts.frozen_shardings(mesh, rules)
    frozen = state_lib.init_frozen(parts, frozen_sh, seed)
    state = state_lib.init_state(parts, tx, state_sh, seed)
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
    from fourdnex_jax.training import mesh as mesh_lib
    from fourdnex_jax.training import step as step_lib

    rules = mesh_lib.rules_of(side.config.sharding)
    batch_sh = step_lib.batch_shardings(side.mesh, rules, batch_shapes)
    fn = step_lib.build_train_step(side.parts, side.tx, side.schedule, grad_accum_steps=1,
                                   sample_posterior=side.config.data.sample_posterior)
    return step_lib.jit_train_step(fn, side.state_sh, side.frozen_sh, batch_sh, side.mesh), batch_sh


# ---------------------------------------------------------------------------------------------------------------
# inputs (numpy, NTHWC), shared by both frameworks
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


# ---------------------------------------------------------------------------------------------------------------
# PyTorch side (torch, diffusers and peft are imported here only)
def _torch():
    import torch

    return torch


def torch_state_dicts(side: JaxSide) -> tuple[dict, dict, np.ndarray | None]:
    """(base, peft LoRA, domain embeddings) in torch layout, from the JAX values through the weight tables."""
    from fourdnex_jax.convert.orbax_io import flatten
    from fourdnex_jax.models.transformer import mapping

    cfg = side.cfg
    frozen = {p: np.asarray(a) for p, a in flatten(side.frozen).items()}
    trainable = {p: np.asarray(a) for p, a in flatten(side.state["trainable"]).items()}
    base = mapping.base_mapping(cfg).to_torch(frozen)
    lora = mapping.lora_mapping(cfg).to_torch(trainable) if cfg.lora_rank else {}
    domain = (mapping.domain_mapping().to_torch(trainable)["learnable_domain_embeddings"]
              if cfg.domain_embeddings else None)
    return base, lora, domain


def _add_fourdnex(model, cfg, domain: np.ndarray | None) -> None:
    """The 4DNeX changes to a diffusers Wan DiT (reference ``demb_samerope_trainer.py``): for the width layout,
    RoPE of the left (RGB) half repeated on the right (XYZ) half; learnable domain embeddings (2, D) added right
    after the patch embedding (row 0 on the left half of the width, row 1 on the right)."""
    torch = _torch()
    if cfg.modality_layout not in ("none", "width"):
        raise ValueError(f"the PyTorch reference supports the 'none' and 'width' layouts, not {cfg.modality_layout!r}")
    if cfg.modality_layout == "width":
        base_cls = type(model.rope)

        class SharedWidthRope(base_cls):
            def forward(self, hidden_states):  # (B, C, F, H, W) -> cos, sin (1, L, 1, head_dim)
                f, h, w = hidden_states.shape[2:]
                pt, ph, pw = self.patch_size
                outs = []
                for table in super().forward(hidden_states[..., : w // 2]):
                    grid = table.reshape(1, f // pt, h // ph, (w // 2) // pw, 1, table.shape[-1])
                    outs.append(torch.cat([grid, grid], dim=3).reshape(1, -1, 1, table.shape[-1]))
                return tuple(outs)

        model.rope.__class__ = SharedWidthRope
    if domain is not None:
        model.learnable_domain_embeddings = torch.nn.Parameter(torch.from_numpy(np.array(domain, np.float32)))

        def add_domain(module, inputs, out):  # out (B, D, f, h, w)
            w = out.shape[-1]
            ids = (torch.arange(w) >= w // 2).long()
            emb = model.learnable_domain_embeddings.to(out.dtype)[ids]  # (w, D)
            return out + emb.t().reshape(1, -1, 1, 1, w)

        model.patch_embedding.register_forward_hook(add_domain)


def build_torch(side: JaxSide, device: str = "cpu"):
    """diffusers ``WanTransformer3DModel`` (+ peft LoRA + 4DNeX changes) holding exactly the JAX weights, fp32.
    Only the adapter (LoRA, domain embeddings) requires grad."""
    torch = _torch()
    from diffusers import WanTransformer3DModel

    cfg = side.cfg
    base, lora, domain = torch_state_dicts(side)
    kwargs = {k: v for k, v in cfg.to_diffusers_config().items() if not k.startswith("_")}
    model = WanTransformer3DModel(**kwargs)
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in
                                                 base.items()}, strict=False)
    if missing or unexpected:
        raise AgreementError(f"weight copy incomplete: missing {missing[:8]}, unexpected {unexpected[:8]}")
    _add_fourdnex(model, cfg, domain)
    if cfg.lora_rank:
        from peft import LoraConfig, set_peft_model_state_dict

        model.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights=True,
                                     target_modules=list(cfg.lora_targets)))
        res = set_peft_model_state_dict(model, {k: torch.from_numpy(v) for k, v in lora.items()})
        n_lora = sum(1 for n, _ in model.named_parameters() if ".lora_" in n)
        if getattr(res, "unexpected_keys", None) or n_lora != len(lora):
            raise AgreementError(f"LoRA copy incomplete: {n_lora} LoRA tensors in the model, {len(lora)} copied, "
                                 f"unexpected {getattr(res, 'unexpected_keys', [])[:8]}")
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name == "learnable_domain_embeddings")
    return model.to(device).eval()


def torch_inputs(inputs: dict, device: str = "cpu", dtype: str = "float32") -> dict:
    """The numpy NTHWC inputs as torch NCTHW tensors (train batch without the leading accumulation axis)."""
    torch = _torch()
    dt = getattr(torch, dtype)
    ncthw = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1))).to(device, dt)  # noqa: E731
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, dt)  # noqa: E731
    out = {"latents": ncthw(inputs["latents"]), "timestep": torch.from_numpy(inputs["timestep"]).to(device),
           "text_embeds": tensor(inputs["text_embeds"]), "image_embeds": tensor(inputs["image_embeds"]),
           "target": ncthw(inputs["target"])}
    if "train" in inputs:
        out["train"] = {k: (ncthw(v[0]) if "latent" in k else tensor(v[0])) for k, v in inputs["train"].items()}
    return out


def torch_forward(model, ti: dict):
    return model(hidden_states=ti["latents"], timestep=ti["timestep"], encoder_hidden_states=ti["text_embeds"],
                 encoder_hidden_states_image=ti["image_embeds"], return_dict=False)[0]


def torch_to_nthwc(x) -> np.ndarray:
    return np.moveaxis(x.detach().float().cpu().numpy(), 1, -1)


def torch_adapter_grads(model, ti: dict) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and adapter gradients (peft key names without the adapter name) on fixed inputs."""
    torch = _torch()
    model.zero_grad(set_to_none=True)
    loss = torch.mean(torch.square(torch_forward(model, ti).float() - ti["target"]))
    loss.backward()
    grads = {n.replace(".default", ""): p.grad.detach().numpy().copy() for n, p in model.named_parameters()
             if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return float(loss.detach()), grads


def torch_train_step_fn(model, side: JaxSide, ti: dict) -> Callable[[], Any]:
    """One 4DNeX train step in PyTorch, as the JAX trainer's: posterior samples of both latents, width fusion,
    t ~ U{1..1000}, x_t = (1 - t/1000) x + (t/1000) eps, DiT input [x_t | guided mask | condition], MSE to
    eps - x, backward, global-norm clipping, AdamW (the config's betas, eps, weight decay; constant LR)."""
    torch = _torch()
    o = side.config.optim
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(o.learning_rate), betas=(float(o.b1), float(o.b2)), eps=float(o.eps),
                            weight_decay=float(o.weight_decay))
    b = ti["train"]
    batch, _, frames, h, w = b["rgb_latent"].shape
    mask = torch.zeros(batch, 4, frames, h, 2 * w)
    mask[:, :, 0, :, :w] = 1.0
    mask[:, :, 0, :, w:] = 0.5
    model.train()
    sample_posterior = bool(side.config.data.sample_posterior)

    def step():
        rgb, xyz = b["rgb_latent"], b["xyz_latent"]
        if sample_posterior:
            rgb = rgb + b["rgb_latent_std"] * torch.randn_like(rgb)
            xyz = xyz + b["xyz_latent_std"] * torch.randn_like(xyz)
        x = torch.cat([rgb, xyz], dim=-1)
        t = torch.randint(1, 1001, (batch,)).float()
        s = (t / 1000.0).view(batch, 1, 1, 1, 1)
        eps = torch.randn_like(x)
        inp = torch.cat([(1.0 - s) * x + s * eps, mask, b["cond_latent"]], dim=1)
        pred = model(hidden_states=inp, timestep=t, encoder_hidden_states=b["text_embeds"],
                     encoder_hidden_states_image=b["image_embeds"], return_dict=False)[0]
        loss = torch.mean(torch.square(pred.float() - (eps - x)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if o.grad_clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, float(o.grad_clip_norm))
        opt.step()
        return float(loss.detach())

    return step


def try_torch_compile(model, ti: dict) -> tuple[Callable[[], Any] | None, float | None, str | None, Any]:
    """``torch.compile(model)``'s forward: (call, compile seconds (the first call), None, first output), or
    (None, None, 'unavailable: <reason>', None) when the compiler fails here."""
    torch = _torch()
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError

    compiled = torch.compile(model)
    result = {}

    def call():
        with torch.inference_mode():
            result["out"] = torch_forward(compiled, ti)

    t0 = time.perf_counter()
    try:
        call()
    except (TorchDynamoException, InductorError, OSError) as e:  # compiler toolchain missing/failing here
        reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        return None, None, f"unavailable: {type(e).__name__}: {reason}", None
    return call, time.perf_counter() - t0, None, result["out"]


# ---------------------------------------------------------------------------------------------------------------
# cpu subcommand
def agreement(side: JaxSide, model, inputs: dict, ti: dict) -> dict[str, float]:
    """Forward output, fixed-input loss and adapter gradients of JAX vs PyTorch; raises :class:`AgreementError`
    beyond ``FORWARD_TOL`` / ``GRAD_TOL``."""
    import jax.numpy as jnp

    from fourdnex_jax.convert.orbax_io import flatten
    from fourdnex_jax.models.transformer import mapping

    torch = _torch()
    args = [jnp.asarray(inputs[k]) for k in ("latents", "timestep", "text_embeds", "image_embeds")]
    ours = np.asarray(jax_forward_fn(side)(side.state["trainable"], side.frozen, *args))
    with torch.inference_mode():
        theirs = torch_to_nthwc(torch_forward(model, ti))
    fwd_err = check_agreement("forward output", rel_l2(ours, theirs), FORWARD_TOL)

    loss, grads = jax_fixed_loss_grad_fn(side)(side.state["trainable"], side.frozen, *args,
                                               jnp.asarray(inputs["target"]))
    flat = {p: np.asarray(g) for p, g in flatten(grads).items()}
    ours_g = mapping.lora_mapping(side.cfg).to_torch(flat) if side.cfg.lora_rank else {}
    if side.cfg.domain_embeddings:
        ours_g.update(mapping.domain_mapping().to_torch(flat))
    t_loss, theirs_g = torch_adapter_grads(model, ti)
    if sorted(ours_g) != sorted(theirs_g):
        raise AgreementError(f"adapter tensors differ: {sorted(set(ours_g) ^ set(theirs_g))[:8]}")
    keys = sorted(ours_g)
    grad_err = rel_l2(np.concatenate([ours_g[k].ravel() for k in keys]),
                      np.concatenate([theirs_g[k].ravel() for k in keys])) if keys else 0.0
    check_agreement("fixed-input loss", rel_l2(np.float64(loss), np.float64(t_loss)), GRAD_TOL)
    check_agreement("adapter gradients", grad_err, GRAD_TOL)
    return {"forward_rel_l2": fwd_err, "grad_rel_l2": grad_err, "loss_jax": float(loss), "loss_torch": t_loss}


def bench_size(size: Size, *, repeats: int, warmup: int, torch_compile: bool, train: bool, seed: int = 0,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Builds the pair for ``size``, checks agreement, times forward (+ train step); returns one report row."""
    import jax
    import jax.numpy as jnp

    from fourdnex_jax.utils import flops

    torch = _torch()
    config = load_size_config(size)
    t0 = time.perf_counter()
    side = build_jax(config, seed)
    cfg = side.cfg
    inputs = make_inputs(cfg, size.latent, size.batch, seed)
    model = build_torch(side)
    ti = torch_inputs(inputs)
    grid = flops.token_grid(cfg, inputs["latents"].shape[1:4])
    fl = flops.summary(cfg, grid, batch=size.batch, text_len=TEXT_LEN, image_tokens=IMAGE_TOKENS)
    log(f"[{size.name}] built in {time.perf_counter() - t0:.1f}s: {cfg.num_layers} layers, dim {cfg.dim}, "
        f"{fl['tokens']} tokens, {fl['forward'] / 1e9:.2f} GFLOP forward; checking agreement")
    row: dict[str, Any] = {"size": size.name, "config": size.config, "model_overrides": dict(size.model),
                           "latent_per_modality": list(size.latent), "dit_input": list(inputs["latents"].shape),
                           "batch": size.batch, "layers": cfg.num_layers, "dim": cfg.dim, "ffn_dim": cfg.ffn_dim,
                           "lora_rank": cfg.lora_rank, "tokens": fl["tokens"], "flops": fl}
    row["agreement"] = agreement(side, model, inputs, ti)
    log(f"[{size.name}] agreement ok (forward {row['agreement']['forward_rel_l2']:.1e}, grads "
        f"{row['agreement']['grad_rel_l2']:.1e}); timing forward")

    fwd = jax_forward_fn(side)
    args = [jnp.asarray(inputs[k]) for k in ("latents", "timestep", "text_embeds", "image_embeds")]
    tr, fz = side.state["trainable"], side.frozen

    def torch_eager():
        with torch.inference_mode():
            torch_forward(model, ti)

    model.eval()
    fns = {"jax_forward": lambda: fwd(tr, fz, *args).block_until_ready(), "torch_forward": torch_eager}
    compile_s = None
    if torch_compile:
        log(f"[{size.name}] torch.compile forward (the first call compiles)")
        call, compile_s, why, out = try_torch_compile(model, ti)
        if call is None:
            row["torch_compile_forward"] = why
        else:
            fns["torch_compile_forward"] = call
            with torch.inference_mode():
                eager = torch_to_nthwc(torch_forward(model, ti))
            row["agreement"]["compiled_vs_eager_rel_l2"] = check_agreement(
                "torch.compile vs eager", rel_l2(torch_to_nthwc(out), eager), FORWARD_TOL)
    else:
        row["torch_compile_forward"] = "skipped (--no-torch-compile)"
    log(f"[{size.name}] timing forward ({', '.join(fns)} interleaved)")
    row.update(timed_interleaved(fns, warmup=warmup, repeats=repeats))
    if compile_s is not None:
        row["torch_compile_forward"]["first_s"] = compile_s
    row["ratio_forward_vs_eager_paired"] = paired_ratio(row["jax_forward"], row["torch_forward"])

    if train:
        log(f"[{size.name}] timing train step (interleaved)")
        shapes = {k: v.shape for k, v in inputs["train"].items()}
        step, batch_sh = jax_train_step_fn(side, shapes)
        batch = {k: jax.device_put(v, batch_sh[k]) for k, v in inputs["train"].items()}
        holder = {"state": side.state}

        def jax_step():
            holder["state"], m = step(holder["state"], side.frozen, batch)
            jax.block_until_ready((holder["state"], m))
            if not bool(m["finite"]):
                raise FloatingPointError(f"[{size.name}] JAX train step produced a non-finite loss/gradient")

        t_step = torch_train_step_fn(model, side, ti)
        row.update(timed_interleaved({"jax_train_step": jax_step, "torch_train_step": t_step}, warmup=warmup,
                                     repeats=repeats))
        row["ratio_train_step_paired"] = paired_ratio(row["jax_train_step"], row["torch_train_step"])
        side.state = holder["state"]
        model.eval()
    _ratios(row)
    return row


def _best_torch_forward(row: dict) -> float:
    best = row["torch_forward"]["median_s"]
    comp = row.get("torch_compile_forward")
    if isinstance(comp, dict):
        best = min(best, comp["median_s"])
    return best


def _ratios(row: dict) -> None:
    """JAX / PyTorch ratios of median wall times (the figures of record), of median process CPU times (steadier
    on a loaded machine), and achieved GFLOP/s."""
    j = row["jax_forward"]["median_s"]
    row["ratio_forward_vs_eager"] = j / row["torch_forward"]["median_s"]
    row["ratio_forward_vs_best_torch"] = j / _best_torch_forward(row)
    row["ratio_forward_cpu_time"] = row["jax_forward"]["cpu_median_s"] / row["torch_forward"]["cpu_median_s"]
    row["jax_forward_gflops_per_s"] = row["flops"]["forward"] / j / 1e9
    row["torch_forward_gflops_per_s"] = row["flops"]["forward"] / row["torch_forward"]["median_s"] / 1e9
    if "jax_train_step" in row:
        jt = row["jax_train_step"]["median_s"]
        row["ratio_train_step"] = jt / row["torch_train_step"]["median_s"]
        row["ratio_train_step_cpu_time"] = (row["jax_train_step"]["cpu_median_s"]
                                            / row["torch_train_step"]["cpu_median_s"])
        row["jax_train_gflops_per_s"] = row["flops"]["train_adapter"] / jt / 1e9
        row["torch_train_gflops_per_s"] = row["flops"]["train_adapter"] / row["torch_train_step"]["median_s"] / 1e9


def cpu_table(rows: Sequence[dict]) -> None:
    """ratio = JAX / PyTorch median wall time (forward: against the faster of eager and torch.compile); cpu =
    the same ratio of process CPU times."""
    def comp(r):
        c = r.get("torch_compile_forward")
        return _ms(c["median_s"]) if isinstance(c, dict) else "n/a"

    f2 = lambda v: None if v is None else f"{v:.2f}"  # noqa: E731
    print_table(
        ["size", "tokens", "GFLOP fwd/step", "JAX fwd ms", "torch ms", "compiled ms", "fwd ratio", "(cpu)",
         "JAX step ms", "torch step ms", "step ratio", "(cpu)", "err fwd/grad"],
        [[r["size"], r["tokens"], f"{r['flops']['forward'] / 1e9:.2f}/{r['flops']['train_adapter'] / 1e9:.2f}",
          _ms(r["jax_forward"]["median_s"]), _ms(r["torch_forward"]["median_s"]), comp(r),
          f2(r["ratio_forward_vs_best_torch"]), f2(r["ratio_forward_cpu_time"]),
          _ms(r.get("jax_train_step", {}).get("median_s")), _ms(r.get("torch_train_step", {}).get("median_s")),
          f2(r.get("ratio_train_step")), f2(r.get("ratio_train_step_cpu_time")),
          f"{r['agreement']['forward_rel_l2']:.0e}/{r['agreement']['grad_rel_l2']:.0e}"] for r in rows])
    print(f"ratio = JAX / PyTorch median wall time (forward: vs the faster of eager and torch.compile), target <= "
          f"{RATIO_TARGET}; (cpu) = ratio of process CPU times (forward: vs eager)")


def cpu_main(args) -> dict:
    import jax

    torch = _torch()
    threads = args.threads or cpu_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    names = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {sorted(SIZES)}")
    rows = []
    for name in names:
        rows.append(bench_size(SIZES[name], repeats=args.repeats, warmup=args.warmup,
                               torch_compile=args.torch_compile, train=not args.no_train, seed=args.seed))
    report = {"kind": "cpu", "command": sys.argv, "host": host_info(), "versions": versions(),
              "backend": jax.default_backend(), "torch_threads": threads,
              "jax_threads": "XLA CPU default (one intra-op thread per core)", "repeats": args.repeats,
              "warmup": args.warmup, "tolerances": {"forward": FORWARD_TOL, "grad": GRAD_TOL},
              "targets": {"ratio_max": RATIO_TARGET}, "sizes": {r["size"]: r for r in rows}}
    print()
    cpu_table(rows)
    write_json(args.out, report)
    worst = max(max(r["ratio_forward_vs_best_torch"], r.get("ratio_train_step", 0.0)) for r in rows)
    plural = "s" if threads != 1 else ""
    print(f"summary: cpu benchmark of {', '.join(names)} ({threads} thread{plural}, median of {args.repeats}): "
          f"worst JAX/PyTorch ratio {worst:.2f} (target <= {RATIO_TARGET}); JAX and diffusers agree on every size")
    return report


# ---------------------------------------------------------------------------------------------------------------
# compile subcommand
def compile_forward(cfg, latent: tuple[int, int, int], batch: int = 1) -> dict[str, float]:
    """Lower + compile time of the forward with a fresh ``jax.jit`` on abstract arguments (nothing allocated)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fourdnex_jax.models.transformer import WanTransformer3D

    jax.clear_caches()
    t, h, w = latent
    fused_w = w if cfg.modality_layout == "none" else 2 * w
    abstract = nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    f32 = jnp.float32
    args = (jax.ShapeDtypeStruct((batch, t, h, fused_w, cfg.in_channels), f32), jax.ShapeDtypeStruct((batch,), f32),
            jax.ShapeDtypeStruct((batch, TEXT_LEN, cfg.text_dim), f32),
            jax.ShapeDtypeStruct((batch, IMAGE_TOKENS, cfg.image_dim), f32))
    t0 = time.perf_counter()
    lowered = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a)).lower(state, *args)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    return {"lower_s": t1 - t0, "compile_s": t2 - t1, "total_s": t2 - t0}


def compile_train(config, latent: tuple[int, int, int]) -> dict[str, float]:
    """Lower + compile time of the trainer's step (:func:`fourdnex_jax.training.plan.compile_train_step`, a fresh
    jit each call) on one device, batch 1."""
    import jax

    from fourdnex_jax.training.plan import compile_train_step

    jax.clear_caches()
    config = config.copy_and_resolve_references()
    config.train.global_batch_size, config.train.grad_accum_steps = 1, 1
    t0 = time.perf_counter()
    r = compile_train_step(config, jax.devices()[:1], mesh_shape=(1, 1, 1, 1), latent_thw=latent, text_len=TEXT_LEN)
    total = time.perf_counter() - t0
    return {"lower_s": r["lower_s"], "compile_s": r["compile_s"], "total_s": total}


def compile_main(args) -> dict:
    import jax

    from fourdnex_jax.config import model_config

    size = dataclasses.replace(SIZES[args.size], latent=tuple(args.latent)) if args.latent else SIZES[args.size]
    whats = ("forward", "train_step") if args.what == "both" else (args.what,)
    results: dict[str, dict] = {}
    cache_was = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)  # every compile is a real one
    try:
        for layers in args.layers:
            config = load_size_config(size, layers=layers)
            config.model.scan_layers = True
            cfg = model_config(config)
            entry: dict[str, Any] = {}
            for what in whats:
                runs = []
                for i in range(args.repeats):
                    r = compile_forward(cfg, size.latent) if what == "forward" else compile_train(config, size.latent)
                    runs.append(r)
                    print(f"[compile] {layers} layers {what} run {i + 1}/{args.repeats}: lower {r['lower_s']:.2f}s, "
                          f"compile {r['compile_s']:.2f}s", file=sys.stderr, flush=True)
                entry[what] = {k: statistics.median(r[k] for r in runs) for k in ("lower_s", "compile_s", "total_s")}
                entry[what]["runs"] = runs
            results[str(layers)] = entry
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was)
    lo, hi = str(min(args.layers)), str(max(args.layers))
    ratios = {what: results[hi][what]["total_s"] / results[lo][what]["total_s"] for what in whats}
    report = {"kind": "compile", "command": sys.argv, "host": host_info(), "versions": versions(),
              "backend": jax.default_backend(), "size": size.name, "latent_per_modality": list(size.latent),
              "scan_layers": True, "persistent_cache": False, "repeats": args.repeats, "layers": results,
              "ratio_total": ratios, "target_ratio_max": COMPILE_RATIO_TARGET}
    print_table(["layers", *(f"{w} {k}" for w in whats for k in ("lower s", "compile s", "total s"))],
                [[n, *(f"{results[n][w][k]:.2f}" for w in whats for k in ("lower_s", "compile_s", "total_s"))]
                 for n in results])
    write_json(args.out, report)
    print(f"summary: compile time {hi} vs {lo} scanned layers ({size.name} widths, cache off): "
          + ", ".join(f"{w} {r:.2f}x" for w, r in ratios.items()) + f" (target <= {COMPILE_RATIO_TARGET}x)")
    return report


# ---------------------------------------------------------------------------------------------------------------
# gpu subcommand
def peak_tflops_for(device_kind: str, override: float) -> float | None:
    """Dense bf16 peak TFLOP/s of a device: ``override`` if > 0; H100/H200 989.4; else the training metrics'
    table (None where unknown, e.g. CPU)."""
    from fourdnex_jax.training.metrics import peak_tflops

    if override > 0:
        return float(override)
    if "H100" in device_kind or "H200" in device_kind:
        return H100_BF16_TFLOPS
    return peak_tflops(device_kind)


def gpu_model_config(config, attention: str | None, chunk: int | None):
    """The inference form of the config's DiT: LoRA fused into the base (so rank 0), no remat."""
    from fourdnex_jax.config import model_config

    cfg = model_config(config).replace(lora_rank=0, lora_alpha=0.0, remat_policy="none")
    if attention:
        cfg = cfg.replace(attention=attention)
    if chunk:
        cfg = cfg.replace(attention_chunk_size=chunk)
    return cfg


def jax_gpu_forward(cfg, latent: tuple[int, int, int], *, repeats: int, warmup: int, steps: int,
                    guidance: float, measure_steps: bool, seed: int = 0, log: Callable[[str], None] = print
                    ) -> dict[str, Any]:
    """Random weights created on the device by a jitted constructor (no host copy), random inputs made on the
    device; times the batch-1 forward, the guided denoising step (batch-2 forward + CFG + UniPC update) and
    optionally ``steps`` of them end to end."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.pipelines.conditioning import dit_input, guided_mask
    from fourdnex_jax.sampling.flow_matching import classifier_free_guidance, make_schedule, solver_fns

    dev = jax.devices()[0]
    t0 = time.perf_counter()
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(seed))))
    state = jax.jit(lambda: nnx.state(WanTransformer3D(cfg, rngs=nnx.Rngs(seed))))()
    jax.block_until_ready(state)
    init_s = time.perf_counter() - t0
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
    log(f"[gpu] {n_params / 1e9:.2f}B parameters ({cfg.param_dtype}) created on {dev.device_kind} in {init_s:.1f}s")
    t, h, w = latent
    fused_w = w if cfg.modality_layout == "none" else 2 * w
    ct = cfg.compute_jnp_dtype

    @jax.jit
    def make_inputs_on_device(key):
        k = jax.random.split(key, 4)
        return {"x": jax.random.normal(k[0], (1, t, h, fused_w, cfg.out_channels), jnp.float32),
                "cond": jax.random.normal(k[1], (1, t, h, fused_w, cfg.out_channels), ct),
                "text": jax.random.normal(k[2], (2, TEXT_LEN, cfg.text_dim), ct),
                "clip": jax.random.normal(k[3], (1, IMAGE_TOKENS, cfg.image_dim), ct)}

    inp = make_inputs_on_device(jax.random.key(seed))
    layout = cfg.modality_layout
    mask = guided_mask(1, t, h, w, layout)

    @jax.jit
    def forward(state, x, cond, text, clip):
        dit = nnx.merge(graphdef, state)
        return dit(dit_input(x.astype(ct), mask.astype(ct), cond), jnp.full((1,), 500.0, jnp.float32),
                   text[:1], clip)

    schedule = make_schedule("unipc", steps, 3.0)
    init_fn, step_fn = solver_fns("unipc")
    table = jnp.asarray(schedule.table)
    timesteps = jnp.asarray(schedule.timesteps, jnp.float32)

    @jax.jit
    def guided_step(state, solver_state, i, cond, text, clip):
        dit = nnx.merge(graphdef, state)
        x = dit_input(solver_state.x.astype(ct), mask.astype(ct), cond)
        v = dit(jnp.concatenate([x, x]), jnp.full((2,), timesteps[i], jnp.float32), text,
                jnp.concatenate([clip, clip]))
        v_cond, v_uncond = jnp.split(v.astype(jnp.float32), 2)
        return step_fn(solver_state, classifier_free_guidance(v_cond, v_uncond, guidance), table[i])

    out: dict[str, Any] = {"device_kind": dev.device_kind, "platform": dev.platform, "params": n_params,
                           "param_dtype": cfg.param_dtype, "compute_dtype": cfg.compute_dtype,
                           "attention": cfg.attention, "attention_chunk_size": cfg.attention_chunk_size,
                           "weights_init_s": init_s}
    log("[gpu] forward (batch 1): compiling and timing")
    out["forward"] = timed(lambda: forward(state, inp["x"], inp["cond"], inp["text"], inp["clip"])
                           .block_until_ready(), warmup=warmup, repeats=repeats)
    out["peak_bytes_after_forward"] = _peak_bytes(dev)  # weights + the batch-1 forward (peaks are cumulative)
    solver = jax.jit(init_fn)(inp["x"])
    holder = {"s": solver}

    def one_step():
        holder["s"] = guided_step(state, holder["s"], jnp.int32(0), inp["cond"], inp["text"], inp["clip"])
        jax.block_until_ready(holder["s"])

    log("[gpu] guided step (batch 2 + CFG + UniPC): compiling and timing")
    try:
        out["guided_step"] = timed(one_step, warmup=warmup, repeats=repeats)
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        out["guided_step"] = f"unavailable: out of memory at batch 2 ({str(e).splitlines()[0][:200]})"
    if isinstance(out["guided_step"], dict):
        out["guided_mode"] = "batched: one batch-2 forward per step"
        out["sampling_extrapolated_s"] = steps * out["guided_step"]["median_s"]
    else:
        out["guided_mode"] = "estimate: two batch-1 forwards per step (batch 2 did not fit)"
        out["sampling_extrapolated_s"] = steps * 2 * out["forward"]["median_s"]
    if measure_steps and isinstance(out["guided_step"], dict):
        log(f"[gpu] measuring {steps} guided steps end to end")
        s = jax.jit(init_fn)(inp["x"])
        t0 = time.perf_counter()
        for i in range(steps):
            s = guided_step(state, s, jnp.int32(i), inp["cond"], inp["text"], inp["clip"])
        jax.block_until_ready(s)
        out["sampling_measured_s"] = time.perf_counter() - t0
        if not bool(jnp.isfinite(s.x).all()):
            raise FloatingPointError("sampling with random weights produced non-finite latents")
    out["peak_bytes"] = _peak_bytes(dev)  # ... and the guided (batch-2) steps
    return out


def _peak_bytes(dev) -> int | None:
    """``peak_bytes_in_use`` of the device allocator since the process started (None where the backend keeps no
    statistics, e.g. CPU)."""
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def diffusers_gpu_forward(cfg, latent: tuple[int, int, int], *, repeats: int, warmup: int, device: str,
                          seed: int = 0) -> dict[str, Any]:
    """diffusers ``WanTransformer3DModel`` (plain architecture: the 4DNeX RoPE/domain changes are free) with
    random weights initialised in place on ``device`` (meta-device construction, no host copy), compute dtype of
    ``cfg``; median batch-1 forward time and peak memory (``torch.cuda.max_memory_allocated`` on CUDA)."""
    torch = _torch()
    from diffusers import WanTransformer3DModel

    dtype = getattr(torch, cfg.compute_dtype)
    kwargs = {k: v for k, v in cfg.to_diffusers_config().items() if not k.startswith("_")}
    with torch.device("meta"):  # no memory anywhere until to_empty, which allocates on the device directly
        model = WanTransformer3DModel(**kwargs)
    model = model.to(dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():  # as from_pretrained(torch_dtype=...) keeps them
        if any(k in name.split(".") for k in keep):
            module.float()
    model = model.to_empty(device=device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    # The RoPE tables (the only buffers, non-persistent) are empty after to_empty: rebuild them (fp32, as diffusers).
    model.rope = type(model.rope)(cfg.head_dim, cfg.patch_size, cfg.rope_max_seq_len).to(device)
    t, h, w = latent
    fused_w = w if cfg.modality_layout == "none" else 2 * w
    pt, ph, pw = cfg.patch_size
    x = torch.randn(1, cfg.in_channels, t, h, fused_w, device=device, generator=gen).to(dtype)
    text = torch.randn(1, TEXT_LEN, cfg.text_dim, device=device, generator=gen).to(dtype)
    clip = torch.randn(1, IMAGE_TOKENS, cfg.image_dim, device=device, generator=gen).to(dtype)
    ts = torch.full((1,), 500.0, device=device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def call():
        with torch.inference_mode():
            model(hidden_states=x, timestep=ts, encoder_hidden_states=text, encoder_hidden_states_image=clip,
                  return_dict=False)
        if cuda:
            torch.cuda.synchronize()

    out = {"device": torch.cuda.get_device_name() if cuda else device, "torch": torch.__version__,
           "dtype": cfg.compute_dtype, "tokens": (t // pt) * (h // ph) * (fused_w // pw)}
    out["forward"] = timed(call, warmup=warmup, repeats=repeats)
    out["peak_bytes"] = int(torch.cuda.max_memory_allocated()) if cuda else None
    return out


def diffusers_subprocess(args, cfg_args: list[str]) -> dict[str, Any]:
    """Runs :func:`diffusers_gpu_forward` in a child process (alone on the GPU, before JAX takes its memory) and
    returns its JSON, or ``{'status': 'unavailable: <reason>'}``."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fourdnex_bench_") as d:
        path = Path(d) / "diffusers.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "gpu-diffusers", "--json-out", str(path),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--device", args.torch_device, *cfg_args]
        env = dict(os.environ, JAX_PLATFORMS="cpu")  # the child never initialises JAX on the GPU
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.diffusers_timeout, env=env)
        if res.returncode != 0 or not path.exists():
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1][:300]
            return {"status": f"unavailable: child exited {res.returncode}: {tail}"}
        return json.loads(path.read_text())


def _gpu_common(args):
    from fourdnex_jax.config import load_config_file

    config = load_config_file(args.config)
    s = config.smoke
    latent = tuple(args.latent) if args.latent else (s.latent_frames, s.latent_height, s.latent_width)
    return config, latent, gpu_model_config(config, args.attention, args.chunk)


def gpu_diffusers_main(args) -> None:
    """Child entry point of :func:`diffusers_subprocess`: writes the diffusers timing JSON (or its failure)."""
    from fourdnex_jax.io_utils import atomic_save_json

    try:
        import diffusers
        import torch
    except ImportError as e:
        atomic_save_json(args.json_out, {"status": f"unavailable: {e}"})
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        atomic_save_json(args.json_out, {"status": "unavailable: torch.cuda.is_available() is False"})
        return
    _, latent, cfg = _gpu_common(args)
    out = diffusers_gpu_forward(cfg, latent, repeats=args.repeats, warmup=args.warmup, device=args.device)
    out["status"] = "ok"
    out["diffusers"] = diffusers.__version__
    atomic_save_json(args.json_out, out)


def gpu_report(cfg, latent, jax_part: dict, torch_part: dict | None, *, steps: int, peak_tflops: float | None
               ) -> dict[str, Any]:
    """Adds FLOPs, MFU, the sampling estimate and the comparison with diffusers."""
    from fourdnex_jax.utils import flops

    t, h, w = latent
    fused = (t, h, w if cfg.modality_layout == "none" else 2 * w)
    grid = flops.token_grid(cfg, fused)
    fl = flops.summary(cfg, grid, batch=1, text_len=TEXT_LEN, image_tokens=IMAGE_TOKENS)
    fwd_s = jax_part["forward"]["median_s"]
    rep = {"tokens": fl["tokens"], "flops": fl, "forward_s": fwd_s,
           "forward_tflops_per_s": fl["forward"] / fwd_s / 1e12, "peak_tflops": peak_tflops,
           "mfu": (fl["forward"] / fwd_s / 1e12 / peak_tflops) if peak_tflops else None,
           "guided_step_mfu": ((2 * fl["forward"]) / jax_part["guided_step"]["median_s"] / 1e12 / peak_tflops
                               if peak_tflops and isinstance(jax_part["guided_step"], dict) else None),
           "steps": steps, "jax": jax_part}
    if torch_part is not None:
        rep["diffusers"] = torch_part
        if torch_part.get("status") == "ok":
            rep["speedup_vs_diffusers"] = torch_part["forward"]["median_s"] / fwd_s
    return rep


def gpu_main(args) -> dict:
    """The full 14B architecture (default config) with random bf16 weights at the 4DNeX shape (per modality 13 x
    60 x 90 latent, fused 13 x 60 x 180: 35,100 tokens): batch-1 forward time, MFU = analytic matmul FLOPs / time /
    peak (H100/H200 dense bf16 989.4 TFLOP/s), peak device memory, 50 guided steps extrapolated from one (and
    measured with ``--measure-steps``), and diffusers' forward on the same device (a child process, run first).
    Inference form: LoRA fused (rank 0), no remat; attention as the config (``--attention`` to change).
    ``--allow-cpu`` runs the same code where no GPU is present (use a small ``--config``/``--latent``)."""
    import jax

    config, latent, cfg = _gpu_common(args)
    torch_part = None
    if args.diffusers:  # first: JAX's client preallocates most of the GPU memory once its backend starts
        cfg_args = ["--config", args.config, *(["--latent", *map(str, args.latent)] if args.latent else []),
                    *(["--attention", args.attention] if args.attention else []),
                    *(["--chunk", str(args.chunk)] if args.chunk else [])]
        print("[gpu] diffusers forward in a child process", file=sys.stderr, flush=True)
        torch_part = diffusers_subprocess(args, cfg_args)
    if jax.default_backend() == "cpu" and not args.allow_cpu:
        raise SystemExit("gpu: JAX sees no accelerator (backend 'cpu'); pass --allow-cpu to run the same code on CPU "
                         "(with a small --config and --latent)")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    jax_part = jax_gpu_forward(cfg, latent, repeats=args.repeats, warmup=args.warmup, steps=args.steps,
                               guidance=args.guidance, measure_steps=args.measure_steps, log=log)
    peak = peak_tflops_for(jax_part["device_kind"], args.peak_tflops)
    rep = gpu_report(cfg, latent, jax_part, torch_part, steps=args.steps, peak_tflops=peak)
    report = {"kind": "gpu", "command": sys.argv, "host": host_info(), "versions": versions(),
              "config": str(args.config), "latent_per_modality": list(latent),
              "targets": {"mfu_min": 0.55, "speedup_vs_diffusers_min": 1.2, "sampling_50_guided_max_s": 330.0},
              **rep}
    print_gpu_table(report)
    write_json(args.out, report)
    mfu = f"{100 * rep['mfu']:.1f}%" if rep["mfu"] is not None else "n/a (no peak for this device)"
    sp = rep.get("speedup_vs_diffusers")
    print(f"summary: {jax_part['device_kind']}: forward {rep['forward_s']:.3f}s for {rep['tokens']} tokens, MFU {mfu}, "
          f"{args.steps} guided steps ~{rep['jax']['sampling_extrapolated_s']:.1f}s, vs diffusers "
          f"{f'{sp:.2f}x' if sp else (torch_part or {}).get('status', 'not run')}")
    return report


def print_gpu_table(r: dict) -> None:
    j = r["jax"]
    d = r.get("diffusers") or {}
    ok = d.get("status") == "ok"
    gib = lambda b: None if b is None else f"{b / 2**30:.1f}"  # noqa: E731
    print_table(["", "forward s", "TFLOP/s", "MFU", "peak GiB (fwd)", f"{r['steps']} guided steps s"],
                [["JAX", f"{r['forward_s']:.3f}", f"{r['forward_tflops_per_s']:.1f}",
                  f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else None, gib(j["peak_bytes_after_forward"]),
                  f"{j['sampling_extrapolated_s']:.1f} (est)" + (f", {j['sampling_measured_s']:.1f} (measured)"
                                                                if "sampling_measured_s" in j else "")],
                 ["diffusers", f"{d['forward']['median_s']:.3f}" if ok else d.get("status", "not run"),
                  f"{r['flops']['forward'] / d['forward']['median_s'] / 1e12:.1f}" if ok else None,
                  f"{100 * r['flops']['forward'] / d['forward']['median_s'] / 1e12 / r['peak_tflops']:.1f}%"
                  if ok and r["peak_tflops"] else None, gib(d.get("peak_bytes")) if ok else None, None]])


# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command")

    def common(p, default_repeats: int):
        p.add_argument("--repeats", type=int, default=default_repeats, help="timed calls (median reported)")
        p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first (compiling) one")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--out", default=None, help="JSON report path (written atomically)")

    p = sub.add_parser("cpu", help="JAX vs diffusers forward and train step on CPU (default)")
    common(p, 5)
    p.add_argument("--sizes", default="tiny,small,medium", help=f"comma-separated subset of {sorted(SIZES)}")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores JAX uses)")
    p.add_argument("--no-torch-compile", dest="torch_compile", action="store_false")
    p.add_argument("--no-train", action="store_true", help="forward only")

    p = sub.add_parser("compile", help="compile time of the scanned model vs depth")
    common(p, 3)
    p.add_argument("--size", default="small", choices=sorted(SIZES), help="widths and input grid")
    p.add_argument("--layers", type=int, nargs="+", default=[4, 40])
    p.add_argument("--latent", type=int, nargs=3, default=None, help="per-modality latent T H W")
    p.add_argument("--what", default="both", choices=["forward", "train_step", "both"])

    def gpu_args(p):
        p.add_argument("--config", default=str(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
        p.add_argument("--latent", type=int, nargs=3, default=None,
                       help="per-modality latent T H W (default: the config's smoke shape, 13 60 90)")
        p.add_argument("--attention", default=None, choices=["xla", "chunked"], help="override the config's")
        p.add_argument("--chunk", type=int, default=0, help="attention chunk size override")

    p = sub.add_parser("gpu", help="the 14B DiT forward on a GPU (MFU, memory, sampling time, diffusers)")
    common(p, 3)
    gpu_args(p)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--measure-steps", action="store_true", help="also run the steps end to end")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (default: by device kind)")
    p.add_argument("--allow-cpu", action="store_true", help="run the same code without an accelerator")
    p.add_argument("--no-diffusers", dest="diffusers", action="store_false")
    p.add_argument("--torch-device", default="cuda", help="device of the diffusers child (cpu with --allow-cpu)")
    p.add_argument("--diffusers-timeout", type=int, default=1800)

    p = sub.add_parser("gpu-diffusers", help=argparse.SUPPRESS)
    gpu_args(p)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda")
    p.add_argument("--json-out", required=True)

    args = ap.parse_args(argv)
    if args.command is None:
        args = ap.parse_args(["cpu", *(argv if argv is not None else sys.argv[1:])])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command in ("cpu", "compile"):
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if args.command == "cpu":
        cpu_main(args)
    elif args.command == "compile":
        compile_main(args)
    elif args.command == "gpu":
        gpu_main(args)
    else:
        gpu_diffusers_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
