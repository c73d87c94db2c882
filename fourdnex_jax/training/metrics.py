"""Training metrics: an analytic FLOP count of the DiT, MFU, and three writers (TensorBoard, JSON lines, console).

FLOPs (multiply-add = 2) per sample of L tokens, Lt text and Li image tokens, per layer:
  * linear: self-attention q,k,v,o 4 x 2LD^2; cross-attention q,o 2 x 2LD^2, text k,v 2 x 2 Lt D^2, image k,v
    2 x 2 Li D_kv D; FFN 2 x 2 L D F;
  * attention: self 4 L^2 D, cross 4 L (Lt + Li) D;
  * LoRA: 2 x tokens x r x (d_in + d_out) per adapted Linear;
  plus patch embedding and output projection. Train step "model FLOPs" (used for MFU) = forward + backward of a
  LoRA-only fine-tune: frozen Linears need only input gradients (1x), attention needs dQ/dK/dV (2x), LoRA both
  (2x): 2 x linear + 3 x attention + 3 x LoRA. Recomputation under remat is not counted (it is "hardware FLOPs";
  ``hardware_flops`` adds one more forward for ``remat_policy='full'``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping

#: Dense bf16 peak TFLOP/s per device by ``jax.Device.device_kind`` (vendor figures).
PEAK_TFLOPS = {"TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5": 459.0, "TPU v5p": 459.0,
               "TPU v6 lite": 918.0, "TPU v6e": 918.0, "NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H100": 989.0,
               "NVIDIA H200": 989.0, "NVIDIA A100-SXM4-80GB": 312.0}


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
    if override > 0:
        return float(override)
    if device_kind in PEAK_TFLOPS:
        return PEAK_TFLOPS[device_kind]
    for k, v in PEAK_TFLOPS.items():
        if device_kind.startswith(k):
            return v
    return None


def dit_flops(cfg, latent_shape: tuple[int, int, int, int], text_len: int, image_tokens: int = 257) -> dict[str, float]:
    """Forward FLOPs of one sample with a fused latent (T, H, W, C) (after the modality layout)."""
    t, h, w, _ = latent_shape
    pt, ph, pw = cfg.patch_size
    n_tok = (t // pt) * (h // ph) * (w // pw)
    d, f = cfg.dim, cfg.ffn_dim
    li = image_tokens if cfg.image_dim is not None else 0
    dkv = cfg.added_kv_proj_dim or 0
    lin = 2 * n_tok * d * d * 6 + 2 * text_len * d * d * 2 + 2 * li * dkv * d * 2 + 2 * n_tok * d * f * 2
    attn = 4 * n_tok * n_tok * d + 4 * n_tok * (text_len + li) * d
    lora = 0.0
    if cfg.lora_rank:
        from fourdnex_jax.models.transformer.block import lora_targeted
        r = cfg.lora_rank
        sizes = {"attn1.to_q": (n_tok, d, d), "attn1.to_k": (n_tok, d, d), "attn1.to_v": (n_tok, d, d),
                 "attn1.to_out.0": (n_tok, d, d), "attn2.to_q": (n_tok, d, d), "attn2.to_k": (text_len, d, d),
                 "attn2.to_v": (text_len, d, d), "attn2.to_out.0": (n_tok, d, d), "attn2.add_k_proj": (li, dkv, d),
                 "attn2.add_v_proj": (li, dkv, d), "ffn.net.0.proj": (n_tok, d, f), "ffn.net.2": (n_tok, f, d)}
        lora = sum(2 * n * r * (i + o) for name, (n, i, o) in sizes.items() if lora_targeted(cfg, name))
    edge = 2 * n_tok * cfg.in_channels * pt * ph * pw * d + 2 * n_tok * d * cfg.out_channels * pt * ph * pw
    layers = cfg.num_layers
    return {"tokens": float(n_tok), "linear": float(lin * layers + edge), "attention": float(attn * layers),
            "lora": float(lora * layers)}


def train_flops_per_sample(cfg, latent_shape, text_len: int, image_tokens: int = 257) -> float:
    f = dit_flops(cfg, latent_shape, text_len, image_tokens)
    return 2 * f["linear"] + 3 * f["attention"] + 3 * f["lora"]


def hardware_flops_per_sample(cfg, latent_shape, text_len: int, image_tokens: int = 257) -> float:
    f = dit_flops(cfg, latent_shape, text_len, image_tokens)
    extra = f["linear"] + f["attention"] + f["lora"] if cfg.remat_policy == "full" else 0.0
    return train_flops_per_sample(cfg, latent_shape, text_len, image_tokens) + extra


class MetricsWriter:
    """Writes scalars to ``workdir/metrics.jsonl`` and TensorBoard event files (``workdir/tb``, tensorboardX: no
    TensorFlow), and prints one console line per log step. Only process 0 writes."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.workdir = Path(workdir)
        self._tb = None
        self._jsonl = None
        if not enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.workdir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # optional: JSON lines are always written
                print("metrics: tensorboardX not installed, no TensorBoard event files", file=sys.stderr)
            else:
                self._tb = SummaryWriter(os.fspath(self.workdir / "tb"))

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if v is not None else None) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **clean}) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                if v is not None and math.isfinite(v):
                    self._tb.add_scalar(f"train/{k}", v, int(step))

    def console(self, step: int, total: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        s = scalars
        parts = [f"step {step}/{total}", f"loss {s['loss']:.5f}", f"lr {s['learning_rate']:.3g}",
                 f"|g| {s['grad_norm']:.3g}", f"{s['step_time']:.3f}s/step", f"{s['tokens_per_s']:.4g} tok/s",
                 f"{s['tflops_per_device']:.3g} TFLOP/s/dev"]
        if s.get("mfu") is not None:
            parts.append(f"MFU {100 * s['mfu']:.1f}%")
        if s.get("skipped"):
            parts.append(f"skipped {int(s['skipped'])}")
        print("train: " + ", ".join(parts), flush=True)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
