"""Reader of DUSt3R-style static annotations (4DNeX-10M ``static_1``/``static_2``): one ``.npz`` per clip with
``pts3d`` (T, H, W, 3) world points and ``poses`` (T, 4, 4) camera-to-world. RGB comes from the npz's ``images``
when present, else from the raw source (DL3DV ``images_4/`` folder or a RealEstate10K ``.mp4``), at its own
resolution (4DNeX's ``rgb_raw``). No intrinsics are stored: :func:`fourdnex_jax.data.annotations.to_clip6d`
estimates them."""

from __future__ import annotations

import numpy as np
from etils import epath

from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.data.readers.common import list_npz_clips, load_npz_keys, read_rgb_source, rgb_uint8

list_clips = list_npz_clips


def find_rgb_source(rgb_root: str | epath.Path, clip_id: str) -> epath.Path | None:
    """``{root}/{id}.mp4``, ``{root}/{id}/images_4``, ``{root}/{id}`` (first that exists), also without the
    ``_{start}-{end}`` range suffix."""
    root = epath.Path(rgb_root)
    names = [clip_id]
    if "_" in clip_id:
        names.append(clip_id.rsplit("_", 1)[0])
    for name in names:
        for cand in (root / f"{name}.mp4", root / name / "images_4", root / name):
            if cand.exists():
                return cand
    return None


def read_dust3r(path: str | epath.Path, *, rgb_source: str | epath.Path | None = None,
                captions: CaptionTable | None = None, clip_id: str | None = None) -> RawClip:
    path = epath.Path(path)
    clip_id = clip_id or path.stem
    z = load_npz_keys(path, ("pts3d", "poses"))
    pts = np.asarray(z["pts3d"], np.float32)
    if pts.ndim != 4 or pts.shape[-1] != 3:
        raise BadExample("shape_mismatch", f"pts3d must be (T, H, W, 3), got {pts.shape}")
    t = pts.shape[0]
    if "images" in z:
        rgb = rgb_uint8(z["images"])
    elif rgb_source is not None:
        rgb = read_rgb_source(rgb_source, t, clip_id)
    else:
        raise BadExample("missing_frames", f"{path.name} has no images and no RGB source was found")
    return RawClip(clip_id=clip_id, rgb=rgb, c2w=np.asarray(z["poses"], np.float64),
                   points_world=pts, caption=captions.get(clip_id) if captions else None, source="dust3r")
