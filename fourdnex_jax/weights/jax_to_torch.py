"""JAX -> torch: a converted (or trained) folder -> diffusers-layout weights + the 4DNeX release adapter.

Output (``out/``)::

    transformer/ vae/ text_encoder/ image_encoder/   config.json + sharded safetensors (+ index)
    tokenizer/ scheduler/ image_processor/           copied back when the source folder has them
    adapter/pytorch_lora_weights.safetensors         'transformer.'-prefixed peft keys, no alpha metadata
    adapter/learnable_domain_embeddings.pt           torch zip format (torch.load(weights_only=True) reads it)
    adapter/README.md, manifest.json                 the fuse_lora scale that reproduces our model

The export folder is published as a unit (written beside ``out`` and renamed when complete), so a crash or a kill
leaves the previous folder or none, never a partial export. Folders that were not converted from a source (the
tiny bundle, a training run) get a ``config.json`` built from our config (:func:`library_config`).

Streaming: every orbax array is opened through tensorstore and read one layer slice at a time, re-laid-out to torch
layout and appended to the current safetensors shard, so memory holds one tensor. Dtypes: each tensor is written
in the dtype the conversion recorded for its source (``source_dtypes`` in the manifest: bit-exact round trip), or
as stored when there is no record (e.g. a trained adapter: fp32).

Loading the adapter in diffusers, as 4DNeX does::

    pipe.load_lora_weights(out / "adapter")            # no alpha metadata: peft scaling 1.0
    pipe.fuse_lora(lora_scale=<export_fuse_scale>)     # = our lora_alpha / lora_rank
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import einops
import ml_dtypes
import numpy as np

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.models import params
from fourdnex_jax.models.mapping import WeightMappingError
from fourdnex_jax.models.transformer import TRAINABLE
from fourdnex_jax.models.transformer.mapping import domain_mapping, lora_mapping
from fourdnex_jax.sharding import sharded_targets
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.progress import Progress
from fourdnex_jax.weights import manifest as manifest_lib
from fourdnex_jax.weights.adapter import DOMAIN_FILE, LORA_FILE, write_adapter
from fourdnex_jax.weights.orbax import array_metadata, open_array, restore_flat
from fourdnex_jax.weights.registry import (
    ADAPTER_CHECKPOINT,
    CONFIGS_DIR,
    COPIED_COMPONENTS,
    SOURCE_CONFIGS_DIR,
    SPECS,
    abstract_model,
)
from fourdnex_jax.weights.restore import checkpoint_problems, read_config
from fourdnex_jax.weights.safetensors import ShardedSafetensorsWriter

DEFAULT_SHARD_BYTES = 5 * 2**30


def _dtype(name: Any, fallback: np.dtype) -> np.dtype:
    """The recorded source dtype (a numpy/ml_dtypes name), or ``fallback`` without a record."""
    if name is None:
        return np.dtype(fallback)
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def library_config(name: str, config: Any) -> dict[str, Any]:
    """The diffusers / transformers ``config.json`` of model ``name`` built from our config (for folders that
    were not converted from a source, e.g. the shipped tiny bundle or a training run); each round-trips through
    the config class's own reader."""
    if name in ("transformer", "vae"):
        return config.to_diffusers_config()
    fields = dataclasses.asdict(config)
    if name == "text_encoder":
        return {"architectures": ["UMT5EncoderModel"], "model_type": "umt5", **fields,
                "is_gated_act": config.is_gated, "dense_act_fn": config.activation, "is_decoder": False}
    if name == "image_encoder":
        return {"architectures": ["CLIPVisionModel"], "model_type": "clip_vision_model", **fields}
    raise ValueError(f"no library config for model {name!r}")


def export_model(directory: Path, name: str, out: Path, record: dict | None, *, max_shard_bytes: int,
                 progress: bool = True) -> dict[str, Any]:
    """Writes one model in diffusers/transformers layout; returns its manifest entry."""
    spec = SPECS[name]
    config, _ = read_config(directory, name)
    mapping = spec.mapping(config)
    ckpt = directory / name
    stored = array_metadata(ckpt)
    need = {r.jax for r in mapping.rules}
    problems = [f"missing array {p}" for p in sorted(need - set(stored))]
    problems += [f"unexpected array {p}" for p in sorted(set(stored) - need)]
    if problems:
        raise WeightMappingError(f"{ckpt} does not match the {name} table:\n  - " + "\n  - ".join(problems))
    record = record or {}
    source_dtypes = record.get("source_dtypes", {})
    inverse = {v: k for k, v in record.get("renamed_keys", {}).items()}
    # Planned order: unstacked tensors, then layer by layer (a torch state dict's order).
    plan = []  # (torch key, rule, layer, torch shape, dtype)
    for layer in [None, *range(mapping.num_layers)]:
        for rule in mapping.rules:
            if rule.stacked != (layer is not None):
                continue
            shape, dtype = stored[rule.jax]
            slice_shape = shape[1:] if rule.stacked else shape
            recorded = source_dtypes.get(rule.jax)
            if isinstance(recorded, list):
                recorded = recorded[layer]
            out_dtype = _dtype(recorded, dtype)
            torch_shape = tuple(einops.rearrange(np.empty(slice_shape, np.bool_), rule.inverse_layout()).shape) \
                if rule.layout else slice_shape
            key = rule.torch.format(i=layer) if rule.stacked else rule.torch
            plan.append((inverse.get(key, key), rule, layer, torch_shape, out_dtype))
    target = out / name
    writer = ShardedSafetensorsWriter(target, spec.weight_name, [(k, s, d) for k, _, _, s, d in plan],
                                      max_shard_bytes=max_shard_bytes)
    stores: dict[str, Any] = {}
    bar = Progress(len(plan), f"exporting {name}") if progress else None
    t0 = time.perf_counter()
    try:
        for key, rule, layer, _, out_dtype in plan:
            if rule.jax not in stores:
                stores[rule.jax] = open_array(ckpt, rule.jax)
            value = (stores[rule.jax] if layer is None else stores[rule.jax][layer]).read().result()
            if rule.layout:
                value = einops.rearrange(value, rule.inverse_layout())
            writer.write(key, np.asarray(value).astype(out_dtype, copy=False))
            if bar:
                bar.update()
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    source_config = directory / SOURCE_CONFIGS_DIR / name / "config.json"
    if source_config.exists():
        shutil.copyfile(source_config, target / "config.json")
    else:
        atomic_save_json(target / "config.json", library_config(name, config))
    seconds = time.perf_counter() - t0
    return {"tensors": len(plan), "bytes": writer.bytes_written, "seconds": round(seconds, 3),
            "files": {f.name: manifest_lib.file_record(f) for f in [*files, target / "config.json"]}}


def export_adapter(directory: Path, out: Path, record: dict | None) -> dict[str, Any]:
    """The 4DNeX release format (see the module docstring); returns its manifest entry."""
    config, _ = read_config(directory, "transformer")
    # a model trained whole (lora_rank 0): its weights are the exported transformer; the adapter folder then holds
    # the domain embeddings and an empty LoRA file, which the 4DNeX loading code and `fourdnex convert` both read
    variables = params.flat_variables(abstract_model(config), TRAINABLE)
    flat = {p: np.asarray(v) for p, v in restore_flat(directory / ADAPTER_CHECKPOINT,
                                                       sharded_targets(variables, None, ())).items()}
    recorded = (record or {}).get("source_dtypes", {})
    lora = {k: v.astype(_dtype(recorded.get(k), v.dtype), copy=False)
            for k, v in lora_mapping(config).to_torch(flat).items()}
    domain = None
    if "domain_embeddings" in flat:
        domain = domain_mapping().to_torch(flat)["learnable_domain_embeddings"]
        domain = domain.astype(_dtype(recorded.get("learnable_domain_embeddings"), domain.dtype), copy=False)
    target = out / "adapter"
    files = write_adapter(target, lora, domain)
    scale = config.lora_scale
    if not config.lora_rank:
        (target / "README.md").write_text(
            "# 4DNeX adapter exported by fourdnex_jax\n\nThe model was trained whole (no LoRA): its weights are the "
            f"exported `transformer/` folder, `{LORA_FILE}` is empty"
            + (f" and `{DOMAIN_FILE}` holds the (2, {domain.shape[1]}) domain embeddings" if domain is not None else "")
            + ".\n")
        return {"folder": "adapter", "rank": 0, "targets": [], "effective_scale": 0.0, "fuse_lora_scale": 0.0,
                "alpha_metadata": None, "domain_embeddings": domain is not None,
                "files": {f.name: manifest_lib.file_record(f) for f in files}}
    readme = (f"# 4DNeX adapter exported by fourdnex_jax\n\n"
              f"`{LORA_FILE}` holds peft LoRA weights (rank {config.lora_rank}, targets {list(config.lora_targets)}) "
              f"with `transformer.`-prefixed keys and no alpha metadata, like the 4DNeX release"
              + (f"; `{DOMAIN_FILE}` the (2, {domain.shape[1]}) domain embeddings" if domain is not None else "")
              + f".\n\nOur model's effective LoRA scale is lora_alpha / lora_rank = {config.lora_alpha:g} / "
              f"{config.lora_rank} = {scale:g}. diffusers loads this file with peft scaling 1.0, so reproduce it "
              f"with:\n\n    pipe.load_lora_weights(\"{target.name}\")\n    pipe.fuse_lora(lora_scale={scale:g})\n")
    (target / "README.md").write_text(readme)
    return {"folder": "adapter", "rank": config.lora_rank, "targets": list(config.lora_targets),
            "effective_scale": scale, "fuse_lora_scale": scale, "alpha_metadata": None,
            "domain_embeddings": domain is not None,
            "files": {f.name: manifest_lib.file_record(f) for f in files}}


def export(src: str | Path, out: str | Path, *, models: Iterable[str] | None = None, adapter: bool = True,
           max_shard_bytes: int = DEFAULT_SHARD_BYTES, progress: bool = True, overwrite: bool = False,
           log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """Exports every model converted into ``src`` (or ``models``) and the adapter; returns the export manifest.
    ``out`` is published as a unit (written into a hidden sibling and renamed when complete: a crash or a kill
    leaves no partial export); a folder already holding files is kept unless ``overwrite``."""
    from fourdnex_jax.media.publish import check_output_dir, publish_dir

    src, out = Path(src), Path(out)
    check_output_dir(out, overwrite, inputs=[src])
    if not src.is_dir():
        raise InputError(f"--src {src}: no such folder (pass a bundle, converted folder or training export)")
    # a training run's folder has configs + checkpoints but no conversion record
    source_manifest = (manifest_lib.read_manifest(src) if (src / manifest_lib.MANIFEST).exists()
                       else {"models": {}})
    names = list(models) if models is not None else [n for n in SPECS if (src / CONFIGS_DIR / f"{n}.json").exists()]
    if not names:
        raise InputError(f"--src {src}: no {CONFIGS_DIR}/<model>.json in it: not a bundle or converted folder")
    problems = [m for n in names for m in checkpoint_problems(src, n)]
    if adapter and (src / ADAPTER_CHECKPOINT).exists():
        problems += checkpoint_problems(src, ADAPTER_CHECKPOINT)
    if problems:
        raise InputError(f"damaged folder {src}: {'; '.join(problems)}; copy or convert it again")
    with publish_dir(out, overwrite, writer="export", inputs=[src]) as tmp:
        manifest = manifest_lib.new_manifest("jax-to-torch", src)
        for name in names:
            entry = export_model(src, name, tmp, source_manifest["models"].get(name),
                                 max_shard_bytes=max_shard_bytes, progress=progress)
            manifest["models"][name] = entry
            log(f"{name}: {entry['tensors']} tensors, {entry['bytes'] / 1e9:.2f} GB in {entry['seconds']:.1f} s")
        if adapter and (src / ADAPTER_CHECKPOINT).exists():
            manifest["adapter"] = export_adapter(src, tmp, source_manifest.get("adapter"))
            log("adapter: domain embeddings only (the model was trained whole)" if not manifest["adapter"]["rank"]
                else f"adapter: load_lora_weights + fuse_lora(lora_scale={manifest['adapter']['fuse_lora_scale']:g})")
        for name in COPIED_COMPONENTS:
            if (src / name).is_dir():
                shutil.copytree(src / name, tmp / name)
                manifest["copied"][name] = {str(p.relative_to(tmp / name)): manifest_lib.file_record(p)
                                            for p in sorted((tmp / name).rglob("*")) if p.is_file()}
        manifest_lib.write_manifest(tmp, manifest)
    return manifest
