"""Reader of MegaSaM-style dynamic annotations (4DNeX-10M ``dynamic_3``): one ``.npz`` per clip with
``images`` (T, H, W, 3) uint8, ``depths`` (T, H, W) z-depth, ``intrinsic`` (3, 3) shared by all frames and
``cam_c2w`` (T, 4, 4). No dynamic mask."""

from __future__ import annotations

import numpy as np
from etils import epath

from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.data.readers.common import list_npz_clips, load_npz_keys, rgb_uint8

KEYS = ("images", "depths", "intrinsic", "cam_c2w")


list_clips = list_npz_clips


def read_megasam(path: str | epath.Path, *, captions: CaptionTable | None = None,
                 clip_id: str | None = None) -> RawClip:
    path = epath.Path(path)
    clip_id = clip_id or path.stem
    z = load_npz_keys(path, KEYS)
    K = np.asarray(z["intrinsic"], np.float64)
    if K.shape != (3, 3):
        raise BadExample("shape_mismatch", f"intrinsic must be (3, 3), got {K.shape}")
    depth = np.asarray(z["depths"], np.float32)
    if depth.ndim == 4 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    return RawClip(clip_id=clip_id, rgb=rgb_uint8(z["images"]), c2w=np.asarray(z["cam_c2w"], np.float64),
                   K=np.broadcast_to(K, (len(depth), 3, 3)).copy(), depth=depth,
                   caption=captions.get(clip_id) if captions else None, source="megasam")
