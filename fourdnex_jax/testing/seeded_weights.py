"""Seeded weights from names and shapes alone (NumPy only, no torch, no JAX).

A fixture recorded under another library version (``tests/fixtures/official_0_34``) stores each model's parameter
names and shapes instead of its weights; the recording script and the test both rebuild the same values with
:func:`seeded_state_dict`, so the fixture stays a few KB per model. Values depend only on ``seed``, the name and the
shape (not on the order or on the other tensors).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np


def seeded_array(name: str, shape: Sequence[int], seed: int) -> np.ndarray:
    """float32 ``shape`` for parameter ``name``: matrices / kernels N(0, 1 / fan_in) (fan_in = the product of all
    axes but the first), biases N(0, 0.1^2), other vectors (norm scales) 1 + N(0, 0.1^2)."""
    shape = tuple(int(s) for s in shape)
    z = np.random.default_rng([seed, zlib.crc32(name.encode())]).standard_normal(shape)
    if len(shape) >= 2:
        z = z / math.sqrt(max(1, math.prod(shape[1:])))
    elif name.endswith("bias"):
        z = 0.1 * z
    else:
        z = 1.0 + 0.1 * z
    return z.astype(np.float32)


def seeded_state_dict(shapes: Mapping[str, Sequence[int]], seed: int) -> dict[str, np.ndarray]:
    """``{name: seeded_array(name, shape, seed)}`` for every entry of ``shapes``."""
    return {name: seeded_array(name, shape, seed) for name, shape in shapes.items()}
