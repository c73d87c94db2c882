"""Compile time of the scanned DiT against depth: forward and the trainer's step, persistent cache off.

    python -m benchmarks.compile_time [--size small] [--layers 4 40] [--what both] [--out out/benchmark/compile.json]

Lower + compile time of the forward (a fresh ``jax.jit`` on abstract arguments, nothing allocated) and of the
train step (:func:`fourdnex_jax.training.plan.compile_train_step`, one device, batch 1) with the persistent
compilation cache disabled, ``scan_layers`` on, at each ``--layers`` depth (``--size``'s widths and input grid,
:data:`benchmarks.common.SIZES`); median of ``--repeats``. Target: the deepest <= 1.5x the shallowest. Prints a
table, a one-line summary, and writes ``--out`` (JSON, atomic).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import (
    IMAGE_TOKENS,
    SIZES,
    TEXT_LEN,
    add_common_args,
    apply_env,
    host_info,
    load_size_config,
    print_table,
    versions,
    write_json,
)

COMPILE_RATIO_TARGET = 1.5  # 40-layer / 4-layer compile time


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, 3)
    ap.add_argument("--size", default="small", choices=sorted(SIZES), help="widths and input grid")
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 40])
    ap.add_argument("--latent", type=int, nargs=3, default=None, help="per-modality latent T H W")
    ap.add_argument("--what", default="both", choices=["forward", "train_step", "both"])
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    apply_env(args, cpu=True)
    compile_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
