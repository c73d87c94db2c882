"""Every command block of README.md, run as written, in order, in a scratch copy of the repository (with the tiny
model): each command exits 0 and writes non-empty outputs, and every video it writes has visible content. The
commands that need a download, an accelerator or a TPU compiler are in SKIPPED with the reason; a README command
that matches no rule runs, so a new one is tested by default.

`bash tools/run.sh ...` runs against this interpreter: the scratch `.venv/bin/python` calls it and the set-up stamp
is written, so the job's set-up (pip, network) is skipped and the job itself runs as written."""

import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: regex on a README command -> why it is not run here.
SKIPPED = {
    r"^bash tools/run\.sh test": "the test suite itself",
    r"^pip install": "installs the package: tests/test_packaging.py (slow tier) does it in a fresh venv",
    r"^huggingface-cli download": "downloads the 14B weights (~60 GB)",
    r"--src Wan2\.1-I2V-14B-480P-Diffusers": "needs the downloaded 14B weights",
    r"--src ckpt/|--checkpoint ckpt/": "needs the converted 14B weights",
    r" plan .*--topology v": "needs libtpu (requirements-tpu.txt)",
}


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block, in order (continuation lines joined, comments kept for reading)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED.items() if re.search(pattern, command)), None)


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) >= 15
    ran = [c for c in commands if skip_reason(c) is None]
    assert any(c.startswith("bash tools/run.sh demo") for c in ran) and any(" render " in c for c in ran)
    assert len(ran) >= 10, ran


def _scratch(tmp: Path) -> Path:
    """A copy of the repository's tracked files with a `.venv` that runs this interpreter."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    root = tmp / "repo"
    for name in files:
        if (ROOT / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / name)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "fourdnex").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m fourdnex_jax "$@"\n')
    for job, sets in (("demo", ["requirements.txt"]), ("test", ["requirements.txt", "requirements-test.txt"])):
        data = b"".join((root / n).read_bytes() for n in [*sets, "constraints.txt", "pyproject.toml", "setup.py"])
        (root / ".venv" / f".stamp-{job}.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    return root


def _outputs(command: str, root: Path) -> list[Path]:
    args = shlex.split(command, comments=True)
    outs = [root / args[i + 1] for i, a in enumerate(args[:-1]) if a == "--out"]
    if args[:3] == ["bash", "tools/run.sh", "demo"]:
        outs.append(root / "out" / "demo")
    return outs


def _check_video(path: Path) -> None:
    from fourdnex_jax.media.io import read_video

    frames = read_video(path)
    assert frames.size and (frames.max(axis=(1, 2, 3)) > 16).all(), f"{path}: a black frame"


def _check_output(path: Path) -> None:
    assert path.exists(), f"{path} not written"
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    assert files and sum(p.stat().st_size for p in files) > 0, f"{path}: empty"
    for p in files:
        if p.suffix == ".mp4":
            _check_video(p)
        elif p.suffix == ".png" and p.parent.name != "images":
            from fourdnex_jax.media.io import read_image

            assert read_image(p).max() > 16, f"{p}: black"


@pytest.mark.integration
@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path):
    root = _scratch(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PYTHONPATH")}
    env.update(JAX_PLATFORMS="cpu", PATH=f"{root / '.venv' / 'bin'}:{env['PATH']}", PYTHONPATH=str(root),
               FOURDNEX_CACHE=str(tmp_path / "cache"))
    ran = []
    for command in readme_commands((root / "README.md").read_text()):
        if skip_reason(command):
            continue
        res = subprocess.run(["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True,
                             timeout=1800)
        assert res.returncode == 0, f"{command}\nexit {res.returncode}\n{res.stderr[-3000:]}"
        outs = _outputs(command, root)
        assert outs or res.stdout.strip(), f"{command}: printed nothing and writes no --out"
        for out in outs:
            _check_output(out)
        ran.append(command)
    assert len(ran) >= 10
