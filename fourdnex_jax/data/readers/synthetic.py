"""Reader of the synthetic generator's clips (``tools/synth_data.py``): one ``.npz`` per clip with ``images``
(T, H, W, 3) uint8, ``depths`` (T, H, W) float32 z-depth, ``intrinsics`` (T, 3, 3), ``cam_c2w`` (T, 4, 4) and
``dynamic_mask`` (T, H, W) bool; captions in ``captions.csv`` next to them (``number, caption``)."""

from __future__ import annotations

import numpy as np
from etils import epath

from fourdnex_jax.data import media
from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.data.readers.common import read, require

KEYS = ("images", "depths", "intrinsics", "cam_c2w", "dynamic_mask")


def list_clips(root: str | epath.Path) -> list[epath.Path]:
    return sorted(epath.Path(root).glob("*.npz"), key=str)


def read_synthetic(path: str | epath.Path, *, captions: CaptionTable | None = None,
                   clip_id: str | None = None) -> RawClip:
    path = epath.Path(path)
    clip_id = clip_id or path.stem
    z = read(lambda: media.load_npz(require(path)), str(path))
    missing = [k for k in KEYS if k not in z]
    if missing:
        raise BadExample("corrupt_file", f"{path.name} lacks {missing}")
    return RawClip(clip_id=clip_id, rgb=np.asarray(z["images"]), c2w=np.asarray(z["cam_c2w"], np.float64),
                   K=np.asarray(z["intrinsics"], np.float64), depth=np.asarray(z["depths"], np.float32),
                   dynamic_mask=np.asarray(z["dynamic_mask"], bool),
                   caption=captions.get(clip_id) if captions else None, source="synthetic")
