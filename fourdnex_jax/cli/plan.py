"""AOT memory plan of the real train step (or the inference pipeline) on a TPU slice, without the TPU (libtpu
deviceless topologies).

    fourdnex plan --config wan21_i2v_14b_480p --topology v5p-8 [--mesh 1,4,1,1] [--global-batch 4]
        [--attention ring|chunked] [--out plans.jsonl]
    fourdnex plan --job inference --topology v5e-8|v6e-8|v5p-8|v6e-16|gpu-80gb|gpu-48gb|gpu-24gb|gpu-16gb|
        2x-gpu-24gb|4x-gpu-16gb
        [--mesh 1,2,2,2] [--weight-quant none|int8] [--stream-blocks true|false] [--programs denoise_step,decode]
        [--out plan.json]

Builds the abstract 14B model (nothing allocated), lowers and compiles the sharded train step (35,100-token
samples: 13 x 60 x 90 latent per modality, width-fused) for the topology's devices with the TPU compiler, and
prints memory per chip: parameters (frozen bf16 + trainable fp32 shards), optimizer state, arguments, temporaries
(activations and workspace), peak = arguments + outputs - aliased + temporaries, and whether it fits the chip's
HBM. Needs ``pip install -r requirements-tpu.txt`` (libtpu). Each compile takes ~1 min and 2-3.5 GiB host RAM.
Slice names count TensorCores for v5p (v5p-8 = 4 chips) and chips for v5e/v6e.

``--job inference`` (:mod:`fourdnex_jax.pipelines.plan`): the image-to-4D pipeline of the config's DiT with LoRA
fused (rank 0, bf16), Wan2.1's VAE, UMT5-XXL and CLIP at the config's sampling preset (49 frames, 480 x 720 per
modality, CFG 5: one denoising step is a DiT batch of 2 per image) compiled program by program (text encode, image
encode, one denoising step, the fused VAE decode) with the target's mesh (``pipelines.plan.TARGETS``; ``gpu-*``:
one CPU device, XLA:CPU's memory analysis standing for one card). Prints each program's memory per chip and the
pipeline's peak per staging (weights released after use, or the encoders offloaded) against the chip's memory.
``--out FILE``: the row as JSON, written after every program; programs already in FILE for the same target, mesh
and model are kept (a long plan resumes).
"""

from __future__ import annotations

import json
import sys
import time

from absl import flags
from ml_collections import config_flags

from fourdnex_jax.utils.resources import config_path

#: Train plans: slice (one of fourdnex_jax.utils.memory_plan.TPU_SLICES) -> default mesh (data, fsdp, context, tensor)
TRAIN_MESHES = {
    "v5p-8": (1, 2, 2, 1),
    "v5p-64": (1, 8, 4, 1),
    "v5p-128": (1, 16, 4, 1),
    "v5p-256": (1, 32, 4, 1),
    "v6e-16": (1, 4, 4, 1),
    "v6e-64": (1, 16, 4, 1),
    "v6e-256": (1, 64, 4, 1),
    "v5e-64": (1, 16, 4, 1),
}

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("wan21_i2v_14b_480p")), "Experiment config.",
                                         lock_config=True)
_JOB = flags.DEFINE_enum("job", "train", ["train", "inference"], "What to plan: the train step or the inference "
                         "pipeline's programs.")
_TOPOLOGY = flags.DEFINE_string("topology", "v5p-8", "TPU slice (train: one of the TRAIN_MESHES; inference: one of "
                                "fourdnex_jax.pipelines.plan.TARGETS, GPU cards included).")
_MESH = flags.DEFINE_string("mesh", "", "data,fsdp,context,tensor (default: per topology).")
_BATCH = flags.DEFINE_integer("global-batch", 0, "Global batch (default: data x fsdp, one sample per group).")
_ATTENTION = flags.DEFINE_string("attention", "", "Attention implementation (default: ring if context > 1).")
_LATENT = flags.DEFINE_string("latent", "13,60,90", "Latent T,H,W per modality.")
_QUANT = flags.DEFINE_enum("weight-quant", "", ["", "none", "int8"], "Inference: the DiT's weights (default: the "
                           "target's).")
_PROGRAMS = flags.DEFINE_string("programs", "", "Inference: comma list of programs to compile (default all: "
                                "encode_text, denoise_step, decode, encode_image).")
_STREAM = flags.DEFINE_enum("stream-blocks", "", ["", "true", "false"], "Inference: the DiT's and UMT5's blocks "
                            "streamed from host memory (sample.stream_blocks; default: the target's).")
_SIZE = flags.DEFINE_string("size", "480,720", "Inference: sampled H,W per modality.")
_OUT = flags.DEFINE_string("out", "", "Train: append the result as one JSON line to this file. Inference: write the "
                           "row as JSON (merged with the programs already in it).")


def main(argv) -> int:
    del argv
    from fourdnex_jax.training.plan import compile_train_step
    from fourdnex_jax.utils.memory_plan import TPU_SLICES, GiB, tpu_devices

    if _JOB.value == "inference":
        return _plan_inference(CONFIG.value)
    name = _TOPOLOGY.value
    if name not in TRAIN_MESHES:
        raise ValueError(f"--topology {name}: train plans know {sorted(TRAIN_MESHES)}")
    (topo, hbm), mesh = TPU_SLICES[name], TRAIN_MESHES[name]
    mesh = tuple(int(x) for x in _MESH.value.split(",")) if _MESH.value else mesh
    config = CONFIG.value
    with config.unlocked():
        config.train.global_batch_size = _BATCH.value or mesh[0] * mesh[1]
        config.train.grad_accum_steps = 1
        config.model.attention = _ATTENTION.value or ("ring" if mesh[2] > 1 else config.model.attention)
    t0 = time.perf_counter()
    devices = tpu_devices(topo)
    row = {"topology": name, "tpu": topo, "chips": len(devices), "hbm_gib": hbm,
           "attention": config.model.attention, "remat": config.model.remat_policy}
    try:
        r = compile_train_step(config, devices, mesh_shape=mesh,
                               latent_thw=tuple(int(x) for x in _LATENT.value.split(",")))
    except Exception as e:  # a rejected plan is a result (e.g. RESOURCE_EXHAUSTED from the TPU compiler)
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        row.update(mesh=list(mesh), global_batch=config.train.global_batch_size, fits=False, error=msg,
                   wall_s=round(time.perf_counter() - t0, 1))
        print(f"plan: {name} mesh {mesh}: FAILED {msg}")
    else:
        r.pop("compiled")
        g = {k: round(v / GiB, 2) for k, v in r.items() if k.endswith("_bytes")}
        row.update(mesh=list(r["mesh"].values()), global_batch=r["global_batch"], tokens=r["tokens"],
                   frozen_params=r["frozen_params"], trainable_params=r["trainable_params"],
                   **{k.replace("_bytes", "_gib"): v for k, v in g.items()},
                   fits=bool(g.get("peak_bytes", 1e9) <= hbm), compile_s=round(r["compile_s"], 1),
                   wall_s=round(time.perf_counter() - t0, 1))
        print(f"plan: {name} ({topo}, {len(devices)} chips, {hbm} GiB HBM) mesh data,fsdp,context,tensor="
              f"{tuple(r['mesh'].values())} global batch {r['global_batch']} x {r['tokens']} tokens, "
              f"{config.model.attention} attention:\n"
              f"  per chip: params {g['params_bytes']} GiB, optimizer {g['optimizer_bytes']} GiB, arguments "
              f"{g.get('arguments_bytes')} GiB, activations/temp {g.get('temp_bytes')} GiB, peak "
              f"{g.get('peak_bytes')} GiB -> {'fits' if row['fits'] else 'does NOT fit'}; compile "
              f"{r['compile_s']:.0f}s")
    if _OUT.value:
        with open(_OUT.value, "a") as f:
            f.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


def _plan_inference(config) -> int:
    import dataclasses
    import math
    import os

    from fourdnex_jax.config import model_config
    from fourdnex_jax.media.io import atomic_save_json
    from fourdnex_jax.pipelines import plan
    from fourdnex_jax.pipelines.settings import SampleSettings
    from fourdnex_jax.recipe import SAMPLING_PRESETS

    name = _TOPOLOGY.value
    if name not in plan.TARGETS:
        raise ValueError(f"--topology {name}: inference targets are {sorted(plan.TARGETS)}")
    if config.name not in SAMPLING_PRESETS:
        raise ValueError(f"--config {config.name}: no sampling preset of that name in fourdnex_jax.recipe "
                         f"({sorted(SAMPLING_PRESETS)})")
    target = plan.TARGETS[name]
    if _MESH.value:
        target = dataclasses.replace(target, mesh=tuple(int(x) for x in _MESH.value.split(",")))
    if _STREAM.value:
        target = dataclasses.replace(target, stream_blocks=_STREAM.value == "true")
    quant = _QUANT.value or target.weight_quant
    height, width = (int(x) for x in _SIZE.value.split(","))
    programs = [p for p in _PROGRAMS.value.split(",") if p] or ["encode_text", "denoise_step", "decode",
                                                                "encode_image"]
    # the sampled model: LoRA fused into the base (rank 0), no remat (no backward), sequence split by ring attention
    dit = model_config(config).replace(lora_rank=0, lora_alpha=0.0, remat_policy="none",
                                       attention=_ATTENTION.value or ("ring" if target.mesh[2] > 1 else "chunked"))
    models = plan.wan14b_models(dit, height, width)
    settings = SampleSettings.from_preset(SAMPLING_PRESETS[config.name], weight_quant=quant, release_after_use=True,
                                          stream_blocks=target.stream_blocks, decode_tile=target.decode_tile)
    row = None
    if _OUT.value and os.path.exists(_OUT.value):
        with open(_OUT.value) as f:
            row = json.load(f)
    chips = math.prod(target.mesh)  # a CPU target of several cards compiles on that many fake CPU devices
    fake = f"XLA_FLAGS=--xla_force_host_platform_device_count={chips} " if target.platform == "cpu" and chips > 1 \
        else ""
    command = (f"{fake}fourdnex plan --job inference --config {config.name} --topology {name} --mesh "
               f"{','.join(map(str, target.mesh))} --weight-quant {quant} --size {_SIZE.value}"
               + (f" --stream-blocks {_STREAM.value}" if _STREAM.value else ""))
    # one program at a time, the row written after each: a plan that stops keeps what it compiled, and a rerun
    # with the same --out compiles only what is missing (merge_rows checks that target, mesh and model agree)
    for program in programs:
        if row is not None and "peak_gib" in row["programs"].get(program, {}):
            print(f"plan: {name} {program}: kept from {_OUT.value}")
            continue
        new = plan.run_target(target, models, settings, programs=[program])
        row = new if row is None else plan.merge_rows(row, new)
        row["command"] = command
        row["date"] = time.strftime("%Y-%m-%d", time.gmtime())  # of the last program compiled into the row
        r = row["programs"][program]
        print(f"plan: {name} {program}: " + (f"FAILED {r['error']}" if "error" in r else
              f"arguments {r['arguments_gib']:.2f} GiB (weights {r['weights_gib']:.2f}), temp {r['temp_gib']:.2f}, "
              f"code {r['code_gib']:.3f}, peak {r['peak_gib']:.2f} GiB; compile {r['compile_s']:.0f}s"), flush=True)
        if _OUT.value:
            atomic_save_json(_OUT.value, row)
    peaks = ", ".join(f"{s} {e['peak_gib']:.2f} GiB" for s, e in row["stagings"].items() if e["peak_gib"] is not None)
    verdict = {True: "fits", False: "does NOT fit", None: "unknown"}[row["fits"]]
    missing = f" (not compiled: {', '.join(row['missing'])})" if row["missing"] else ""
    print(f"plan: {name} ({row['topology'] or 'CPU devices as GPUs'}, {row['chips']} chip(s), {row['hbm_gib']} GiB) "
          f"mesh data,fsdp,context,tensor={tuple(row['mesh'])}, {row['images_per_call']} image(s) per call, DiT batch "
          f"{row['dit_rows']} x {row['tokens_per_row']} tokens, {row['attention']} attention, DiT weights "
          f"{row['weight_quant']}:\n  pipeline peak per chip: {peaks} -> with '{row['staging']}' {verdict}{missing}")
    sys.stdout.flush()
    return 0
