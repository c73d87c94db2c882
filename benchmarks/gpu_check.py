"""The GPU check (issue 19): speed, memory and agreement of the 14B on one accelerator, in one short prepared run.

    bash benchmarks/gpu_check.sh [--budget 450]          (on the device machine: carried wheels, env, budget)
    python -m benchmarks.gpu_check [--budget 450] [--stages env,attention,...] [--out out/benchmark/gpu_check.json]
    python -m benchmarks.gpu_check --allow-cpu [--out ...]   (the same code path at small shapes, on the CPU)

Stages, in this order (:data:`benchmarks.dit_gpu.STAGES`; the issue's items in brackets): ``env`` [1] device,
memory, versions, a bf16 matmul's TFLOP/s and an elementwise pass's GB/s; ``attention`` [2] ``cudnn`` against the
reference on random bf16 q/k/v (40 heads x 128, 35,100 tokens); ``dit`` [3] the 14B (random bf16 weights, width
layout) guided denoising step at CFG batch 2: compile time, median step, MFU, peak memory, 50 steps extrapolated;
``stream_24gb`` / ``stream_16gb`` [issue 25] the same step with the DiT's block weights streamed from pinned host
memory, in a process whose allocator is capped at a 24 GB / 16 GB card (``XLA_PYTHON_CLIENT_MEM_FRACTION`` = cap /
this card's memory): peak memory and step time against the resident ``dit`` stage's of the same run;
``vae`` [3] the decode of the fused 13 x 60 x 180 latent; ``diffusers`` [4] diffusers' ``WanTransformer3DModel``
batch-2 forward (SDPA) at the same shape; ``train`` [5] the LoRA train step with remat ``full``.

Each stage runs in a child process of its own (``--stage NAME``), so it has the device to itself and its peak
memory is its own, under a time limit: the smaller of its budget (:data:`BUDGETS`) and what is left of
``--budget``. A stage whose minimum no longer fits is skipped with the reason; a child that fails or overruns is
recorded as such, with whatever it had measured, and the next stage runs. The child records each result as soon
as it has it; the report (``--out``, JSON, atomic) is rewritten after every stage, so a run cut short still
returns what it measured. The run ends with a table and a one-line summary. Nothing here imports the data stack
(grain, tensorflow-datasets, array_record): every stage records which of those it found loaded
(``data_stack_modules``, expected empty).

``--allow-cpu``: :data:`benchmarks.dit_gpu.CPU_SHAPES` (tiny DiT and VAE, small attention) and a CPU backend
accepted; where cuDNN is unavailable the attention stage times ``xla`` instead and says so.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, host_info, print_table
from benchmarks.dit_gpu import CPU_SHAPES, GPU_SHAPES, STAGES, STREAM_CAPS_GIB, stream_cap_env

#: Stage -> (budget s, minimum s) on the GPU: a stage starts only with at least its minimum left and runs at most
#: its budget. The 14B figures they are sized from: ~1.9 PFLOP per DiT sample forward, so ~6 s per guided step at
#: 60% of an H100/H200's bf16 peak; tens of seconds to compile; the train step ~2.5x a forward plus recomputation.
#: A streamed stage: 30 GiB of random blocks drawn into host memory, a compile and three steps (~100 s).
BUDGETS = {"env": (45, 15), "attention": (75, 30), "dit": (200, 100), "stream_24gb": (150, 80),
           "stream_16gb": (150, 80), "vae": (90, 40), "diffusers": (120, 60), "train": (200, 100)}
#: The same on the CPU at small shapes (a loaded 2-core machine compiles for a minute or more per stage).
CPU_BUDGETS = {name: (300, 5) for name in BUDGETS}
DEFAULT_BUDGET_S = 520.0
CPU_BUDGET_S = 1500.0
#: Modules the check must never import (absent on the GPU machine).
DATA_STACK = ("grain", "tensorflow_datasets", "array_record", "tensorflow")
TARGETS = {"mfu_min": 0.55, "sampling_50_guided_max_s": 330.0, "speedup_vs_diffusers_min": 1.2}
SECONDS_MARGIN = 0.1  # the child stops starting timed calls this fraction of its limit before being killed


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as the strings 'nan' / 'inf' / '-inf' (strict JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def save(path: str | os.PathLike, obj: dict) -> None:
    from fourdnex_jax.media.io import atomic_save_json

    atomic_save_json(path, json_safe(obj))


# ---------------------------------------------------------------------------------------------------------------
# child: one stage
def run_stage(args) -> int:
    """Child entry point: runs ``args.stage`` and records into ``args.stage_out`` after every result; an exception
    is recorded (``error``, ``traceback``) and exits 1."""
    results: dict[str, Any] = {}

    def rec(**kv):
        results.update(kv)
        save(args.stage_out, results)

    fn = STAGES[args.stage][0]
    shapes = CPU_SHAPES if args.allow_cpu else GPU_SHAPES
    rc = 0
    try:
        if args.stage == "diffusers":
            import torch

            if not (args.allow_cpu or torch.cuda.is_available()):
                raise RuntimeError("torch.cuda.is_available() is False; pass --allow-cpu to run on the CPU")
        else:
            import jax

            if jax.default_backend() == "cpu" and not args.allow_cpu:
                raise RuntimeError("JAX sees no accelerator (backend 'cpu'); pass --allow-cpu to run the same code "
                                   "at small shapes on the CPU")
        fn(shapes, rec, args.deadline, args.attention)
    except Exception as e:  # recorded for the report; the parent goes on with the next stage
        results["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:400] if str(e).strip() else ''}"
        results["traceback"] = traceback.format_exc().strip().splitlines()[-12:]
        print(results["error"], file=sys.stderr, flush=True)
        rc = 1
    results["data_stack_modules"] = sorted(m for m in DATA_STACK if m in sys.modules)
    save(args.stage_out, results)
    return rc


def probe() -> int:
    """Whether this Python's jax and flax run the model code: the tiny DiT built abstractly and its batch-2
    forward traced (``jax.eval_shape``: no device memory, seconds). ``gpu_check.sh`` falls back to the carried
    flax when this fails with the machine's own."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from benchmarks.common import IMAGE_TOKENS, TEXT_LEN
    from benchmarks.dit_gpu import stage_model_config
    from fourdnex_jax.models.transformer import WanTransformer3D

    _, cfg = stage_model_config(CPU_SHAPES, "auto")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    t, h, w = CPU_SHAPES.latent
    f32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)
    out = jax.eval_shape(lambda s, *a: nnx.merge(graphdef, s)(*a), state, f32(2, t, h, 2 * w, cfg.in_channels),
                         f32(2), f32(2, TEXT_LEN, cfg.text_dim), f32(2, IMAGE_TOKENS, cfg.image_dim))
    import flax

    print(f"probe ok: jax {jax.__version__}, flax {flax.__version__}, DiT output {tuple(out.shape)}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# parent: the stages in order, under budgets
def run_child(cmd: list[str], name: str, limit: float, env: dict[str, str] | None = None
              ) -> tuple[str, float, list[str]]:
    """Runs ``cmd`` (in the repository root) for at most ``limit`` seconds, echoing its output prefixed with
    ``[name]``, killing its process group when over; returns (status, wall seconds, its last output lines)."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    tail: collections.deque[str] = collections.deque(maxlen=20)

    def pump():
        for line in proc.stdout:
            tail.append(line.rstrip())
            print(f"  [{name}] {line.rstrip()}", file=sys.stderr, flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=limit)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own process group (start_new_session)
        proc.wait()
        status = f"timed out after {limit:.0f} s (partial results kept)"
    reader.join(timeout=5)
    return status, time.time() - start, list(tail)


def card_memory_bytes() -> int | None:
    """The first GPU's memory (``nvidia-smi``; None without one): what the streamed stages' caps are fractions of."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout.split()[0]) * 2 ** 20 if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def run_all(args) -> dict:
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; choose from {list(STAGES)} (comma-separated)")
    budgets = CPU_BUDGETS if args.allow_cpu else BUDGETS
    total = args.budget or (CPU_BUDGET_S if args.allow_cpu else DEFAULT_BUDGET_S)
    start = time.time()
    shapes = CPU_SHAPES if args.allow_cpu else GPU_SHAPES
    report: dict[str, Any] = {"kind": "gpu_check", "mode": "cpu (--allow-cpu, small shapes)" if args.allow_cpu
                              else "gpu", "command": sys.argv, "host": host_info(), "budget_s": total,
                              "attention": args.attention, "shapes": dataclasses.asdict(shapes), "targets": TARGETS,
                              "stage_order": names, "card_memory_bytes": None if args.allow_cpu
                              else card_memory_bytes(), "stream_caps_gib": STREAM_CAPS_GIB, "stages": {}}
    with tempfile.TemporaryDirectory(prefix="fourdnex_gpu_check_") as tmp:
        for name in names:
            budget, minimum = budgets[name]
            left = total - (time.time() - start)
            entry: dict[str, Any] = {"issue_item": STAGES[name][1], "what": STAGES[name][2]}
            if left < minimum:
                entry.update(status="skipped", reason=f"budget gone: {max(left, 0):.0f} s left of --budget "
                             f"{total:.0f}, the stage needs at least {minimum} s")
            elif name != "env" and report["stages"].get("env", {}).get("status") == "no accelerator":
                entry.update(status="skipped", reason="no accelerator (see env); pass --allow-cpu for the CPU run")
            else:
                limit = min(budget, left)
                print(f"[gpu_check] {name}: {STAGES[name][2]} (limit {limit:.0f} s)", file=sys.stderr, flush=True)
                path = Path(tmp) / f"{name}.json"
                cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--stage", name, "--stage-out", str(path),
                       "--deadline", f"{time.time() + limit * (1 - SECONDS_MARGIN):.3f}", "--attention",
                       args.attention, *(["--allow-cpu"] if args.allow_cpu else [])]
                env = dict(os.environ, PYTHONUNBUFFERED="1")
                if name == "diffusers":  # its config comes through JAX-importing modules: keep JAX off the GPU
                    env["JAX_PLATFORMS"] = "cpu"
                env.update(stream_cap_env(name, report["card_memory_bytes"]))  # a smaller card's memory
                if name in STREAM_CAPS_GIB:
                    entry["env"] = stream_cap_env(name, report["card_memory_bytes"])
                status, wall, tail = run_child(cmd, name, limit, env)
                results = json.loads(path.read_text()) if path.exists() else {}
                if "no accelerator" in str(results.get("error", "")):
                    status = "no accelerator"
                entry.update(status=status, wall_s=round(wall, 2), limit_s=round(limit, 1), results=results)
                if status != "ok" and not results.get("error"):
                    entry["output_tail"] = tail[-8:]
            report["stages"][name] = entry
            report["derived"] = derived(report["stages"])
            report["elapsed_s"] = round(time.time() - start, 2)
            save(args.out, report)
    report["end"] = host_info()
    save(args.out, report)
    print_report(report)
    print(f"wrote {args.out}", file=sys.stderr)
    return report


def _get(stages: dict, name: str, *keys: str) -> Any:
    node: Any = stages.get(name, {}).get("results", {})
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    return node


def derived(stages: dict) -> dict[str, Any]:
    """The headline figures across stages and the targets of the issue (None where a part is missing)."""
    step = _get(stages, "dit", "guided_step", "median_s")
    torch_fwd = _get(stages, "diffusers", "forward", "median_s")
    mfu = _get(stages, "dit", "mfu")
    sampling = _get(stages, "dit", "sampling_extrapolated_s")
    cand, ref = _get(stages, "attention", "candidate", "median_s"), _get(stages, "attention", "reference", "median_s")
    out = {"guided_step_s": step, "mfu": mfu, "sampling_50_guided_s": sampling,
           "diffusers_forward_batch2_s": torch_fwd,
           "jax_over_diffusers": step / torch_fwd if step and torch_fwd else None,
           "speedup_vs_diffusers": torch_fwd / step if step and torch_fwd else None,
           "attention_speedup_vs_reference": ref / cand if cand and ref else None}
    for name in STREAM_CAPS_GIB:  # streamed blocks under a smaller card's cap, against the resident step
        streamed = _get(stages, name, "guided_step", "median_s")
        out[name] = {"guided_step_s": streamed, "peak_bytes": _get(stages, name, "peak_bytes"),
                     "bytes_limit": _get(stages, name, "bytes_limit"),
                     "over_resident_step": streamed / step if streamed and step else None}
    out["ratio_note"] = ("JAX's guided step (batch-2 forward + CFG + UniPC update) against diffusers' batch-2 "
                         "forward alone: the JAX side carries the extra work")
    out["targets_met"] = {
        "mfu": None if mfu is None else mfu >= TARGETS["mfu_min"],
        "sampling_50_guided": None if sampling is None else sampling <= TARGETS["sampling_50_guided_max_s"],
        "speedup_vs_diffusers": (None if out["speedup_vs_diffusers"] is None
                                 else out["speedup_vs_diffusers"] >= TARGETS["speedup_vs_diffusers_min"])}
    return out


def _fmt(v: Any, spec: str = ".3g", unit: str = "") -> str:
    return "n/a" if v is None or isinstance(v, str) else f"{v:{spec}}{unit}"


def headline(name: str, r: dict) -> str | None:
    """One cell of the end table: the figures that stage is for."""
    gib = lambda b: _fmt(None if b is None else b / 2 ** 30, ".1f", " GiB")
    sec = lambda d, spec=".3f": _fmt((d or {}).get("median_s"), spec, " s")
    if name == "env":
        return (f"{r.get('device_kind')}: matmul {_fmt((r.get('matmul') or {}).get('tflops_per_s'))} TFLOP/s, "
                f"pass {_fmt((r.get('copy') or {}).get('gb_per_s'))} GB/s")
    if name == "attention":
        c, ref, err = r.get("candidate") or {}, r.get("reference") or {}, r.get("errors") or {}
        return (f"{r.get('implementation')} {sec(c, '.4f')} ({_fmt(c.get('tflops_per_s'))} TFLOP/s) vs "
                f"{r.get('reference_implementation')} {sec(ref, '.4f')}; rel. err "
                f"{_fmt(err.get('candidate_vs_fp32'), '.1e')} "
                f"(reference {_fmt(err.get('reference_vs_fp32'), '.1e')})")
    if name == "dit":
        comp = (r.get("guided_step_compile") or {}).get("compile_s")
        return (f"step {sec(r.get('guided_step'))}, MFU {_fmt(r.get('mfu'), '.1%')}, compile "
                f"{_fmt(comp, '.1f', ' s')}, peak {gib(r.get('peak_bytes'))}, {r.get('steps')} steps "
                f"~{_fmt(r.get('sampling_extrapolated_s'), '.1f', ' s')}")
    if name in STREAM_CAPS_GIB:
        ratio = (r.get("stream") or {}).get("copy_s_at_measured_rate")
        return (f"step {sec(r.get('guided_step'))}, peak {gib(r.get('peak_bytes'))} of {gib(r.get('bytes_limit'))}, "
                f"block copy {_fmt((r.get('block_copy') or {}).get('gb_per_s'), '.3g', ' GB/s')}, "
                f"copies {_fmt(ratio, '.2f', ' s')}/step")
    if name == "vae":
        return f"decode {sec(r.get('decode'), '.2f')}, peak {gib(r.get('peak_bytes'))}"
    if name == "diffusers":
        return f"batch-2 forward {sec(r.get('forward'))}, peak {gib(r.get('peak_bytes'))}"
    if name == "train":
        return f"step {sec(r.get('step'), '.2f')}, MFU {_fmt(r.get('mfu'), '.1%')}, peak {gib(r.get('peak_bytes'))}"
    return None


def print_report(report: dict) -> None:
    """The end table (one row per stage) and the one-line summary, on stdout."""
    rows = []
    for name in report["stage_order"]:
        e = report["stages"].get(name, {"status": "not reached"})
        r = e.get("results") or {}
        detail = e.get("reason") or r.get("error") or headline(name, r)
        rows.append([name, e.get("issue_item"), e["status"], _fmt(e.get("wall_s"), ".0f"), detail])
    print()
    print_table(["stage", "item", "status", "s", "result"], rows)
    d = report.get("derived", {})
    sp = d.get("speedup_vs_diffusers")
    print(f"summary: {report['mode']}, {report['elapsed_s']:.0f} s of {report['budget_s']:.0f}: guided step "
          f"{_fmt(d.get('guided_step_s'), '.3f', ' s')}, MFU {_fmt(d.get('mfu'), '.1%')} (target >= "
          f"{TARGETS['mfu_min']:.0%}), 50 steps + CFG {_fmt(d.get('sampling_50_guided_s'), '.0f', ' s')} (target <= "
          f"{TARGETS['sampling_50_guided_max_s']:.0f} s), vs diffusers {_fmt(sp, '.2f', 'x')} (target >= "
          f"{TARGETS['speedup_vs_diffusers_min']}x)")
    for name in STREAM_CAPS_GIB:
        st = d.get(name) or {}
        peak = st.get("peak_bytes")
        print(f"summary: {name}: streamed guided step {_fmt(st.get('guided_step_s'), '.3f', ' s')} "
              f"({_fmt(st.get('over_resident_step'), '.2f', 'x')} the resident step), peak "
              f"{_fmt(None if peak is None else peak / 2 ** 30, '.2f', ' GiB')}"
              f" under a {STREAM_CAPS_GIB[name]} GiB cap")


# ---------------------------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=0.0, help=f"total seconds for all stages (default "
                    f"{DEFAULT_BUDGET_S:.0f}; {CPU_BUDGET_S:.0f} with --allow-cpu)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, run in this order; of "
                    f"{list(STAGES)}")
    ap.add_argument("--attention", default="auto", help="the DiT's attention implementation (default 'auto': "
                    "cuDNN on a GPU in bf16; see fourdnex_jax.ops.attention)")
    ap.add_argument("--allow-cpu", action="store_true", help="small shapes; a CPU backend accepted")
    ap.add_argument("--out", default=str(ROOT / "out" / "benchmark" / "gpu_check.json"),
                    help="JSON report, rewritten atomically after every stage")
    ap.add_argument("--probe", action="store_true", help="only check that this jax/flax run the model code")
    ap.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)  # child: run one stage
    ap.add_argument("--stage-out", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        return probe()
    if args.stage:
        return run_stage(args)
    report = run_all(args)
    failed = [n for n, e in report["stages"].items() if e["status"] not in ("ok", "skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
