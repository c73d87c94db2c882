"""Compile-only memory check of the Wan2.1 VAE decode (nothing is allocated or run).

Builds the real ``WanVAEConfig.wan21()`` VAE abstractly (``nnx.eval_shape``), lowers and compiles ``decode`` for
latents of several frame counts with ``jax.jit(...).lower(abstract inputs).compile()``, and prints XLA's
``memory_analysis()``. With chunked decoding (one latent frame per ``lax.scan`` step) the temporary memory must not
grow with the number of frames; only the output buffer does (it holds the decoded video). ``--tile TH TW`` adds the
spatially tiled decode (``WanVAE.decode(tile=...)``: the pixel stage one (TH, TW) latent tile at a time with the
decoder's halo), whose temporaries scale with the tile's window instead of the frame; the last column is its peak
over the chunked decode's, measured in the same run.

    JAX_PLATFORMS=cpu python -m benchmarks.vae_memory --frames 13 21 --latent-hw 60 180 --dtype bfloat16
    JAX_PLATFORMS=cpu python -m benchmarks.vae_memory --frames 5 13 21 --latent-hw 60 180 --dtype float32 \
        --tile 60 24
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
from flax import nnx

from fourdnex_jax.models.vae import WanVAEConfig, abstract_vae
from fourdnex_jax.models.vae.config import decoder_halo

GIB = 1024 ** 3


def compile_decode(cfg: WanVAEConfig, frames: int, h: int, w: int, dtype, chunked: bool,
                   tile: tuple[int, int] | None = None):
    model = abstract_vae(cfg, param_dtype=dtype, dtype=dtype)
    graphdef, state = nnx.split(model)

    def decode(state, z):
        return nnx.merge(graphdef, state).decode(z, chunked=chunked, tile=tile)

    z = jax.ShapeDtypeStruct((1, frames, h, w, cfg.z_dim), dtype)
    t0 = time.perf_counter()
    compiled = jax.jit(decode).lower(state, z).compile()
    return compiled, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[13, 21], help="latent frame counts")
    parser.add_argument("--latent-hw", type=int, nargs=2, default=[60, 180], help="latent height, width")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--whole-clip", action="store_true", help="also compile the non-chunked decode (contrast)")
    parser.add_argument("--tile", type=int, nargs=2, default=None, metavar=("TH", "TW"),
                        help="also compile the spatially tiled decode with (TH, TW) latent tiles")
    parser.add_argument("--json", default="", help="append one JSON line per compile to this file")
    args = parser.parse_args()
    cfg = WanVAEConfig.wan21()
    dtype = jnp.dtype(args.dtype)
    h, w = args.latent_hw
    s, f = cfg.spatial_factor, cfg.temporal_factor
    print(f"Wan2.1 VAE decode, {args.dtype}, latent {h}x{w} -> video {h * s}x{w * s}, backend {jax.default_backend()}")
    halo = decoder_halo(cfg)
    print(f"{'mode':8} {'latent T':>8} {'video T':>7} {'compile s':>9} {'args GiB':>9} {'output GiB':>10} "
          f"{'temp GiB':>9} {'peak GiB':>9} {'vs chunked':>10}")
    modes = [("chunked", True, None)] + ([("whole", False, None)] if args.whole_clip else [])
    if args.tile:
        modes.append((f"tiled {args.tile[0]}x{args.tile[1]}", True, tuple(args.tile)))
    chunked_peak = {}
    for label, chunked, tile in modes:
        for frames in args.frames:
            compiled, secs = compile_decode(cfg, frames, h, w, dtype, chunked, tile)
            ma = compiled.memory_analysis()
            peak = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
                    + ma.temp_size_in_bytes)
            if label == "chunked":
                chunked_peak[frames] = peak
            ratio = f"{peak / chunked_peak[frames]:10.3f}" if frames in chunked_peak else f"{'-':>10}"
            print(f"{label:8} {frames:8d} {1 + f * (frames - 1):7d} {secs:9.1f} "
                  f"{ma.argument_size_in_bytes / GIB:9.3f} {ma.output_size_in_bytes / GIB:10.3f} "
                  f"{ma.temp_size_in_bytes / GIB:9.3f} {peak / GIB:9.3f} {ratio}", flush=True)
            if args.json:
                row = {"mode": label, "tile": list(tile) if tile else None, "halo": halo if tile else None,
                       "latent": [frames, h, w], "video_frames": 1 + f * (frames - 1), "dtype": args.dtype,
                       "backend": jax.default_backend(), "jax": jax.__version__, "compile_s": round(secs, 1),
                       "arguments_gib": ma.argument_size_in_bytes / GIB, "output_gib": ma.output_size_in_bytes / GIB,
                       "temp_gib": ma.temp_size_in_bytes / GIB, "peak_gib": peak / GIB,
                       "date": time.strftime("%Y-%m-%d")}
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(row) + "\n")
    print(f"host max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GiB")


if __name__ == "__main__":
    main()
