"""Reader of the synthetic generator's clips (``fourdnex synth-data``): one ``.npz`` per clip with ``images``
(T, H, W, 3) uint8, ``depths`` (T, H, W) float32 z-depth, ``intrinsics`` (T, 3, 3), ``cam_c2w`` (T, 4, 4) and
``dynamic_mask`` (T, H, W) bool; captions in ``captions.csv`` next to them (``number, caption``)."""

from __future__ import annotations

import numpy as np
from etils import epath

from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.data.readers.common import list_npz_clips, load_npz_keys

KEYS = ("images", "depths", "intrinsics", "cam_c2w", "dynamic_mask")


list_clips = list_npz_clips


def read_synthetic(path: str | epath.Path, *, captions: CaptionTable | None = None,
                   clip_id: str | None = None) -> RawClip:
    path = epath.Path(path)
    clip_id = clip_id or path.stem
    z = load_npz_keys(path, KEYS)
    return RawClip(clip_id=clip_id, rgb=np.asarray(z["images"]), c2w=np.asarray(z["cam_c2w"], np.float64),
                   K=np.asarray(z["intrinsics"], np.float64), depth=np.asarray(z["depths"], np.float32),
                   dynamic_mask=np.asarray(z["dynamic_mask"], bool),
                   caption=captions.get(clip_id) if captions else None, source="synthetic")
