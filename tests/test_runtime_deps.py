"""The package must not need the PyTorch oracle at run time: importing every module pulls in no torch."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib, pkgutil, sys
import fourdnex_jax
for m in pkgutil.walk_packages(fourdnex_jax.__path__, 'fourdnex_jax.'):
    importlib.import_module(m.name)
bad = sorted(n for n in ('torch', 'diffusers', 'transformers', 'peft') if n in sys.modules)
print('imported oracle packages:', bad)
sys.exit(1 if bad else 0)
"""


def test_no_torch_at_runtime():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
