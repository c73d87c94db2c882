"""The package's import graph has no cycle (files or packages, deferred imports included) and respects LAYERS;
tests load nothing by file path. The checker itself is tested on planted packages, so a clean report means something.
"""

import re
from pathlib import Path

from fourdnex_jax.testing import import_graph

ROOT = Path(__file__).resolve().parents[2]


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_finds_a_deferred_file_cycle_and_a_package_cycle(tmp_path):
    root = _write(tmp_path, {
        "fourdnex_jax/__init__.py": "",
        "fourdnex_jax/ops/__init__.py": "",
        "fourdnex_jax/ops/a.py": "from fourdnex_jax.ops import b\n",
        "fourdnex_jax/ops/b.py": "def f():\n    from . import a\n",
        "fourdnex_jax/models/__init__.py": "",
        "fourdnex_jax/models/m.py": "import fourdnex_jax.utils.u\n",
        "fourdnex_jax/utils/__init__.py": "",
        "fourdnex_jax/utils/u.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                    "    import fourdnex_jax.ops.a\n"
                                    "def g():\n    from fourdnex_jax.models.m import x\n"),
    })
    graph = import_graph.file_graph(root)
    assert graph["fourdnex_jax.ops.b"] == {"fourdnex_jax.ops.a"}
    assert graph["fourdnex_jax.utils.u"] == {"fourdnex_jax.models.m"}  # the TYPE_CHECKING import does not count
    assert import_graph.cycles(graph) == [["fourdnex_jax.models.m", "fourdnex_jax.utils.u"],
                                          ["fourdnex_jax.ops.a", "fourdnex_jax.ops.b"]]
    assert ["fourdnex_jax.models", "fourdnex_jax.utils"] in import_graph.cycles(import_graph.package_graph(graph))
    problems = import_graph.report(root)
    assert any(p.startswith("layering: fourdnex_jax.utils.u -> fourdnex_jax.models.m") for p in problems)


def test_checker_flags_imports_across_one_layer(tmp_path):
    root = _write(tmp_path, {
        "fourdnex_jax/__init__.py": "",
        "fourdnex_jax/training/__init__.py": "",
        "fourdnex_jax/training/t.py": "from fourdnex_jax.pipelines.p import mask\n",
        "fourdnex_jax/pipelines/__init__.py": "",
        "fourdnex_jax/pipelines/p.py": "mask = 1\n",
    })
    assert import_graph.report(root) == [
        "layering: fourdnex_jax.training.t -> fourdnex_jax.pipelines.p: 'training' and 'pipelines' are one layer "
        "(neither may import the other)"]


def test_product_code_may_not_import_the_test_helpers(tmp_path):
    """``testing`` sits above every product room: the command line (and anything below it) importing it is a
    layering violation, the developer commands (``dev``) may; a temporary exception that no longer exists is
    reported."""
    root = _write(tmp_path, {
        "fourdnex_jax/__init__.py": "",
        "fourdnex_jax/testing/__init__.py": "",
        "fourdnex_jax/testing/numerics.py": "psnr = 1\n",
        "fourdnex_jax/cli/__init__.py": "",
        "fourdnex_jax/cli/tool.py": "def main():\n    from fourdnex_jax.testing.numerics import psnr\n",
        "fourdnex_jax/dev/__init__.py": "",
        "fourdnex_jax/dev/fixtures.py": "from fourdnex_jax.testing import numerics\n",
    })
    assert import_graph.report(root) == [
        "layering: fourdnex_jax.cli.tool -> fourdnex_jax.testing.numerics: 'cli' is below 'testing'"]
    graph = import_graph.file_graph(root)
    allowed = {("fourdnex_jax.cli.tool", "fourdnex_jax.testing.numerics"): "moving"}
    assert import_graph.layer_violations(graph, exceptions=allowed) == []
    stale = {("fourdnex_jax.dev.fixtures", "fourdnex_jax.testing.scenes"): "moved"}
    assert import_graph.layer_violations(graph, exceptions={**allowed, **stale}) == [
        "fourdnex_jax.dev.fixtures -> fourdnex_jax.testing.scenes: listed in TEMPORARY_EXCEPTIONS but no longer "
        "imported; remove the entry"]


def test_package_has_no_import_cycle_and_respects_the_layers():
    problems = import_graph.report(ROOT)
    assert problems == [], "\n".join(problems)


def test_tests_load_nothing_by_path():
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        text = path.read_text()
        if re.search(r"spec_from_file_location|^\s*from conftest import|^\s*import conftest", text, re.M):
            offenders.append(str(path.relative_to(ROOT)))
    offenders.remove("tests/testing/test_import_graph.py")  # this file names the patterns
    assert offenders == []
