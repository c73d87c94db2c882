"""The package as users install it: every third-party import of fourdnex_jax/ is a declared dependency (pinned in
requirements.txt; the PyTorch oracle only in the `test` extra), and a non-editable install into a fresh venv runs
`fourdnex` from another directory with the shipped configs and tiny bundle."""

import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLE = {"torch", "diffusers", "transformers", "peft", "accelerate"}
# absl's INFO lines ("I1202 06:49:12.345 ...") and Python logging's default format
INFO_LINE = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d|INFO:)", re.M)


def _name(req: str) -> str:
    return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in (ROOT / "fourdnex_jax").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found |= {n.split(".")[0] for n in names} - stdlib - {"fourdnex_jax"}
    return found


def test_runtime_imports_are_declared_and_pinned():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    test_extra = {_name(r) for r in project["optional-dependencies"]["test"]}
    pinned = {_name(line) for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    dists = importlib.metadata.packages_distributions()
    missing = {}
    for module in sorted(_third_party_imports()):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        allowed = test_extra if module in ORACLE else runtime
        if not names & allowed:
            missing[module] = sorted(names)
    assert not missing, f"imported by fourdnex_jax but not declared in pyproject.toml: {missing}"
    assert runtime <= pinned, f"runtime dependencies without a pin in requirements.txt: {runtime - pinned}"
    assert not ORACLE & pinned, "the oracle belongs in requirements-test.txt, not the runtime set"


def _top_level_names(path: Path) -> set[str]:
    """What ``from MODULE import NAME`` can take from a module file: its top-level definitions, assignments and
    imports (every branch of a top-level if/try counted)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            body += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            body += [n for h in getattr(node, "handlers", []) for n in h.body]
    return names


def test_every_fourdnex_jax_import_names_something_that_exists():
    """Function-level imports run only when their branch does: a name moved to another module (``fourdnex
    bundle``'s ``check_output_dir``, once) would fail only there, in front of a user. Read from the sources (no
    import: the oracle modules would pull in torch)."""
    missing = []
    for path in sorted((ROOT / "fourdnex_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] == "fourdnex_jax"):
                continue
            where = ROOT.joinpath(*node.module.split("."))
            module = where / "__init__.py" if where.is_dir() else where.with_suffix(".py")
            if not module.is_file():
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: no module {node.module}")
                continue
            defined = _top_level_names(module)
            missing += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                        if a.name not in defined and not (where / f"{a.name}.py").is_file()
                        and not (where / a.name / "__init__.py").is_file()]
    assert not missing, missing


def _fresh_venv(tmp: Path) -> Path:
    """A venv of its own (no pip, no fourdnex_jax) that sees the dependencies already in this interpreter's
    site-packages through a .pth file, so nothing is downloaded."""
    venv = tmp / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(venv)],
                   check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    (Path(site) / "_deps_from_dev_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


@pytest.mark.slow
@pytest.mark.integration
def test_wheel_install_runs_from_another_directory(tmp_path):
    # build from a copy of the sources, so the checkout gets no build/ folder
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("fourdnex_jax", "configs", "checkpoints", "examples"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], check=True, timeout=600, capture_output=True)
    wheel = next(wheels.glob("fourdnex_jax-*.whl"))
    venv = _fresh_venv(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=600, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
    env.update(JAX_PLATFORMS="cpu")

    def run(*args, timeout=300):
        return subprocess.run([str(a) for a in args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)

    where = run(venv / "bin" / "python", "-c", "import fourdnex_jax; print(fourdnex_jax.__file__)")
    installed = Path(where.stdout.strip()).parent
    assert installed.is_relative_to(venv), where.stdout + where.stderr  # not the checkout
    helped = run(venv / "bin" / "python", "-m", "fourdnex_jax", "--help")
    assert helped.returncode == 0 and "generate" in helped.stdout and "make-tiny-bundle" not in helped.stdout
    dev = run(venv / "bin" / "python", "-m", "fourdnex_jax.dev", "--help")  # developer commands: their own entry
    assert dev.returncode == 0 and "make-tiny-bundle" in dev.stdout and "make-dit-fixtures" in dev.stdout
    described = run(venv / "bin" / "fourdnex", "describe", "--config", "wan21_i2v_14b_480p")
    assert described.returncode == 0 and "16,394,878,784 base" in described.stdout, described.stderr

    shutil.copy(ROOT / "examples" / "synth_heldout_000000.png", work / "photo.png")
    gen = run(venv / "bin" / "fourdnex", "generate", "--image", "photo.png", "--out", "result", timeout=900)
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert not INFO_LINE.search(gen.stderr + gen.stdout), "library INFO lines printed:\n" + gen.stderr[-3000:]
    assert gen.stdout.startswith("generate: 1 image(s) -> result in ") and "cameras: " in gen.stdout, gen.stdout
    summary = json.loads((work / "result" / "summary.json").read_text())
    assert Path(summary["checkpoint"]) == installed / "checkpoints" / "tiny"  # the bundle shipped in the wheel
    for name in ("rgb.mp4", "xyz.mp4", "pointmaps.npz", "input.png", "cameras.json", "depth.npz", "scene.glb",
                 "viewer.html", "novel_orbit.mp4"):
        assert (work / "result" / name).is_file(), name

    # README's "As a package" commands and its Python API block, as written, in a folder without the repository
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### As a package"):]
    start = section.index("```bash\n") + 8
    block = section[start:section.index("\n```", start)]  # up to the closing fence (not the opening one)
    commands = [line.split("#")[0].split() for line in block.splitlines() if line.startswith("fourdnex ")]
    assert [c[:2] for c in commands] == [["fourdnex", "--help"], ["fourdnex", "generate"]], commands
    for command in commands:
        res = run(venv / "bin" / command[0], *command[1:], timeout=900)
        assert res.returncode == 0, (command, res.stderr[-3000:])
    out = work / commands[1][commands[1].index("--out") + 1]
    assert (out / "rgb.mp4").is_file() and json.loads((out / "summary.json").read_text())["input"].startswith(
        str(installed))  # the example image shipped in the wheel
    api_section = text[text.index("### Python API"):]
    snippet = api_section[api_section.index("```python\n") + 10:]
    api = run(venv / "bin" / "python", "-c", snippet[:snippet.index("\n```")], timeout=900)
    assert api.returncode == 0 and "Result(" in api.stdout, api.stderr[-3000:]
    assert (work / "out" / "api" / "rgb.mp4").is_file()
