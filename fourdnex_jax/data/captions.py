"""Caption tables of 4DNeX-10M (``caption/{subset}_with_caption_upload.csv``, columns ``number, caption``).

``number`` identifies the source video; clip folders/files are named ``{number}`` or ``{number}_{start}-{end}``
(the frame range), so a lookup tries the exact id, then the id without its range suffix, then without a file
extension. Paths are local or ``gs://`` (read through ``etils.epath``).
"""

from __future__ import annotations

import csv
import io
import os

from etils import epath

from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.data.temporal import parse_clip_range
from fourdnex_jax.media.io import atomic_write


def write_caption_csv(path: str | os.PathLike, captions: dict[str, str]) -> None:
    """A 4DNeX caption table (the format :func:`read_caption_csv` reads): header ``number,caption``, one row per
    clip id; written atomically."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["number", "caption"])
    for k, v in captions.items():
        w.writerow([k, v])
    atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def read_caption_csv(path: str | os.PathLike) -> dict[str, str]:
    """``number, caption`` CSV -> {number: caption}. Header names are matched after stripping spaces; quoted
    multi-line captions are supported. Raises ValueError when the columns are missing."""
    text = epath.Path(path).read_text(encoding="utf-8")
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}: empty caption file") from None
    if "number" not in header or "caption" not in header:
        raise ValueError(f"{path}: expected columns 'number, caption', got {header}")
    ki, ci = header.index("number"), header.index("caption")
    table: dict[str, str] = {}
    for row in reader:
        if len(row) <= max(ki, ci):
            continue  # blank or short line
        key, cap = row[ki].strip(), row[ci].strip()
        if key:
            table[key] = cap
    return table


class CaptionTable:
    """Caption lookup by clip id over one or more CSVs (later files win on duplicate ids)."""

    def __init__(self, table: dict[str, str] | None = None):
        self.table = dict(table or {})

    @classmethod
    def from_csvs(cls, *paths: str | os.PathLike) -> CaptionTable:
        table: dict[str, str] = {}
        for p in paths:
            table.update(read_caption_csv(p))
        return cls(table)

    def __len__(self) -> int:
        return len(self.table)

    def get(self, clip_id: str) -> str | None:
        keys = [clip_id]
        stem = clip_id.rsplit(".", 1)[0] if "." in clip_id else clip_id
        keys.append(stem)
        if parse_clip_range(stem) is not None:
            keys.append(stem.rsplit("_", 1)[0])
        for k in keys:
            cap = self.table.get(k)
            if cap:
                return cap
        return None

    def lookup(self, clip_id: str) -> str:
        """The caption of ``clip_id``; raises ``BadExample('missing_caption')`` when absent or empty."""
        cap = self.get(clip_id)
        if cap is None:
            raise BadExample("missing_caption", f"no caption for {clip_id!r}")
        return cap
