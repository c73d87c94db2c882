"""The `fourdnex` command: every subcommand's --help exits 0 and documents every flag; configs by name; bad input
is one line (a traceback only with --verbose); usage errors exit 2."""

import json
from pathlib import Path

import pytest

from fourdnex_jax.cli.main import COMMANDS
from fourdnex_jax.utils import resources
from tests.helpers import run_cli, run_python

pytestmark = pytest.mark.integration  # every subcommand in subprocesses

ROOT = Path(__file__).resolve().parents[2]

# Imports every subcommand in one process; after each, its flags are deleted so that the next one can define its
# own --out / --config (each real run imports exactly one subcommand).
HELP_ALL = r"""
import contextlib, io, json, sys
from absl import flags
from fourdnex_jax.cli import main as cli
FLAGS = flags.FLAGS
report = {}
for name, (mod, _) in cli.COMMANDS.items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main([name, "--help"])
    module = sys.modules[f"fourdnex_jax.cli.{mod}"]
    own = list(FLAGS.flags_by_module_dict().get(module.__name__, []))
    report[name] = {"rc": rc, "text": buf.getvalue(), "doc": module.__doc__,
                    "flags": [{"name": f.name, "help": f.help, "bool": isinstance(f.default, bool),
                               "has_default": f.default not in (None, "", [])} for f in own]}
    for f in own:
        delattr(FLAGS, f.name)
print(json.dumps(report))
"""


def test_every_subcommand_help_exits_0_and_documents_every_flag():
    res = run_python("-c", HELP_ALL, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.splitlines()[-1])
    assert list(report) == list(COMMANDS)
    for name, r in report.items():
        assert r["rc"] == 0, name
        text = r["text"]
        assert text.startswith(f"usage: fourdnex {name}") and r["doc"].strip().splitlines()[0] in text, name
        lines = text.split("\nflags:\n", 1)[1].splitlines()  # the flag list after the docstring
        assert r["flags"], f"{name} defines no flags"
        for f in r["flags"]:
            head = "--config NAME|FILE" if f["name"] == "config" else (
                f"--[no]{f['name']}" if f["bool"] else f"--{f['name']}")
            at = [i for i, line in enumerate(lines) if line.strip().startswith(head + " ") or line.strip() == head]
            assert at, f"{name}: --{f['name']} missing from --help"
            assert " ".join(f["help"].split()) in " ".join(lines[at[0] + 1].split()), f"{name}: --{f['name']} help"
            assert ("(default: " in lines[at[0]]) == f["has_default"], f"{name}: --{f['name']} default"
        assert "--[no]verbose" in text, name


def test_top_level_help_lists_the_subcommands():
    res = run_cli("--help")
    assert res.returncode == 0
    for name in COMMANDS:
        assert f"\n  {name} " in res.stdout, name
    bad = run_cli("nope")
    assert bad.returncode == 2 and "unknown subcommand 'nope'" in bad.stderr


def test_configs_by_name_or_path(tmp_path):
    assert resources.config_names() == ["small", "tiny", "wan21_i2v_14b_480p"]
    assert resources.config_path("tiny") == ROOT / "configs" / "tiny.py"
    assert resources.config_path(str(ROOT / "configs" / "small.py")) == ROOT / "configs" / "small.py"
    with pytest.raises(ValueError, match="unknown config 'tinyy': use one of"):
        resources.config_path("tinyy")
    with pytest.raises(ValueError, match="does not exist"):
        resources.config_path(str(tmp_path / "x.py"))
    assert resources.default_bundle() == ROOT / "checkpoints" / "tiny"


def test_config_help_and_config_by_name(tmp_path):
    res = run_cli("describe", "--config", "small", "--config-help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "--config.model.num_layers=4  (int)" in res.stdout and "--config.sample.num_steps=None" in res.stdout
    res = run_cli("describe", "--config=small", "--config.model.num_layers=3", cwd=tmp_path)
    assert res.returncode == 0 and "config small: Wan DiT, 3 layers" in res.stdout, res.stderr
    res = run_cli("describe", "--config", "smal", cwd=tmp_path)
    assert res.returncode == 2 and "unknown config 'smal'" in res.stderr


def test_bad_input_is_one_line_and_the_traceback_needs_verbose(tmp_path):
    args = ("generate", "--image", tmp_path / "missing.png", "--out", tmp_path / "out")
    res = run_cli(*args)
    assert res.returncode == 1, res.stderr
    assert res.stderr.startswith("fourdnex generate: error: ") and "missing.png" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "out").exists()
    verbose = run_cli(*args, "--verbose")
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
    usage = run_cli("generate", "--image", tmp_path / "missing.png")
    assert usage.returncode == 2 and "usage error" in usage.stderr
    unknown = run_cli("render", "--scene", tmp_path, "--out", tmp_path / "o.mp4", "--bogus")
    assert unknown.returncode == 2 and "bogus" in unknown.stderr


def test_an_installation_without_the_tiny_bundle_says_how_to_get_one(monkeypatch):
    monkeypatch.setattr(resources, "shipped", lambda relative: None)
    with pytest.raises(FileNotFoundError, match="pass --checkpoint DIR, a bundle converted with `fourdnex convert`"):
        resources.default_bundle()
