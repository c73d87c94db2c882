"""Test setup: 8 fake CPU devices (set before jax is imported) and the torch-oracle helpers."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ORACLE_PACKAGES = ("torch", "diffusers", "transformers", "peft")


class _BlockOracle:
    """Import hook of ``--without-torch``: the PyTorch oracle packages look uninstalled."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ORACLE_PACKAGES:
            raise ModuleNotFoundError(f"No module named {name!r} (--without-torch)", name=name)
        return None


def pytest_addoption(parser):
    parser.addoption("--without-torch", action="store_true",
                     help="run as on a machine without the PyTorch oracle: oracle tests skip, the rest must pass")


def pytest_configure(config):
    if config.getoption("--without-torch"):
        loaded = [m for m in sys.modules if m.split(".")[0] in ORACLE_PACKAGES]
        if loaded:
            raise pytest.UsageError(f"--without-torch: oracle modules already imported: {loaded[:5]}")
        sys.meta_path.insert(0, _BlockOracle())


def rel_l2(actual, expected) -> float:
    """Relative L2 error ||actual - expected|| / ||expected|| in float64 (the parity metric of the test suite)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}"
    return float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30))


@pytest.fixture(scope="session")
def torch_oracle():
    """The PyTorch reference stack; tests that use it are skipped (not failed) where torch is not installed."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    return torch
