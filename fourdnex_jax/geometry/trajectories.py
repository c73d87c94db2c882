"""Novel-view camera trajectories (OpenCV c2w in the world = camera-0 frame), built around camera 0.

``pivot_depth`` is the distance along camera 0's optical axis of the point the camera keeps looking at (default:
the median valid depth of frame 0). ``orbit``: yaw of +-``amplitude_deg`` about a vertical axis through the pivot
(one sine period); ``dolly``: forward along the optical axis to ``dolly`` x pivot depth and back; ``spiral``: a
circle of radius ``radius`` x pivot depth in camera 0's image plane plus a forward/backward swing, looking at the
pivot. A JSON file gives either ``{"cam_to_world": [F][4][4]}`` (OpenCV, world = camera 0; optional ``"K"``) or a
nerfstudio ``transforms.json`` (``frames[].transform_matrix``, OpenGL axes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fourdnex_jax.geometry.se3 import look_at
from fourdnex_jax.utils.files import read_json

KINDS = ("orbit", "dolly", "spiral")
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def make_trajectory(kind: str, num_frames: int, pivot_depth: float, amplitude_deg: float = 15.0,
                    dolly: float = 0.3, radius: float = 0.08) -> np.ndarray:
    i = np.arange(num_frames) / max(num_frames - 1, 1)
    pivot = np.array([0.0, 0.0, pivot_depth])
    if kind == "orbit":
        a = np.radians(amplitude_deg) * np.sin(2 * np.pi * i)
        pos = pivot + pivot_depth * np.stack([-np.sin(a), np.zeros_like(a), -np.cos(a)], -1)
        return look_at(pos, np.broadcast_to(pivot, pos.shape), down=(0.0, 1.0, 0.0))
    if kind == "dolly":
        c2w = np.tile(np.eye(4), (num_frames, 1, 1))
        c2w[:, 2, 3] = dolly * pivot_depth * np.sin(np.pi * i)
        return c2w
    if kind == "spiral":
        th = 2 * np.pi * i
        pos = np.stack([radius * pivot_depth * np.cos(th) - radius * pivot_depth,
                        radius * pivot_depth * np.sin(th), 0.5 * dolly * pivot_depth * np.sin(np.pi * i)], -1)
        return look_at(pos, np.broadcast_to(pivot, pos.shape), down=(0.0, 1.0, 0.0))
    raise ValueError(f"trajectory must be one of {KINDS} or a .json file, got {kind!r}")


def load_trajectory(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(c2w (F, 4, 4) OpenCV, K (3, 3) or None) from a JSON file (see module docstring)."""
    obj = read_json(path, what="trajectory", fix="write it again (see the module docstring for the layout)")
    if "cam_to_world" in obj:
        return np.asarray(obj["cam_to_world"], np.float64), (np.asarray(obj["K"], np.float64) if "K" in obj else None)
    if "frames" in obj:
        c2w = np.stack([np.asarray(f["transform_matrix"], np.float64) @ GL_TO_CV for f in obj["frames"]])
        K = None
        if "fl_x" in obj:
            K = np.array([[obj["fl_x"], 0, obj["cx"]], [0, obj.get("fl_y", obj["fl_x"]), obj["cy"]], [0, 0, 1.0]])
        return c2w, K
    raise ValueError(f"{path}: expected 'cam_to_world' or nerfstudio 'frames'")
