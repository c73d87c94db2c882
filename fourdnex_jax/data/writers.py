"""Writers of the 4DNeX-10M annotation layouts (exactly the formats the readers take), fed from a rendered
synthetic clip. Used by tests, the benchmark and to produce layout samples; not part of training."""

from __future__ import annotations

import csv
import io
import os

import numpy as np
from etils import epath

from fourdnex_jax.data import geometry, media
from fourdnex_jax.data.readers import monst3r


def write_caption_csv(path: str | os.PathLike, captions: dict[str, str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "caption"])
    for k, v in captions.items():
        w.writerow([k, v])
    epath.Path(path).write_text(buf.getvalue())


def write_monst3r(folder: str | os.PathLike, r: dict[str, np.ndarray], *, frames: str = "png",
                  masks: bool = True) -> epath.Path:
    """MonST3R folder: pred_traj.txt (TUM c2w), pred_intrinsics.txt (9 per line), frame_XXXX.npy (float16 depth),
    dynamic_mask_t.png, RGB as frame_XXXX.png (``frames='png'``) or ``{folder}.mp4`` next to it (``'mp4'``)."""
    folder = epath.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    c2w = r["cam_c2w"]
    q = geometry.matrix_to_quaternion(c2w[:, :3, :3])
    lines = [" ".join(f"{v:.10g}" for v in [i, *c2w[i, :3, 3], *q[i]]) for i in range(len(c2w))]
    (folder / monst3r.TRAJ).write_text("\n".join(lines) + "\n")
    (folder / monst3r.INTRINSICS).write_text(
        "\n".join(" ".join(f"{v:.10g}" for v in k.reshape(-1)) for k in r["intrinsics"]) + "\n")
    for i, d in enumerate(r["depths"]):
        buf = io.BytesIO()
        np.save(buf, d.astype(np.float16))
        (folder / monst3r.DEPTH.format(i)).write_bytes(buf.getvalue())
        if masks:
            media.write_png(folder / monst3r.MASK.format(i), r["dynamic_mask"][i])
        if frames == "png":
            media.write_png(folder / monst3r.FRAME.format(i), r["images"][i])
    if frames == "mp4":
        media.write_video(folder.parent / f"{folder.name}.mp4", r["images"])
    return folder


def _npz(path, **arrays) -> epath.Path:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    epath.Path(path).write_bytes(buf.getvalue())
    return epath.Path(path)


def write_megasam(path: str | os.PathLike, r: dict[str, np.ndarray]) -> epath.Path:
    """MegaSaM npz: images, depths, intrinsic (3, 3, shared), cam_c2w."""
    return _npz(path, images=r["images"], depths=r["depths"], intrinsic=r["intrinsics"][0], cam_c2w=r["cam_c2w"])


def write_dust3r(path: str | os.PathLike, r: dict[str, np.ndarray], *, with_images: bool = False) -> epath.Path:
    """DUSt3R npz: pts3d (T, H, W, 3) world points, poses (T, 4, 4) c2w (+ images when asked)."""
    extra = {"images": r["images"]} if with_images else {}
    return _npz(path, pts3d=r["xyz_world"], poses=r["cam_c2w"], **extra)
