"""Files that ship with the package: the experiment configs (``configs/*.py``) and the tiny demo bundle
(``checkpoints/tiny``).

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
