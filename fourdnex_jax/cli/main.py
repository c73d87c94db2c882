"""``fourdnex SUBCOMMAND [flags]``: dispatches to one subcommand module (imported alone, so only its flags exist
and only its libraries load); ``fourdnex --help`` lists them, ``fourdnex SUBCOMMAND --help`` documents one."""

from __future__ import annotations

import importlib
import os
import sys

#: name -> (module under fourdnex_jax.cli, one-line summary), in the order of a workflow.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("generate", "image(s) -> RGB + XYZ videos, pointmaps, cameras, 3D exports"),
    "register": ("register", "cameras, depth, PLY/GLB/viewer and a novel-view video from a pointmaps.npz"),
    "render": ("render", "novel-view video of a registered scene (point splatting)"),
    "convert": ("convert", "diffusers Wan2.1 folder (+ 4DNeX LoRA) -> a bundle of orbax checkpoints"),
    "export": ("export", "bundle or training run -> diffusers layout + 4DNeX adapter (safetensors)"),
    "bundle": ("bundle", "training run (adapter + the base it was trained on) -> a bundle for generate"),
    "verify": ("verify", "checks every file of a bundle / run against its sha256 digests (one summary line)"),
    "describe": ("describe", "parameter counts and bytes of a config's DiT (nothing allocated)"),
    "synth-data": ("synth_data", "synthetic 4D clips (raw annotations)"),
    "prepare-data": ("prepare_data", "raw annotations -> the clips6d TFDS dataset"),
    "train": ("train", "sharded LoRA training of the 4DNeX DiT"),
    "plan": ("plan", "AOT memory plan of the train step or the inference pipeline on a TPU slice / GPU card"),
    "eval-quality": ("eval_quality", "a bundle's quality on held-out synthetic scenes"),
    "eval-geometry": ("eval_geometry", "geometry metrics of pointmap results against ground truth"),
    "train-tiny-vae": ("train_tiny_vae", "trains the tiny Wan VAE of the demo bundle"),
    "make-tiny-bundle": ("make_tiny_bundle", "builds the shipped tiny bundle (towers + encoded data, then assemble)"),
    "make-domain": ("make_domain", "writes a bundle's domain.json (its training images' statistics)"),
    "make-dit-fixtures": ("make_dit_fixtures", "records the torch-free DiT parity fixtures (needs the test extra)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return ("usage: fourdnex SUBCOMMAND [flags]     (also: python -m fourdnex_jax SUBCOMMAND [flags])\n\n"
            f"subcommands:\n{rows}\n\n`fourdnex SUBCOMMAND --help` lists its flags; --verbose shows library logs "
            "and tracebacks.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"fourdnex: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; the oracle libraries must not try
    from fourdnex_jax.cli import common

    common.set_log_level(common.verbose_in(argv[1:]))  # before the subcommand imports its libraries
    try:
        module = importlib.import_module(f"fourdnex_jax.cli.{COMMANDS[name][0]}")
    except (AttributeError, KeyError, TypeError) as e:  # ml_collections checks --config.KEY=VALUE at flag definition
        if common.verbose_in(argv[1:]):
            raise
        print(f"fourdnex {name}: usage error: --config override: unknown key {common.one_line(e)} (`fourdnex "
              f"{name} --config-help` lists the keys)", file=sys.stderr)
        return 2
    return common.run(name, module, argv[1:])
