"""Device facts: dense bf16 peak TFLOP/s by ``jax.Device.device_kind`` (the denominator of every MFU figure)."""

from __future__ import annotations

#: Dense (no sparsity) bf16 peak TFLOP/s per device, vendor figures, by ``device_kind`` or its prefix.
PEAK_TFLOPS = {"TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5": 459.0, "TPU v5p": 459.0,
               "TPU v6 lite": 918.0, "TPU v6e": 918.0, "NVIDIA H100": 989.4, "NVIDIA H200": 989.4,
               "NVIDIA A100-SXM4-80GB": 312.0}


def peak_tflops(device_kind: str, override: float = 0.0) -> float | None:
    """``override`` if > 0, else the :data:`PEAK_TFLOPS` entry equal to ``device_kind`` or else the first one that
    is a prefix of it (``NVIDIA H100 80GB HBM3`` -> ``NVIDIA H100``); None where unknown (e.g. CPU)."""
    if override > 0:
        return float(override)
    if device_kind in PEAK_TFLOPS:
        return PEAK_TFLOPS[device_kind]
    for k, v in PEAK_TFLOPS.items():
        if device_kind.startswith(k):
            return v
    return None
