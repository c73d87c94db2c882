"""Helpers shared by the test modules (``from tests.helpers import ...``; the repository root is on ``sys.path``
through pytest.ini's ``pythonpath``). Helpers that benchmarks or developer commands also use live in
:mod:`fourdnex_jax.testing`.

* :func:`tiny_dit_config`: the DiT of ``configs/tiny.py`` (2 heads x 32, 2 layers, FFN 128, LoRA rank 4, width
  layout), with overrides -- the one small DiT the unit tests build;
* :func:`run_python` / :func:`run_cli`: a child process the way a user starts one (``python ...`` /
  ``python -m fourdnex_jax ...``), on the CPU backend with one device (the test session's 8 fake devices are not
  inherited), importing this checkout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "tiny.py"


def tiny_dit_config(**overrides: Any):
    """The :class:`~fourdnex_jax.models.transformer.WanTransformerConfig` of ``configs/tiny.py`` with
    ``overrides`` (e.g. ``lora_rank=0, lora_alpha=0.0`` for a plain DiT)."""
    from fourdnex_jax.config import load_config_file, model_config

    return model_config(load_config_file(TINY_CONFIG)).replace(**overrides)


def run_python(*args: Any, cwd: str | os.PathLike = ROOT, timeout: float = 300, env: dict[str, str] | None = None,
               check: bool = False) -> subprocess.CompletedProcess:
    """``python ARGS`` (str-converted) in a child process: ``JAX_PLATFORMS=cpu``, ``XLA_FLAGS`` cleared (one
    device) and ``PYTHONPATH`` = the repository root, then ``env`` on top. Output captured as text; ``check``
    asserts a zero exit status, showing the child's stderr tail."""
    child = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    child.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    child.update(env or {})
    res = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=child, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


def run_cli(*args: Any, **kw: Any) -> subprocess.CompletedProcess:
    """``python -m fourdnex_jax ARGS`` (``fourdnex ARGS``) through :func:`run_python`."""
    return run_python("-m", "fourdnex_jax", *args, **kw)
