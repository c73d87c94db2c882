"""From training to inference: a ``fourdnex train`` run folder (its adapter checkpoints + a reference to the base
it was trained on, :mod:`fourdnex_jax.weights.runs`) as a :class:`~fourdnex_jax.pipelines.bundle.Bundle`, in
memory (:func:`load_run_bundle`, what ``fourdnex generate --checkpoint RUN`` runs) or written as a bundle folder
(:func:`write_run_bundle`, ``fourdnex bundle``).

The run holds the DiT only; the VAE, encoders, tokenizer and sampling preset come from a *base bundle*, which must
hold the towers that encoded the run's training data. The encode step records those towers' content fingerprints
in the dataset (``towers.json``, :mod:`fourdnex_jax.data.encode`) and the trainer copies the record into the run, so
a base whose towers differ is refused in one line naming both. The base is, in order: the one given (``--base``;
``tiny`` names the shipped bundle), the bundle the record names (e.g. the random towers of ``fourdnex train
--synthetic``), the converted folder the run's DiT base came from (``config.train.base_checkpoint``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.resources import bundle_path

TOWERS = ("vae", "text_encoder", "image_encoder")


def is_run(directory: str | os.PathLike) -> bool:
    """A training run folder (``checkpoints/<step>``), not a bundle (``manifest.json``)."""
    d = Path(directory)
    return (d / "checkpoints").is_dir() and not (d / "manifest.json").exists()


def towers_record(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The run's record of the towers that encoded its data (``{"fingerprint": ..., "bundle": ...}``): from its
    metadata, else from its dataset's ``towers.json`` when that still exists; None when neither says."""
    from fourdnex_jax.data.encode import read_towers_record

    if meta.get("towers"):
        return meta["towers"]
    dataset = meta.get("dataset")
    return read_towers_record(dataset) if dataset and Path(dataset).is_dir() else None


def base_bundle_of(run: str | os.PathLike, base: str | os.PathLike | None) -> tuple[Path, int, dict[str, Any]]:
    """(the base bundle folder, the run's latest step, its metadata) by the order of the module docstring;
    InputError when none applies."""
    from fourdnex_jax.weights.runs import read_meta

    step, meta = read_meta(run)
    if base is not None:
        return bundle_path(base), step, meta
    record = towers_record(meta) or {}
    if record.get("bundle") and (Path(record["bundle"]) / "manifest.json").is_file():
        return Path(record["bundle"]), step, meta
    ref = meta.get("base", {})
    if ref.get("kind") == "checkpoint" and (Path(ref["path"]) / "manifest.json").exists():
        return Path(ref["path"]), step, meta
    raise InputError(f"{run}: this run trained on a {ref.get('kind', 'unknown')} base and does not name the bundle "
                     "holding the VAE / encoders / tokenizer that encoded its data; pass --base BUNDLE (the bundle "
                     "its data was encoded with; `tiny` is the shipped one)")


def _short(fingerprint: dict[str, str], names) -> str:
    return ", ".join(f"{n} {fingerprint.get(n, '?')}" for n in names)


def check_towers(run: str | os.PathLike, meta: dict[str, Any], base_dir: Path, bundle) -> str:
    """Compares the base bundle's towers with the run's record: InputError naming both when they differ; else the
    verdict recorded in the new bundle (``matched`` or why it was not checked)."""
    from fourdnex_jax.models.towers import Towers, fingerprint

    record = towers_record(meta)
    if record is None:
        return (f"unchecked: {run} does not record which towers encoded its data (its dataset has no towers.json); "
                f"the towers of {base_dir} are assumed")
    have = fingerprint(Towers(bundle.vae, bundle.text_encoder, bundle.image_encoder))
    want = record["fingerprint"]
    differ = [n for n in TOWERS if have.get(n) != want.get(n)]
    if differ:
        where = f" (kept in {record['bundle']})" if record.get("bundle") else ""
        hint = (f"pass --base {record['bundle']}" if record.get("bundle")
                else "pass the bundle its data was encoded with")
        raise InputError(f"--base {base_dir}: its towers ({_short(have, differ)}) are not the ones that encoded the "
                         f"data of {run} ({_short(want, differ)}{where}); {hint}")
    return "matched"


def load_run_bundle(run: str | os.PathLike, base: str | os.PathLike | None = None, mesh=None, rules=None):
    """The base bundle (:func:`base_bundle_of`) with its DiT replaced by the run's trained DiT (the base it was
    trained on + the latest trained tensors), its towers checked against the run's record (:func:`check_towers`).
    ``bundle.info`` describes the new pairing (run, step, where the towers came from, the check), not the base's
    own model. With ``mesh``, every model is restored straight into the shards ``rules`` give it (as
    :func:`~fourdnex_jax.pipelines.bundle.load_bundle` does)."""
    from fourdnex_jax.pipelines.bundle import load_bundle
    from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES
    from fourdnex_jax.weights.runs import load_trained_model

    rules = DEFAULT_LOGICAL_AXIS_RULES if rules is None else rules
    base_dir, step, meta = base_bundle_of(run, base)
    bundle = load_bundle(base_dir, mesh=mesh, rules=rules)
    verdict = check_towers(run, meta, base_dir, bundle)
    dit = load_trained_model(run, mesh=mesh, rules=rules)
    if dit.config.in_channels != bundle.transformer.config.in_channels or (
            dit.config.text_dim, dit.config.image_dim) != (bundle.transformer.config.text_dim,
                                                           bundle.transformer.config.image_dim):
        raise InputError(f"{run}: its DiT (text_dim {dit.config.text_dim}, image_dim {dit.config.image_dim}) does "
                         f"not read the encoders of {base_dir} (text_dim {bundle.transformer.config.text_dim}, "
                         f"image_dim {bundle.transformer.config.image_dim}); pass the bundle it was trained with")
    info = {"name": f"DiT of training run {Path(run).name} (step {step}) on the towers of {base_dir}",
            "training_run": str(run), "training_step": step, "training_base": meta.get("base"),
            "towers_from": str(base_dir), "towers_check": verdict,
            "towers_bundle_name": bundle.info.get("name")}
    return dataclasses.replace(bundle, transformer=dit, info=info)


def write_run_bundle(run: str | os.PathLike, out: str | os.PathLike, base: str | os.PathLike | None = None):
    """:func:`load_run_bundle`, written to ``out`` as a bundle folder (published as a unit: a half-written bundle
    is never left; an ``out`` that holds files is refused). Returns the bundle."""
    from fourdnex_jax.media.publish import check_output_dir, publish_dir
    from fourdnex_jax.pipelines.bundle import save_bundle

    check_output_dir(out)
    b = load_run_bundle(run, base)
    with publish_dir(out, writer="bundle") as tmp:
        save_bundle(tmp, transformer=b.transformer, vae=b.vae, text_encoder=b.text_encoder,
                    image_encoder=b.image_encoder, tokenizer_dir=b.directory / "tokenizer",
                    clip_preprocess={"size": dict(b.clip_preprocess.size),
                                     "crop_size": dict(b.clip_preprocess.crop_size)},
                    preset=b.preset, spec=b.spec, scheduler=b.scheduler, info=b.info)
    return b


def next_command(run: str | os.PathLike) -> str:
    """The command that turns ``run`` into a bundle, with ``--base`` only where the run cannot name its own."""
    try:
        base_bundle_of(run, None)
        return f"fourdnex bundle --run {run} --out BUNDLE"
    except InputError:
        return f"fourdnex bundle --run {run} --base BASE --out BUNDLE (BASE: the bundle whose towers encoded its data)"


def save_towers_bundle(directory: Path, towers, tokenizer, clip_preprocess: dict, config, num_frames: int,
                        area: int) -> Path:
    """The towers that encode the synthetic dataset, kept as a bundle (``towers/`` next to the data) so a run
    trained on it can be turned into a bundle (``fourdnex bundle --run RUN --base <this folder>``). Its DiT is the
    config's random initial one, a placeholder that ``bundle`` replaces; its preset is the tiny one at the data's
    frames and area. The towers are random, so a bundle built on them samples noise: a check of the training
    pipeline, not a model."""
    import shutil
    import tempfile

    from flax import nnx

    from fourdnex_jax.config import model_config
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.pipelines.bundle import save_bundle
    from fourdnex_jax.recipe import SAMPLING_PRESETS

    if directory.exists():
        shutil.rmtree(directory)  # a build interrupted before the dataset was recorded
    preset = dataclasses.replace(SAMPLING_PRESETS["tiny"], num_frames=num_frames, max_area=area,
                                 text_len=config.data.text_len)
    dit = WanTransformer3D(model_config(config), rngs=nnx.Rngs(config.seed))
    with tempfile.TemporaryDirectory() as tok_dir:
        tokenizer.save(str(Path(tok_dir) / "tokenizer.json"))
        save_bundle(directory, transformer=dit, vae=towers.vae, text_encoder=towers.text_encoder,
                    image_encoder=towers.image_encoder, tokenizer_dir=tok_dir, clip_preprocess=clip_preprocess,
                    preset=preset, info={"name": f"random towers of the synthetic {config.name} dataset "
                                         "(fourdnex train --synthetic); the DiT is a placeholder"})
    return directory
