"""Raw annotations -> the ``clips6d`` TFDS dataset: discovery, conversion in staged shards, TFDS packing.

Layout of an output data dir::

    {data_dir}/_staging/clips6d/{config}/{split}/shard-*.npz|json, plan.json   (resumable work, see staging)
    {data_dir}/clips6d/{config}/1.0.0/...array_record..., dataset_info.json     (the dataset, built atomically)

A split is packed when all its shards are finished; packing includes every finished split of the config (adding a
split later rebuilds the dataset folder from the staged shards).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from etils import epath

from fourdnex_jax.data import staging, tfds_builders
from fourdnex_jax.data.annotations import ClipConfig, to_clip6d
from fourdnex_jax.data.captions import CaptionTable
from fourdnex_jax.data.readers import LAYOUTS
from fourdnex_jax.data.readers.dust3r import find_rgb_source
from fourdnex_jax.data.temporal import parse_clip_range


@dataclasses.dataclass(frozen=True)
class Item:
    layout: str
    path: str
    clip_id: str
    caption: str | None
    options: tuple = ()  # (key, value) pairs passed to the reader


def discover(layout: str, root: str | os.PathLike, captions: CaptionTable | None = None, *,
             video_root: str | None = None, rgb_root: str | None = None, limit: int | None = None) -> list[Item]:
    """Finds the annotations of ``layout`` under ``root`` and resolves their captions and RGB sources.

    Synthetic clips read ``root/captions.csv`` when no table is given. MonST3R folders take their video from
    ``video_root/{name}.mp4`` (name without the ``_{start}-{end}`` range) when given, else the folder's
    ``frame_XXXX.png``; DUSt3R npz files take RGB from the npz or from ``rgb_root`` (:func:`find_rgb_source`)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {sorted(LAYOUTS)}")
    list_clips, _ = LAYOUTS[layout]
    root = epath.Path(root)
    if captions is None and layout == "synthetic" and (root / "captions.csv").exists():
        captions = CaptionTable.from_csvs(root / "captions.csv")
    items = []
    for p in list_clips(root)[:limit]:
        clip_id = p.name if layout == "monst3r" else p.stem
        opts: dict[str, Any] = {}
        if layout == "monst3r" and video_root:
            base = clip_id.rsplit("_", 1)[0] if parse_clip_range(clip_id) else clip_id
            opts["video"] = os.fspath(epath.Path(video_root) / f"{base}.mp4")
        if layout == "dust3r" and rgb_root:
            src = find_rgb_source(rgb_root, clip_id)
            if src is not None:
                opts["rgb_source"] = os.fspath(src)
        items.append(Item(layout, os.fspath(p), clip_id, captions.get(clip_id) if captions else None,
                          tuple(sorted(opts.items()))))
    return items


def convert_item(item: Item, config: ClipConfig) -> dict[str, Any]:
    """Reads and converts one annotation into a ``clips6d`` record (raises BadExample on bad data)."""
    _, reader = LAYOUTS[item.layout]
    raw = reader(item.path, clip_id=item.clip_id, **dict(item.options))
    raw.caption = item.caption
    return to_clip6d(raw, config).to_example()


def item_fingerprint(item: Item) -> str:
    """What a staged shard is keyed on for ``item``: its id, caption and options, and the size and mtime of every
    file it reads (the annotation file or folder, the video / RGB source), so a clip fixed on disk after it was
    skipped (or changed) is prepared again instead of reusing the old shard."""
    parts = [item.layout, item.clip_id, item.caption or "", repr(item.options)]
    paths = [item.path] + [v for _, v in item.options if isinstance(v, str)]
    for root in paths:
        path = Path(root)
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
            except FileNotFoundError:
                parts.append(f"{f}:missing")
                continue
            if f.is_file():
                parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return "\n".join(parts)


def stage_dir_for(data_dir: str | os.PathLike, config: tfds_builders.Clips6DConfig, split: str) -> Path:
    return Path(data_dir) / "_staging" / tfds_builders.Clips6D.name / config.name / split


def prepare(items: list[Item], data_dir: str | os.PathLike, clip_config: ClipConfig, *, split: str = "train",
            shard_size: int = 64, num_workers: int = 0, progress: bool = True,
            build: bool = True) -> dict[str, Any]:
    """Stages ``items`` (resumable) and packs the TFDS dataset. Returns a summary dict (counts, skip reasons,
    dataset folder)."""
    cfg = tfds_builders.clips_config(clip_config.num_frames, clip_config.height, clip_config.width,
                                     clip_config.normalization, clip_config.intrinsics)
    sdir = stage_dir_for(data_dir, cfg, split)
    payload = [(it.clip_id, it) for it in items]
    stats, info = staging.stage(payload, functools.partial(convert_item, config=clip_config), sdir,
                                shard_size=shard_size, num_workers=num_workers, label=f"prepare {split}",
                                progress=progress, fingerprint=item_fingerprint)
    out = {"split": split, "config": cfg.name, **info, **stats.to_dict(), "summary": stats.summary()}
    if build:
        out["dataset_dir"] = os.fspath(build_dataset(data_dir, cfg, rebuild=info["written"] > 0))
    return out


def build_dataset(data_dir: str | os.PathLike, cfg: tfds_builders.Clips6DConfig, rebuild: bool = False) -> Path:
    """Packs every completely staged split of ``cfg`` into ``{data_dir}/clips6d/{cfg.name}/1.0.0`` (again when
    ``rebuild``: some shard was written since the last packing)."""
    root = Path(data_dir) / "_staging" / tfds_builders.Clips6D.name / cfg.name
    splits = {p.name: p for p in sorted(root.iterdir()) if (p / "plan.json").exists() and staging.is_complete(p)}
    if not splits:
        raise ValueError(f"no completely staged split under {root}")
    out = Path(data_dir) / tfds_builders.Clips6D.name / cfg.name / str(tfds_builders.Clips6D.VERSION)
    mode = None
    if (out / "dataset_info.json").exists():
        have = set(json.loads((out / "dataset_info.json").read_text()).get("splits", []) and
                   [s["name"] for s in json.loads((out / "dataset_info.json").read_text())["splits"]])
        if have == set(splits) and not rebuild:
            return out
        mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD
    tfds.disable_progress_bar()
    builder = tfds_builders.Clips6D(data_dir=os.fspath(data_dir),
                                    config=tfds_builders.config_arg(tfds_builders.Clips6D, cfg), stage_dirs=splits)
    tfds_builders.remove_stale_incomplete(builder)  # left by a packing killed with -9
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode) if mode else None)
    return out

