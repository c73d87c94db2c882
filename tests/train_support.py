"""Shared helpers of the training tests: a small random encoded6d dataset and subprocess runs of tools/train.py."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.py")


def random_dataset(root, n=8, nan_example=None):
    from fourdnex_jax.config import load_config_file, model_config
    from fourdnex_jax.training import input as input_lib

    return input_lib.write_random_dataset(root, model_config(load_config_file(TINY)), num_examples=n,
                                          nan_example=nan_example)


def train_cmd(workdir, data_dir, *extra):
    return [sys.executable, str(ROOT / "tools" / "train.py"), "--config", TINY, "--workdir", str(workdir),
            f"--config.data.dir={data_dir}", "--config.train.log_every=1", *extra]


def run_train(workdir, data_dir, *extra, devices=2, env=None, check=True, timeout=300):
    e = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    e.update(env or {})
    out = subprocess.run(train_cmd(workdir, data_dir, *extra), cwd=ROOT, env=e, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out
