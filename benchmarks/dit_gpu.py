"""The measurements of the GPU check (:mod:`benchmarks.gpu_check`), one function per stage.

Every stage function takes ``(shapes, rec, deadline)``: the :class:`Shapes` it runs at (:data:`GPU_SHAPES`, the
14B at the 4DNeX shape, or :data:`CPU_SHAPES`, the same code at small sizes for ``--allow-cpu``), a recorder
``rec(**results)`` that stores results as soon as they are known (the caller writes them atomically), and the
``time.time()`` past which no further timed call starts. Each stage runs alone in its own process, so its peak
device memory (``peak_bytes``: the allocator's ``peak_bytes_in_use``; None where the backend keeps none, e.g.
CPU) is that stage's. Random weights and inputs are created on the device by jitted constructors, never on the
host. The guided step and the VAE decode are the pipeline's own programs (:mod:`fourdnex_jax.pipelines.programs`:
``step``, one batch-2 DiT forward for classifier-free guidance + the UniPC update; ``decode``, the XYZ half
un-normalised, then the fused VAE decode), so what is timed is what sampling runs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import IMAGE_TOKENS, ROOT, TEXT_LEN, timed_within, versions
from fourdnex_jax.utils.devices import peak_tflops

Recorder = Callable[..., None]


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What the stages run at. ``latent``: per-modality (T, H, W), width-fused to (T, H, 2W) for the DiT;
    ``matmul``: n of the n x n x n bf16 product; ``copy_mib``: size of the elementwise pass; ``attn_*``: the
    attention check (batch 1); ``vae``: 'wan21' or 'tiny' (:class:`~fourdnex_jax.models.vae.WanVAEConfig`)."""

    config: str
    latent: tuple[int, int, int]
    matmul: int
    copy_mib: int
    attn_heads: int
    attn_head_dim: int
    attn_tokens: int
    attn_chunk: int
    vae: str
    steps: int = 50
    guidance: float = 5.0
    repeats: int = 3


#: Issue 19's shapes: the 14B preset, 49 frames at 480 x 720 per modality -> latent 13 x 60 x 90 (fused 13 x 60 x
#: 180: 35,100 tokens), 40 heads x 128 attention over those tokens, the Wan2.1 VAE.
GPU_SHAPES = Shapes("configs/wan21_i2v_14b_480p.py", (13, 60, 90), 8192, 4096, 40, 128, 35100, 1024, "wan21")
#: The same code path at CPU-sized shapes (``--allow-cpu``).
CPU_SHAPES = Shapes("configs/tiny.py", (3, 8, 12), 512, 64, 2, 64, 512, 128, "tiny", repeats=2)


def _step_inputs(cfg, shapes, t: int, h: int, w: int):
    """Random inputs of one guided step ((x, cond) latents (1, t, h, 2w, C), text / negative (1, TEXT_LEN, D), CLIP
    tokens) and the schedule's rows and timesteps, on the device before timing (the pipeline puts one per step)."""
    import jax
    import jax.numpy as jnp

    from fourdnex_jax.sampling.flow_matching import make_schedule

    @jax.jit
    def inputs(key):
        k = jax.random.split(key, 5)
        lat = (1, t, h, 2 * w, cfg.out_channels)
        return (jax.random.normal(k[0], lat), jax.random.normal(k[1], lat),
                jax.random.normal(k[2], (1, TEXT_LEN, cfg.text_dim)),
                jax.random.normal(k[3], (1, TEXT_LEN, cfg.text_dim)),
                jax.random.normal(k[4], (1, IMAGE_TOKENS, cfg.image_dim)))

    schedule = make_schedule("unipc", shapes.steps, 3.0)
    return (inputs(jax.random.key(3)), [jnp.asarray(r) for r in schedule.table],
            [jnp.asarray(ts, jnp.float32) for ts in schedule.timesteps])


def peak_bytes(dev) -> int | None:
    """``peak_bytes_in_use`` of the device allocator since the process started (None where not reported)."""
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def compiled(fn: Callable, *args) -> tuple[Any, dict[str, float]]:
    """``jax.jit(fn)`` lowered and compiled for ``args`` (AOT, public API): (executable, {lower_s, compile_s})."""
    import jax

    t0 = time.perf_counter()
    lowered = (fn if hasattr(fn, "lower") else jax.jit(fn)).lower(*args)
    t1 = time.perf_counter()
    exe = lowered.compile()
    return exe, {"lower_s": t1 - t0, "compile_s": time.perf_counter() - t1}


def pipeline_programs(shapes: Shapes, graphdefs: dict[str, Any]) -> dict[str, Callable]:
    """The pipeline's programs (:func:`fourdnex_jax.pipelines.programs.build`) for one image sampled at ``shapes``
    on the first device (CFG ``shapes.guidance``, UniPC, ``shapes.steps`` steps, the default recipe);
    ``graphdefs``: the models they run (``{model: graphdef}``, only those of the programs called)."""
    import jax

    from fourdnex_jax import sharding
    from fourdnex_jax.pipelines import programs
    from fourdnex_jax.pipelines.settings import SampleSettings
    from fourdnex_jax.recipe import SixDSpec

    t, h, w = shapes.latent
    settings = SampleSettings(num_frames=1 + 4 * (t - 1), max_area=64 * h * w, num_steps=shapes.steps,
                              guidance_scale=shapes.guidance, negative_prompt="", text_len=TEXT_LEN, flow_shift=3.0,
                              solver="unipc")
    layout = programs.Layout.of(sharding.data_mesh(jax.devices()[:1]), sharding.DEFAULT_LOGICAL_AXIS_RULES,
                                settings.guidance_scale, 1)
    return programs.build(graphdefs, settings, SixDSpec(), layout)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def stage_model_config(shapes: Shapes, attention: str, *, train: bool = False):
    """The stage's DiT config: the inference form (LoRA fused: rank 0, no remat) or, ``train``, the config's
    adapter with remat 'full'; ``attention`` replaces the config's ('auto': cuDNN on a GPU in bf16)."""
    from fourdnex_jax.config import load_config_file
    from fourdnex_jax.config import model_config as to_model

    config = load_config_file(ROOT / shapes.config)
    config.model.attention = attention
    if train:
        config.model.remat_policy = "full"
        return config, to_model(config)
    return config, to_model(config).replace(lora_rank=0, lora_alpha=0.0, remat_policy="none")


# ---------------------------------------------------------------------------------------------------------------
def stage_env(shapes: Shapes, rec: Recorder, deadline: float, attention: str) -> None:
    """Device, memory, versions; the ceilings: a bf16 n^3 matmul's TFLOP/s, an elementwise pass's GB/s (read +
    write)."""
    import jax
    import jax.numpy as jnp

    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    rec(device_kind=dev.device_kind, platform=dev.platform, device_count=jax.device_count(),
        memory_bytes=(stats or {}).get("bytes_limit"), versions=versions(),
        peak_tflops_datasheet=peak_tflops(dev.device_kind))
    n = shapes.matmul
    a, b = jax.jit(lambda k: tuple(jax.random.normal(s, (n, n), jnp.bfloat16) for s in jax.random.split(k)))(
        jax.random.key(0))
    exe, comp = compiled(lambda a, b: a @ b, a, b)
    t = timed_within(lambda: exe(a, b).block_until_ready(), repeats=10, warmup=2, deadline=deadline)
    rec(matmul={"n": n, "dtype": "bfloat16", **comp, **t, "tflops_per_s": 2 * n ** 3 / t["median_s"] / 1e12})
    count = shapes.copy_mib * 2 ** 20 // 2
    x = jax.jit(lambda k: jax.random.normal(k, (count,), jnp.bfloat16))(jax.random.key(1))
    exe, comp = compiled(lambda x: x + jnp.bfloat16(1), x)  # + 1: XLA cannot elide it, unlike a plain copy
    t = timed_within(lambda: exe(x).block_until_ready(), repeats=10, warmup=2, deadline=deadline)
    rec(copy={"bytes": 2 * count, **comp, **t, "gb_per_s": 2 * 2 * count / t["median_s"] / 1e9,
              "what": "x + 1 in bf16: bytes read + bytes written"})


def stage_attention(shapes: Shapes, rec: Recorder, deadline: float, attention: str) -> None:
    """``cudnn`` (where available; else ``xla``, recorded) against the reference math on random bf16 q/k/v
    (1, L, H, D): relative L2 of each to an fp32 'highest'-precision reference, time, TFLOP/s (4 L^2 H D)."""
    import jax
    import jax.numpy as jnp

    from fourdnex_jax.ops.attention import dot_product_attention, reference

    length, heads, d, chunk = shapes.attn_tokens, shapes.attn_heads, shapes.attn_head_dim, shapes.attn_chunk
    keys = jax.random.split(jax.random.key(2), 3)
    q, k, v = jax.jit(lambda ks: [jax.random.normal(s, (1, length, heads, d), jnp.bfloat16) for s in ks])(keys)
    fast = "cudnn" if jax.default_backend() == "gpu" else "xla"
    # The reference is the xla math per query chunk ('chunked'): its full logits would be H L^2 fp32, 197 GB at
    # the 14B shape. Where xla itself is the candidate (no cuDNN), this compares the two reference paths.
    ref = "chunked"
    rec(shape={"batch": 1, "tokens": length, "heads": heads, "head_dim": d, "dtype": "bfloat16"},
        implementation=fast, reference_implementation=ref, chunk_size=chunk,
        note=None if fast == "cudnn" else f"cudnn needs a CUDA GPU (backend {jax.default_backend()!r}): xla timed")
    flop = 4.0 * length * length * heads * d
    outs = {}
    for name, impl in (("candidate", fast), ("reference", ref)):
        fn = jax.jit(functools.partial(dot_product_attention, implementation=impl, chunk_size=chunk))
        try:  # one failing implementation (e.g. a cuDNN the newer jax cannot drive) must not lose the other
            exe, comp = compiled(fn, q, k, v)
            outs[name] = exe(q, k, v)
        except Exception as e:
            rec(**{name: {"implementation": impl, "error": f"{type(e).__name__}: {str(e)[:400]}"}})
            continue
        t = timed_within(lambda: exe(q, k, v).block_until_ready(), repeats=shapes.repeats * 3, warmup=1,
                         deadline=deadline)
        rec(**{name: {"implementation": impl, **comp, **t, "tflops_per_s": flop / t["median_s"] / 1e12}})
    with jax.default_matmul_precision("highest"):
        truth = jax.jit(lambda q, k, v: reference.chunked(q.astype(jnp.float32), k.astype(jnp.float32),
                                                          v.astype(jnp.float32), chunk))(q, k, v)
    truth = np.asarray(truth)
    errors = {f"{n}_vs_fp32": rel_l2(o, truth) for n, o in outs.items()}
    if len(outs) == 2:
        errors["candidate_vs_reference"] = rel_l2(outs["candidate"], outs["reference"])
    if "candidate" in outs:
        errors["finite"] = bool(np.isfinite(np.asarray(outs["candidate"], np.float32)).all())
    rec(errors=errors)
    if "candidate" not in outs:
        raise RuntimeError(f"attention implementation {fast!r} failed (see candidate.error); reference timed")


def stage_dit(shapes: Shapes, rec: Recorder, deadline: float, attention: str) -> None:
    """The DiT (inference form, width layout) with random weights: the guided denoising step at CFG batch 2 —
    compile time, median step time, MFU (analytic forward FLOPs of the two samples / time / datasheet peak), peak
    memory, and ``steps`` steps extrapolated from the median."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fourdnex_jax.models.transformer import WanTransformer3D, flops

    _, cfg = stage_model_config(shapes, attention)
    if cfg.modality_layout != "width":
        raise ValueError(f"the GPU check runs the 4DNeX pipeline's step: width layout, not {cfg.modality_layout!r}")
    dev = jax.devices()[0]
    t, h, w = shapes.latent
    fl = flops.summary(cfg, flops.token_grid(cfg, (t, h, 2 * w)), batch=1, text_len=TEXT_LEN,
                       image_tokens=IMAGE_TOKENS)
    rec(config=shapes.config, latent_per_modality=list(shapes.latent), dit_input=[1, t, h, 2 * w, cfg.in_channels],
        tokens=fl["tokens"], cfg_batch=2, attention=cfg.attention, param_dtype=cfg.param_dtype,
        compute_dtype=cfg.compute_dtype, forward_flops_per_sample=fl["forward"])
    t0 = time.perf_counter()
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    state = jax.jit(lambda: nnx.state(WanTransformer3D(cfg, rngs=nnx.Rngs(0))))()
    jax.block_until_ready(state)
    rec(params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state)), weights_init_s=time.perf_counter() - t0,
        peak_bytes_weights=peak_bytes(dev))

    (x, cond, text, neg, clip), rows, timesteps = _step_inputs(cfg, shapes, t, h, w)
    fns = pipeline_programs(shapes, {"transformer": graphdef})
    holder = {"s": fns["init"](x), "i": 0}
    args = (holder["s"], None, cond, text, neg, clip, rows[0], timesteps[0])
    try:
        exe, comp = compiled(fns["step"], state, *args)
    except Exception as e:  # e.g. cuDNN attention refused by this jax: measure the chunked path rather than nothing
        if cfg.attention not in ("auto", "cudnn") or "RESOURCE_EXHAUSTED" in str(e):
            raise
        cfg = cfg.replace(attention="chunked")
        rec(attention_error=f"{type(e).__name__}: {str(e)[:400]}", attention="chunked (fallback)")
        graphdef = nnx.graphdef(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
        exe, comp = compiled(pipeline_programs(shapes, {"transformer": graphdef})["step"], state, *args)
    rec(guided_step_compile=comp)

    def one_step():
        i = holder["i"] % shapes.steps
        holder["s"] = exe(state, holder["s"], None, cond, text, neg, clip, rows[i], timesteps[i])
        holder["i"] += 1
        jax.block_until_ready(holder["s"])

    tm = timed_within(one_step, repeats=shapes.repeats, warmup=0, deadline=deadline)
    if not bool(jnp.isfinite(holder["s"].x).all()):
        raise FloatingPointError("the guided step with random weights produced non-finite latents")
    peak = peak_tflops(dev.device_kind)
    achieved = 2 * fl["forward"] / tm["median_s"] / 1e12
    rec(guided_step=tm, guided_step_tflops_per_s=achieved, peak_tflops_datasheet=peak,
        mfu=achieved / peak if peak else None, peak_bytes=peak_bytes(dev),
        sampling_extrapolated_s=shapes.steps * tm["median_s"], steps=shapes.steps)


#: The memory caps of the streamed-step stages (GiB): the plan's gpu-24gb and gpu-16gb cards
#: (``fourdnex_jax.pipelines.plan.TARGETS[...].hbm_gib``: an RTX 4090 reports 24,564 MiB). The parent sets
#: ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = cap / the card's memory for the stage's process (:func:`stream_cap_env`).
STREAM_CAPS_GIB = {"stream_24gb": 23.99, "stream_16gb": 15.99}


def stream_cap_env(stage: str, total_bytes: int | None) -> dict[str, str]:
    """The environment of a streamed-step stage's process: JAX's allocator pool limited to the stage's cap
    (:data:`STREAM_CAPS_GIB`) on a card of ``total_bytes`` (None, e.g. on the CPU: no cap)."""
    if stage not in STREAM_CAPS_GIB or not total_bytes:
        return {}
    fraction = STREAM_CAPS_GIB[stage] * 2 ** 30 / total_bytes
    return {"XLA_PYTHON_CLIENT_MEM_FRACTION": f"{min(fraction, 1.0):.4f}", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}


def random_streamed_state(abstract_state, dev, chunk_layers: int = 4):
    """Random bf16/fp32 values (normal, std 0.02) for an abstract DiT state, the stacked ``blocks`` in pinned host
    memory and the rest on ``dev``. The blocks are drawn on the device ``chunk_layers`` layers at a time and copied
    into one host array per leaf, then placed in pinned host memory: the device never holds more than a chunk
    (a 16 GB cap cannot hold the 14B's 30 GiB of blocks, nor one 5.6 GiB FFN leaf drawn in fp32)."""
    import jax
    import jax.numpy as jnp

    from fourdnex_jax.models import streaming

    device = jax.sharding.SingleDeviceSharding(dev)
    host = device.with_memory_kind(streaming.HOST_MEMORY)

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def draw(key, shape, dtype):
        return (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dtype)

    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    treedef = jax.tree.structure(abstract_state)
    values = []
    for i, (path, a) in enumerate(leaves):
        key = jax.random.fold_in(jax.random.key(0), i)
        dtype = jnp.dtype(a.dtype)
        if not streaming.is_streamed(path):
            values.append(jax.device_put(draw(key, tuple(a.shape), dtype), device))
            continue
        whole = np.empty(a.shape, dtype)
        for start in range(0, a.shape[0], chunk_layers):
            n = min(chunk_layers, a.shape[0] - start)
            part = draw(jax.random.fold_in(key, start), (n, *a.shape[1:]), dtype)
            whole[start:start + n] = np.asarray(part)
            del part
        values.append(jax.device_put(whole, host))
        del whole
    return jax.tree.unflatten(treedef, values)


def stage_stream(shapes: Shapes, rec: Recorder, deadline: float, attention: str, stage: str) -> None:
    """The guided step of :func:`stage_dit` with the DiT's block weights streamed from pinned host memory
    (``stream_blocks``: :mod:`fourdnex_jax.models.streaming`), in a process whose JAX allocator is capped at a
    smaller card's memory (:data:`STREAM_CAPS_GIB`, set by the parent): compile, median step, peak device memory
    (``peak_bytes``, the allocator's; ``bytes_limit`` the cap in force), the host-to-device copy rate of one block,
    and the plan's streaming cost on paper for this card (bytes per step, link and compute bounds)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fourdnex_jax.models import streaming
    from fourdnex_jax.models.transformer import WanTransformer3D, flops

    _, cfg = stage_model_config(shapes, attention)
    cfg = cfg.replace(stream_blocks=True)
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    t, h, w = shapes.latent
    fl = flops.summary(cfg, flops.token_grid(cfg, (t, h, 2 * w)), batch=1, text_len=TEXT_LEN,
                       image_tokens=IMAGE_TOKENS)
    rec(config=shapes.config, cap_gib=STREAM_CAPS_GIB[stage], bytes_limit=(stats or {}).get("bytes_limit"),
        mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"), tokens=fl["tokens"],
        cfg_batch=2, attention=cfg.attention, param_dtype=cfg.param_dtype, forward_flops_per_sample=fl["forward"])
    t0 = time.perf_counter()
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    state = random_streamed_state(abstract, dev)
    jax.block_until_ready(state)
    host_bytes = sum(x.nbytes for p, x in jax.tree_util.tree_leaves_with_path(state) if streaming.is_streamed(p))
    rec(weights_init_s=time.perf_counter() - t0, host_weights_bytes=host_bytes,
        device_weights_bytes=sum(x.nbytes for x in jax.tree.leaves(state)) - host_bytes,
        peak_bytes_weights=peak_bytes(dev))
    # one block host -> device, the copy each layer of the scan makes (its rate against the link's)
    blocks = [x for p, x in jax.tree_util.tree_leaves_with_path(state) if streaming.is_streamed(p)]
    fetch = jax.jit(lambda bs: streaming.to_device([b[0] for b in bs]))
    jax.block_until_ready(fetch(blocks))
    block_bytes = host_bytes / cfg.num_layers
    tc = timed_within(lambda: jax.block_until_ready(fetch(blocks)), repeats=5, warmup=1, deadline=deadline)
    rec(block_copy={"bytes": block_bytes, **tc, "gb_per_s": block_bytes / tc["median_s"] / 1e9})

    (x, cond, text, neg, clip), rows, timesteps = _step_inputs(cfg, shapes, t, h, w)
    fns = pipeline_programs(shapes, {"transformer": graphdef})
    holder = {"s": fns["init"](x), "i": 0}
    exe, comp = compiled(fns["step"], state, holder["s"], None, cond, text, neg, clip, rows[0], timesteps[0])
    ma = exe.memory_analysis()  # the compiler's view: the blocks should be host arguments, not device ones
    rec(guided_step_compile=comp, memory_analysis=None if ma is None else {
        k: getattr(ma, k, None) for k in ("argument_size_in_bytes", "host_argument_size_in_bytes",
                                          "temp_size_in_bytes", "output_size_in_bytes")})

    def one_step():
        i = holder["i"] % shapes.steps
        holder["s"] = exe(state, holder["s"], None, cond, text, neg, clip, rows[i], timesteps[i])
        holder["i"] += 1
        jax.block_until_ready(holder["s"])

    tm = timed_within(one_step, repeats=shapes.repeats, warmup=0, deadline=deadline)
    if not bool(jnp.isfinite(holder["s"].x).all()):
        raise FloatingPointError("the streamed guided step with random weights produced non-finite latents")
    peak = peak_tflops(dev.device_kind)
    step_flops = 2 * fl["forward"]
    moved = host_bytes * (cfg.num_layers + 1) / cfg.num_layers  # streaming.stream_scan: the last block twice
    rec(guided_step=tm, guided_step_tflops_per_s=step_flops / tm["median_s"] / 1e12, peak_tflops_datasheet=peak,
        mfu=step_flops / tm["median_s"] / 1e12 / peak if peak else None, peak_bytes=peak_bytes(dev),
        stream={"bytes_per_step": moved, "flops_per_step": step_flops,
                "copy_s_at_measured_rate": moved / (block_bytes / tc["median_s"]),
                "compute_s_at_peak": step_flops / (peak * 1e12) if peak else None},
        sampling_extrapolated_s=shapes.steps * tm["median_s"], steps=shapes.steps)


def stage_vae(shapes: Shapes, rec: Recorder, deadline: float, attention: str) -> None:
    """The pipeline's ``decode`` program (the XYZ half un-normalised, then the fused VAE decode, chunked as the
    pipeline runs it) of a random fp32 latent (1, T, H, 2W, z), with the VAE in bf16."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from fourdnex_jax.models.vae import WanVAE, WanVAEConfig

    cfg = WanVAEConfig.wan21() if shapes.vae == "wan21" else WanVAEConfig.tiny()
    dev = jax.devices()[0]
    t, h, w = shapes.latent
    shape = (1, t, h, 2 * w, cfg.z_dim)
    rec(vae=shapes.vae, latent=list(shape), dtype="bfloat16", latent_dtype="float32",
        video=[1, 1 + cfg.temporal_factor * (t - 1), h * cfg.spatial_factor, 2 * w * cfg.spatial_factor, 3])

    def make():
        return WanVAE(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.bfloat16, dtype=jnp.bfloat16)

    t0 = time.perf_counter()
    graphdef = nnx.graphdef(nnx.eval_shape(make))
    state = jax.jit(lambda: nnx.state(make()))()
    z = jax.jit(lambda k: jax.random.normal(k, shape, jnp.float32))(jax.random.key(4))
    jax.block_until_ready((state, z))
    rec(weights_init_s=time.perf_counter() - t0)
    exe, comp = compiled(pipeline_programs(shapes, {"vae": graphdef})["decode"], state, z)
    rec(decode_compile=comp)
    tm = timed_within(lambda: exe(state, z).block_until_ready(), repeats=shapes.repeats, warmup=0, deadline=deadline)
    rec(decode=tm, peak_bytes=peak_bytes(dev))


def stage_diffusers(shapes: Shapes, rec: Recorder, deadline: float, attention: str) -> None:
    """diffusers ``WanTransformer3DModel`` (its default attention processor: torch SDPA) with random weights
    initialised in place on the device (meta-device construction, no host copy), in the config's compute dtype:
    the batch-2 forward (the CFG pair) at the same shape; median time and peak memory
    (``torch.cuda.max_memory_allocated``). The 4DNeX changes (domain embeddings, shared RoPE) cost nothing and
    are left out."""
    import torch
    from diffusers import WanTransformer3DModel

    _, cfg = stage_model_config(shapes, attention)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = getattr(torch, cfg.compute_dtype)
    rec(device=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__,
        diffusers=__import__("diffusers").__version__, dtype=cfg.compute_dtype, batch=2)
    kwargs = {k: v for k, v in cfg.to_diffusers_config().items() if not k.startswith("_")}
    t0 = time.perf_counter()
    with torch.device("meta"):  # no memory anywhere until to_empty, which allocates on the device directly
        model = WanTransformer3DModel(**kwargs)
    model = model.to(dtype)
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, module in model.named_modules():  # as from_pretrained(torch_dtype=...) keeps them
        if any(k in name.split(".") for k in keep):
            module.float()
    model = model.to_empty(device=device).eval()
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=gen)
    # The RoPE tables (the only buffers, non-persistent) are empty after to_empty: rebuild them (fp32, as diffusers).
    model.rope = type(model.rope)(cfg.head_dim, cfg.patch_size, cfg.rope_max_seq_len).to(device)
    t, h, w = shapes.latent
    pt, ph, pw = cfg.patch_size
    x = torch.randn(2, cfg.in_channels, t, h, 2 * w, device=device, generator=gen).to(dtype)
    text = torch.randn(2, TEXT_LEN, cfg.text_dim, device=device, generator=gen).to(dtype)
    clip = torch.randn(2, IMAGE_TOKENS, cfg.image_dim, device=device, generator=gen).to(dtype)
    ts = torch.full((2,), 500.0, device=device)
    rec(weights_init_s=time.perf_counter() - t0, tokens=(t // pt) * (h // ph) * (2 * w // pw))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    out = {}

    def call():
        with torch.inference_mode():
            out["v"] = model(hidden_states=x, timestep=ts, encoder_hidden_states=text,
                             encoder_hidden_states_image=clip, return_dict=False)[0]
        if cuda:
            torch.cuda.synchronize()

    tm = timed_within(call, repeats=shapes.repeats, warmup=0, deadline=deadline)
    rec(forward=tm, finite=bool(torch.isfinite(out["v"]).all()),
        peak_bytes=int(torch.cuda.max_memory_allocated()) if cuda else None)


def stage_train(shapes: Shapes, rec: Recorder, deadline: float, attention: str) -> None:
    """The trainer's LoRA train step (:mod:`fourdnex_jax.training.step`: flow-matching inputs, adapter gradients,
    clipping, AdamW, NaN guard, donated state) at batch 1 with remat 'full': compile time, median step time,
    model-FLOP MFU (recomputation not counted), peak memory. The adapter keeps its on-device initialisation
    (LoRA-B = 0: the same work as any other values)."""
    import jax

    from benchmarks.common import build_jax, jax_train_step_fn, make_inputs
    from fourdnex_jax.models.transformer import flops

    config, cfg = stage_model_config(shapes, attention, train=True)
    dev = jax.devices()[0]
    t, h, w = shapes.latent
    fl = flops.summary(cfg, flops.token_grid(cfg, (t, h, 2 * w)), batch=1, text_len=TEXT_LEN,
                       image_tokens=IMAGE_TOKENS)
    rec(config=shapes.config, remat_policy=cfg.remat_policy, attention=cfg.attention, lora_rank=cfg.lora_rank,
        batch=1, tokens=fl["tokens"], train_flops=fl["train_adapter"])
    t0 = time.perf_counter()
    side = build_jax(config, 0, adapter_scale=None)
    inputs = make_inputs(side.cfg, shapes.latent, 1)["train"]
    step, batch_sh = jax_train_step_fn(side, {k: v.shape for k, v in inputs.items()})
    batch = {k: jax.device_put(v, batch_sh[k]) for k, v in inputs.items()}
    jax.block_until_ready((side.state, side.frozen, batch))
    rec(init_s=time.perf_counter() - t0, peak_bytes_weights=peak_bytes(dev))
    exe, comp = compiled(step, side.state, side.frozen, batch)
    rec(compile=comp)
    holder = {"state": side.state}

    def one_step():
        holder["state"], m = exe(holder["state"], side.frozen, batch)
        jax.block_until_ready((holder["state"], m))
        if not bool(m["finite"]):
            raise FloatingPointError("the train step with random weights produced a non-finite loss/gradient")

    tm = timed_within(one_step, repeats=shapes.repeats, warmup=0, deadline=deadline)
    peak = peak_tflops(dev.device_kind)
    achieved = fl["train_adapter"] / tm["median_s"] / 1e12
    rec(step=tm, tflops_per_s=achieved, mfu=achieved / peak if peak else None, peak_bytes=peak_bytes(dev))


#: name -> (stage function, the issue's item, what it measures)
STAGES: dict[str, tuple[Callable, str, str]] = {
    "env": (stage_env, "1", "device, versions, bf16 matmul TFLOP/s, elementwise GB/s"),
    "attention": (stage_attention, "2", "cudnn vs the reference attention (40 x 128 heads, 35,100 tokens)"),
    "dit": (stage_dit, "3", "DiT guided step (CFG batch 2): compile, median, MFU, peak memory, 50 steps"),
    "stream_24gb": (functools.partial(stage_stream, stage="stream_24gb"), "25",
                    "DiT guided step, blocks streamed from host memory, allocator capped at 24 GB"),
    "stream_16gb": (functools.partial(stage_stream, stage="stream_16gb"), "25",
                    "DiT guided step, blocks streamed from host memory, allocator capped at 16 GB"),
    "vae": (stage_vae, "3", "VAE decode of the fused latent (13 x 60 x 180)"),
    "diffusers": (stage_diffusers, "4", "diffusers WanTransformer3DModel batch-2 forward (SDPA)"),
    "train": (stage_train, "5", "LoRA train step, remat full"),
}
