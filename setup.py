"""Packages of the wheel: ``fourdnex_jax`` plus the repository's top-level ``configs/``, ``checkpoints/tiny`` and
``examples/`` carried inside it (as ``fourdnex_jax/configs``, ``fourdnex_jax/checkpoints``, ``fourdnex_jax/examples``),
so an installed package has the named configs, the demo bundle and the example image
(fourdnex_jax/utils/resources.py finds them in either place). The repository keeps one copy of each at the top
level, where the docs and tests name them; pyproject.toml holds everything else.

Every folder of the bundle whose name is an identifier is listed as a (namespace) package: Python would import it,
so setuptools warns ("Package would be ignored", ~40 lines each) about any such folder that carries package data
without being declared. Folders whose names are not identifiers (``ocdbt.process_0``) are plain data.

An editable install (``pip install -e .``, what tools/run.sh does) maps nothing: the checkout is the package's home
and resources.py finds the top-level folders there, and a plain ``.pth`` entry needs no import hook (with the
mappings setuptools installs a meta path finder and says so in a 10-line notice).
"""

import sys

from setuptools import find_namespace_packages, find_packages, setup

DATA_DIRS = {"fourdnex_jax.configs": "configs", "fourdnex_jax.checkpoints": "checkpoints",
             "fourdnex_jax.examples": "examples"}

PACKAGES = find_packages(include=["fourdnex_jax", "fourdnex_jax.*"])

if "editable_wheel" in sys.argv:
    setup(packages=PACKAGES, package_dir={"": "."})
else:
    setup(
        packages=PACKAGES + list(DATA_DIRS) + [f"fourdnex_jax.checkpoints.{p}" for p in find_namespace_packages(
            "checkpoints", include=["tiny", "tiny.*"])],
        package_dir=DATA_DIRS,
        package_data={"fourdnex_jax.configs": ["*.py"], "fourdnex_jax.checkpoints": ["tiny/**/*"],
                      "fourdnex_jax.examples": ["*.png", "*.txt", "*.npz"]},
    )
