"""The two clip contracts of the data layer.

:class:`RawClip` is what a reader returns from one annotation (any layout, source resolution, metric units of the
annotation, world frame of the annotation):
  * ``rgb`` (T, Hr, Wr, 3) uint8, the raw video frames at their own resolution (4DNeX's ``rgb_raw``; it may differ
    from the geometry grid); ``c2w`` (T, 4, 4) camera-to-world (OpenCV cameras);
  * geometry on the annotation grid (H, W) either as ``depth`` (T, H, W) z-depth + ``K`` (T, 3, 3) (MonST3R,
    MegaSaM, synthetic), or as ``points_world`` (T, H, W, 3) (DUSt3R; ``K`` then optional, estimated if absent);
  * ``dynamic_mask`` (T, H, W) bool or None (on the geometry grid); ``caption`` str or None; ``clip_id``, ``source``
  (layout name).

:class:`Clip6D` is one training clip after :func:`fourdnex_jax.data.annotations.to_clip6d` (what the raw TFDS dataset
stores, one record per clip), all arrays at the training resolution (T = ``num_frames``):

==================  ====================  =========================================================================
field               shape / dtype         meaning
==================  ====================  =========================================================================
rgb                 (T, H, W, 3) uint8    raw frames (antialiased bilinear cover resize, centre crop)
xyz                 (T, H, W, 3) float32  normalised pointmap in [-1, 1], first-camera frame (float16 on disk)
valid               (T, H, W) bool        depth was present/finite/positive (xyz = 0 elsewhere)
dynamic_mask        (T, H, W) bool        moving pixels (all False when ``has_dynamic_mask`` is False)
intrinsics          (T, 3, 3) float32     K used for back-projection, on the output pixel grid
c2w                 (T, 4, 4) float32     camera-to-first-camera poses (frame 0 = identity), annotation units
centers, scale      (T, 3), () float32    ``metric = xyz * scale + centers[t]`` (see :mod:`normalize`)
frame_index         (T,) int32            source frame of each frame (ping-pong padding visible here)
num_source_frames   int                   frames available in the annotation
normalization       str                   'reference' | 'sequence'
intrinsics_mode     str                   'full' | 'reference' (fx only, principal point (W//2, H//2))
caption, clip_id,   str
source
==================  ====================  =========================================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.geometry.normalize import denormalize


@dataclasses.dataclass
class RawClip:
    clip_id: str
    rgb: np.ndarray
    c2w: np.ndarray
    K: np.ndarray | None = None
    depth: np.ndarray | None = None
    points_world: np.ndarray | None = None
    dynamic_mask: np.ndarray | None = None
    caption: str | None = None
    source: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0])

    def validate(self) -> None:
        """Raises :class:`BadExample` (``shape_mismatch`` / ``frame_count_mismatch`` / ``bad_pose``)."""
        rgb = self.rgb
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise BadExample("shape_mismatch", f"rgb must be (T, H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        t = rgb.shape[0]
        if (self.depth is None) == (self.points_world is None):
            raise BadExample("shape_mismatch", "exactly one of depth / points_world must be given")
        geo = self.depth if self.depth is not None else self.points_world
        if geo.ndim != (3 if self.depth is not None else 4) or (self.depth is None and geo.shape[-1] != 3):
            raise BadExample("shape_mismatch", f"geometry must be (T, H, W) depth or (T, H, W, 3) points, "
                                               f"got {geo.shape}")
        h, w = geo.shape[1:3]
        arrays = {"geometry": geo, "c2w": self.c2w}
        if self.K is not None:
            arrays["K"] = self.K
        if self.dynamic_mask is not None:
            arrays["dynamic_mask"] = self.dynamic_mask
            if self.dynamic_mask.shape[1:] != (h, w):
                raise BadExample("shape_mismatch", f"dynamic mask {self.dynamic_mask.shape} vs geometry {geo.shape}")
        for name, arr in arrays.items():
            if arr.shape[0] != t:
                raise BadExample("frame_count_mismatch", f"{name} has {arr.shape[0]} frames, rgb has {t}")
        if self.c2w.shape[1:] != (4, 4):
            raise BadExample("shape_mismatch", f"c2w must be (T, 4, 4), got {self.c2w.shape}")
        if self.K is not None and self.K.shape[1:] != (3, 3):
            raise BadExample("shape_mismatch", f"K must be (T, 3, 3), got {self.K.shape}")
        if not np.isfinite(self.c2w).all() or abs(np.linalg.det(self.c2w[0])) < 1e-12:
            raise BadExample("bad_pose", "non-finite or singular camera-to-world matrix")
        if self.K is not None and (not np.isfinite(self.K).all() or (self.K[:, 0, 0] <= 0).any()
                                   or (self.K[:, 1, 1] <= 0).any()):
            raise BadExample("bad_pose", "non-finite or non-positive focal length")


@dataclasses.dataclass
class Clip6D:
    rgb: np.ndarray
    xyz: np.ndarray
    valid: np.ndarray
    dynamic_mask: np.ndarray
    has_dynamic_mask: bool
    intrinsics: np.ndarray
    c2w: np.ndarray
    centers: np.ndarray
    scale: float
    frame_index: np.ndarray
    num_source_frames: int
    normalization: str
    intrinsics_mode: str
    caption: str
    clip_id: str
    source: str

    def metric_xyz(self) -> np.ndarray:
        """(T, H, W, 3) float64 points in the first-camera frame, annotation units (invalid pixels = centers)."""
        return denormalize(self.xyz, self.centers, self.scale)

    # -- storage ---------------------------------------------------------------------------------------------------
    def to_example(self) -> dict[str, Any]:
        """The record stored by :class:`fourdnex_jax.data.tfds_builders.Clips6D` (dtypes of the features)."""
        return {
            "rgb": np.asarray(self.rgb, np.uint8),
            "xyz": np.asarray(self.xyz, np.float16),
            "valid": np.asarray(self.valid, bool),
            "dynamic_mask": np.asarray(self.dynamic_mask, bool),
            "has_dynamic_mask": bool(self.has_dynamic_mask),
            "intrinsics": np.asarray(self.intrinsics, np.float32),
            "c2w": np.asarray(self.c2w, np.float32),
            "centers": np.asarray(self.centers, np.float32),
            "scale": np.float32(self.scale),
            "frame_index": np.asarray(self.frame_index, np.int32),
            "num_source_frames": np.int32(self.num_source_frames),
            "normalization": self.normalization,
            "intrinsics_mode": self.intrinsics_mode,
            "caption": self.caption,
            "clip_id": self.clip_id,
            "source": self.source,
        }

    @classmethod
    def from_example(cls, ex: dict[str, Any]) -> Clip6D:
        """Inverse of :meth:`to_example` for a decoded record (text fields may arrive as bytes)."""
        def text(v):
            return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)

        return cls(rgb=np.asarray(ex["rgb"]), xyz=np.asarray(ex["xyz"], np.float32), valid=np.asarray(ex["valid"]),
                   dynamic_mask=np.asarray(ex["dynamic_mask"]), has_dynamic_mask=bool(ex["has_dynamic_mask"]),
                   intrinsics=np.asarray(ex["intrinsics"]), c2w=np.asarray(ex["c2w"]),
                   centers=np.asarray(ex["centers"]), scale=float(ex["scale"]),
                   frame_index=np.asarray(ex["frame_index"]), num_source_frames=int(ex["num_source_frames"]),
                   normalization=text(ex["normalization"]), intrinsics_mode=text(ex["intrinsics_mode"]),
                   caption=text(ex["caption"]), clip_id=text(ex["clip_id"]), source=text(ex["source"]))
