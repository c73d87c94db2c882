"""Helpers of the training tests: a small random encoded6d dataset and subprocess runs of ``fourdnex train``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "tiny.py")


def random_dataset(root, n=8, nan_example=None) -> Path:
    """A random ``encoded6d`` dataset of ``n`` examples sized for the tiny config (see ``write_random_dataset``)."""
    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.testing.random_models import write_random_dataset

    return write_random_dataset(root, model_config(load_config_file(TINY)), num_examples=n, nan_example=nan_example)


def train_cmd(workdir, data_dir, *extra) -> list[str]:
    """The ``fourdnex train`` command line of the tiny config on ``data_dir``, logging every step."""
    return [sys.executable, "-m", "fourdnex_jax", "train", "--config", TINY, "--out", str(workdir),
            f"--config.data.dir={data_dir}", "--config.train.log_every=1", *extra]


def run_train(workdir, data_dir, *extra, devices=2, env=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    """Runs :func:`train_cmd` on ``devices`` CPU devices; with ``check`` asserts it succeeded."""
    e = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    e.update(env or {})
    out = subprocess.run(train_cmd(workdir, data_dir, *extra), cwd=ROOT, env=e, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out
