"""Parameter counts and bytes of a config's DiT from an abstract instantiation (no memory allocated).

    fourdnex describe --config wan21_i2v_14b_480p [--config.model.lora_rank=128]

The "base" line counts exactly the parameters of diffusers' ``WanTransformer3DModel`` built from the same
architecture; the adapter (LoRA + 4DNeX domain embeddings) is reported separately.
"""

from __future__ import annotations

import time

from flax import nnx
from ml_collections import config_flags

from fourdnex_jax.config import model_config
from fourdnex_jax.models import params
from fourdnex_jax.models.transformer import FROZEN, DomainEmbedding
from fourdnex_jax.utils.resources import config_path
from fourdnex_jax.weights.registry import abstract_model

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("tiny")), "Experiment config.", lock_config=True)


def describe(config) -> dict:
    cfg = model_config(config)
    t0 = time.perf_counter()
    model = abstract_model(cfg)
    groups = {"base (frozen; = diffusers WanTransformer3DModel)": FROZEN, "LoRA": nnx.LoRAParam,
              "domain embeddings": DomainEmbedding}
    rows = {name: params.count(model, f) for name, f in groups.items()}
    total = params.count(model)
    return {"cfg": cfg, "rows": rows, "total": total, "seconds": time.perf_counter() - t0}


def _fmt_bytes(nbytes: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / 2**30:.3f} GiB" for k, v in sorted(nbytes.items())) or "-"


def main(argv) -> int:
    del argv
    config = CONFIG.value
    info = describe(config)
    cfg = info["cfg"]
    print(f"config {config.name}: Wan DiT, {cfg.num_layers} layers, dim {cfg.dim} ({cfg.num_heads} heads x "
          f"{cfg.head_dim}), ffn {cfg.ffn_dim}, in/out {cfg.in_channels}/{cfg.out_channels}, "
          f"{'I2V' if cfg.image_dim else 'T2V'}, layout {cfg.modality_layout}, LoRA r={cfg.lora_rank} "
          f"alpha={cfg.lora_alpha} (scale {cfg.lora_scale:g}), params {cfg.param_dtype}")
    for name, (n, nbytes) in info["rows"].items():
        print(f"  {name:<52} {n:>16,}   {_fmt_bytes(nbytes)}")
    n, nbytes = info["total"]
    trainable = sum(info["rows"][k][0] for k in ("LoRA", "domain embeddings"))
    print(f"  {'total':<52} {n:>16,}   {_fmt_bytes(nbytes)}")
    print(f"summary: {info['rows']['base (frozen; = diffusers WanTransformer3DModel)'][0]:,} base + "
          f"{trainable:,} trainable parameters ({info['seconds']:.1f}s, abstract: nothing allocated)")
    return 0
