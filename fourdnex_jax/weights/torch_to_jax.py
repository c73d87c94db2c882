"""torch -> JAX: a diffusers-layout Wan I2V folder (+ a 4DNeX adapter) -> orbax checkpoints + configs + manifest.

Output layout (``out/``)::

    transformer/            orbax checkpoint: the frozen DiT base (FROZEN parameters)
    transformer_adapter/    orbax checkpoint: LoRA + domain embeddings (TRAINABLE), only with --adapter
    vae/ text_encoder/ image_encoder/   orbax checkpoints
    configs/<model>.json    our config dataclass as JSON + the parameter dtype
    source_configs/<model>/config.json  the source config.json, verbatim (the export writes it back)
    tokenizer/ scheduler/ image_processor/   copied verbatim
    manifest.json           written last (see manifest.py)

Order of work: every component is checked first (folders present, safetensors headers intact, every key/shape/
dtype against the tables, no lossy casts, adapter consistent) and *all* problems are raised together in one
:class:`ConversionError` before anything is written. Then each model streams: source files are read once, in
on-disk order (sha256 computed on the way), each tensor is re-laid-out (a view where possible), cast (widening
only) and handed to tensorstore as one layer slice of its orbax array (see :mod:`.orbax`). Host memory holds one
tensor plus at most ``orbax.PENDING_WRITE_BYTES`` of writes in flight.

Parameter dtype: ``param_dtype='auto'`` picks ``bfloat16`` when every tensor fits its bf16-model target without
loss (bf16 sources; fp32 only where the model keeps fp32 anyway), else ``float32``. Narrowing casts (fp32 -> bf16,
fp16 -> bf16) are errors, listed by key.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import einops
import ml_dtypes
import numpy as np
from flax import nnx

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.models import params
from fourdnex_jax.models.mapping import DictSource, RenamedSource, Rule, Target, WeightMapping, WeightMappingError
from fourdnex_jax.models.transformer import DomainEmbedding
from fourdnex_jax.models.transformer.mapping import domain_mapping, lora_mapping
from fourdnex_jax.recipe import SAMPLING_PRESETS, SixDSpec
from fourdnex_jax.utils.progress import Progress
from fourdnex_jax.weights import manifest as manifest_lib
from fourdnex_jax.weights.adapter import DEFAULT_FUSE_SCALE, Adapter, read_adapter
from fourdnex_jax.weights.from_diffusers import read_config_json
from fourdnex_jax.weights.orbax import LazyArray, SliceWriter, save_flat
from fourdnex_jax.weights.registry import (
    ADAPTER_CHECKPOINT,
    CONFIGS_DIR,
    COPIED_COMPONENTS,
    SOURCE_CONFIGS_DIR,
    SPECS,
    ModelSpec,
    abstract_model,
    split_config_drift,
)
from fourdnex_jax.weights.safetensors import CheckpointFileError, SafetensorsSource

PARAM_DTYPES = ("auto", "float32", "bfloat16")
_BF16 = np.dtype(ml_dtypes.bfloat16)


class ConversionError(ValueError):
    """The source cannot be converted; the message lists every problem found, per component."""


def _cast_fix(have: np.dtype, want: np.dtype) -> str:
    """What would make a ``have`` tensor convertible to a ``want`` parameter (only a fix that applies)."""
    if have.kind == "f" and np.can_cast(have, np.float32, "safe") and want != np.float32:
        return "choose --param-dtype float32"
    if have.kind == "f":
        return (f"no parameter dtype holds {have} without loss: cast the source to float32 first (torch: "
                "model.float(); save_pretrained)")
    return (f"a {have} tensor where the model has a float parameter: not a weight of this model (wrong file or "
            "a quantized checkpoint); use the original floating-point checkpoint")


def narrowing_casts(mapping: WeightMapping, source, targets: Mapping[str, Target]) -> list[str]:
    """Keys whose dtype cannot be cast to their target without loss (``np.can_cast(..., 'safe')``), each with the
    fix that applies to its dtype."""
    keys = set(source.keys())
    out = []
    for rule in mapping.rules:
        if rule.jax not in targets:
            continue
        want = np.dtype(targets[rule.jax].dtype)
        for key in mapping.torch_keys(rule):
            if key in keys and not np.can_cast(np.dtype(source.dtype(key)), want, "safe"):
                have = np.dtype(source.dtype(key))
                out.append(f"{key}: {have} -> {rule.jax} {want} would lose precision ({_cast_fix(have, want)})")
    return out


@dataclasses.dataclass
class PreparedModel:
    spec: ModelSpec
    directory: Path
    source_config: dict
    config: Any
    param_dtype: str
    source: SafetensorsSource
    renames: dict[str, str]  # source key -> table key (changed keys only)
    mapping: WeightMapping
    targets: dict[str, Target]
    accepted_config_keys: dict[str, Any]  # newer-library keys that cannot change the module (registry)

    @property
    def ignored(self) -> list[str]:
        table = set(self.mapping.expected_torch_keys())
        return sorted(k for k in self.source.keys() if self.renames.get(k, k) not in table)

    def source_dtypes(self) -> dict[str, str]:
        """``{jax path: source dtype}`` (one dtype for all layers of a stacked rule, else a per-layer list)."""
        inverse = {v: k for k, v in self.renames.items()}
        out: dict[str, Any] = {}
        for rule in self.mapping.rules:
            names = [str(self.source.dtype(inverse.get(k, k))) for k in self.mapping.torch_keys(rule)]
            out[rule.jax] = names[0] if len(set(names)) == 1 else names
        return out


def prepare_model(spec: ModelSpec, directory: str | Path, param_dtype: str = "auto") -> PreparedModel:
    """Validates one component completely (no tensor data read); raises listing every problem."""
    if param_dtype not in PARAM_DTYPES:
        raise ValueError(f"param_dtype={param_dtype!r}; choose one of {PARAM_DTYPES}")
    directory = Path(directory)
    hf, drift = split_config_drift(spec.name, read_config_json(directory))
    source = SafetensorsSource.from_model_dir(directory, spec.weight_name)
    renames = spec.rename(source.keys())
    view = RenamedSource(source, lambda k: renames.get(k, k))

    def attempt(dtype: str):
        config = spec.config_from_source(hf, dtype)
        mapping = spec.mapping(config)
        targets = params.targets_of(spec.abstract(config, dtype), spec.param_filter)
        problems = []
        try:
            mapping.check(view, targets)
        except WeightMappingError as e:
            problems.append(str(e).split(":\n", 1)[-1])
        casts = narrowing_casts(mapping, view, targets)
        if casts:
            problems.append(f"{len(casts)} lossy cast(s):\n  - " + "\n  - ".join(casts))
        return config, mapping, targets, problems

    if param_dtype == "auto":
        has_bf16 = any(str(source.dtype(k)) == "bfloat16" for k in source.keys())
        chosen = "bfloat16" if has_bf16 and not attempt("bfloat16")[3] else "float32"
    else:
        chosen = param_dtype
    config, mapping, targets, problems = attempt(chosen)
    if problems:
        raise WeightMappingError(f"{directory} does not match the {spec.name} model ({chosen}):\n  - "
                                 + "\n  - ".join(problems))
    return PreparedModel(spec, directory, hf, config, chosen, source, renames, mapping, targets, drift)


class StreamPlan:
    """The :class:`~fourdnex_jax.weights.orbax.Filler` of one model: reads the source in file order and writes
    every tensor as its array (or layer slice) of the checkpoint."""

    def __init__(self, prepared: PreparedModel, progress: bool = True):
        self.p = prepared
        self.index: dict[str, tuple[Rule, int | None]] = {}
        for rule in prepared.mapping.rules:
            for i, key in enumerate(prepared.mapping.torch_keys(rule)):
                self.index[key] = (rule, i if rule.stacked else None)
        self.hashes: dict[str, str] = {}
        self.non_finite: list[str] = []  # source keys holding NaN or inf (the conversion then fails)
        self.converted = 0
        self.ignored = 0
        self.passes = 0
        self.show_progress = progress

    def leaves(self) -> dict[str, LazyArray]:
        stacked = {r.jax for r in self.p.mapping.rules if r.stacked}
        return {path: LazyArray(path, t.shape, np.dtype(t.dtype), self, path in stacked)
                for path, t in self.p.targets.items()}

    async def fill(self, writers: Mapping[str, SliceWriter]) -> None:
        self.passes += 1
        total = sum(1 for _ in self.p.source.keys())
        bar = Progress(total, f"converting {self.p.spec.name}") if self.show_progress else None
        t0, nbytes = time.perf_counter(), 0
        for key, array in self.p.source.iter_file_order(self.hashes):
            nbytes += array.nbytes
            hit = self.index.get(self.p.renames.get(key, key))
            if hit is None:
                self.ignored += 1
            else:
                rule, i = hit
                if array.dtype.kind == "f" or array.dtype == _BF16:
                    if not np.isfinite(array).all():
                        self.non_finite.append(key)
                value = array if rule.layout is None else einops.rearrange(array, rule.layout)  # a view if possible
                want = np.dtype(self.p.targets[rule.jax].dtype)
                if value.dtype != want:
                    value = value.astype(want)
                if rule.jax in writers:
                    await writers[rule.jax].write(i, value)
                self.converted += 1
            if bar:
                bar.update(info=f"{nbytes / 1e9:.2f} GB {nbytes / 1e9 / max(time.perf_counter() - t0, 1e-9):.2f} GB/s")


def _check_components(src: Path, skip: Sequence[str]) -> list[str]:
    unknown = sorted(set(skip) - set(SPECS) - set(COPIED_COMPONENTS))
    problems = [f"--skip {u}: unknown component (components: {sorted(SPECS) + list(COPIED_COMPONENTS)})"
                for u in unknown]
    for name in list(SPECS) + list(COPIED_COMPONENTS):
        if name not in skip and not (src / name).is_dir():
            problems.append(f"component {name}/ missing in {src} (pass --skip {name} to convert without it)")
    return problems


def _prepare_adapter(adapter: Adapter, base_config, modality_layout: str) -> tuple[Any, dict[str, np.ndarray]]:
    """The transformer config carrying the adapter, and the adapter's ``{jax path: array}``; strict."""
    cfg = base_config.replace(
        modality_layout=modality_layout,
        domain_embeddings=adapter.domain_embeddings is not None,
        lora_rank=adapter.rank, lora_alpha=adapter.effective_scale * adapter.rank, lora_targets=adapter.targets)
    abstract = abstract_model(cfg)
    values = lora_mapping(cfg).to_jax(DictSource(adapter.lora), params.targets_of(abstract, nnx.LoRAParam))
    if adapter.domain_embeddings is not None:
        values.update(domain_mapping().to_jax(DictSource({"learnable_domain_embeddings": adapter.domain_embeddings}),
                                              params.targets_of(abstract, DomainEmbedding)))
    return cfg, values


def _copy_component(src: Path, dst: Path) -> dict[str, Any]:
    shutil.copytree(src, dst)
    return {str(p.relative_to(dst)): manifest_lib.file_record(p) for p in sorted(dst.rglob("*")) if p.is_file()}


#: The LoRA targets of the 4DNeX release (peft ``target_modules``: q/k/v/out of both attentions of every block).
FOURDNEX_LORA_TARGETS = ("to_k", "to_out.0", "to_q", "to_v")


def adapter_problems(adapter: Adapter, *, allow_no_domain_embeddings: bool = False,
                     lora_targets: Sequence[str] | None = FOURDNEX_LORA_TARGETS) -> list[str]:
    """What makes ``adapter`` another model than the one asked for: a missing domain-embedding file (4DNeX's
    adapter always has one) and LoRA targets other than ``lora_targets`` (None: any targets; an empty adapter has
    none)."""
    from fourdnex_jax.weights.adapter import DOMAIN_FILE, LORA_FILE

    problems = []
    if adapter.domain_embeddings is None and not allow_no_domain_embeddings:
        problems.append(f"{DOMAIN_FILE} missing next to {LORA_FILE}: the 4DNeX adapter has learned domain "
                        "embeddings and a model without them is another model; add the file, or pass "
                        "--allow-no-domain-embeddings to convert a LoRA without them")
    # an empty LoRA file (rank 0: a model trained whole, its weights in the transformer folder) has no targets
    if lora_targets is not None and adapter.rank and sorted(adapter.targets) != sorted(lora_targets):
        problems.append(f"LoRA targets {sorted(adapter.targets)} differ from the expected {sorted(lora_targets)} "
                        "(e.g. keys of one attention missing: an incomplete or other adapter); pass "
                        "--lora-targets " + ",".join(sorted(adapter.targets)) + " to convert it as it is")
    return problems


def hub_sha256(path: Path) -> str | None:
    """The sha256 a Hugging Face cache records for ``path``: a snapshot file is a symlink to ``blobs/<sha256>`` for
    LFS files (every weight file), so its target's name is the hash the hub published; None otherwise."""
    if not path.is_symlink():
        return None
    name = Path(os.readlink(path)).name
    return name if len(name) == 64 and all(c in "0123456789abcdef" for c in name) else None


def convert(src: str | Path, out: str | Path, *, adapter: str | Path | None = None,
            fuse_scale: float = DEFAULT_FUSE_SCALE, skip: Iterable[str] = (), param_dtype: str = "auto",
            modality_layout: str = "width", preset: str = "wan21_i2v_14b_480p", progress: bool = True,
            allow_no_domain_embeddings: bool = False,
            lora_targets: Sequence[str] | None = FOURDNEX_LORA_TARGETS, overwrite: bool = False,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict[str, Any]:
    """Converts ``src`` into ``out``; returns the manifest. ``out`` is published as a unit (written into a hidden
    sibling, renamed when complete: a killed conversion leaves no partial bundle); a folder already holding files
    is kept unless ``overwrite``. ``preset``: the :data:`~fourdnex_jax.recipe.SAMPLING_PRESETS` entry the bundle
    records as what it is meant to be sampled with (with the 4DNeX :class:`~fourdnex_jax.recipe.SixDSpec`).
    ``allow_no_domain_embeddings`` / ``lora_targets``: what the adapter may be (:func:`adapter_problems`).

    Integrity: every source file's sha256 is computed while it streams and recorded; a file of a Hugging Face
    cache snapshot is compared with the hash the hub published (:func:`hub_sha256`), and a mismatch (a damaged
    download) fails the conversion; so does any NaN/inf in a converted tensor."""
    from fourdnex_jax.media.publish import check_output_dir, publish_dir

    sampling_preset = SAMPLING_PRESETS[preset]  # an unknown name fails before any work
    src, out, skip = Path(src), Path(out), tuple(skip)
    inputs = [src] + ([adapter] if adapter is not None else [])
    check_output_dir(out, overwrite, inputs=inputs)
    problems = _check_components(src, skip)
    prepared: dict[str, PreparedModel] = {}
    for name, spec in SPECS.items():
        if name in skip or not (src / name).is_dir():
            continue
        try:
            prepared[name] = prepare_model(spec, src / name, param_dtype)
        except (WeightMappingError, CheckpointFileError, ValueError) as e:
            problems.append(f"[{name}] {e}")
    adapter_obj, adapter_cfg, adapter_values = None, None, None
    if adapter is not None:
        try:
            adapter_obj = read_adapter(adapter, fuse_scale)
            problems += [f"[adapter] {m}" for m in adapter_problems(
                adapter_obj, allow_no_domain_embeddings=allow_no_domain_embeddings, lora_targets=lora_targets)]
            if "transformer" in prepared:
                adapter_cfg, adapter_values = _prepare_adapter(adapter_obj, prepared["transformer"].config,
                                                               modality_layout)
            else:
                problems.append("[adapter] needs the transformer component (do not --skip transformer)")
        except (WeightMappingError, CheckpointFileError, ValueError, FileNotFoundError) as e:
            problems.append(f"[adapter] {e}")
    if len(problems) == 1 and "\n" not in problems[0]:
        raise ConversionError(f"cannot convert {src}: {problems[0]}")
    if problems:  # one line per problem under a head line naming the source
        raise ConversionError(f"cannot convert {src}; {len(problems)} problem(s):\n" + "\n".join(problems))
    if adapter_values is not None:
        bad = sorted(k for k, v in adapter_values.items() if not np.isfinite(np.asarray(v, np.float32)).all())
        if bad:
            raise ConversionError(f"cannot convert {adapter}: NaN/inf in {len(bad)} adapter tensor(s): {bad[:8]}; the "
                                  "adapter file is damaged: download it again")
    with publish_dir(out, overwrite, writer="convert", inputs=inputs) as tmp:
        manifest = _write(src, tmp, prepared, skip, adapter, adapter_obj, adapter_cfg, adapter_values,
                          sampling_preset, progress, log)
    return manifest


def _write(src: Path, out: Path, prepared: dict[str, PreparedModel], skip: tuple[str, ...], adapter,
           adapter_obj: Adapter | None, adapter_cfg, adapter_values, sampling_preset, progress: bool,
           log: Callable[[str], None]) -> dict[str, Any]:
    """The conversion proper, into the temporary folder ``out`` (checks done)."""
    manifest = manifest_lib.new_manifest("torch-to-jax", src)
    manifest["skipped"] = sorted(skip)
    summary = []
    for name, p in prepared.items():
        t0 = time.perf_counter()
        plan = StreamPlan(p, progress)
        leaves = plan.leaves()
        save_flat(out / name, leaves)
        seconds = time.perf_counter() - t0
        if plan.non_finite:
            raise ConversionError(f"cannot convert {p.directory}: NaN/inf in {len(plan.non_finite)} tensor(s): "
                                  f"{plan.non_finite[:8]}; the checkpoint is damaged: download it again")
        damaged = [f"{f}: sha256 {plan.hashes.get(str(f))}, the hub published {hub_sha256(f)}"
                   for f in p.source.files if hub_sha256(f) not in (None, plan.hashes.get(str(f)))]
        if damaged:
            raise ConversionError(f"cannot convert {p.directory}: {len(damaged)} file(s) differ from the Hugging Face "
                                  f"download's published hash: {damaged[:4]}; damaged download: delete the blobs and "
                                  "download again")
        config = adapter_cfg if (name == "transformer" and adapter_cfg is not None) else p.config
        atomic_save_json(out / CONFIGS_DIR / f"{name}.json", p.spec.config_to_json(config, p.param_dtype))
        (out / SOURCE_CONFIGS_DIR / name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p.directory / "config.json", out / SOURCE_CONFIGS_DIR / name / "config.json")
        files = {str(f.relative_to(src)): manifest_lib.file_record(f, plan.hashes.get(str(f)))
                 for f in sorted(p.directory.iterdir()) if f.is_file()}
        source_bytes = p.source.total_bytes
        stored = {}
        for leaf in leaves.values():
            stored[str(leaf.dtype)] = stored.get(str(leaf.dtype), 0) + leaf.nbytes
        manifest["models"][name] = {
            "checkpoint": name, "config": f"{CONFIGS_DIR}/{name}.json", "source_folder": name,
            "param_dtype": p.param_dtype, "arrays": len(leaves), "tensors_converted": plan.converted,
            "tensors_ignored": p.ignored, "bytes_stored": sum(stored.values()), "bytes_by_dtype": stored,
            "source_bytes": source_bytes, "source_dtypes": p.source_dtypes(), "renamed_keys": p.renames,
            "files": files, "seconds": round(seconds, 3), "source_passes": plan.passes,
            "accepted_config_keys": p.accepted_config_keys,
            "files_checked_against_hub_sha256": sum(1 for f in p.source.files if hub_sha256(f) is not None)}
        line = (f"{name}: {plan.converted} tensors converted, {len(p.ignored)} ignored, {source_bytes / 1e9:.2f} GB "
                f"in {seconds:.1f} s ({source_bytes / 1e9 / max(seconds, 1e-9):.2f} GB/s)")
        summary.append((plan.converted, len(p.ignored), source_bytes, seconds))
        log(line)
    if adapter_obj is not None:
        save_flat(out / ADAPTER_CHECKPOINT, adapter_values)
        lora_keys = set(lora_mapping(adapter_cfg).expected_torch_keys())
        manifest["adapter"] = {
            "checkpoint": ADAPTER_CHECKPOINT, "source": str(Path(adapter).absolute()), "files": adapter_obj.files,
            "key_prefix": "transformer." if adapter_obj.had_prefix else "", "rank": adapter_obj.rank,
            "targets": list(adapter_obj.targets), "metadata": adapter_obj.metadata,
            "fuse_scale": adapter_obj.fuse_scale, "effective_scale": adapter_obj.effective_scale,
            "derivation": adapter_obj.derivation,
            "config_lora_rank": adapter_cfg.lora_rank, "config_lora_alpha": adapter_cfg.lora_alpha,
            "export_fuse_scale": adapter_cfg.lora_scale,
            "domain_embeddings": adapter_obj.domain_embeddings is not None,
            "source_dtypes": {**{k: str(v.dtype) for k, v in adapter_obj.lora.items() if k in lora_keys},
                              **({"learnable_domain_embeddings": str(adapter_obj.domain_embeddings.dtype)}
                                 if adapter_obj.domain_embeddings is not None else {})},
            "tensors": len(adapter_values)}
        log(f"adapter: {len(adapter_values)} arrays (LoRA rank {adapter_obj.rank}, effective scale "
            f"{adapter_obj.effective_scale:g}: {adapter_obj.derivation})")
    for name in COPIED_COMPONENTS:
        if name not in skip:
            manifest["copied"][name] = _copy_component(src / name, out / name)
    manifest["sampling_preset"], manifest["recipe"] = sampling_preset.to_dict(), SixDSpec().to_dict()
    manifest_lib.record_files(out, manifest)
    manifest_lib.write_manifest(out, manifest)
    n, ign, b, s = (sum(x[i] for x in summary) for i in range(4))
    log(f"total: {n} tensors converted, {ign} ignored, {b / 1e9:.2f} GB in {s:.1f} s "
        f"({b / 1e9 / max(s, 1e-9):.2f} GB/s)")
    return manifest
