"""Sampling fast paths against the exact sampler: wall time per sample and the quality each one costs.

    python tools/sampling_benchmark.py [--checkpoint DIR] [--image IMG ...] [--variants unipc:10 unipc:20:cache2 ...]
        [--config configs/tiny.py] [--repeats 2] [--startup] [--out out/sampling_benchmark/report.json]
    python tools/sampling_benchmark.py --random-bundle out/sampling_benchmark/random_tiny ...   # no trained model
    python tools/sampling_benchmark.py --memory-only [--memory-config configs/wan21_i2v_14b_480p.py]

Reference: the config's solver and step count (configs/tiny.py: UniPC, 20 steps), no step cache, the checkpoint's
weights. A variant is ``SOLVER:STEPS[:cacheK][:int8]`` -- e.g. ``unipc:10`` (fewer steps), ``euler:20``,
``unipc:20:cache2`` (transformer blocks in full every 2nd step, :mod:`fourdnex_jax.sampling.step_cache`),
``unipc:20:int8`` (int8 weight-only DiT, :mod:`fourdnex_jax.models.quantize`); they combine. Default variants:
the reference, UniPC at N/2 and N/4 steps, Euler at N, cache intervals 2 and 3, int8, and int8 + cache2 at N/2.

Per variant and image (same seed and prompt as the reference; the prompt is ``IMG.txt`` next to the image when it
exists): seconds per sample (median of ``--repeats`` timed runs after one compiling run, whose extra time is reported
as ``compile_s``), full / cached DiT evaluations, and the quality cost: relative L2 ``||a - r|| / ||r||`` of the
decoded XYZ and of the decoded RGB (float, [-1, 1]) against the reference run. With a ground truth
(``IMG_gt.npz`` next to the image, or ``--gt``: ``depth`` (T, H, W) z-depth and ``valid`` (T, H, W)), the
first-frame depth AbsRel and delta<1.25 of the predicted z after a least-squares scale-and-shift fit
(:func:`fourdnex_jax.geometry.metrics.depth_metrics`, as tools/eval_quality.py reports them).

``--startup``: time to first sample of a fresh process (imports, model load, compilation, one sample) cold, with
JAX's persistent compilation cache (empty, then warm) and with serialized executables (empty, then warm).
``--memory-config``: the DiT parameter bytes of a config (default the 14B one) as configured and int8, abstract.
Prints a table; writes the JSON report atomically. Timings are of this machine: re-measure on the target.
"""

from __future__ import annotations

import time

_T_PROCESS = time.perf_counter()  # start of this script (time-to-first-sample of --startup-child counts from here)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "out" / "sampling_benchmark" / "report.json"
DEFAULT_IMAGE = ROOT / "examples" / "synth_heldout_000000.png"


# -- a random tiny bundle (to develop and test without the trained model) ----------------------------------------
def random_model(make, seed: int):
    """``make()`` (a model constructor) built abstractly (``nnx.eval_shape``) and filled from NumPy with seed
    ``seed``: eager initialisation compiles every init op separately, minutes for the tiny VAE on a busy CPU.
    Values: norm ``scale`` 1, ``bias`` 0, other 1-D vectors N(0, 0.02), every other array (kernels, tables,
    embeddings; a leading stacked 'layers' axis excluded from the fan-in) U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as
    torch's Linear init."""
    import jax.numpy as jnp
    from flax import nnx

    rng = np.random.default_rng(seed)
    graphdef, state = nnx.split(nnx.eval_shape(make))
    leaves = []
    for path, var in nnx.to_flat_state(state):
        shape, name = tuple(var.shape), str(path[-1])
        axes = var.get_metadata().get("out_sharding") or ()
        core = shape[1:] if axes and axes[0] == "layers" else shape
        if len(core) == 1 and name == "scale":
            value = np.ones(shape)
        elif len(core) == 1 and name == "bias":
            value = np.zeros(shape)
        elif len(core) == 1:
            value = rng.normal(0.0, 0.02, shape)
        else:
            bound = 1.0 / max(int(np.prod(core[:-1])), 1) ** 0.5
            value = rng.uniform(-bound, bound, shape)
        leaves.append((path, var.replace(jnp.asarray(value, var.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(leaves))


def write_random_bundle(directory: str | os.PathLike, config_path: str | os.PathLike = ROOT / "configs" / "tiny.py",
                        *, seed: int = 0, captions: tuple[str, ...] = ()) -> Path:
    """Writes a bundle of seeded random models (:func:`random_model`: the DiT of ``config_path``'s model section
    with a non-zero LoRA, the tiny VAE / UMT5 / CLIP) and a word-level tokenizer over ``captions``' words, unless ``directory`` already
    holds a bundle. Returns ``directory``."""
    directory = Path(directory)
    if (directory / "manifest.json").exists():
        return directory
    from flax import nnx
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.data.captions import training_prompt
    from fourdnex_jax.models.image_encoder import CLIPVisionConfig, CLIPVisionTower
    from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
    from fourdnex_jax.pipelines import bundle as bundle_lib

    cfg = model_config(load_config_file(config_path))
    pre = pre_tokenizers.Whitespace()
    words = sorted({w.lower() for c in (*captions, "a synthetic 3d scene") for w, _ in
                    pre.pre_tokenize_str(training_prompt(c))})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    stage = directory.parent / (directory.name + ".tokenizer")
    stage.mkdir(parents=True, exist_ok=True)
    tok.save(str(stage / "tokenizer.json"))
    dit = random_model(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0)), seed)  # LoRA non-zero, as a trained one
    clip_cfg = dataclasses.replace(CLIPVisionConfig.tiny(), hidden_size=cfg.image_dim)
    text_cfg = dataclasses.replace(UMT5Config.tiny(max(64, len(vocab))), d_model=cfg.text_dim)
    size = clip_cfg.image_size
    bundle_lib.save_bundle(directory, transformer=dit,
                           vae=random_model(lambda: WanVAE(WanVAEConfig.tiny(), rngs=nnx.Rngs(0)), seed + 1),
                           text_encoder=random_model(lambda: UMT5Encoder(text_cfg, rngs=nnx.Rngs(0)), seed + 2),
                           image_encoder=random_model(lambda: CLIPVisionTower(clip_cfg, rngs=nnx.Rngs(0)), seed + 3),
                           tokenizer_dir=stage, clip_preprocess={"size": {"shortest_edge": size},
                                                                 "crop_size": {"height": size, "width": size}},
                           info={"name": "random tiny bundle (tools/sampling_benchmark.py)", "seed": seed})
    shutil.rmtree(stage)
    return directory


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


def rel_l2(a: np.ndarray, r: np.ndarray) -> float:
    a, r = np.asarray(a, np.float64), np.asarray(r, np.float64)
    return float(np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-30))


def _gt_path(image: Path, given: str | None) -> Path | None:
    if given:
        return Path(given)
    cand = image.with_name(image.stem + "_gt.npz")
    return cand if cand.exists() else None


def _caption(image: Path) -> str:
    side = image.with_suffix(".txt")
    return side.read_text().strip() if side.exists() else ""


def _base_settings(args):
    """The reference settings: ``--config``'s sample section, ``--num-steps`` replacing its step count."""
    from fourdnex_jax.config import load_config_file
    from fourdnex_jax.pipelines.image_to_4d import SampleSettings

    base = SampleSettings.from_config(load_config_file(args.config).sample)
    return dataclasses.replace(base, num_steps=args.num_steps) if args.num_steps else base


def run_variant(bundle, settings, images, prompts, seeds, repeats: int, devices):
    """One pipeline for ``settings`` (int8: on a clone of the bundle's DiT): a compiling run, then ``repeats``
    timed runs. Returns (results of the last run, {seconds per sample of each timed run: ``total`` end to end,
    ``sampling`` the denoising loop, ``encode``, ``decode``}, compile seconds, DiT evaluations per call)."""
    from flax import nnx

    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D

    dit = nnx.clone(bundle.transformer) if settings.weight_quant != "none" else bundle.transformer
    pipe = ImageTo4D(dit, bundle.vae, bundle.text_encoder, bundle.image_encoder, bundle.tokenizer,
                     bundle.clip_preprocess, settings, scheduler=bundle.scheduler, devices=devices)
    t0 = time.perf_counter()
    results = pipe(images, prompts, seeds, progress=False)
    first = time.perf_counter() - t0
    n = len(images)
    runs: dict[str, list[float]] = {"total": [], "sampling": [], "encode": [], "decode": []}
    for _ in range(repeats):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        results = pipe(images, prompts, seeds, progress=False, timings=timings)
        runs["total"].append((time.perf_counter() - t0) / n)
        for k in ("sampling", "encode", "decode"):
            runs[k].append(timings.get(f"{k}_s", 0.0) / n)
    stats = {k: v // (repeats + 1) for k, v in pipe.stats.items()}  # per pipeline call
    return results, runs, first - statistics.median(runs["total"]) * n, stats


def benchmark(args) -> dict:
    import jax

    from fourdnex_jax.data.media import read_image
    from fourdnex_jax.geometry.metrics import depth_metrics
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines.image_to_4d import prepare_image

    base = _base_settings(args)
    specs = args.variants or default_variants(base)
    ref_spec = f"{base.solver}:{base.num_steps}"
    if ref_spec in specs:
        specs.remove(ref_spec)
    specs = [ref_spec] + specs
    variants = {spec: parse_variant(spec, base) for spec in specs}
    image_paths = [Path(p) for p in args.image]
    images = [prepare_image(read_image(p), base.height, base.width) for p in image_paths]
    prompts = [_caption(p) for p in image_paths]
    seeds = [base.seed + i for i in range(len(images))]
    gts = []
    for p in image_paths:
        g = _gt_path(p, args.gt if len(image_paths) == 1 else None)
        if g is None:
            gts.append(None)
            continue
        z = np.load(g)
        if z["depth"].shape != (base.num_frames, base.height, base.width):
            print(f"note: ground truth {g} is {z['depth'].shape}, the samples are "
                  f"{(base.num_frames, base.height, base.width)}: no depth metrics for it", file=sys.stderr)
            gts.append(None)
            continue
        gts.append({"depth": z["depth"], "valid": z["valid"], "path": str(g)})
    t0 = time.perf_counter()
    bundle = bundle_lib.load_bundle(args.checkpoint)
    load_s = time.perf_counter() - t0
    devices = jax.devices()[: args.devices]
    rows = []
    reference = None
    for k, (spec, settings) in enumerate(variants.items()):
        print(f"[{k + 1}/{len(variants)}] {spec} ...", file=sys.stderr, flush=True)
        results, runs, compile_s, stats = run_variant(bundle, settings, images, prompts, seeds, args.repeats,
                                                      devices)
        if reference is None:
            reference = results
        row = {"variant": spec, "solver": settings.solver, "num_steps": settings.num_steps,
               "step_cache_interval": settings.step_cache_interval, "weight_quant": settings.weight_quant,
               "seconds_per_sample": statistics.median(runs["total"]),
               "sampling_s_per_sample": statistics.median(runs["sampling"]),
               "encode_s_per_sample": statistics.median(runs["encode"]),
               "decode_s_per_sample": statistics.median(runs["decode"]), "runs_s_per_sample": runs,
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
        f = lambda k, fmt: format(r[k], fmt) if k in r else "-"  # noqa: E731
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
    import jax  # noqa: F401

    from fourdnex_jax.data.media import read_image
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D, prepare_image

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
    res = pipe([prepare_image(read_image(image), settings.height, settings.width)], [_caption(image)],
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
        cmd = [sys.executable, str(Path(__file__).resolve()), "--startup-child", "--checkpoint", str(args.checkpoint),
               "--config", str(args.config), "--image", str(args.image[0]), "--num-steps", str(args.num_steps),
               *extra]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True)
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
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per variant after the compiling one")
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
    from fourdnex_jax.io_utils import atomic_save_json
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
        args.checkpoint = str(write_random_bundle(args.random_bundle, captions=tuple(_caption(Path(p))
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
