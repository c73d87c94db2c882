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
    "make-domain": ("make_domain", "writes a bundle's domain.json (its training images' statistics)"),
}


def version() -> str:
    """``fourdnex_jax X.Y.Z``: the installed distribution's version, else the package's (a source checkout)."""
    from importlib import metadata

    try:
        return f"fourdnex_jax {metadata.version('fourdnex_jax')}"
    except metadata.PackageNotFoundError:
        from fourdnex_jax import __version__

        return f"fourdnex_jax {__version__}"


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return ("usage: fourdnex SUBCOMMAND [flags]     (also: python -m fourdnex_jax SUBCOMMAND [flags])\n\n"
            f"subcommands:\n{rows}\n\n`fourdnex SUBCOMMAND --help` lists its flags; --verbose shows library logs "
            "and tracebacks; --version prints the version. (Developer commands: python -m fourdnex_jax.dev --help.)")


#: What an interrupted command that publishes its --out as a unit has left there.
NOTHING_WRITTEN = "nothing written to --out"
#: Commands whose --out is published as a unit (written aside, then renamed).
ATOMIC_COMMANDS = ("generate", "register", "render", "convert", "export", "bundle")


#: Whether a progress line was open on stderr when Ctrl-C came (a cleanup's " failed" may close it, silenced).
_OPEN_LINE = [False]


def _note_console() -> None:
    progress = sys.modules.get("fourdnex_jax.utils.progress")
    _OPEN_LINE[0] = progress is not None and progress.line_open()


def interrupted_line(command: str) -> str:
    """The one line Ctrl-C prints: what the command kept (its module's ``interrupted_note()`` when it has one, else
    "nothing written to --out" for the commands that publish --out as a unit), on a line of its own."""
    module = sys.modules.get(f"fourdnex_jax.cli.{COMMANDS[command][0]}") if command in COMMANDS else None
    try:
        note = (module.interrupted_note() if module is not None and hasattr(module, "interrupted_note")
                else NOTHING_WRITTEN if command in ATOMIC_COMMANDS else "")
    except Exception:  # noqa: BLE001 - the line must come out whatever state the command was left in
        note = ""
    progress = sys.modules.get("fourdnex_jax.utils.progress")
    newline = "\n" if _OPEN_LINE[0] or (progress is not None and progress.line_open()) else ""
    return newline + (f"fourdnex {command}" if command in COMMANDS else "fourdnex") + ": interrupted" + (
        f"; {note}" if note else "")


def main(argv: list[str] | None = None) -> int:
    """The ``fourdnex`` command. Ctrl-C (SIGINT) anywhere: one line, exit status 130, no traceback
    (:mod:`fourdnex_jax.utils.interrupts`: at once, or after the cleanup of a half-written file); output into a
    closed pipe (``fourdnex --help | head``): exit 141 quietly."""
    from fourdnex_jax.utils import interrupts

    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in COMMANDS else ""

    def leave():
        interrupts.exit_now(130, interrupted_line(command))

    interrupts.install(leave, on_signal=_note_console)
    try:
        status = _main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:  # stdout points at /dev/null so the final flush cannot raise again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        interrupts.exit_now(141)
    except BaseException:
        if interrupts.hit() or sys.exc_info()[0] is KeyboardInterrupt:
            leave()
        raise


def _main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("--version", "version"):
        print(version())
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
