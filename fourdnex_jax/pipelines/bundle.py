"""A model bundle: every model the image-to-4D pipeline needs, in the layout of ``fourdnex convert``.

::

    transformer/            orbax: the frozen DiT base       transformer_adapter/   orbax: LoRA + domain embeddings
    vae/ text_encoder/ image_encoder/   orbax              configs/<model>.json   our config + parameter dtype
    tokenizer/tokenizer.json     scheduler/scheduler_config.json     image_processor/preprocessor_config.json
    manifest.json                written last

So a converted 4DNeX checkpoint and the bundled tiny model (``checkpoints/tiny``) load the same way. A bundle
describes itself: ``manifest.json`` records the sampling preset the model is meant for (``sampling_preset``: a
:class:`~fourdnex_jax.recipe.SamplingPreset`, frames / area / steps / CFG / negative prompt / text length / flow
shift / solver / sigma schedule) and the 6D recipe it was trained with (``recipe``: a
:class:`~fourdnex_jax.recipe.SixDSpec`, XYZ
latent mean/std, mask values, layout, XYZ normalisation). :func:`read_presets` reads them, and
:func:`resolve_settings` turns them plus a config's overrides into checked
:class:`~fourdnex_jax.pipelines.settings.SampleSettings` from the JSON files alone, before any weights load.

:func:`save_bundle` writes one from in-memory models (the tiny model's build script uses it). ``transformer_dir`` of
:func:`load_bundle` takes the DiT (base + adapter) from another folder of the same layout, e.g. a training run's
export, keeping the encoders, VAE and presets of the bundle.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.media.publish import publish_dir
from fourdnex_jax.models import params
from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig
from fourdnex_jax.models.streaming import STREAMED_MODELS
from fourdnex_jax.models.text_encoder import UMT5Tokenizer
from fourdnex_jax.models.transformer import FROZEN, TRAINABLE
from fourdnex_jax.pipelines.programs import MODELS
from fourdnex_jax.pipelines.settings import SampleSettings, check_model
from fourdnex_jax.recipe import SamplingPreset, SixDSpec
from fourdnex_jax.sampling.unipc import OFFICIAL_SIGMA_SCHEDULE, UniPCConfig
from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.files import read_json
from fourdnex_jax.utils.resources import shipped
from fourdnex_jax.weights import manifest as manifest_lib
from fourdnex_jax.weights.orbax import save_flat
from fourdnex_jax.weights.registry import ADAPTER_CHECKPOINT, SPECS
from fourdnex_jax.weights.restore import checkpoint_problems, read_config, restore_model

#: The bundled tiny model: ``checkpoints/tiny`` of the repository or of an installed wheel (None where this
#: installation has none; :func:`fourdnex_jax.utils.resources.default_bundle` then says how to get one).
DEFAULT_BUNDLE = shipped("checkpoints/tiny")
#: The sigma schedule of a bundle whose preset predates the field (:func:`read_presets`).
LEGACY_SIGMA_SCHEDULE = OFFICIAL_SIGMA_SCHEDULE


@dataclasses.dataclass
class Bundle:
    transformer: nnx.Module
    vae: nnx.Module
    text_encoder: nnx.Module
    image_encoder: nnx.Module
    tokenizer: UMT5Tokenizer
    clip_preprocess: CLIPPreprocessConfig
    scheduler: UniPCConfig
    directory: Path
    manifest: dict[str, Any]
    preset: SamplingPreset  # manifest.json: sampling_preset
    spec: SixDSpec  # manifest.json: recipe
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # bundle.json, when present


def read_presets(directory: str | os.PathLike, manifest: dict[str, Any] | None = None
                 ) -> tuple[SamplingPreset, SixDSpec]:
    """The sampling preset and the 6D recipe a bundle records (``manifest.json``: ``sampling_preset``,
    ``recipe``; ``manifest``: the file's content when the caller has read it); a bundle without them raises
    ValueError (write it again with this version).

    A preset written before ``sigma_schedule`` existed gets :data:`LEGACY_SIGMA_SCHEDULE` (:func:`preset_notes`
    says so in ``summary.json``): every preset this project wrote meant "sample as 4DNeX does", and the official
    4DNeX code runs the diffusers 0.34.0 schedule; the older releases of this project computed the diffusers >= 0.37
    one by mistake (issue 23), so a result made by one of them is reproduced with ``sigma_schedule=diffusers_0_37``."""
    manifest = manifest if manifest is not None else manifest_lib.read_manifest(directory)
    missing = [k for k in ("sampling_preset", "recipe") if k not in manifest]
    if missing:
        raise ValueError(f"{Path(directory) / 'manifest.json'} has no {' / '.join(missing)}: the bundle does not "
                         "say what it is meant to be sampled with; write it again (fourdnex convert "
                         "--preset NAME, or save_bundle(..., preset=...))")
    preset = manifest["sampling_preset"]
    if isinstance(preset, dict) and "sigma_schedule" not in preset:
        preset = {**preset, "sigma_schedule": LEGACY_SIGMA_SCHEDULE}
    try:
        return SamplingPreset.from_dict(preset), SixDSpec.from_dict(manifest["recipe"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{Path(directory) / 'manifest.json'}: {e}") from e


def preset_notes(manifest: dict[str, Any]) -> dict[str, str]:
    """What :func:`read_presets` fills in for a bundle (its ``manifest.json`` dict) written before a preset field
    existed: field -> note (empty for a current bundle)."""
    preset = manifest.get("sampling_preset", {})
    if isinstance(preset, dict) and "sigma_schedule" not in preset:
        return {"sigma_schedule": f"not recorded by this bundle (written before the field existed): "
                                  f"{LEGACY_SIGMA_SCHEDULE!r}, the official 4DNeX schedule; older releases of "
                                  "fourdnex_jax sampled 'diffusers_0_37'"}
    return {}


def read_scheduler(directory: str | os.PathLike) -> UniPCConfig:
    """The UniPC config of a bundle (``scheduler/scheduler_config.json``; Wan2.1's when the folder has none)."""
    sched = Path(directory) / "scheduler"
    return UniPCConfig.from_dir(sched) if (sched / "scheduler_config.json").exists() else UniPCConfig()


def resolve_settings(directory: str | os.PathLike = DEFAULT_BUNDLE, sample: Any = None, *,
                     transformer_dir: str | os.PathLike | None = None, **overrides: Any) -> SampleSettings:
    """The settings to sample ``directory``'s model with: its preset, then ``sample`` (``config.sample``: its
    ``None`` preset fields keep the preset's value), then ``overrides`` (any field). Checked against the model
    configs (``configs/*.json``; the DiT's from ``transformer_dir`` when given) without loading any weights: a
    setting the model cannot run raises ValueError."""
    preset, _ = read_presets(directory)
    settings = (SampleSettings.from_config(sample, preset) if sample is not None
                else SampleSettings.from_preset(preset))
    if overrides:
        settings = dataclasses.replace(settings, **overrides)
    dit_config, _ = read_config(Path(transformer_dir) if transformer_dir is not None else directory, "transformer")
    vae_config, _ = read_config(directory, "vae")
    check_model(settings, dit_config, vae_config)
    return settings


def bundle_problems(directory: str | os.PathLike, transformer_dir: str | os.PathLike | None = None, *,
                    transformer_manifest: dict[str, Any] | None = None) -> list[str]:
    """Every part a bundle needs that is missing (empty when complete), from the file tree and the small JSON
    files only: each model's checkpoint folder and config, the adapter checkpoint whenever the DiT config (or the
    manifest) has a trained adapter, and the tokenizer. ``transformer_dir``: the DiT's folder when it is another
    (``transformer_manifest``: its ``manifest.json`` when the caller has read it)."""
    directory = Path(directory)
    tdir = Path(transformer_dir) if transformer_dir is not None else directory
    problems = []
    for name in MODELS:
        where = tdir if name == "transformer" else directory
        problems += checkpoint_problems(where, name)
        if not (where / "configs" / f"{name}.json").is_file():
            problems.append(f"{where / 'configs' / (name + '.json')} missing")
    if transformer_manifest is None:
        transformer_manifest = manifest_lib.read_manifest(tdir)
    adapter_needed = "adapter" in transformer_manifest
    if (tdir / "configs" / "transformer.json").is_file():
        cfg, _ = read_config(tdir, "transformer")
        adapter_needed |= bool(cfg.lora_rank) or bool(cfg.domain_embeddings)
    if adapter_needed:
        problems += checkpoint_problems(tdir, ADAPTER_CHECKPOINT)
    if not (directory / "tokenizer" / "tokenizer.json").is_file():
        problems.append(f"{directory / 'tokenizer' / 'tokenizer.json'} missing")
    return problems


def check_bundle(directory: str | os.PathLike, transformer_dir: str | os.PathLike | None = None, *,
                 manifests: tuple[dict[str, Any], dict[str, Any]] | None = None) -> None:
    """Raises :class:`~fourdnex_jax.utils.errors.InputError` naming the folder and every missing part
    (:func:`bundle_problems`), before any weights load. ``manifests``: the ``manifest.json`` of ``directory`` and
    of the DiT's folder when the caller has read them (each file is read once per load)."""
    if manifests is None:
        manifests = (manifest_lib.read_manifest(directory), None)
        if transformer_dir is not None:
            manifests = (manifests[0], manifest_lib.read_manifest(transformer_dir))
    transformer_manifest = manifests[1] if transformer_dir is not None else manifests[0]
    # first: a malformed config is named as such
    problems = bundle_problems(directory, transformer_dir, transformer_manifest=transformer_manifest)
    for folder, manifest in ((directory, manifests[0]), (transformer_dir, manifests[1])):
        if folder is not None and manifest is not None:  # then every other file against the manifest's digests
            problems += [f"{Path(folder) / p}" for p in manifest_lib.file_problems(folder, manifest)]
    if problems:
        raise InputError(f"incomplete or damaged model bundle {directory}: {'; '.join(problems)}; copy the whole "
                         "bundle folder again (or convert it again) -- a bundle missing a part would sample a "
                         "different model")


def load_bundle(directory: str | os.PathLike = DEFAULT_BUNDLE, *, transformer_dir: str | os.PathLike | None = None,
                mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] = DEFAULT_LOGICAL_AXIS_RULES,
                host_blocks: bool = False, **transformer_overrides: Any) -> Bundle:
    """Restores every model of a bundle / converted folder, each parameter straight into the sharding its logical
    axes get on ``mesh`` under ``rules`` (every device / process reads only its shard; the pipeline then uses the
    arrays in place), or onto the first device with ``mesh=None``. ``transformer_overrides``: execution fields of
    the DiT (e.g. ``attention='ring'``, see :data:`~fourdnex_jax.weights.restore.RESTORE_OVERRIDABLE`). An
    incomplete bundle is refused before any weights load (:func:`check_bundle`); ``manifest.json`` is read once.
    ``host_blocks``: the stacked blocks of the streamed models (the DiT, UMT5) are restored into host memory
    (``settings.stream_blocks``: they never occupy the devices)."""
    directory = Path(directory)
    manifest = manifest_lib.read_manifest(directory)  # read once, here
    preset, spec = read_presets(directory, manifest)  # before any weights load: a bundle without presets fails fast
    tdir = Path(transformer_dir) if transformer_dir is not None else directory
    check_bundle(directory, transformer_dir, manifests=(
        manifest, manifest_lib.read_manifest(tdir) if transformer_dir is not None else None))
    # the small files first (each read bounded, every failure naming its file), then the weights
    fix = "the bundle is damaged: copy or convert it again"
    proc = directory / "image_processor" / "preprocessor_config.json"
    sched = directory / "scheduler" / "scheduler_config.json"
    info_path = directory / "bundle.json"
    try:
        where = proc
        clip_pre = (CLIPPreprocessConfig.from_hf_config(read_json(proc, what="image processor config", fix=fix))
                    if os.path.lexists(proc) else CLIPPreprocessConfig())
        where = sched
        scheduler = UniPCConfig.from_dir(sched.parent) if os.path.lexists(sched) else UniPCConfig()
    except InputError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InputError(f"{where}: not a config this version reads ({type(e).__name__}: {e}); {fix}") from e
    info = read_json(info_path, what="bundle info", fix=fix) if os.path.lexists(info_path) else {}
    if not isinstance(info, dict):
        raise InputError(f"{info_path}: holds a {type(info).__name__}, not a JSON object; {fix}")
    tokenizer = UMT5Tokenizer.from_dir(directory / "tokenizer")
    models = {name: restore_model(tdir if name == "transformer" else directory, name, mesh, rules,
                                  host_blocks=host_blocks and name in STREAMED_MODELS,
                                  **(transformer_overrides if name == "transformer" else {}))
              for name in MODELS}
    return Bundle(tokenizer=tokenizer, clip_preprocess=clip_pre, scheduler=scheduler, directory=directory,
                  manifest=manifest, preset=preset, spec=spec, info=info, **models)


def _flat_numpy(model: nnx.Module, flt) -> dict[str, np.ndarray]:
    return {p: np.asarray(v[...]) for p, v in params.flat_variables(model, flt).items()}


def save_bundle(directory: str | os.PathLike, *, transformer: nnx.Module, vae: nnx.Module,
                text_encoder: nnx.Module, image_encoder: nnx.Module, tokenizer_dir: str | os.PathLike,
                clip_preprocess: dict[str, Any], preset: SamplingPreset, spec: SixDSpec = SixDSpec(),
                scheduler: UniPCConfig = UniPCConfig(), info: dict[str, Any] | None = None,
                param_dtype: str = "float32") -> Path:
    """Writes a bundle, published as a unit (:func:`fourdnex_jax.media.publish.publish_dir`; ``directory`` must
    not exist or be empty). ``tokenizer_dir`` holds ``tokenizer.json``
    (+ optional config files), copied verbatim; ``clip_preprocess`` is a ``preprocessor_config.json`` dict;
    ``preset`` / ``spec``: what the model is meant to be sampled with and the recipe it was trained with
    (recorded in ``manifest.json``)."""
    final = Path(directory)
    with publish_dir(final, writer="bundle", flag="bundle folder") as directory:
        manifest = manifest_lib.new_manifest("bundle", "in-memory models")
        manifest["sampling_preset"], manifest["recipe"] = preset.to_dict(), spec.to_dict()
        models = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder,
                  "image_encoder": image_encoder}
        for name, model in models.items():
            spec = SPECS[name]
            flat = _flat_numpy(model, FROZEN if name == "transformer" else spec.param_filter)
            save_flat(directory / name, flat)
            atomic_save_json(directory / "configs" / f"{name}.json",
                             spec.config_to_json(model.config, param_dtype))
            manifest["models"][name] = {"checkpoint": name, "config": f"configs/{name}.json",
                                        "param_dtype": param_dtype, "arrays": len(flat),
                                        "bytes_stored": int(sum(a.nbytes for a in flat.values()))}
        adapter = _flat_numpy(transformer, TRAINABLE)
        if adapter:
            save_flat(directory / ADAPTER_CHECKPOINT, adapter)
            cfg = transformer.config
            manifest["adapter"] = {"checkpoint": ADAPTER_CHECKPOINT, "rank": cfg.lora_rank,
                                   "targets": list(cfg.lora_targets),
                                   "effective_scale": cfg.lora_alpha / cfg.lora_rank if cfg.lora_rank else 0.0,
                                   "tensors": len(adapter)}
        shutil.copytree(tokenizer_dir, directory / "tokenizer")
        atomic_save_json(directory / "image_processor" / "preprocessor_config.json",
                         {"image_processor_type": "CLIPImageProcessor", **clip_preprocess})
        atomic_save_json(directory / "scheduler" / "scheduler_config.json", scheduler.to_diffusers_config())
        if info is not None:
            atomic_save_json(directory / "bundle.json", info)
        for name in ("tokenizer", "scheduler", "image_processor"):
            manifest["copied"][name] = {str(p.relative_to(directory / name)): manifest_lib.file_record(p)
                                        for p in sorted((directory / name).rglob("*")) if p.is_file()}
        manifest_lib.record_files(directory, manifest)
        manifest_lib.write_manifest(directory, manifest)
    return final
