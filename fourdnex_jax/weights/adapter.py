"""The 4DNeX adapter folder: ``pytorch_lora_weights.safetensors`` (peft LoRA keys, with or without the
``transformer.`` prefix) and ``learnable_domain_embeddings.pt`` (a (2, dim) tensor), both directions.

Effective LoRA scale (see ``fourdnex_jax/models/lora.py`` and the reference notes, "Resolved: the effective LoRA
scale"): diffusers loads a LoRA file with peft ``scaling = lora_alpha / r`` from the safetensors header metadata
``lora_adapter_metadata`` when present, else with alpha = r (scaling 1.0), and ``fuse_lora(lora_scale=f)`` then adds
``f * scaling * B @ A``. The converter reproduces that product:
``effective = (alpha / r if metadata else 1.0) * fuse_scale`` (``fuse_scale`` defaults to 0.5, what 4DNeX
inference passes) and sets ``lora_rank = r``, ``lora_alpha = effective * r`` in our config.
The export writes no alpha metadata (like the 4DNeX release), so diffusers loads it at scaling 1.0 and
``fuse_lora(lora_scale=alpha / r)`` of our config reproduces our model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fourdnex_jax.models.mapping import WeightMappingError
from fourdnex_jax.models.transformer.mapping import strip_prefix
from fourdnex_jax.utils import bounds
from fourdnex_jax.weights.safetensors import SafetensorsSource, ShardedSafetensorsWriter, sha256_file
from fourdnex_jax.weights.torch_pickle import load_pt_tensor, save_pt

LORA_FILE = "pytorch_lora_weights.safetensors"
DOMAIN_FILE = "learnable_domain_embeddings.pt"
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
PREFIX = "transformer."
DEFAULT_FUSE_SCALE = 0.5  # 4DNeX inference: fuse_lora(lora_scale=0.5)

_LORA_KEY = re.compile(r"^blocks\.(\d+)\.(.+)\.lora_([AB])\.weight$")


@dataclasses.dataclass
class Adapter:
    lora: dict[str, np.ndarray]  # peft keys without the 'transformer.' prefix
    rank: int
    targets: tuple[str, ...]  # lora_targets for WanTransformerConfig
    metadata: dict[str, Any] | None  # lora_adapter_metadata (prefix stripped), None if absent
    fuse_scale: float
    effective_scale: float
    derivation: str
    domain_embeddings: np.ndarray | None
    files: dict[str, dict[str, Any]]  # file name -> {sha256, bytes}
    had_prefix: bool


def _targets(modules: set[str]) -> tuple[str, ...]:
    """Shortest ``lora_targets`` that select exactly ``modules`` (e.g. {'attn1.to_q', 'attn2.to_q'} -> 'to_q')."""
    from fourdnex_jax.models.transformer.block import BLOCK_LINEARS

    out = []
    for m in sorted(modules):
        short = m.split(".", 1)[1] if m.startswith(("attn1.", "attn2.")) else m
        matches = {n for n in BLOCK_LINEARS if n == short or n.endswith("." + short)}
        out.append(short if matches <= modules else m)
    return tuple(dict.fromkeys(out))


def read_adapter(directory: str | os.PathLike, fuse_scale: float = DEFAULT_FUSE_SCALE) -> Adapter:
    """Reads and validates an adapter folder; see the module docstring for the effective scale."""
    directory = Path(directory)
    path = directory / LORA_FILE
    bounds.check_value("adapter.fuse_scale", fuse_scale, "the adapter's fuse scale (--lora-fuse-scale)")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: an adapter folder needs {LORA_FILE} (and usually {DOMAIN_FILE})")
    source = SafetensorsSource([path])
    raw = {k: source.get(k) for k in source.keys()}
    had_prefix = bool(raw) and all(k.startswith(PREFIX) for k in raw)
    lora = strip_prefix(raw, PREFIX)
    problems, modules, ranks = [], set(), set()
    for key, value in lora.items():
        m = _LORA_KEY.match(key)
        if not m:
            problems.append(f"{key}: not a peft LoRA key of a transformer block")
            continue
        if value.ndim != 2:
            problems.append(f"{key}: shape {value.shape}, a LoRA matrix is 2-D")
            continue
        modules.add(m.group(2))
        ranks.add(value.shape[0] if m.group(3) == "A" else value.shape[-1])
    if len(ranks) > 1:
        problems.append(f"LoRA ranks differ between modules: {sorted(ranks)} (rank_pattern is not supported)")
    if 0 in ranks:
        problems.append("LoRA rank 0 (empty lora_A / lora_B tensors): not an adapter; export it again")
    metadata = None
    raw_meta = source.headers[path].metadata.get(METADATA_KEY)
    if raw_meta:
        try:
            metadata = json.loads(raw_meta)
        except json.JSONDecodeError as e:
            problems.append(f"header metadata {METADATA_KEY} is not JSON: {e}")
        if metadata is not None and not isinstance(metadata, dict):
            problems.append(f"header metadata {METADATA_KEY} is a JSON {type(metadata).__name__}, not an object "
                            "with 'r' and 'lora_alpha'")
            metadata = None
        elif metadata is not None:
            if metadata and all(k.startswith(PREFIX) for k in metadata):
                metadata = {k[len(PREFIX):]: v for k, v in metadata.items()}
            for pat in ("rank_pattern", "alpha_pattern"):
                if metadata.get(pat):
                    problems.append(f"metadata {pat}={metadata[pat]} is not supported (one scale for all modules)")
            if "r" not in metadata or "lora_alpha" not in metadata:
                problems.append(f"metadata {METADATA_KEY} lacks 'r' or 'lora_alpha': {sorted(metadata)}")
            elif not (bounds.BOUNDS["adapter.r"].holds(metadata["r"])
                      and bounds.BOUNDS["adapter.lora_alpha"].holds(metadata["lora_alpha"])):
                problems.append(f"metadata r={metadata['r']!r}, lora_alpha={metadata['lora_alpha']!r}: r must be "
                                f"{bounds.BOUNDS['adapter.r'].text()}, lora_alpha "
                                f"{bounds.BOUNDS['adapter.lora_alpha'].text()}")
            elif ranks and int(metadata["r"]) not in ranks:
                problems.append(f"metadata r={metadata['r']} but the tensors have rank {sorted(ranks)}")
    if problems:
        raise WeightMappingError(f"adapter {path} is not usable:\n  - " + "\n  - ".join(problems))
    rank = ranks.pop() if ranks else 0
    if metadata is not None:
        peft_scaling = float(metadata["lora_alpha"]) / float(metadata["r"])
        how = (f"{METADATA_KEY} in {LORA_FILE}: lora_alpha {metadata['lora_alpha']} / r {metadata['r']} = "
               f"{peft_scaling:g} (peft scaling)")
    else:
        peft_scaling = 1.0
        how = f"no {METADATA_KEY} in {LORA_FILE}: peft loads it with alpha = r, scaling 1.0"
    effective = peft_scaling * float(fuse_scale)
    derivation = f"{how}; x fuse_lora(lora_scale={fuse_scale:g}) = {effective:g}"
    files = {LORA_FILE: {"sha256": sha256_file(path), "bytes": path.stat().st_size}}
    domain = None
    dpath = directory / DOMAIN_FILE
    if dpath.exists():
        domain = load_pt_tensor(dpath, key="learnable_domain_embeddings")
        if domain.ndim != 2 or domain.shape[0] != 2:
            raise WeightMappingError(f"{dpath}: domain embeddings must be (2, dim), got {domain.shape}")
        files[DOMAIN_FILE] = {"sha256": sha256_file(dpath), "bytes": dpath.stat().st_size}
    return Adapter(lora, rank, _targets(modules), metadata, float(fuse_scale), effective, derivation, domain, files,
                   had_prefix)


def write_adapter(directory: str | os.PathLike, lora: Mapping[str, np.ndarray],
                  domain_embeddings: np.ndarray | None) -> list[Path]:
    """Writes the 4DNeX release format: ``transformer.``-prefixed peft keys, no alpha metadata (diffusers' own
    ``{"format": "pt"}`` only), and the domain embeddings as a torch ``.pt`` (``torch.load(weights_only=True)``)."""
    directory = Path(directory)
    tensors = {PREFIX + k: np.ascontiguousarray(v) for k, v in lora.items()}
    writer = ShardedSafetensorsWriter(directory, LORA_FILE[: -len(".safetensors")],
                                      [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()],
                                      max_shard_bytes=2**62)
    for k, v in tensors.items():
        writer.write(k, v)
    out = writer.close()
    if domain_embeddings is not None:
        out.append(save_pt(directory / DOMAIN_FILE, np.ascontiguousarray(domain_embeddings)))
    return out
