"""Reader of MonST3R-style dynamic annotations (4DNeX-10M ``dynamic_1``, ``dynamic_2``). One folder per clip:

  * ``pred_traj.txt``: one line per frame, TUM ``id tx ty tz qw qx qy qz``, camera-to-world;
  * ``pred_intrinsics.txt``: one line per frame, the 3x3 K flattened row-major (9 numbers);
  * ``frame_%04d.npy``: z-depth (H, W), float16 in the released data;
  * ``dynamic_mask_{t}.png``: optional moving-object masks (non-zero = dynamic);
  * RGB: ``frame_%04d.png`` in the same folder (MonST3R writes them), or a source video passed in (frames selected
    by the ``..._{start}-{end}`` range in the folder name), kept at its own resolution (4DNeX's ``rgb_raw``).

Masks that exist for only some frames are dropped (``dynamic_mask=None``): 4DNeX does not train on them.
"""

from __future__ import annotations

import numpy as np
from etils import epath

from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.clip6d import RawClip
from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.data.readers.common import read, read_rgb_source, require
from fourdnex_jax.geometry import se3
from fourdnex_jax.media import io as media_io
from fourdnex_jax.media.resize import nearest_indices

TRAJ, INTRINSICS = "pred_traj.txt", "pred_intrinsics.txt"
DEPTH, FRAME, MASK = "frame_{:04d}.npy", "frame_{:04d}.png", "dynamic_mask_{}.png"


def _loadtxt(path: epath.Path, cols: int) -> np.ndarray:
    def parse():
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        arr = np.asarray(rows, dtype=np.float64)  # ragged or non-numeric lines raise ValueError
        if arr.ndim != 2 or arr.shape[1] != cols:
            raise ValueError(f"expected {cols} numbers per line, got shape {arr.shape}")
        return arr
    return read(parse, str(path))


def list_clips(root: str | epath.Path) -> list[epath.Path]:
    """Clip folders under ``root`` (any folder holding ``pred_traj.txt``, searched one and two levels deep)."""
    root = epath.Path(root)
    found = [p.parent for p in root.glob(f"*/{TRAJ}")] + [p.parent for p in root.glob(f"*/*/{TRAJ}")]
    if (root / TRAJ).exists():
        found.append(root)
    return sorted(set(found), key=str)


def read_monst3r(path: str | epath.Path, *, video: str | epath.Path | None = None,
                 captions: CaptionTable | None = None, clip_id: str | None = None) -> RawClip:
    """One MonST3R annotation folder -> :class:`RawClip` (metric units of the annotation)."""
    path = epath.Path(path)
    clip_id = clip_id or path.name
    traj = _loadtxt(require(path / TRAJ), 8)
    intr = _loadtxt(require(path / INTRINSICS), 9).reshape(-1, 3, 3)
    t = len(traj)
    if len(intr) != t:
        raise BadExample("frame_count_mismatch", f"{t} poses but {len(intr)} intrinsics")
    depth_files = [path / DEPTH.format(i) for i in range(t)]
    missing = [f.name for f in depth_files if not f.exists()]
    if missing:
        raise BadExample("missing_frames", f"depth {missing[:3]}{'...' if len(missing) > 3 else ''} missing")
    depths = [read(lambda f=f: media_io.load_npy(f), f"depth {f.name}") for f in depth_files]
    shapes = {d.shape for d in depths}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise BadExample("shape_mismatch", f"depth maps have shapes {sorted(shapes)}")
    depth = np.stack(depths).astype(np.float32)
    h, w = depth.shape[1:]
    rgb = read_rgb_source(video if video is not None else path, t, clip_id,
                          frame_pattern=None if video is not None else FRAME)
    mask_files = [path / MASK.format(i) for i in range(t)]
    present = [f.exists() for f in mask_files]
    mask = None
    if all(present):
        mask = np.stack([read(lambda f=f: media_io.read_mask(f), f"mask {f.name}") for f in mask_files])
        if mask.shape[1:] != (h, w):  # masks saved at another resolution: nearest onto the depth grid
            mask = mask[:, nearest_indices(mask.shape[1], h)][:, :, nearest_indices(mask.shape[2], w)]
    return RawClip(clip_id=clip_id, rgb=rgb, c2w=se3.tum_to_c2w(traj), K=intr, depth=depth,
                   dynamic_mask=mask, caption=captions.get(clip_id) if captions else None, source="monst3r")
