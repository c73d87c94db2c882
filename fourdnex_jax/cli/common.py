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

from fourdnex_jax.utils import interrupts
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
#: Errors that are the user's to fix: printed as one line (traceback with --verbose), exit status 1. Every other
#: ``OSError`` (disk full, read-only file system, a name too long, a symlink loop) and ``MemoryError`` too
#: (:func:`error_line`).
USER_ERRORS = (InputError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def one_line(e: BaseException) -> str:
    """An exception's message on one line. ml_collections raises an unknown ``--config.KEY`` as a KeyError whose
    text is the repr of a two-line message (quotes and ``\\n`` escaped): unwrapped here."""
    text = str(e)
    if isinstance(e, (KeyError, AttributeError)) and text[:1] in "'\"" and text[-1:] == text[:1]:
        text = text[1:-1].replace("\\n", " ").replace("\\'", "'")
    return " ".join(text.split())


def error_line(e: BaseException) -> str:
    """The message ``fourdnex CMD: error:`` prints for ``e``: an InputError's own text; an operating-system error
    (also one a library reports in its message, e.g. tensorstore's disk full) in words with the file and the fix
    (:func:`fourdnex_jax.utils.files.describe_os_error`); out of memory; else the exception on one line."""
    from fourdnex_jax.utils.files import describe_os_error, os_error_in

    if isinstance(e, InputError):
        return str(e).strip() or type(e).__name__
    if isinstance(e, MemoryError):
        return ("out of memory (MemoryError); use smaller settings (fewer frames, a smaller area) or a machine with "
                "more memory")
    os_error = os_error_in(e)
    if os_error is not None:
        line = describe_os_error(os_error)
        return line if os_error is e else f"{line} ({type(e).__name__})"
    text = one_line(e) or type(e).__name__
    return text if len(text) <= 600 else text[:600] + " ..."


def quiet_background_errors() -> None:
    """Keeps the tracebacks of library threads (tensorstore / orbax callbacks into a closed asyncio loop, worker
    threads, ``__del__`` of their objects) off the console: the failure they belong to reaches the main thread and
    is reported there in one line. ``--verbose`` leaves Python's default hooks in place."""
    import threading

    main, default = threading.main_thread(), sys.excepthook

    def excepthook(kind, value, tb):  # PyErr_Print from a C++ thread calls this with that thread current
        if threading.current_thread() is main:
            default(kind, value, tb)

    sys.excepthook = excepthook
    threading.excepthook = lambda args: None
    sys.unraisablehook = lambda unraisable: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def set_log_level(verbose: bool) -> None:
    """Library logs at WARNING (INFO with ``verbose``), set before the libraries are imported."""
    level = logging.INFO if verbose else logging.WARNING
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")  # TensorFlow's C++ logs (tfds)
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    absl = logging.getLogger("absl")
    for f in [f for f in absl.filters if isinstance(f, _RoutineLibraryWarnings)]:
        absl.removeFilter(f)
    if not verbose:
        absl.addFilter(_RoutineLibraryWarnings())


class _RoutineLibraryWarnings(logging.Filter):
    """Drops the WARNINGs TFDS and orbax log through absl on every routine call (TFDS: "Using custom data
    configuration" for each of our dataset configs; orbax: a checkpoint's missing metadata), shown with --verbose.
    Errors always pass."""

    SOURCES = ("tensorflow_datasets", "orbax")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not any(s in record.pathname for s in self.SOURCES)


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


def help_text(command: str, module: ModuleType, program: str = "fourdnex") -> str:
    """The ``--help`` of a subcommand: its docstring, then every flag with its description and default."""
    lines = [f"usage: {program} {command} [flags]", "", (module.__doc__ or "").strip(), "", "flags:"]
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


def did_you_mean(error: Exception, module: ModuleType) -> str:
    """`` (did you mean --out?)`` for an unknown flag close to one of the subcommand's own (``--output``), else
    empty."""
    import difflib

    if not isinstance(error, flags.UnrecognizedFlagError) or "did you mean" in str(error).lower():
        return ""  # absl names its own suggestion when one is close
    name = error.flagname
    names = [f.name for f in _module_flags(module)] + [n for n in COMMON_FLAGS
                                                        if n != "config-help" or hasattr(module, "CONFIG")]
    close = [n for n in names if len(n) >= 3 and (name.startswith(n) or n.startswith(name))]
    close = close or difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean --{close[0]}?)" if close else ""


def run(command: str, module: ModuleType, argv: list[str], program: str = "fourdnex") -> int:
    """Runs subcommand ``command`` (``module``) on ``argv`` (its flags, without the program and command names)
    and returns the exit status: 0 done, 1 an error of the input (one line), 2 a usage error. ``program``: how the
    messages name the command (``python -m fourdnex_jax.dev`` for the developer commands)."""
    verbose = verbose_in(argv)
    set_log_level(verbose)
    if not verbose:
        quiet_background_errors()
    if any(a in HELP_ARGS for a in argv):
        print(help_text(command, module, program))
        return 0
    see = f"see `fourdnex {command} --help`" + (", `--config-help`" if hasattr(module, "CONFIG") else "")
    try:
        rest = FLAGS([f"{program} {command}", *_resolve_config_args(argv)])
    except flags.IllegalFlagValueError as e:  # a required flag missing: --config-help needs none of them
        if not (FLAGS.is_parsed() and _CONFIG_HELP.value and hasattr(module, "CONFIG")):
            print(f"{program} {command}: usage error: {one_line(e)} ({see})", file=sys.stderr)
            return 2
    except (flags.Error, ValueError, AttributeError, KeyError, TypeError) as e:
        hint = did_you_mean(e, module)
        print(f"{program} {command}: usage error: {one_line(e)}{hint} ({see})", file=sys.stderr)
        return 2
    if _CONFIG_HELP.value:
        config = getattr(module, "CONFIG", None)
        if config is None:
            print(f"{program} {command} has no --config", file=sys.stderr)
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
        print(f"{program} {command}: usage error: {e} (see `{program} {command} --help`)", file=sys.stderr)
        return 2
    except (*USER_ERRORS, OSError, MemoryError) as e:
        if interrupts.hit():  # a library turned the KeyboardInterrupt into this
            raise KeyboardInterrupt from e
        if verbose:
            traceback.print_exc()
        print(f"{program} {command}: error: {error_line(e)}" + ("" if verbose else " (--verbose for the traceback)"),
              file=sys.stderr)
        return 1


class UsageError(Exception):
    """A wrong combination of flags (exit status 2)."""
