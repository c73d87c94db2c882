"""A model bundle: every model the image-to-4D pipeline needs, in the layout of ``tools/convert.py torch-to-jax``.

::

    transformer/            orbax: the frozen DiT base       transformer_adapter/   orbax: LoRA + domain embeddings
    vae/ text_encoder/ image_encoder/   orbax              configs/<model>.json   our config + parameter dtype
    tokenizer/tokenizer.json     scheduler/scheduler_config.json     image_processor/preprocessor_config.json
    manifest.json                written last

So a converted 4DNeX checkpoint and the bundled tiny model (``checkpoints/tiny``) load the same way.
:func:`save_bundle` writes one from in-memory models (the tiny model's build script uses it; the trainer's adapter
can replace ``transformer_adapter``). ``transformer_dir`` of :func:`load_bundle` takes the DiT (base + adapter)
from another folder of the same layout, e.g. a training run's export, keeping the encoders and VAE of the bundle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from fourdnex_jax.convert import manifest as manifest_lib
from fourdnex_jax.convert.models import SPECS
from fourdnex_jax.convert.orbax_io import save_flat
from fourdnex_jax.convert.restore import read_config, restore_model
from fourdnex_jax.convert.torch_to_jax import ADAPTER_CHECKPOINT
from fourdnex_jax.io_utils import atomic_save_json
from fourdnex_jax.models import params
from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig
from fourdnex_jax.models.text_encoder import UMT5Tokenizer
from fourdnex_jax.models.transformer import FROZEN, TRAINABLE
from fourdnex_jax.sampling.unipc import UniPCConfig

MODELS = ("transformer", "vae", "text_encoder", "image_encoder")
#: Where the bundled tiny model lives (relative to the repository root).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "checkpoints" / "tiny"


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
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # bundle.json, when present


def load_bundle(directory: str | os.PathLike = DEFAULT_BUNDLE, *, transformer_dir: str | os.PathLike | None = None,
                mesh: Mesh | None = None, **transformer_overrides: Any) -> Bundle:
    """Restores every model of a bundle / converted folder (parameters replicated on ``mesh`` by the logical-axis
    rules, or on the first device with ``mesh=None``)."""
    directory = Path(directory)
    manifest = manifest_lib.read_manifest(directory)
    tdir = Path(transformer_dir) if transformer_dir is not None else directory
    if transformer_dir is not None:
        manifest_lib.read_manifest(tdir)
    models = {name: restore_model(tdir if name == "transformer" else directory, name, mesh,
                                  **(transformer_overrides if name == "transformer" else {}))
              for name in MODELS}
    proc = directory / "image_processor" / "preprocessor_config.json"
    clip_pre = (CLIPPreprocessConfig.from_hf_config(json.loads(proc.read_text())) if proc.exists()
                else CLIPPreprocessConfig())
    sched = directory / "scheduler"
    scheduler = UniPCConfig.from_dir(sched) if (sched / "scheduler_config.json").exists() else UniPCConfig()
    info_path = directory / "bundle.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return Bundle(tokenizer=UMT5Tokenizer.from_dir(directory / "tokenizer"), clip_preprocess=clip_pre,
                  scheduler=scheduler, directory=directory, manifest=manifest, info=info, **models)


def _flat_numpy(model: nnx.Module, flt) -> dict[str, np.ndarray]:
    return {p: np.asarray(v[...]) for p, v in params.flat_variables(model, flt).items()}


def save_bundle(directory: str | os.PathLike, *, transformer: nnx.Module, vae: nnx.Module,
                text_encoder: nnx.Module, image_encoder: nnx.Module, tokenizer_dir: str | os.PathLike,
                clip_preprocess: dict[str, Any], scheduler: UniPCConfig = UniPCConfig(),
                info: dict[str, Any] | None = None, param_dtype: str = "float32") -> Path:
    """Writes a bundle (``directory`` must not exist or be empty). ``tokenizer_dir`` holds ``tokenizer.json``
    (+ optional config files), copied verbatim; ``clip_preprocess`` is a ``preprocessor_config.json`` dict."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"{directory} is not empty")
    directory.mkdir(parents=True, exist_ok=True)
    manifest = manifest_lib.new_manifest("bundle", "in-memory models")
    models = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder, "image_encoder": image_encoder}
    for name, model in models.items():
        spec = SPECS[name]
        flat = _flat_numpy(model, FROZEN if name == "transformer" else spec.param_filter)
        save_flat(directory / name, flat)
        atomic_save_json(directory / "configs" / f"{name}.json", spec.config_to_json(model.config, param_dtype))
        manifest["models"][name] = {"checkpoint": name, "config": f"configs/{name}.json", "param_dtype": param_dtype,
                                    "arrays": len(flat), "bytes_stored": int(sum(a.nbytes for a in flat.values()))}
    adapter = _flat_numpy(transformer, TRAINABLE)
    if adapter:
        save_flat(directory / ADAPTER_CHECKPOINT, adapter)
        cfg = transformer.config
        manifest["adapter"] = {"checkpoint": ADAPTER_CHECKPOINT, "rank": cfg.lora_rank,
                               "targets": list(cfg.lora_targets), "effective_scale": cfg.lora_alpha / cfg.lora_rank
                               if cfg.lora_rank else 0.0, "tensors": len(adapter)}
    shutil.copytree(tokenizer_dir, directory / "tokenizer")
    atomic_save_json(directory / "image_processor" / "preprocessor_config.json",
                     {"image_processor_type": "CLIPImageProcessor", **clip_preprocess})
    atomic_save_json(directory / "scheduler" / "scheduler_config.json", scheduler.to_diffusers_config())
    if info is not None:
        atomic_save_json(directory / "bundle.json", info)
    for name in ("tokenizer", "scheduler", "image_processor"):
        manifest["copied"][name] = {str(p.relative_to(directory / name)): manifest_lib.file_record(p)
                                    for p in sorted((directory / name).rglob("*")) if p.is_file()}
    manifest_lib.write_manifest(directory, manifest)
    return directory


def replace_adapter(directory: str | os.PathLike, transformer: nnx.Module) -> None:
    """Overwrites the ``transformer_adapter`` checkpoint of a bundle with ``transformer``'s trainable values."""
    directory = Path(directory)
    target = directory / ADAPTER_CHECKPOINT
    if target.exists():
        shutil.rmtree(target)
    save_flat(target, _flat_numpy(transformer, TRAINABLE))


def transformer_config(directory: str | os.PathLike):
    return read_config(directory, "transformer")[0]
