"""AOT memory plan of the real train step on a TPU slice, without the TPU (libtpu deviceless topologies).

    fourdnex plan --config wan21_i2v_14b_480p --topology v5p-8 [--mesh 1,4,1,1] [--global-batch 4]
        [--attention ring|chunked] [--out plans.jsonl]

Builds the abstract 14B model (nothing allocated), lowers and compiles the sharded train step (35,100-token
samples: 13 x 60 x 90 latent per modality, width-fused) for the topology's devices with the TPU compiler, and
prints memory per chip: parameters (frozen bf16 + trainable fp32 shards), optimizer state, arguments, temporaries
(activations and workspace), peak = arguments + outputs - aliased + temporaries, and whether it fits the chip's
HBM. Needs ``pip install -r requirements-tpu.txt`` (libtpu). Each compile takes ~1 min and 2-3.5 GiB host RAM.
Slice names count TensorCores for v5p (v5p-8 = 4 chips) and chips for v5e/v6e.
"""

from __future__ import annotations

import json
import sys
import time

from absl import flags
from ml_collections import config_flags

from fourdnex_jax.utils.resources import config_path

# name: (deviceless topology, HBM GiB per chip, default mesh (data, fsdp, context, tensor))
TOPOLOGIES = {
    "v5p-8": ("v5p:2x2x1", 95.74, (1, 2, 2, 1)),
    "v5p-64": ("v5p:2x4x4", 95.74, (1, 8, 4, 1)),
    "v5p-128": ("v5p:4x4x4", 95.74, (1, 16, 4, 1)),
    "v5p-256": ("v5p:4x4x8", 95.74, (1, 32, 4, 1)),
    "v6e-16": ("v6e:4x4", 31.25, (1, 4, 4, 1)),
    "v6e-64": ("v6e:8x8", 31.25, (1, 16, 4, 1)),
    "v6e-256": ("v6e:16x16", 31.25, (1, 64, 4, 1)),
    "v5e-64": ("v5e:8x8", 15.75, (1, 16, 4, 1)),
}

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("wan21_i2v_14b_480p")), "Experiment config.",
                                         lock_config=True)
_TOPOLOGY = flags.DEFINE_enum("topology", "v5p-8", sorted(TOPOLOGIES), "TPU slice.")
_MESH = flags.DEFINE_string("mesh", "", "data,fsdp,context,tensor (default: per topology).")
_BATCH = flags.DEFINE_integer("global-batch", 0, "Global batch (default: data x fsdp, one sample per group).")
_ATTENTION = flags.DEFINE_string("attention", "", "Attention implementation (default: ring if context > 1).")
_LATENT = flags.DEFINE_string("latent", "13,60,90", "Latent T,H,W per modality.")
_OUT = flags.DEFINE_string("out", "", "Append the result as one JSON line to this file.")


def main(argv) -> int:
    del argv
    from jax.experimental import topologies

    from fourdnex_jax.training.plan import GiB, compile_train_step

    name = _TOPOLOGY.value
    topo, hbm, mesh = TOPOLOGIES[name]
    mesh = tuple(int(x) for x in _MESH.value.split(",")) if _MESH.value else mesh
    config = CONFIG.value
    with config.unlocked():
        config.train.global_batch_size = _BATCH.value or mesh[0] * mesh[1]
        config.train.grad_accum_steps = 1
        config.model.attention = _ATTENTION.value or ("ring" if mesh[2] > 1 else config.model.attention)
    t0 = time.perf_counter()
    devices = topologies.get_topology_desc(topology_name=topo, platform="tpu").devices
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

