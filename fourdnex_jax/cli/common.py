"""What every subcommand shares: flag parsing (absl), ``--help`` / ``--config-help``, quiet logs, one-line errors.

A subcommand is a module of this package with absl flags defined at import, a docstring (its help text: first the
usage lines, then the description) and ``main(argv) -> int``. :func:`run` parses the command line into those flags
and calls it. Flags are spelled with dashes (``--stop-after``, ``--num-clips``); booleans take absl's
``--name`` / ``--noname`` (or ``--name=false``); every output folder or file is ``--out``; a subcommand with an
experiment config has ``--config NAME_OR_FILE`` (``tiny``, ``small``, ``wan21_i2v_14b_480p``, or a path to a config
file, with ``:ARG`` variants) and ``--config.KEY=VALUE`` overrides; ``--config-help`` lists the keys.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from types import ModuleType
from typing import Any

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.resources import config_path

FLAGS = flags.FLAGS
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show library INFO logs (absl, orbax, jax) and full tracebacks.")
_CONFIG_HELP = flags.DEFINE_bool("config-help", False, "List every key of --config (with its value and type; "
                                 "override one with --config.KEY=VALUE) and exit.")
COMMON_FLAGS = ("verbose", "config-help")
HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")
#: Python loggers of the libraries that log routine work at INFO (orbax logs every save/restore step through absl).
LIBRARY_LOGGERS = ("absl", "jax", "jax._src", "orbax", "grain", "tensorflow", "tensorflow_datasets", "etils")
#: Errors that are the user's to fix: printed as one line (traceback with --verbose), exit status 1.
USER_ERRORS = (InputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def one_line(e: BaseException) -> str:
    """An exception's message on one line. ml_collections raises an unknown ``--config.KEY`` as a KeyError whose
    text is the repr of a two-line message (quotes and ``\\n`` escaped): unwrapped here."""
    text = str(e)
    if isinstance(e, (KeyError, AttributeError)) and text[:1] in "'\"" and text[-1:] == text[:1]:
        text = text[1:-1].replace("\\n", " ").replace("\\'", "'")
    return " ".join(text.split())


def set_log_level(verbose: bool) -> None:
    """Library logs at WARNING (INFO with ``verbose``), set before the libraries are imported."""
    level = logging.INFO if verbose else logging.WARNING
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")  # TensorFlow's C++ logs (tfds)
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def verbose_in(argv: list[str]) -> bool:
    on = False
    for a in argv:
        if a in ("--verbose", "--verbose=true", "--verbose=1", "--verbose=True"):
            on = True
        elif a in ("--noverbose", "--verbose=false", "--verbose=0", "--verbose=False"):
            on = False
    return on


def _resolve_config_args(argv: list[str]) -> list[str]:
    """``--config tiny`` / ``--config=tiny:arg`` -> the shipped config file's path (config_flags wants a path)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            out += [a, _config_value(argv[i + 1])]
            i += 2
            continue
        if a.startswith("--config="):
            a = "--config=" + _config_value(a[len("--config="):])
        out.append(a)
        i += 1
    return out


def _config_value(value: str) -> str:
    name, sep, arg = value.partition(":")
    return str(config_path(name)) + sep + arg


def _module_flags(module: ModuleType) -> list[flags.Flag]:
    return list(FLAGS.flags_by_module_dict().get(module.__name__, []))


def _default_text(flag: flags.Flag) -> str:
    if flag.name == "config":
        return f" (default: {_config_default_name(flag)})"
    if flag.default is None or flag.default == "" or flag.default == []:
        return ""
    if isinstance(flag.default, bool):
        return f" (default: {'on' if flag.default else 'off'})"
    shown = repr(flag.default) if isinstance(flag.default, str) else ",".join(map(str, flag.default)) if isinstance(
        flag.default, list) else flag.default
    return f" (default: {shown})"


def _config_default_name(flag: flags.Flag) -> str:
    default = str(flag.default_as_str or flag.default).strip("'")
    return os.path.splitext(os.path.basename(default))[0]


def help_text(command: str, module: ModuleType) -> str:
    """The ``--help`` of a subcommand: its docstring, then every flag with its description and default."""
    lines = [f"usage: fourdnex {command} [flags]", "", (module.__doc__ or "").strip(), "", "flags:"]
    own = sorted(_module_flags(module), key=lambda f: f.name)
    common = [FLAGS[n] for n in COMMON_FLAGS]
    for flag in own + common:
        if flag.name == "config-help" and not hasattr(module, "CONFIG"):
            continue
        name = f"--[no]{flag.name}" if isinstance(flag.default, bool) else f"--{flag.name}"
        if flag.name == "config":
            name = "--config NAME|FILE"
        lines.append(f"  {name}{_default_text(flag)}")
        lines.append(f"      {' '.join(flag.help.split())}")  # absl adds '<a|b>: ' to enum flags' help
        if flag.name == "config":
            lines.append("      NAME: one of the shipped configs (fourdnex_jax.utils.resources.config_names()); "
                         "--config.KEY=VALUE overrides one key (--config-help lists them).")
    return "\n".join(lines)


def config_help(config: Any, prefix: str = "config") -> list[str]:
    """``--config.KEY  value  (type)`` for every leaf key of an ml_collections config."""
    rows = []
    for key in sorted(config.keys()):
        value = config[key]
        if hasattr(value, "keys") and hasattr(value, "get_type"):
            rows += config_help(value, f"{prefix}.{key}")
        else:
            kind = config.get_type(key).__name__ if hasattr(config, "get_type") else type(value).__name__
            shown = "None (taken from the bundle's or the optimizer's preset)" if value is None else repr(value)
            rows.append(f"  --{prefix}.{key}={shown}  ({kind})")
    return rows


def run(command: str, module: ModuleType, argv: list[str]) -> int:
    """Runs subcommand ``command`` (``module``) on ``argv`` (its flags, without the program and command names)
    and returns the exit status: 0 done, 1 an error of the input (one line), 2 a usage error."""
    verbose = verbose_in(argv)
    set_log_level(verbose)
    if any(a in HELP_ARGS for a in argv):
        print(help_text(command, module))
        return 0
    try:
        rest = FLAGS([f"fourdnex {command}", *_resolve_config_args(argv)])
    except (flags.Error, ValueError, AttributeError, KeyError, TypeError) as e:
        print(f"fourdnex {command}: usage error: {one_line(e)} (see `fourdnex {command} --help`, "
              "`--config-help`)", file=sys.stderr)
        return 2
    if _CONFIG_HELP.value:
        config = getattr(module, "CONFIG", None)
        if config is None:
            print(f"fourdnex {command} has no --config", file=sys.stderr)
            return 2
        print(f"keys of --config {config_flags.get_config_filename(FLAGS['config'])} (override with "
              "--config.KEY=VALUE):")
        print("\n".join(config_help(config.value)))
        return 0
    try:
        from fourdnex_jax.utils import xla_cache

        xla_cache.install()  # whatever points JAX at a compilation cache, it is checked before anything compiles
        if hasattr(module, "CONFIG"):  # enumerated values and the model section, after the overrides
            from fourdnex_jax.config import validate

            validate(module.CONFIG.value, "--config")
        return int(module.main(rest[1:]) or 0)
    except UsageError as e:
        print(f"fourdnex {command}: usage error: {e} (see `fourdnex {command} --help`)", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        if verbose:
            traceback.print_exc()
        msg = str(e).strip() or type(e).__name__
        print(f"fourdnex {command}: error: {msg}" + ("" if verbose else " (--verbose for the traceback)"),
              file=sys.stderr)
        return 1


class UsageError(Exception):
    """A wrong combination of flags (exit status 2)."""
