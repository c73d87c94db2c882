"""AOT memory plan of the image-to-4D pipeline: its programs lowered and compiled for a mesh of (possibly deviceless)
devices, per-device memory from the compiler, nothing allocated.

The programs are the pipeline's own (:mod:`fourdnex_jax.pipelines.programs`: the same jitted functions, with every
input a ``ShapeDtypeStruct`` carrying the sharding the pipeline gives it), lowered inside
:func:`fourdnex_jax.sharding.mesh_context`:

  * ``encode_text``: UMT5 on (images, text_len) token ids -> (images, text_len, text_dim) (the prompt; the negative
    prompt is the same program called once more);
  * ``encode_image``: CLIP on (images, S, S, 3) pixels + the VAE encode of the condition video (images, T, H, 2W, 3)
    -> CLIP embeddings and the condition latent (images, T', h, 2w, z);
  * ``denoise_step``: one solver step with classifier-free guidance batched (a DiT batch of 2 x images): the
    ``step`` program, or ``step_full`` with a step cache (:func:`~fourdnex_jax.pipelines.programs.step_function`);
  * ``decode``: the fused VAE decode (XYZ un-normalised first) of the final latents -> (images, T, H, 2W, 3).

Per program and device (:func:`fourdnex_jax.utils.memory_plan.memory_analysis`, as the training plan counts it):
``arguments`` (its weights' shards + inputs, without the arguments it never reads), ``outputs``, ``alias``, ``temp``
(activations and workspace), ``code`` (generated code) and ``peak = arguments + outputs - alias + temp + code``;
``weights`` / ``inputs`` are the shards of the program's model weights / other inputs (exact, from the shardings). A
stage of the pipeline also holds the weights of the other models that are on the devices at that time (the
stagings ``keep`` / ``release`` / ``offload`` of :data:`~fourdnex_jax.pipelines.programs.STAGINGS`) and its own
models' weights that the executable does not read (:func:`stage_peak`).

With ``settings.stream_blocks`` the DiT's and UMT5's stacked blocks are arguments in host memory
(``pinned_host``): they count in ``host_weights`` and ``host_arguments``, not in the device figures (XLA:CPU has
one memory and reports them as device arguments; the plan subtracts their exact bytes), while the two blocks in
flight on the device are in the program's temporaries. A streamed row also carries ``stream_cost``
(:func:`stream_cost`): bytes moved per denoising step against the step's FLOPs, per card of :data:`CARDS`.
``settings.decode_tile`` compiles the spatially tiled VAE decode.

``pipeline peak = max over stages (program peak + co-resident weights)``. On a deviceless TPU topology
(``jax.experimental.topologies``, needs ``libtpu``) the TPU compiler also rejects programs over the HBM size (an
exception: a result). On the CPU backend (one device, standing for one GPU) the figures are XLA:CPU's buffer
assignment of the same programs (chunked attention where the GPU would use cuDNN flash attention), compiled with
:data:`CPU_AS_GPU_OPTIONS` (no fp32 copies of the bf16 weights, which XLA:CPU alone makes): an estimate.
"""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from fourdnex_jax import sharding
from fourdnex_jax.models import streaming
from fourdnex_jax.models.image_encoder import CLIPVisionConfig
from fourdnex_jax.models.quantize import quantize_int8
from fourdnex_jax.models.text_encoder import UMT5Config
from fourdnex_jax.models.transformer import WanTransformer3D, WanTransformerConfig
from fourdnex_jax.models.transformer import flops as flops_lib
from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.pipelines import programs as programs_lib
from fourdnex_jax.pipelines.programs import MODELS, PROGRAMS, STAGINGS, Layout
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SixDSpec
from fourdnex_jax.utils.memory_plan import TPU_SLICES, GiB, memory_analysis, shard_bytes, tpu_devices
from fourdnex_jax.weights.registry import SPECS


@dataclasses.dataclass(frozen=True)
class PlanModels:
    """The pipeline's four model configs and parameter dtypes, and the sampled shape (pixels per modality)."""

    transformer: WanTransformerConfig
    vae: WanVAEConfig
    text_encoder: UMT5Config
    image_encoder: CLIPVisionConfig
    dtypes: Mapping[str, str]  # model -> parameter dtype ('bfloat16' | 'float32')
    height: int
    width: int

    def abstract(self, name: str, weight_quant: str = "none") -> nnx.Module:
        """The abstract model ``name`` (``nnx.eval_shape``: nothing allocated); the DiT int8-quantised with
        ``weight_quant='int8'``."""
        if name == "transformer":
            cfg = self.transformer.replace(param_dtype=self.dtypes[name])

            def build():
                dit = WanTransformer3D(cfg, rngs=nnx.Rngs(0))
                return quantize_int8(dit) if weight_quant == "int8" else dit

            return nnx.eval_shape(build)
        return SPECS[name].abstract(getattr(self, name), self.dtypes[name])


def build_programs(models: PlanModels, settings: SampleSettings, spec: SixDSpec, mesh, rules,
                   staging: str | None = None) -> tuple[dict[str, tuple[Callable, tuple]], dict[str, float], Layout]:
    """The pipeline's programs on ``mesh`` (:func:`fourdnex_jax.pipelines.programs.build` under ``staging``, default
    the pipeline's for ``settings``): ``{name: (jitted fn, abstract args)}`` for every program of :data:`PROGRAMS`,
    the weight bytes per device of each model (``{model: bytes}``) and the
    :class:`~fourdnex_jax.pipelines.programs.Layout`."""
    rules = tuple(rules)
    layout = Layout.of(mesh, rules, settings.guidance_scale, settings.batch_size)
    staging = staging or programs_lib.staging_of(settings)
    graphdefs, states = {}, {}
    for name in MODELS:
        quant = settings.weight_quant if name == "transformer" else "none"
        module = programs_lib.streamed_module(name, models.abstract(name, quant), settings)
        host = settings.stream_blocks and name in streaming.STREAMED_MODELS
        graphdefs[name], states[name] = programs_lib.abstract_state(module, mesh, rules, staging, host)
    weights = {name: shard_bytes(states[name], "device") for name in MODELS}  # streamed blocks are in host memory
    fns = programs_lib.build(graphdefs, settings, spec, layout, staging=staging)
    inputs = programs_lib.abstract_inputs(settings, layout, models.height, models.width,
                                          transformer_config=models.transformer, vae_config=models.vae,
                                          image_encoder_config=models.image_encoder)
    functions = {"encode_text": "encode_text", "encode_image": "encode_image",
                 "denoise_step": programs_lib.step_function(settings), "decode": "decode"}
    built = {program: (fns[fn], (*(states[m] for m in PROGRAMS[program]), *inputs[fn]))
             for program, fn in functions.items()}
    return built, weights, layout


#: XLA options of the CPU compiles that stand for a GPU. XLA:CPU has no bf16 matmul: it converts bf16 weights to
#: fp32, and loop-invariant code motion hoists that convert out of the layer scan, materialising an fp32 copy of
#: every stacked weight (61 GiB of temp for the 14B DiT step, 17.6 GiB for UMT5) that a GPU (native bf16 dots)
#: never makes. Without the two passes the convert stays per layer (8.7 / 0.39 GiB of temp).
CPU_AS_GPU_OPTIONS = {"xla_disable_hlo_passes": "while-loop-invariant-code-motion,"
                                                "while-loop-expensive-invariant-code-motion"}


def compile_program(fn: Callable, args: tuple, mesh, rules, compiler_options: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Lowers and compiles ``fn(*args)`` inside the mesh context (``compiler_options`` to XLA); memory per device
    and timings."""
    t0 = time.perf_counter()
    with sharding.mesh_context(mesh, rules):
        lowered = fn.lower(*args)
        t1 = time.perf_counter()
        compiled = lowered.compile(compiler_options=dict(compiler_options) if compiler_options else None)
    out = {"lower_s": t1 - t0, "compile_s": time.perf_counter() - t1}
    out.update(memory_analysis(compiled))
    return out


def stage_peak(name: str, program: Mapping[str, float], weights: Mapping[str, float], staging: str,
               unit: str = "bytes") -> float:
    """Memory per device while program ``name`` runs under ``staging``: its peak, plus the weights of the other
    models on the devices then (:data:`STAGINGS`), plus the part of its own models' weights the executable does not
    take (jit drops unused arguments: the decode takes the VAE decoder only, the encoder stays on the devices):
    ``weights + inputs - arguments`` when positive. ``unit``: the key suffix, 'bytes' or 'gib'."""
    own = sum(weights[m] for m in PROGRAMS[name])
    unused = max(0.0, own + program.get(f"inputs_{unit}", 0.0) - program[f"arguments_{unit}"])
    return program[f"peak_{unit}"] + unused + sum(weights[m] for m in STAGINGS[staging][name])


def stage_peaks(programs: Mapping[str, Mapping[str, Any]], weights: Mapping[str, float], staging: str
                ) -> dict[str, float]:
    """``{program: bytes per device of its stage}`` (:func:`stage_peak`); programs without a memory analysis are
    left out."""
    return {name: stage_peak(name, r, weights, staging) for name, r in programs.items() if "peak_bytes" in r}


def plan_pipeline(models: PlanModels, settings: SampleSettings, spec: SixDSpec, devices: Sequence[Any], *,
                  mesh_shape: Sequence[int], rules: Sequence[tuple[str, Any]] = sharding.DEFAULT_LOGICAL_AXIS_RULES,
                  programs: Sequence[str] = tuple(PROGRAMS), compiler_options: Mapping[str, Any] | None = None,
                  on_program: Callable[[str, dict[str, Any]], None] | None = None, staging: str | None = None
                  ) -> dict[str, Any]:
    """Compiles the pipeline's ``programs`` (default all of :data:`PROGRAMS`) for ``devices`` on a
    ``(data, fsdp, context, tensor)`` mesh of ``mesh_shape`` and returns the plan (bytes per device).

    A program the compiler rejects (e.g. ``RESOURCE_EXHAUSTED`` on a TPU topology) is recorded with ``error``.
    ``on_program(name, result)`` is called as each program's result exists. ``staging``: the one the programs are
    built for (default the pipeline's for ``settings``). ``stagings``: ``{staging: {program: stage peak bytes}}``
    (:func:`stage_peaks`); the verdict against a chip's memory is :func:`restage`'s."""
    unknown = sorted(set(programs) - set(PROGRAMS))
    if unknown:
        raise ValueError(f"programs {unknown}: choose from {tuple(PROGRAMS)}")
    rules = tuple(rules)
    mesh = sharding.make_mesh(types.SimpleNamespace(mesh_shape=tuple(mesh_shape), mesh_axes=sharding.MESH_AXES),
                              devices=devices)
    built, weights, layout = build_programs(models, settings, spec, mesh, rules, staging)
    results: dict[str, dict[str, Any]] = {}
    for name in programs:
        fn, args = built[name]
        try:
            r = compile_program(fn, args, mesh, rules, compiler_options)
        except Exception as e:  # a rejected program is a result
            r = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:400]}"}
        host = shard_bytes(args, streaming.HOST_MEMORY)
        if host and "peak_bytes" in r and not r.get("host_arguments_bytes"):
            # XLA:CPU has one memory: it counts host-memory arguments as device arguments. Their bytes are exact
            # (the shardings), so the device figures are the compiler's minus them.
            r["arguments_bytes"] -= host
            r["peak_bytes"] -= host
            r["host_accounting"] = "host-memory arguments subtracted from the backend's device figures"
        if host:
            r["host_arguments_bytes"] = host
        r["weights_bytes"] = sum(weights[m] for m in PROGRAMS[name])
        r["inputs_bytes"] = shard_bytes(args[len(PROGRAMS[name]):])
        results[name] = r
        if on_program is not None:
            on_program(name, r)
    stagings = {staging: stage_peaks(results, weights, staging) for staging in STAGINGS}
    dit = models.transformer
    latent_thw = built["denoise_step"][1][3].shape[1:4]
    tokens = int(np.prod(latent_thw)) // int(np.prod(dit.patch_size))
    rows = 2 * layout.images if settings.guidance_scale > 1.0 else layout.images
    # host-memory weights of each model (streamed blocks): from the programs' model arguments
    host_weights = {}
    for name, own in PROGRAMS.items():
        for i, model in enumerate(own):
            host_weights.setdefault(model, shard_bytes(built[name][1][i], streaming.HOST_MEMORY))
    step_flops = flops_lib.forward_flops(dit, flops_lib.token_grid(dit, latent_thw), batch=rows,
                                         text_len=settings.text_len,
                                         image_tokens=models.image_encoder.num_positions)
    return {"mesh": dict(mesh.shape), "devices": len(devices), "device_kind": devices[0].device_kind,
            "images_per_call": layout.images, "dit_rows": rows, "cfg_over_data": layout.cfg_over_data,
            "tokens_per_row": tokens, "attention": dit.attention, "weight_quant": settings.weight_quant,
            "stream_blocks": settings.stream_blocks, "decode_tile": list(settings.decode_tile),
            "model_weights_bytes": weights, "host_weights_bytes": host_weights,
            "step_flops_per_device": step_flops / len(devices), "programs": results, "stagings": stagings}


# -- the 14B targets ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Target:
    """Where the pipeline is planned: ``platform`` 'tpu' (a deviceless ``topology`` of libtpu) or 'cpu' (one CPU
    device standing for one GPU of ``hbm_gib``: XLA:CPU's memory analysis); ``mesh`` (data, fsdp, context,
    tensor); ``weight_quant`` of the DiT; ``staging`` the :data:`STAGINGS` entry the verdict uses."""

    name: str
    platform: str
    topology: str | None
    hbm_gib: float
    mesh: tuple[int, int, int, int]
    weight_quant: str = "none"
    staging: str = "release"
    stream_blocks: bool = False  # settings.stream_blocks: DiT / UMT5 blocks in host memory, streamed
    decode_tile: tuple[int, int] = (0, 0)  # settings.decode_tile: the VAE decode's latent tile, (0, 0) whole
    cards: tuple[str, ...] = ()  # the CARDS this row stands for (link and FLOP/s of the streaming cost)

    @classmethod
    def tpu(cls, name: str, mesh: tuple[int, int, int, int], **kw) -> Target:
        """The TPU slice ``name`` of :data:`~fourdnex_jax.utils.memory_plan.TPU_SLICES` on ``mesh``."""
        topology, hbm_gib = TPU_SLICES[name]
        return cls(name, "tpu", topology, hbm_gib, mesh, **kw)


#: The planned slices (:data:`~fourdnex_jax.utils.memory_plan.TPU_SLICES`) and cards. GPU memory as the card reports
#: it (H100 80GB: 81,559 MiB; L40S / RTX 6000 Ada: 46,068 MiB; RTX 4090: 24,564 MiB); XLA preallocates 75 % of it
#: unless XLA_PYTHON_CLIENT_MEM_FRACTION / _PREALLOCATE say otherwise.
TARGETS = {t.name: t for t in (
    # v5e-8: with the blocks resident, the image encode (14.15 GiB) next to the DiT's 7.78 is over the 15.75 GiB
    # chip (22.04); streamed, the DiT keeps 0.4 GiB on the chip; the tiled decode: 8.65 GiB instead of 16.65
    Target.tpu("v5e-8", (1, 2, 2, 2), stream_blocks=True, decode_tile=(60, 45), cards=("TPU v5e",)),
    Target.tpu("v6e-8", (1, 2, 2, 2)),
    Target.tpu("v5p-8", (1, 2, 2, 1)),
    Target.tpu("v6e-16", (1, 4, 4, 1)),
    Target("gpu-80gb", "cpu", None, 79.65, (1, 1, 1, 1), cards=("H100 PCIe", "H100 SXM")),
    Target("gpu-48gb", "cpu", None, 44.99, (1, 1, 1, 1), weight_quant="int8", staging="offload",
           cards=("RTX A6000",)),
    Target("gpu-24gb", "cpu", None, 23.99, (1, 1, 1, 1), stream_blocks=True, cards=("RTX 3090", "RTX 4090")),
    Target("gpu-16gb", "cpu", None, 15.99, (1, 1, 1, 1), stream_blocks=True, decode_tile=(60, 45),
           cards=("RTX 4080",)),
    Target("2x-gpu-24gb", "cpu", None, 23.99, (1, 2, 1, 1), stream_blocks=True, cards=("RTX 3090", "RTX 4090")),
    # fsdp 4 (one image per card): with context 2 (mesh (1, 2, 2, 1)) XLA:CPU's ring attention needs 18.3 GiB of
    # step temporaries per card, over 16 GB
    Target("4x-gpu-16gb", "cpu", None, 15.99, (1, 4, 1, 1), stream_blocks=True, decode_tile=(60, 45),
           cards=("RTX 4080",)),
)}


@dataclasses.dataclass(frozen=True)
class Card:
    """One accelerator for the streaming cost: its host link (GB/s per direction, theoretical) and its peak dense
    bf16 matmul rate (TFLOP/s, fp32 accumulation), with where the figures come from."""

    link_gbs: float | None
    bf16_tflops: float
    source: str


#: Cards the plan's rows stand for. PCIe x16 per direction: 4.0 = 16 GT/s x 16 lanes x 128/130 / 8 = 31.5 GB/s,
#: 5.0 = 63.0 GB/s (PCI-SIG base specifications; measured host-to-device copies reach about 80 % of it).
CARDS = {
    "RTX 3090": Card(31.5, 71.0, "PCIe 4.0 x16; NVIDIA Ampere GA102 whitepaper: FP16/BF16 tensor, FP32 accumulate, "
                                 "dense"),
    "RTX 4080": Card(31.5, 97.5, "PCIe 4.0 x16; NVIDIA Ada Lovelace whitepaper: FP16/BF16 tensor, FP32 accumulate, "
                                 "dense"),
    "RTX 4090": Card(31.5, 165.2, "PCIe 4.0 x16; NVIDIA Ada Lovelace whitepaper: FP16/BF16 tensor, FP32 "
                                  "accumulate, dense"),
    "RTX A6000": Card(31.5, 154.8, "PCIe 4.0 x16; NVIDIA RTX A6000 datasheet: BF16 tensor, dense (309.7 sparse)"),
    "H100 PCIe": Card(63.0, 756.5, "PCIe 5.0 x16; NVIDIA H100 datasheet: BF16 tensor 1,513 sparse = 756.5 dense"),
    "H100 SXM": Card(63.0, 989.5, "PCIe 5.0 x16 host link; NVIDIA H100 datasheet: BF16 tensor 1,979 sparse = "
                                  "989.5 dense"),
    "TPU v5e": Card(None, 197.0, "Cloud TPU v5e documentation: 197 TFLOP/s bf16 per chip; host link not published"),
}


def stream_cost(host_dit_bytes: float, num_layers: int, step_flops: float, cards: Sequence[str]
                ) -> dict[str, Any]:
    """What streaming the DiT's blocks costs per denoising step on one device: ``bytes`` moved host -> device
    (the device's share of the host-memory blocks, each block once per DiT call, plus the last block fetched again
    by the fixed loop body: x (L + 1) / L; one DiT call per step, CFG batched) against the step's matmul
    ``flops`` on that device (:mod:`fourdnex_jax.models.transformer.flops`), and per card of ``cards``
    (:data:`CARDS`) the link time and the compute time at peak: the transfer hides under compute when
    ``link_s <= compute_s``, and ``max`` of the two bounds the step time from below."""
    moved = host_dit_bytes * (num_layers + 1) / num_layers
    out: dict[str, Any] = {"bytes_per_step": moved, "flops_per_step": step_flops,
                           "flops_per_byte": step_flops / moved if moved else None, "cards": {}}
    for name in cards:
        card = CARDS[name]
        compute_s = step_flops / (card.bf16_tflops * 1e12)
        link_s = moved / (card.link_gbs * 1e9) if card.link_gbs else None
        out["cards"][name] = {
            "link_gbs": card.link_gbs, "bf16_tflops": card.bf16_tflops, "compute_s": compute_s, "link_s": link_s,
            "step_bound_s": max(compute_s, link_s or 0.0), "hidden": None if link_s is None else link_s <= compute_s,
            "source": card.source}
    return out

#: Parameter dtypes of the planned 14B pipeline: the DiT and UMT5 in bf16 (as Wan ships them), CLIP in bf16, the
#: VAE in fp32 (diffusers' Wan VAE).
WAN14B_DTYPES = {"transformer": "bfloat16", "text_encoder": "bfloat16", "image_encoder": "bfloat16", "vae": "float32"}


def target_devices(target: Target) -> list[Any]:
    """The devices of ``target``: a deviceless TPU topology (needs ``libtpu``) or the first CPU device."""
    if target.platform == "tpu":
        return tpu_devices(target.topology)
    if target.platform == "cpu":
        n = int(np.prod(target.mesh))
        devices = jax.devices("cpu")[:n]
        if len(devices) < n:
            raise ValueError(f"target {target.name}: mesh {target.mesh} needs {n} CPU devices, jax has "
                             f"{len(devices)}; run with XLA_FLAGS=--xla_force_host_platform_device_count={n}")
        return devices
    raise ValueError(f"target {target.name}: platform {target.platform!r}; use 'tpu' or 'cpu'")


def wan14b_models(transformer: WanTransformerConfig, height: int = 480, width: int = 720) -> PlanModels:
    """The 14B pipeline: ``transformer`` (e.g. the 14B config's model with LoRA fused: rank 0) with Wan2.1's VAE,
    UMT5-XXL and CLIP ViT-H/14, dtypes :data:`WAN14B_DTYPES`, sampled at ``height x width`` per modality."""
    return PlanModels(transformer, WanVAEConfig.wan21(), UMT5Config.umt5_xxl(), CLIPVisionConfig.vit_h14(),
                      dict(WAN14B_DTYPES), height, width)


def report_row(target: Target, plan: Mapping[str, Any], models: PlanModels, settings: SampleSettings,
               wall_s: float, compiler_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-able row of a plan (GiB per device, rounded to KiB) with the stage peaks and the verdict
    (:func:`restage`)."""
    progs = {name: {k.replace("_bytes", "_gib") if k.endswith("_bytes") else k:
                    _gib(v) if k.endswith("_bytes") else (round(v, 1) if isinstance(v, float) else v)
                    for k, v in r.items()} for name, r in plan["programs"].items()}
    row = {"target": target.name, "platform": target.platform, "topology": target.topology,
           "chips": plan["devices"], "device_kind": plan["device_kind"], "hbm_gib": target.hbm_gib,
           "mesh": list(plan["mesh"].values()), "images_per_call": plan["images_per_call"],
           "dit_rows": plan["dit_rows"], "cfg_over_data": plan["cfg_over_data"],
           "tokens_per_row": plan["tokens_per_row"], "attention": plan["attention"],
           "attention_chunk": models.transformer.attention_chunk_size, "weight_quant": plan["weight_quant"],
           "dtypes": dict(models.dtypes), "frames": settings.num_frames, "size": [models.height, models.width],
           "text_len": settings.text_len,
           "model_weights_gib": {k: _gib(v) for k, v in plan["model_weights_bytes"].items()},
           "stream_blocks": plan["stream_blocks"], "decode_tile": plan["decode_tile"],
           "host_weights_gib": {k: _gib(v) for k, v in plan["host_weights_bytes"].items()},
           "programs": progs, "staging": target.staging,
           "estimate": ("TPU compiler (libtpu deviceless topology)" if target.platform == "tpu"
                        else "XLA:CPU buffer assignment (compile only), standing for one GPU"),
           "compiler_options": dict(compiler_options or {}),
           "wall_s": round(wall_s, 1)}
    if plan["stream_blocks"]:
        row["stream_cost"] = stream_cost(plan["host_weights_bytes"]["transformer"], models.transformer.num_layers,
                                         plan["step_flops_per_device"], target.cards)
    return restage(row)


def _gib(b: float | None) -> float | None:
    return None if b is None else round(b / GiB, 6)


#: Fields two rows must share to be merged (:func:`merge_rows`): the same target, mesh, model and shape.
ROW_IDENTITY = ("target", "platform", "topology", "chips", "mesh", "images_per_call", "dit_rows", "attention",
                "attention_chunk", "weight_quant", "stream_blocks", "decode_tile", "dtypes", "frames", "size",
                "text_len", "model_weights_gib", "compiler_options")
#: The value of a ROW_IDENTITY field in rows written before it existed.
ROW_DEFAULTS = {"stream_blocks": False, "decode_tile": [0, 0]}


def restage(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``stagings`` (per :data:`STAGINGS`: each program's stage peak = its peak + the co-resident
    weights, and the largest) and the verdict under ``row['staging']``: ``peak_gib``, ``missing`` (programs of
    :data:`PROGRAMS` without a memory analysis) and ``fits``: False when a stage is over the HBM or the compiler
    ran out of memory (RESOURCE_EXHAUSTED), None (unknown) while programs are missing, else True."""
    weights, progs = row["model_weights_gib"], row["programs"]
    ok = {name: r for name, r in progs.items() if r.get("peak_gib") is not None}
    missing = [name for name in PROGRAMS if name not in ok]
    exhausted = any("RESOURCE_EXHAUSTED" in str(r.get("error", "")) for r in progs.values())
    stagings = {}
    for staging in STAGINGS:
        peaks = {name: round(stage_peak(name, r, weights, staging, "gib"), 6) for name, r in ok.items()}
        top = max(peaks.values()) if peaks else None
        over = exhausted or (top is not None and top > row["hbm_gib"])
        stagings[staging] = {"stage_peak_gib": peaks, "peak_gib": top,
                             "fits": False if over else (None if missing else True)}
    chosen = stagings[row["staging"]]
    return {**row, "stagings": stagings, "peak_gib": chosen["peak_gib"], "fits": chosen["fits"],
            "missing": missing}


def merge_rows(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """One row of the programs of ``old`` and ``new`` (``new``'s win) for the same target, mesh and model
    (:data:`ROW_IDENTITY`; ValueError naming the field otherwise), restaged."""
    for key in ROW_IDENTITY:
        a, b = old.get(key), new.get(key)
        if key == "compiler_options":  # rows written before the field existed: no options
            a, b = a or {}, b or {}
        if key in ROW_DEFAULTS:  # rows written before the field existed: its default
            a, b = (ROW_DEFAULTS[key] if v is None else v for v in (a, b))
        if key == "model_weights_gib" and isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
            if all(abs(a[m] - b[m]) <= 1e-3 for m in a):  # rows rounded to different precisions
                continue
        if a != b:
            raise ValueError(f"cannot merge plans: {key} is {old.get(key)!r} in the existing file and "
                             f"{new.get(key)!r} now; write to another --out file")
    merged = {**new, "programs": {**old["programs"], **new["programs"]},
              "wall_s": round(old.get("wall_s", 0.0) + new.get("wall_s", 0.0), 1)}
    return restage(merged)


def run_target(target: Target, models: PlanModels, settings: SampleSettings, spec: SixDSpec = SixDSpec(), *,
               rules: Sequence[tuple[str, Any]] = sharding.DEFAULT_LOGICAL_AXIS_RULES,
               programs: Sequence[str] = tuple(PROGRAMS),
               on_program: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """:func:`plan_pipeline` on ``target``'s devices and mesh (``settings.weight_quant`` as given; CPU targets with
    :data:`CPU_AS_GPU_OPTIONS`) -> its :func:`report_row`. ``models.transformer.attention`` is used as given (e.g.
    'ring' with a context axis)."""
    t0 = time.perf_counter()
    options = CPU_AS_GPU_OPTIONS if target.platform == "cpu" else None
    plan = plan_pipeline(models, settings, spec, target_devices(target), mesh_shape=target.mesh, rules=rules,
                         programs=programs, compiler_options=options, on_program=on_program,
                         staging=target.staging)
    return report_row(target, plan, models, settings, time.perf_counter() - t0, options)


def staging_label(row: Mapping[str, Any]) -> str:
    """The row's staging with its memory-saving settings: e.g. 'release + stream + tiled decode 60x45'."""
    parts = [row["staging"]]
    if row.get("stream_blocks"):
        parts.append("stream")
    if list(row.get("decode_tile") or [0, 0]) != [0, 0]:
        parts.append("tiled decode {}x{}".format(*row["decode_tile"]))
    return " + ".join(parts)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The inference plan table (GiB per chip) of report rows, one line per row: mesh, images per call, the DiT's
    weight shard, each program's peak (``-`` not compiled, ``x`` rejected by the compiler), the pipeline's peak
    under the row's staging and the verdict."""
    head = ("| target | chips x HBM GiB | mesh (d,f,c,t) | images / call (DiT rows x tokens) | DiT weights | "
            "text encode | image encode | denoise step (temp) | decode | peak, staging | fits |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        p = r["programs"]

        def peak(name: str) -> str:
            if name not in p:
                return "-"
            if "error" in p[name]:
                return "x"
            return f"{p[name]['peak_gib']:.2f}"

        host = (r.get("host_weights_gib") or {}).get("transformer") or 0.0
        streamed = f" (+ {host:.2f} in host memory)" if host else ""
        step = p.get("denoise_step", {})
        temp = f" ({step['temp_gib']:.2f})" if "temp_gib" in step else ""
        verdict = {True: "**yes**", False: "no", None: "unknown"}[r["fits"]]
        chips = f"{r['chips']} x {r['hbm_gib']}"
        lines.append(
            f"| {r['target']} | {chips} | ({', '.join(map(str, r['mesh']))}) | {r['images_per_call']} "
            f"({r['dit_rows']} x {r['tokens_per_row']}) | {r['model_weights_gib']['transformer']:.2f} "
            f"{r['weight_quant'] if r['weight_quant'] != 'none' else 'bf16'}{streamed} | {peak('encode_text')} | "
            f"{peak('encode_image')} | {peak('denoise_step')}{temp} | {peak('decode')} | "
            f"{'-' if r['peak_gib'] is None else format(r['peak_gib'], '.2f')}, {staging_label(r)} | {verdict} |")
    return "\n".join(lines)
