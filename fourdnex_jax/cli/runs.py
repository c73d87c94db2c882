"""From training to inference: a ``fourdnex train`` run folder (its adapter checkpoints + a reference to the base
it was trained on, :mod:`fourdnex_jax.training.checkpoint`) as a :class:`~fourdnex_jax.pipelines.bundle.Bundle`.

The run holds the DiT only (base reference + LoRA/domain embeddings); the VAE, encoders, tokenizer and sampling
preset come from a *base bundle*: the converted folder the run's base came from (``config.train.base_checkpoint``),
or, for a run on a random base (the tiny demo), the bundle given with ``--base`` (its towers must be the ones the
training data was encoded with, e.g. ``checkpoints/tiny`` for runs of the tiny config).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fourdnex_jax.utils.errors import InputError


def is_run(directory: str | Path) -> bool:
    """A training run folder (``checkpoints/<step>``), not a bundle (``manifest.json``)."""
    d = Path(directory)
    return (d / "checkpoints").is_dir() and not (d / "manifest.json").exists()


def base_bundle_of(run: str | Path, base: str | Path | None) -> tuple[Path, int, dict[str, Any]]:
    """(the base bundle folder, the run's latest step, its metadata); InputError when the run names no bundle and
    ``base`` is not given."""
    from fourdnex_jax.training.checkpoint import read_meta

    step, meta = read_meta(run)
    ref = meta.get("base", {})
    if base is not None:
        return Path(base), step, meta
    if ref.get("kind") == "checkpoint" and (Path(ref["path"]) / "manifest.json").exists():
        return Path(ref["path"]), step, meta
    raise InputError(f"{run}: this run trained on a {ref.get('kind', 'unknown')} base, so it does not say which "
                     "VAE / encoders / tokenizer go with it; pass --base BUNDLE (the bundle its data was encoded "
                     "with, e.g. checkpoints/tiny for runs of the tiny config)")


def load_run_bundle(run: str | Path, base: str | Path | None = None, mesh=None, rules=None):
    """The bundle ``base`` (or the run's own base folder) with its DiT replaced by the run's trained DiT (the base
    it was trained on + the latest trained tensors); ``bundle.info`` records the run and step. With ``mesh``,
    every model is restored straight into the shards ``rules`` give it (as :func:`load_bundle` does)."""
    from fourdnex_jax.pipelines.bundle import load_bundle
    from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES
    from fourdnex_jax.training.checkpoint import load_trained_model

    rules = DEFAULT_LOGICAL_AXIS_RULES if rules is None else rules
    base_dir, step, meta = base_bundle_of(run, base)
    bundle = load_bundle(base_dir, mesh=mesh, rules=rules)
    dit = load_trained_model(run, mesh=mesh, rules=rules)
    if dit.config.in_channels != bundle.transformer.config.in_channels or (
            dit.config.text_dim, dit.config.image_dim) != (bundle.transformer.config.text_dim,
                                                           bundle.transformer.config.image_dim):
        raise InputError(f"{run}: its DiT (text_dim {dit.config.text_dim}, image_dim {dit.config.image_dim}) does "
                         f"not read the encoders of {base_dir} (text_dim {bundle.transformer.config.text_dim}, "
                         f"image_dim {bundle.transformer.config.image_dim}); pass the bundle it was trained with")
    info = dict(bundle.info, training_run=str(run), training_step=step, training_base=meta.get("base"),
                towers_from=str(base_dir))
    return dataclasses.replace(bundle, transformer=dit, info=info)
