"""Test setup: 8 fake CPU devices (set before jax is imported), ``--without-torch``, hardware-marker skips.

Shared helpers live in ``tests/helpers.py`` (only the tests use them: the tiny DiT config, the CLI in a subprocess)
and ``fourdnex_jax.testing`` (also used by benchmarks and developer commands), not here. Tiers: CONTRIBUTING.md.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sys

import pytest

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


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` / ``tpu`` tests where jax has no such backend (jax is asked only if such a test was collected)."""
    wanted = {m for m in ("gpu", "tpu") if any(item.get_closest_marker(m) for item in items)}
    if not wanted:
        return
    import jax

    platforms = {d.platform for d in jax.devices()}
    for m in wanted:
        if m not in platforms:
            skip = pytest.mark.skip(reason=f"needs a {m.upper()} backend (jax devices: {sorted(platforms)})")
            for item in items:
                if item.get_closest_marker(m):
                    item.add_marker(skip)


@pytest.fixture(autouse=True, scope="module")
def _clear_jax_caches():
    """Drop jax's compiled-function caches after each test module, so executables do not pile up over the suite."""
    yield
    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()


@pytest.fixture(scope="session")
def torch_oracle():
    """The PyTorch reference stack; tests that use it are skipped (not failed) where torch is not installed."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    return torch
