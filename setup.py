"""Packages of the wheel: ``fourdnex_jax`` plus the repository's top-level ``configs/`` and ``checkpoints/tiny``
carried inside it (as ``fourdnex_jax/configs`` and ``fourdnex_jax/checkpoints``), so an installed package has the
named configs and the demo bundle (fourdnex_jax/utils/resources.py finds them in either place). The repository keeps
one copy of each at the top level, where the docs and tests name them; pyproject.toml holds everything else."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["fourdnex_jax", "fourdnex_jax.*"]) + ["fourdnex_jax.configs",
                                                                        "fourdnex_jax.checkpoints"],
    package_dir={"fourdnex_jax.configs": "configs", "fourdnex_jax.checkpoints": "checkpoints"},
    package_data={"fourdnex_jax.configs": ["*.py"], "fourdnex_jax.checkpoints": ["tiny/**/*"]},
)
