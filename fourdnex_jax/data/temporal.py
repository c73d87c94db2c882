"""Which source frames make a training clip: the first ``num_frames``, ping-pong padded when the source is short.

4DNeX pads clips shorter than its target length (81) once with reversed frames, trains on the first 49 (13 latent
frames) and skips clips that still have fewer (``wan_dataset.py``: "Not enough frames"). Here the padding reflects
without repeating the end frames (0 1 2 3 2 1 0 1 ...), so the padded motion stays continuous; the data
preparation allows one reflection (:func:`min_source_frames`) and skips shorter clips. The returned indices are
stored with the clip (``frame_index``).
"""

from __future__ import annotations

import re

import numpy as np

DEFAULT_NUM_FRAMES = 49  # 13 latent frames with Wan's 4x temporal compression (1 + 4 * 12)

_RANGE = re.compile(r"_(\d+)-(\d+)$")


def pingpong_indices(num_source: int, num_frames: int, start: int = 0) -> np.ndarray:
    """(num_frames,) int32 indices into ``num_source`` frames, starting at ``start``, reflected at both ends."""
    if num_source <= 0:
        raise ValueError("a clip needs at least one frame")
    if not 0 <= start < num_source:
        raise ValueError(f"start {start} out of range for {num_source} frames")
    n = num_source - start
    if n == 1:
        return np.full(num_frames, start, np.int32)
    period = 2 * (n - 1)
    k = np.arange(num_frames) % period
    return (start + np.where(k < n, k, period - k)).astype(np.int32)


def min_source_frames(num_frames: int) -> int:
    """Fewest source frames that reach ``num_frames`` with one reflection (``2n - 1 >= num_frames``): 25 for 49.
    For 1 + 4k frames this keeps exactly the clips 4DNeX keeps (its reverse padding repeats the end frame:
    ``2n >= num_frames``)."""
    return max(1, (num_frames + 2) // 2)


def parse_clip_range(name: str) -> tuple[int, int] | None:
    """``'video_0120-0200'`` -> (120, 200): the source-frame range 4DNeX encodes in clip names; None if absent."""
    m = _RANGE.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None
