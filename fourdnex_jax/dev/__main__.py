"""``python -m fourdnex_jax.dev COMMAND [flags]``: the developer commands, dispatched as ``fourdnex`` dispatches
its subcommands (one module imported alone; ``COMMAND --help`` documents one)."""

from __future__ import annotations

import importlib
import os
import sys

PROGRAM = "python -m fourdnex_jax.dev"
#: name -> (module under fourdnex_jax.dev, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "make-tiny-bundle": ("make_tiny_bundle", "builds the shipped tiny bundle (towers + encoded data, then assemble)"),
    "make-example": ("make_example", "writes the bundled example (frame 0, caption, ground truth) of a synthetic clip"),
    "make-dit-fixtures": ("make_dit_fixtures", "records the torch-free DiT parity fixtures (needs the test extra)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    return (f"usage: {PROGRAM} COMMAND [flags]\n\ndeveloper commands:\n{rows}\n\n`{PROGRAM} COMMAND --help` lists "
            "its flags.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"{PROGRAM}: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fourdnex_jax.cli import common

    common.set_log_level(common.verbose_in(argv[1:]))
    module = importlib.import_module(f"fourdnex_jax.dev.{COMMANDS[name][0]}")
    return common.run(name, module, argv[1:], program=PROGRAM)


if __name__ == "__main__":
    sys.exit(main())
