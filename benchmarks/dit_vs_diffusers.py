"""DiT forward and train step, JAX (jit) against diffusers (PyTorch) on CPU, with an agreement check first.

    taskset -c 0 python -m benchmarks.dit_vs_diffusers [--sizes tiny,small,medium] [--repeats 5]
        [--xla-flags ...] [--out out/benchmark/cpu.json]

For each size (:data:`benchmarks.common.SIZES`: tiny, small, medium), one model with random weights is built in
JAX and copied through the two-way weight tables (:mod:`fourdnex_jax.models.transformer.mapping`) into diffusers'
``WanTransformer3DModel`` with a peft LoRA on the same targets and the 4DNeX adaptations
(:mod:`fourdnex_jax.testing.torch_reference`: domain embeddings after the patch embedding, RoPE shared by the RGB
and XYZ halves of the width-fused latent). Adapter values are random (not the zero LoRA-B of a fresh adapter), so
the LoRA path is part of the comparison; it is unmerged on both sides, as in training. Both run fp32 on the CPU;
torch gets as many threads as the cores this process may use, which is what XLA's CPU client uses (pin both with
``taskset -c ...``). Before timing, the script checks that both frameworks agree on identical inputs: forward
output (relative L2 <= ``FORWARD_TOL``) and the loss and adapter gradients of a fixed-input objective
(<= ``GRAD_TOL``); a mismatch raises :class:`~benchmarks.common.AgreementError` and nothing is reported. Then it
times (median of ``--repeats`` calls after the first (compiling) call and ``--warmup`` more; the frameworks' calls
interleaved, so that load changes hit both alike; wall time, and process CPU time too):

  * forward: JAX ``jax.jit`` of the merged model vs diffusers eager (``torch.inference_mode``) and, when it
    works here, ``torch.compile`` (its failure is recorded as ``unavailable: <reason>``);
  * train step: the trainer's own jitted step (:mod:`fourdnex_jax.training.step`: flow-matching inputs, LoRA +
    domain-embedding gradients, clipping, AdamW, NaN guard, donated state) vs the same step in PyTorch (the same
    objective with its own noise draws, ``loss.backward()``, ``clip_grad_norm_``, ``torch.optim.AdamW`` with the
    config's betas, eps and weight decay; constant LR).

Ratios are JAX time / PyTorch time (target <= 0.7, lower is better). Prints a compact table, ends with a one-line
summary and writes ``--out`` (JSON, atomic) with the date and the load average (1/5/15 min) at the start and end
of every size.

Load. On a machine whose load exceeds its cores (a shared VM), PyTorch eager with more than one thread is slowed far
more than XLA: every eager op opens an OpenMP parallel region whose barrier waits for a descheduled thread, and
the spin-wait counts as process CPU time too (measured here, load ~7 on 2 cores, tiny forward: torch eager 250 ms
with 2 threads, 9.6 ms with 1; JAX 7-11 ms either way). Such figures say how each framework copes with the load,
not how fast it is; ``nice`` makes it worse. ``taskset -c 0`` gives both frameworks one core and one thread (XLA's
CPU client and ``--threads`` both follow the affinity), so they share that core alike; the summary warns when
the load exceeds the cores in use.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.common import (
    IMAGE_TOKENS,
    SIZES,
    TEXT_LEN,
    AgreementError,
    JaxSide,
    Size,
    add_common_args,
    apply_env,
    build_jax,
    check_agreement,
    cpu_threads,
    host_info,
    jax_fixed_loss_grad_fn,
    jax_forward_fn,
    jax_train_step_fn,
    load_and_date,
    load_size_config,
    make_inputs,
    ms,
    paired_ratio,
    print_table,
    timed_interleaved,
    versions,
    write_json,
)
from fourdnex_jax.testing.numerics import rel_l2

FORWARD_TOL = 1e-4  # relative L2 of the fp32 forward outputs (JAX vs diffusers)
GRAD_TOL = 1e-3  # relative L2 of the adapter gradients (all tensors together) and of the fixed-input loss
RATIO_TARGET = 0.7  # JAX / PyTorch step time


# ---------------------------------------------------------------------------------------------------------------
# PyTorch side (torch, diffusers and peft are imported in the functions only: the module imports without them)
def build_torch(side: JaxSide, device: str = "cpu"):
    """diffusers ``WanTransformer3DModel`` (+ peft LoRA + 4DNeX changes) holding exactly the JAX weights, fp32
    (:func:`fourdnex_jax.testing.torch_reference.from_jax`). Only the adapter (LoRA, domain embeddings) requires
    grad. An incomplete weight copy raises :class:`AgreementError`."""
    from fourdnex_jax.testing import torch_reference as ref
    from fourdnex_jax.utils.tree import flatten

    frozen = {p: np.asarray(a) for p, a in flatten(side.frozen).items()}
    trainable = {p: np.asarray(a) for p, a in flatten(side.state["trainable"]).items()}
    try:
        return ref.from_jax(side.cfg, frozen, trainable, device=device)
    except ValueError as e:
        raise AgreementError(str(e)) from e


def torch_forward(model, ti: dict):
    """The DiT call on the torch inputs of :func:`torch_inputs`: velocity (B, C_out, T, H, W)."""
    from fourdnex_jax.testing import torch_reference as ref

    return ref.call(model, ti["latents"], ti["timestep"], ti["text_embeds"], ti["image_embeds"])


def torch_inputs(inputs: dict, device: str = "cpu", dtype: str = "float32") -> dict:
    """The numpy NTHWC inputs as torch NCTHW tensors (train batch without the leading accumulation axis)."""
    import torch

    dt = getattr(torch, dtype)
    ncthw = lambda a: torch.from_numpy(np.ascontiguousarray(np.moveaxis(a, -1, 1))).to(device, dt)
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device, dt)
    out = {"latents": ncthw(inputs["latents"]), "timestep": torch.from_numpy(inputs["timestep"]).to(device),
           "text_embeds": tensor(inputs["text_embeds"]), "image_embeds": tensor(inputs["image_embeds"]),
           "target": ncthw(inputs["target"])}
    if "train" in inputs:
        out["train"] = {k: (ncthw(v[0]) if "latent" in k else tensor(v[0])) for k, v in inputs["train"].items()}
    return out


def torch_adapter_grads(model, ti: dict) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and adapter gradients (peft key names without the adapter name) on fixed inputs."""
    import torch

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
    import torch

    from fourdnex_jax.training.optimizer import resolve

    o = resolve(side.config.optim)
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
    import torch
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


def agreement(side: JaxSide, model, inputs: dict, ti: dict) -> dict[str, float]:
    """Forward output, fixed-input loss and adapter gradients of JAX vs PyTorch; raises :class:`AgreementError`
    beyond ``FORWARD_TOL`` / ``GRAD_TOL``."""
    import jax.numpy as jnp
    import torch

    from fourdnex_jax.models.transformer import mapping
    from fourdnex_jax.testing import torch_reference as ref
    from fourdnex_jax.utils.tree import flatten

    args = [jnp.asarray(inputs[k]) for k in ("latents", "timestep", "text_embeds", "image_embeds")]
    ours = np.asarray(jax_forward_fn(side)(side.state["trainable"], side.frozen, *args))
    with torch.inference_mode():
        theirs = ref.from_ncthw(torch_forward(model, ti))
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
    import torch

    from fourdnex_jax.models.transformer import flops
    from fourdnex_jax.testing import torch_reference as ref

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
    row: dict[str, Any] = {"size": size.name, "start": load_and_date(), "config": size.config,
                           "model_overrides": dict(size.model),
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
                eager = ref.from_ncthw(torch_forward(model, ti))
            row["agreement"]["compiled_vs_eager_rel_l2"] = check_agreement(
                "torch.compile vs eager", rel_l2(ref.from_ncthw(out), eager), FORWARD_TOL)
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
    row["end"] = load_and_date()
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
        return ms(c["median_s"]) if isinstance(c, dict) else "n/a"

    f2 = lambda v: None if v is None else f"{v:.2f}"
    print_table(
        ["size", "tokens", "GFLOP fwd/step", "JAX fwd ms", "torch ms", "compiled ms", "fwd ratio", "(cpu)",
         "JAX step ms", "torch step ms", "step ratio", "(cpu)", "err fwd/grad"],
        [[r["size"], r["tokens"], f"{r['flops']['forward'] / 1e9:.2f}/{r['flops']['train_adapter'] / 1e9:.2f}",
          ms(r["jax_forward"]["median_s"]), ms(r["torch_forward"]["median_s"]), comp(r),
          f2(r["ratio_forward_vs_best_torch"]), f2(r["ratio_forward_cpu_time"]),
          ms(r.get("jax_train_step", {}).get("median_s")), ms(r.get("torch_train_step", {}).get("median_s")),
          f2(r.get("ratio_train_step")), f2(r.get("ratio_train_step_cpu_time")),
          f"{r['agreement']['forward_rel_l2']:.0e}/{r['agreement']['grad_rel_l2']:.0e}"] for r in rows])
    print(f"ratio = JAX / PyTorch median wall time (forward: vs the faster of eager and torch.compile), target <= "
          f"{RATIO_TARGET}; (cpu) = ratio of process CPU times (forward: vs eager)")


def cpu_main(args) -> dict:
    import jax
    import torch

    threads = args.threads or cpu_threads()
    start = load_and_date()
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
    report = {"kind": "cpu", "command": sys.argv, "start": start, "host": host_info(), "versions": versions(),
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
    loads = [r[k]["loadavg"][0] for r in rows for k in ("start", "end") if r[k]["loadavg"] is not None]
    if loads and max(loads) > threads:
        print(f"warning: load average up to {max(loads):.1f} on {threads} core(s) in use: the threads waited for "
              "other processes, so these ratios are noisy (PyTorch's multi-threaded eager ops most of all); "
              "compare the (cpu) ratios" + (", pin with taskset -c 0" if threads > 1 else "")
              + ", or re-run on a quiet machine")
    return report


# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, 5)
    ap.add_argument("--sizes", default="tiny,small,medium", help=f"comma-separated subset of {sorted(SIZES)}")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: the cores JAX uses)")
    ap.add_argument("--no-torch-compile", dest="torch_compile", action="store_false")
    ap.add_argument("--no-train", action="store_true", help="forward only")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    apply_env(args, cpu=True)
    cpu_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
