"""Checkpoint conversion between PyTorch (diffusers / transformers / peft / 4DNeX) and orbax.

  torch-to-jax --src WAN_DIFFUSERS_DIR [--adapter 4DNEX_LORA_DIR] [--lora-fuse-scale 0.5] --out OUT
      [--skip COMPONENT ...] [--param-dtype auto|float32|bfloat16] [--modality-layout width]
  jax-to-torch --src OUT --out EXPORT_DIR [--models transformer vae ...] [--max-shard-gb 5] [--no-adapter]

See fourdnex_jax/convert/torch_to_jax.py and jax_to_torch.py for the folder layouts and manifest.json for what
was converted (sha256 of every source file, dtypes, the effective LoRA scale and how it was derived).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # conversion is host work; never grab an accelerator

from fourdnex_jax.convert.adapter import DEFAULT_FUSE_SCALE  # noqa: E402
from fourdnex_jax.convert.models import COPIED_COMPONENTS, SPECS  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t2j = sub.add_parser("torch-to-jax", help="diffusers folder (+ 4DNeX adapter) -> orbax checkpoints")
    t2j.add_argument("--src", required=True, type=Path)
    t2j.add_argument("--adapter", type=Path)
    t2j.add_argument("--lora-fuse-scale", type=float, default=DEFAULT_FUSE_SCALE,
                     help="the fuse_lora(lora_scale=...) the adapter is meant for (4DNeX inference: 0.5)")
    t2j.add_argument("--out", required=True, type=Path)
    t2j.add_argument("--skip", action="append", default=[], choices=list(SPECS) + list(COPIED_COMPONENTS))
    t2j.add_argument("--param-dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    t2j.add_argument("--modality-layout", default="width", help="transformer layout with an adapter (4DNeX: width)")
    t2j.add_argument("--no-progress", action="store_true")
    j2t = sub.add_parser("jax-to-torch", help="converted/trained folder -> diffusers layout + 4DNeX adapter")
    j2t.add_argument("--src", required=True, type=Path)
    j2t.add_argument("--out", required=True, type=Path)
    j2t.add_argument("--models", nargs="*", choices=list(SPECS))
    j2t.add_argument("--max-shard-gb", type=float, default=5.0)
    j2t.add_argument("--no-adapter", action="store_true")
    j2t.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    from fourdnex_jax.convert.torch_to_jax import ConversionError  # noqa: E402 (jax import after env set-up)
    from fourdnex_jax.loaders.mapping import WeightMappingError
    from fourdnex_jax.loaders.safetensors_io import CheckpointFileError

    try:
        if args.command == "torch-to-jax":
            from fourdnex_jax.convert.torch_to_jax import convert

            convert(args.src, args.out, adapter=args.adapter, fuse_scale=args.lora_fuse_scale, skip=args.skip,
                    param_dtype=args.param_dtype, modality_layout=args.modality_layout,
                    progress=not args.no_progress)
        else:
            from fourdnex_jax.convert.jax_to_torch import export

            export(args.src, args.out, models=args.models, adapter=not args.no_adapter,
                   max_shard_bytes=int(args.max_shard_gb * 2**30), progress=not args.no_progress)
    except (ConversionError, WeightMappingError, CheckpointFileError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
