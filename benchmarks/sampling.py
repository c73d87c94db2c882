"""Sampling fast paths against the exact sampler: wall time per sample and the quality each one costs.

    python -m benchmarks.sampling [--checkpoint DIR] [--image IMG ...] [--variants unipc:10 unipc:20:cache2 ...]
        [--config configs/tiny.py] [--repeats 5] [--startup] [--out out/sampling_benchmark/report.json]
    python -m benchmarks.sampling --random-bundle out/sampling_benchmark/random_tiny ...   # no trained model
    python -m benchmarks.sampling --memory-only [--memory-config configs/wan21_i2v_14b_480p.py]

Reference: the config's solver and step count (configs/tiny.py: UniPC, 20 steps), no step cache, the checkpoint's
weights. A variant is ``SOLVER:STEPS[:cacheK][:int8]`` -- e.g. ``unipc:10`` (fewer steps), ``euler:20``,
``unipc:20:cache2`` (transformer blocks in full every 2nd step, :mod:`fourdnex_jax.sampling.step_cache`),
``unipc:20:int8`` (int8 weight-only DiT, :mod:`fourdnex_jax.models.quantize`); they combine. Default variants:
the reference, UniPC at N/2 and N/4 steps, Euler at N, cache intervals 2 and 3, int8, and int8 + cache2 at N/2.

Per variant and image (same seed and prompt as the reference; the prompt is ``IMG.txt`` next to the image when it
exists): seconds per sample (median of ``--repeats`` timed rounds that run every variant in a rotating order, after
one compiling run per variant whose extra time is reported as ``compile_s``; end to end and of the denoising loop
alone), full / cached DiT evaluations, and the quality cost: relative L2 ``||a - r|| / ||r||`` of the
decoded XYZ and of the decoded RGB (float, [-1, 1]) against the reference run. With a ground truth
(``IMG_gt.npz`` next to the image, or ``--gt``: ``depth`` (T, H, W) z-depth and ``valid`` (T, H, W)), the
first-frame depth AbsRel and delta<1.25 of the predicted z after a least-squares scale-and-shift fit
(:func:`fourdnex_jax.geometry.metrics.depth_metrics`, as ``fourdnex eval-quality`` reports them).

``--startup``: time to first sample of a fresh process (imports, model load, compilation, one sample) cold, with
JAX's persistent compilation cache (empty, then warm) and with serialized executables (empty, then warm).
``--memory-config``: the DiT parameter bytes of a config (default the 14B one) as configured and int8, abstract.
Prints a table; writes the JSON report atomically. Timings are of this machine: re-measure on the target.
"""

from __future__ import annotations

import time

_T_PROCESS = time.perf_counter()  # start of this module (time-to-first-sample of --startup-child counts from here)

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from fourdnex_jax.pipelines.inputs import caption_for_image
from fourdnex_jax.testing.numerics import rel_l2
from fourdnex_jax.testing.random_models import write_random_bundle

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUT = ROOT / "out" / "sampling_benchmark" / "report.json"
DEFAULT_IMAGE = ROOT / "examples" / "synth_heldout_000000.png"


# -- variants -----------------------------------------------------------------------------------------------------
def parse_variant(spec: str, base):
    """``SOLVER:STEPS[:cacheK][:int8]`` -> SampleSettings (``base`` with those changes)."""
    parts = spec.split(":")
    usage = (f"bad variant {spec!r}: use SOLVER:STEPS[:cacheK][:int8], e.g. unipc:10, euler:20, unipc:20:cache2, "
             "unipc:20:int8")
    if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1:
        raise ValueError(usage)
    changes = {"solver": parts[0], "num_steps": int(parts[1]), "step_cache_interval": 0, "weight_quant": "none"}
    for p in parts[2:]:
        if p == "int8":
            changes["weight_quant"] = "int8"
        elif p.startswith("cache") and p[5:].isdigit() and int(p[5:]) >= 1:
            changes["step_cache_interval"] = int(p[5:])
        else:
            raise ValueError(usage)
    return dataclasses.replace(base, **changes)


def default_variants(base) -> list[str]:
    n, solver = base.num_steps, base.solver
    ref = f"{solver}:{n}"
    out = [ref, f"unipc:{max(1, n // 2)}", f"unipc:{max(1, n // 4)}", f"euler:{n}", f"{ref}:cache2",
           f"{ref}:cache3", f"{ref}:int8", f"unipc:{max(1, n // 2)}:cache2:int8"]
    return list(dict.fromkeys(out))


def _gt_path(image: Path, given: str | None) -> Path | None:
    if given:
        return Path(given)
    cand = image.with_name(image.stem + "_gt.npz")
    return cand if cand.exists() else None


def _base_settings(args):
    """The reference settings: the bundle's sampling preset, then ``--config``'s sample section, then
    ``--num-steps`` replacing the step count."""
    from fourdnex_jax.config import load_config_file
    from fourdnex_jax.pipelines import bundle as bundle_lib

    overrides = {"num_steps": args.num_steps} if args.num_steps else {}
    return bundle_lib.resolve_settings(args.checkpoint, load_config_file(args.config).sample, **overrides)


def build_variant(bundle, settings, devices):
    """The pipeline of ``settings`` on ``bundle``'s models (int8: the pipeline quantises a copy of the DiT)."""
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D

    return ImageTo4D.from_bundle(bundle, settings, devices=devices)


def timed_run(pipe, images, prompts, seeds) -> tuple[list, dict[str, float]]:
    """One pipeline call: (results, seconds per sample: ``total`` end to end, ``sampling`` the denoising loop,
    ``encode``, ``decode``)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    results = pipe(images, prompts, seeds, progress=False, timings=timings)
    n = len(images)
    return results, {"total": (time.perf_counter() - t0) / n,
                     **{k: timings.get(f"{k}_s", 0.0) / n for k in ("sampling", "encode", "decode")}}


def benchmark(args) -> dict:
    import jax

    from fourdnex_jax.geometry.metrics import depth_metrics
    from fourdnex_jax.media.io import read_image
    from fourdnex_jax.pipelines import bundle as bundle_lib

    base = _base_settings(args)
    specs = args.variants or default_variants(base)
    ref_spec = f"{base.solver}:{base.num_steps}"
    if ref_spec in specs:
        specs.remove(ref_spec)
    specs = [ref_spec] + specs
    variants = {spec: parse_variant(spec, base) for spec in specs}
    image_paths = [Path(p) for p in args.image]
    images = [read_image(p) for p in image_paths]  # the pipeline resizes them (the preset's max_area)
    prompts = [caption_for_image(p) for p in image_paths]
    seeds = [base.seed + i for i in range(len(images))]
    t0 = time.perf_counter()
    bundle = bundle_lib.load_bundle(args.checkpoint)
    load_s = time.perf_counter() - t0
    devices = jax.devices()[: args.devices]
    # compile every variant (first call), then time them in interleaved rounds (rotating order), so that a
    # change of machine load spreads over all variants instead of biasing one
    pipes, first_s, results_of = {}, {}, {}
    for k, (spec, settings) in enumerate(variants.items()):
        print(f"[compile {k + 1}/{len(variants)}] {spec} ...", file=sys.stderr, flush=True)
        pipes[spec] = build_variant(bundle, settings, devices)
        results_of[spec], t = timed_run(pipes[spec], images, prompts, seeds)
        first_s[spec] = t["total"] * len(images)
    gts = []  # ground truth at the size the reference samples each image at
    for p, image in zip(image_paths, images):
        g = _gt_path(p, args.gt if len(image_paths) == 1 else None)
        if g is None:
            gts.append(None)
            continue
        z = np.load(g)
        want = (base.num_frames, *pipes[ref_spec].sample_size(image))
        if z["depth"].shape != want:
            print(f"note: ground truth {g} is {z['depth'].shape}, the samples are {want}: no depth metrics for it",
                  file=sys.stderr)
            gts.append(None)
            continue
        gts.append({"depth": z["depth"], "valid": z["valid"], "path": str(g)})
    runs = {spec: {"total": [], "sampling": [], "encode": [], "decode": []} for spec in variants}
    names = list(variants)
    for r in range(args.repeats):
        for spec in names[r % len(names):] + names[:r % len(names)]:
            results_of[spec], t = timed_run(pipes[spec], images, prompts, seeds)
            for key, v in t.items():
                runs[spec][key].append(v)
        print(f"[timing round {r + 1}/{args.repeats}] done", file=sys.stderr, flush=True)
    rows = []
    reference = results_of[ref_spec]
    for k, (spec, settings) in enumerate(variants.items()):
        results = results_of[spec]
        stats = {key: v // (args.repeats + 1) for key, v in pipes[spec].stats.items()}  # per pipeline call
        compile_s = first_s[spec] - statistics.median(runs[spec]["total"]) * len(images)
        runs_v = runs[spec]
        row = {"variant": spec, "solver": settings.solver, "num_steps": settings.num_steps,
               "step_cache_interval": settings.step_cache_interval, "weight_quant": settings.weight_quant,
               "seconds_per_sample": statistics.median(runs_v["total"]),
               "sampling_s_per_sample": statistics.median(runs_v["sampling"]),
               "encode_s_per_sample": statistics.median(runs_v["encode"]),
               "decode_s_per_sample": statistics.median(runs_v["decode"]), "runs_s_per_sample": runs_v,
               "compile_s": compile_s, "dit_full": stats["dit_full"], "dit_cached": stats["dit_cached"],
               "per_image": []}
        for i, (res, ref) in enumerate(zip(results, reference)):
            w = res.video.shape[2] // 2
            item = {"image": str(image_paths[i]), "xyz_rel_l2": rel_l2(res.xyz, ref.xyz),
                    "rgb_rel_l2": rel_l2(res.video[:, :, :w], ref.video[:, :, :w])}
            if gts[i] is not None:
                m = depth_metrics(res.xyz[:1, ..., 2], gts[i]["depth"][:1], gts[i]["valid"][:1])
                item.update(depth_abs_rel=m["abs_rel"], depth_delta_1_25=m["delta_1_25"])
            row["per_image"].append(item)
        for key in ("xyz_rel_l2", "rgb_rel_l2", "depth_abs_rel", "depth_delta_1_25"):
            vals = [it[key] for it in row["per_image"] if key in it]
            if vals:
                row[key] = float(np.mean(vals))
        rows.append(row)
        print(f"[{k + 1}/{len(variants)}] {spec}: {row['seconds_per_sample']:.3f} s/sample (denoising "
              f"{row['sampling_s_per_sample']:.3f} s), xyz rel L2 "
              f"{row['xyz_rel_l2']:.2e}", file=sys.stderr, flush=True)
    for key, out in (("seconds_per_sample", "speedup"), ("sampling_s_per_sample", "sampling_speedup")):
        for row in rows:
            row[out] = rows[0][key] / row[key] if row[key] > 0 else float("nan")
    return {"checkpoint": str(bundle.directory), "bundle_info": bundle.info, "config": str(args.config),
            "reference": ref_spec, "settings": base.to_dict(), "images": [str(p) for p in image_paths],
            "ground_truth": [g["path"] if g else None for g in gts], "repeats": args.repeats,
            "devices": [str(d) for d in devices], "backend": jax.default_backend(), "load_s": load_s, "rows": rows}


def format_table(report: dict) -> str:
    head = (f"{'variant':<24}{'s/sample':>9}{'denoise s':>10}{'speedup':>9}{'compile s':>10}{'DiT full/cached':>16}"
            f"{'XYZ relL2':>11}{'RGB relL2':>11}{'AbsRel':>8}{'d<1.25':>8}")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        f = lambda k, fmt: format(r[k], fmt) if k in r else "-"
        lines.append(f"{r['variant']:<24}{r['seconds_per_sample']:>9.3f}{r['sampling_s_per_sample']:>10.3f}"
                     f"{r['sampling_speedup']:>8.2f}x{r['compile_s']:>10.1f}"
                     f"{str(r['dit_full']) + '/' + str(r['dit_cached']):>16}{f('xyz_rel_l2', '.2e'):>11}"
                     f"{f('rgb_rel_l2', '.2e'):>11}{f('depth_abs_rel', '.4f'):>8}{f('depth_delta_1_25', '.3f'):>8}")
    lines.append("speedup: of the denoising loop (encode and decode are the same for every variant); s/sample is end "
                 "to end")
    return "\n".join(lines)


# -- start-up (time to first sample) ------------------------------------------------------------------------------
def startup_child(args) -> int:
    """One fresh process: (caches) -> load -> pipeline -> one sample; prints one JSON line."""
    marks = {}
    if args.compilation_cache:
        from fourdnex_jax.pipelines.aot import enable_compilation_cache

        enable_compilation_cache(args.compilation_cache)
    import jax

    from fourdnex_jax.media.io import read_image
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D

    marks["imports_s"] = time.perf_counter() - _T_PROCESS
    settings = _base_settings(args)
    t0 = time.perf_counter()
    bundle = bundle_lib.load_bundle(args.checkpoint)
    marks["load_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe = ImageTo4D.from_bundle(bundle, settings, devices=jax.devices()[:1], executable_cache=args.aot_cache)
    marks["setup_s"] = time.perf_counter() - t0
    image = Path(args.image[0])
    t0 = time.perf_counter()
    res = pipe([read_image(image)], [caption_for_image(image)],
               progress=False)[0]
    marks["first_sample_s"] = time.perf_counter() - t0
    marks["to_first_sample_s"] = time.perf_counter() - _T_PROCESS
    marks["executables"] = pipe.executables.events if pipe.executables is not None else []
    marks["xyz_checksum"] = float(np.abs(res.xyz).astype(np.float64).sum())
    print("STARTUP " + json.dumps(marks))
    return 0


def startup_benchmark(args, work: Path) -> dict:
    """Fresh processes: cold; compilation cache empty then warm; serialized executables empty then warm."""
    comp, aot = work / "compilation_cache", work / "executables"
    for d in (comp, aot):
        if d.exists():
            shutil.rmtree(d)
    scenarios = [("cold", []), ("compilation cache, empty", ["--compilation-cache", str(comp)]),
                 ("compilation cache, warm", ["--compilation-cache", str(comp)]),
                 ("serialized executables, empty", ["--aot-cache", str(aot)]),
                 ("serialized executables, warm", ["--aot-cache", str(aot)]),
                 ("both, warm", ["--compilation-cache", str(comp), "--aot-cache", str(aot)])]
    out = []
    for k, (name, extra) in enumerate(scenarios):
        cmd = [sys.executable, "-m", "benchmarks.sampling", "--startup-child", "--checkpoint",
               str(args.checkpoint), "--config", str(args.config), "--image", str(args.image[0]), "--num-steps",
               str(args.num_steps), *extra]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("STARTUP ")]
        if res.returncode != 0 or not line:
            raise RuntimeError(f"start-up run {name!r} failed (exit {res.returncode}): {res.stderr[-2000:]}")
        marks = json.loads(line[-1][len("STARTUP "):])
        out.append({"scenario": name, "process_wall_s": wall, **marks})
        print(f"[startup {k + 1}/{len(scenarios)}] {name}: {wall:.1f}s to first sample (process wall)",
              file=sys.stderr, flush=True)
    checks = {r["xyz_checksum"] for r in out}
    return {"runs": out, "same_output": len(checks) == 1}


def format_startup(report: dict) -> str:
    head = f"{'start-up scenario':<32}{'process s':>10}{'imports':>9}{'load':>7}{'setup':>7}{'1st sample':>11}"
    lines = [head, "-" * len(head)]
    for r in report["runs"]:
        lines.append(f"{r['scenario']:<32}{r['process_wall_s']:>10.1f}{r['imports_s']:>9.1f}{r['load_s']:>7.1f}"
                     f"{r['setup_s']:>7.1f}{r['first_sample_s']:>11.1f}")
    lines.append(f"identical first samples across scenarios: {report['same_output']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=None, help="model bundle (default: checkpoints/tiny)")
    ap.add_argument("--random-bundle", default=None,
                    help="write a seeded random tiny bundle here (if absent) and benchmark it")
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny.py"), help="its sample section is the reference")
    ap.add_argument("--image", action="append", default=None, help=f"input image(s) (default {DEFAULT_IMAGE.name})")
    ap.add_argument("--gt", default=None, help="ground truth npz of a single --image (default IMG_gt.npz)")
    ap.add_argument("--num-steps", type=int, default=0, help="reference step count (default: the config's)")
    ap.add_argument("--variants", nargs="+", default=None, help="SOLVER:STEPS[:cacheK][:int8] ...")
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds over all variants after the compiling "
                    "one (medians reported)")
    ap.add_argument("--devices", type=int, default=1, help="devices per pipeline (data parallel)")
    ap.add_argument("--startup", action="store_true", help="also measure cold / warm time to first sample")
    ap.add_argument("--skip-variants", action="store_true", help="only the start-up and memory figures")
    ap.add_argument("--memory-config", default=str(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
    ap.add_argument("--memory-only", action="store_true", help="print the memory report and stop")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="JSON report (written atomically)")
    ap.add_argument("--startup-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--compilation-cache", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--aot-cache", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.image = args.image or [str(DEFAULT_IMAGE)]
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if args.startup_child:
        return startup_child(args)
    t_start = time.perf_counter()

    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.media.io import atomic_save_json
    from fourdnex_jax.models.quantize import format_memory_report, memory_report

    mem_cfg = model_config(load_config_file(args.memory_config))
    memory = memory_report(mem_cfg)
    print(format_memory_report(memory, Path(args.memory_config).stem))
    report: dict = {"memory": {"config": args.memory_config, **memory}}
    if args.memory_only:
        atomic_save_json(args.out, report)
        print(f"sampling_benchmark: memory report -> {args.out}")
        return 0

    if args.random_bundle:
        if args.checkpoint:
            ap.error("give --checkpoint or --random-bundle, not both")
        args.checkpoint = str(write_random_bundle(args.random_bundle, captions=tuple(caption_for_image(Path(p))
                                                                                    for p in args.image)))
    if args.checkpoint is None:
        from fourdnex_jax.pipelines.bundle import DEFAULT_BUNDLE

        args.checkpoint = str(DEFAULT_BUNDLE)
    if not (Path(args.checkpoint) / "manifest.json").exists():
        ap.error(f"no model bundle at {args.checkpoint} (no manifest.json): pass --checkpoint DIR, or "
                 "--random-bundle DIR to benchmark seeded random weights")
    if not args.skip_variants:
        report.update(benchmark(args))
        print(format_table(report))
    if args.startup:
        report["startup"] = startup_benchmark(args, Path(args.out).parent / "startup")
        print(format_startup(report["startup"]))
    report["total_s"] = time.perf_counter() - t_start
    atomic_save_json(args.out, report)
    rows = report.get("rows", [])
    best = max(rows[1:], key=lambda r: r["sampling_speedup"], default=None)
    print(f"sampling_benchmark: {len(rows)} variant(s) on {len(args.image)} image(s) in {report['total_s']:.0f}s"
          + (f"; fastest denoising {best['variant']} {best['sampling_speedup']:.2f}x (XYZ rel L2 "
             f"{best['xyz_rel_l2']:.1e})" if best
             else "") + f" -> {args.out}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
