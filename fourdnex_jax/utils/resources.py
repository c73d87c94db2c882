"""Files that ship with the package: the experiment configs (``configs/*.py``), the tiny demo bundle
(``checkpoints/tiny``, named ``tiny`` wherever a bundle is asked for) and the example image
(``examples/synth_heldout_000000.png``, :func:`example_image`).

In the repository they live at the top level (``configs/``, ``checkpoints/tiny``: the one source, named by the docs
and the tests); a wheel carries them inside the package (``fourdnex_jax/configs``, ``fourdnex_jax/checkpoints/tiny``,
mapped there by ``setup.py``), so an installed package finds them without the repository. :func:`shipped` looks in
the package first, then in the checkout the package was imported from.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # .../fourdnex_jax
_CHECKOUT = _PACKAGE.parent  # the repository root when imported from a source checkout


def shipped(relative: str) -> Path | None:
    """The shipped file or folder ``relative`` (e.g. ``"configs/tiny.py"``, ``"checkpoints/tiny"``), or None when
    neither an installed package nor the source checkout has it."""
    for base in (_PACKAGE, _CHECKOUT):
        p = base / relative
        if p.exists():
            return p
    return None


def configs_dir() -> Path:
    """The folder of the named experiment configs (``tiny``, ``small``, ``wan21_i2v_14b_480p``)."""
    found = shipped("configs")
    if found is None:
        raise FileNotFoundError(f"no configs/ folder in {_PACKAGE} or {_CHECKOUT}: reinstall fourdnex_jax")
    return found


def config_names() -> list[str]:
    """Names accepted by :func:`config_path`."""
    return sorted(p.stem for p in configs_dir().glob("*.py") if not p.name.startswith("_"))


def config_path(name_or_path: str) -> Path:
    """``"tiny"`` -> the shipped ``configs/tiny.py``; a path to a config file is returned as given (must exist).
    Raises ValueError naming the known configs otherwise."""
    p = Path(name_or_path)
    if p.suffix == ".py" or len(p.parts) > 1:
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist; give a file or one of the names {config_names()}")
        return p
    found = configs_dir() / f"{name_or_path}.py"
    if not found.is_file():
        raise ValueError(f"unknown config {name_or_path!r}: use one of {config_names()} or a path to a .py file")
    return found


#: Bundles that ship with the package, by the name ``--checkpoint`` / ``--base`` / ``from_pretrained`` accept.
SHIPPED_BUNDLES = {"tiny": "checkpoints/tiny"}
#: The example image (with its caption ``.txt`` and ground truth ``_gt.npz`` next to it).
EXAMPLE_IMAGE = "examples/synth_heldout_000000.png"


def example_image() -> Path:
    """The shipped example image (a held-out synthetic scene the tiny model was not trained on; its caption is the
    ``.txt`` next to it), from the wheel or the checkout."""
    found = shipped(EXAMPLE_IMAGE)
    if found is None:
        raise FileNotFoundError(f"this installation has no {EXAMPLE_IMAGE}: reinstall fourdnex_jax (pip install .)")
    return found


def bundle_path(name_or_path: str | Path | None) -> Path:
    """A bundle folder: None or a shipped name (``"tiny"``) -> the shipped bundle; anything else is a path, which
    must be a folder (FileNotFoundError saying that no argument / ``tiny`` is the shipped model otherwise). A
    folder of yours called ``tiny`` is named ``./tiny``."""
    if name_or_path is None or str(name_or_path) in SHIPPED_BUNDLES:
        return default_bundle()
    p = Path(name_or_path)
    if not p.is_dir():
        raise FileNotFoundError(
            f"{p}: no such bundle folder (relative to {Path.cwd()}); the shipped tiny model is named "
            f"'tiny' (`--checkpoint tiny`, `--base tiny`, `ImageTo4DPipeline.from_pretrained()` with no argument), "
            "others are folders written by `fourdnex convert` or `fourdnex bundle`")
    return p


def default_bundle() -> Path:
    """The tiny demo bundle shipped with the package (``checkpoints/tiny``); FileNotFoundError saying where to get
    one when this installation has none."""
    found = shipped("checkpoints/tiny")
    if found is None:
        raise FileNotFoundError(
            "no model bundle given and this installation has no tiny demo bundle (checkpoints/tiny ships in the "
            "source repository and in wheels built from it): pass --checkpoint DIR, a bundle converted with "
            "`fourdnex convert` (README: Weights), or install from the repository (pip install .)")
    return found
