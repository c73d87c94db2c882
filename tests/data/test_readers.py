"""Readers of the 4DNeX-10M layouts on files written in exactly those formats (from a synthetic clip whose true
geometry is known), captions, and the bad-data corpus: every broken example is skipped and counted by reason."""

import numpy as np
import pytest

from fourdnex_jax.data import prepare, staging, synthetic, temporal
from fourdnex_jax.data.annotations import ClipConfig, to_clip6d
from fourdnex_jax.data.captions import CaptionTable, read_caption_csv
from fourdnex_jax.data.errors import BadExample
from fourdnex_jax.data.readers import read_dust3r, read_megasam, read_monst3r
from fourdnex_jax.geometry import normalize, se3
from fourdnex_jax.media import io as media_io
from fourdnex_jax.recipe import training_prompt
from fourdnex_jax.testing import scenes

pytest.importorskip("PIL")

T, H, W = 5, 32, 48
CFG = ClipConfig(num_frames=T, height=H, width=W, normalization="sequence")


@pytest.fixture(scope="module")
def r():
    return synthetic.render(synthetic.make_scene(7), T, H, W)


def _truth(r, idx=slice(None)):
    return se3.transform_points(np.linalg.inv(r["cam_c2w"][0]), r["xyz_world"][idx])


def _rel_err(clip, truth):
    ok = clip.valid
    return np.abs(clip.metric_xyz()[ok] - truth[ok]).max() / np.abs(truth).max()


def test_captions(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text('number, caption\nvid1,"A long, dense\nparagraph."\nvid2,\n')
    assert read_caption_csv(p) == {"vid1": "A long, dense\nparagraph.", "vid2": ""}
    table = CaptionTable.from_csvs(p)
    assert table.lookup("vid1_0010-0059") == "A long, dense\nparagraph."
    with pytest.raises(BadExample, match="missing_caption"):
        table.lookup("vid2")
    assert training_prompt("A cat.") == "A cat. POINTMAP_STYLE."


@pytest.mark.parametrize("frames", ["png", "mp4"])
def test_monst3r(tmp_path, r, frames):
    if frames == "mp4":
        pytest.importorskip("av")
    folder = scenes.write_monst3r(tmp_path / "clipA_0000-0004", r, frames=frames)
    video = tmp_path / "clipA_0000-0004.mp4" if frames == "mp4" else None
    raw = read_monst3r(folder, video=video, captions=CaptionTable({"clipA": "a caption"}))
    assert raw.clip_id == "clipA_0000-0004" and raw.caption == "a caption"
    np.testing.assert_array_equal(raw.dynamic_mask, r["dynamic_mask"])
    if frames == "png":
        np.testing.assert_array_equal(raw.rgb, r["images"])
    else:  # lossy codec
        assert np.abs(raw.rgb.astype(int) - r["images"]).mean() < 12
    clip = to_clip6d(raw, CFG)
    assert _rel_err(clip, _truth(r)) < 2e-3  # float16 depth on disk


def test_megasam(tmp_path, r):
    path = scenes.write_megasam(tmp_path / "m1.npz", r)
    clip = to_clip6d(read_megasam(path, captions=CaptionTable({"m1": "x"})), CFG)
    assert _rel_err(clip, _truth(r)) < 1e-5 and not clip.has_dynamic_mask


def test_dust3r_with_rgb_folder_and_estimated_focal(tmp_path, r):
    path = scenes.write_dust3r(tmp_path / "s1.npz", r)
    rgb_dir = tmp_path / "rgb" / "s1" / "images_4"
    rgb_dir.mkdir(parents=True)
    for i, im in enumerate(r["images"]):
        media_io.write_png(rgb_dir / f"{i:05d}.png", im)
    items = prepare.discover("dust3r", tmp_path, CaptionTable({"s1": "static"}), rgb_root=str(tmp_path / "rgb"))
    assert [it.clip_id for it in items] == ["s1"]
    raw = read_dust3r(path, rgb_source=dict(items[0].options)["rgb_source"], captions=CaptionTable({"s1": "s"}))
    clip = to_clip6d(raw, CFG)
    assert _rel_err(clip, _truth(r)) < 1e-5
    np.testing.assert_array_equal(clip.rgb, r["images"])
    fx = r["intrinsics"][0, 0, 0]
    np.testing.assert_allclose(clip.intrinsics[:, 0, 0], fx, rtol=2e-3)  # least-squares focal, principal pt W/2


def _bad_corpus(root, r):
    """7 good MegaSaM clips plus one of each kind of damage (MegaSaM + MonST3R layouts)."""
    mega, mon = root / "megasam", root / "monst3r"
    mega.mkdir()
    caps = {}
    for i in range(7):
        scenes.write_megasam(mega / f"good{i}.npz", r)
        caps[f"good{i}"] = "fine"
    full = (mega / "good0.npz").read_bytes()
    (mega / "truncated.npz").write_bytes(full[: len(full) // 2])
    caps["truncated"] = "x"
    bad = dict(r, depths=np.full_like(r["depths"], np.nan))
    scenes.write_megasam(mega / "nandepth.npz", bad)
    caps["nandepth"] = "x"
    bad = dict(r, depths=np.where(np.arange(W) < W * 0.7, np.inf, r["depths"]))
    scenes.write_megasam(mega / "infdepth.npz", bad)
    caps["infdepth"] = "x"
    bad = dict(r, depths=r["depths"][:, None])  # (T, 1, H, W): not a depth video (another H x W would be valid)
    scenes.write_megasam(mega / "wrongshape.npz", bad)
    caps["wrongshape"] = "x"
    scenes.write_megasam(mega / "nocaption.npz", r)
    # MonST3R: a missing depth frame, a corrupt mask png, a garbled trajectory, and a good one
    mon.mkdir()
    for name in ("mgood", "mmissing", "mcorrupt", "mtraj"):
        scenes.write_monst3r(mon / name, r)
        caps[name] = "fine"
    (mon / "mmissing" / "frame_0003.npy").unlink()
    (mon / "mcorrupt" / "dynamic_mask_2.png").write_bytes(b"\x89PNG\r\n garbage")
    (mon / "mtraj" / "pred_traj.txt").write_text("0 1 2 three\n")
    return CaptionTable(caps)


def test_bad_data_corpus_is_counted(tmp_path, r, caplog):
    caps = _bad_corpus(tmp_path, r)
    items = prepare.discover("megasam", tmp_path / "megasam", caps) + prepare.discover("monst3r",
                                                                                        tmp_path / "monst3r", caps)
    assert len(items) == 16
    import functools
    stats, info = staging.stage([(it.clip_id, it) for it in items],
                                functools.partial(prepare.convert_item, config=CFG), tmp_path / "stage",
                                shard_size=5, progress=False)
    assert stats.kept == 8, stats.summary()
    assert dict(stats.skipped) == {"corrupt_file": 3, "invalid_depth": 2, "shape_mismatch": 1,
                                   "missing_caption": 1, "missing_frames": 1}, stats.summary()
    assert set(stats.ids["corrupt_file"]) == {"truncated", "mcorrupt", "mtraj"}
    assert "8/16 examples kept; skipped 8" in stats.summary()
    assert sum(1 for rec in caplog.records if "skipping" in rec.getMessage()) == 8
    assert len(list(staging.iter_staged(tmp_path / "stage"))) == 8


def test_rgb_is_resized_from_the_raw_frames_not_the_depth_grid(tmp_path, r):
    from fourdnex_jax.media import resize

    big = synthetic.render(synthetic.make_scene(7), T, 2 * H, 2 * W)["images"]  # the video at twice the grid size
    path = scenes.write_megasam(tmp_path / "hi.npz", dict(r, images=big))
    raw = read_megasam(path, captions=CaptionTable({"hi": "x"}))
    assert raw.rgb.shape == (T, 2 * H, 2 * W, 3) and raw.depth.shape == (T, H, W)
    clip = to_clip6d(raw, CFG)
    np.testing.assert_array_equal(clip.rgb, resize.resize_rgb(big, resize.cover_crop_plan(2 * H, 2 * W, H, W)))
    assert _rel_err(clip, _truth(r)) < 1e-5  # the geometry stays on its own grid


def test_normalisation_statistics_cover_every_loaded_frame(tmp_path):
    long = synthetic.render(synthetic.make_scene(3), 9, H, W)  # 9 loaded frames, 5 trained
    raw = read_megasam(scenes.write_megasam(tmp_path / "long.npz", long), captions=CaptionTable({"long": "x"}))
    truth = se3.transform_points(np.linalg.inv(long["cam_c2w"][0]), long["xyz_world"])
    for source, window in (("megasam", 9), ("monst3r", 7)):  # MegaSaM: all frames; others: normalization_frames
        raw.source = source
        for method in ("sequence", "reference"):
            cfg = ClipConfig(num_frames=T, height=H, width=W, normalization=method, normalization_frames=7)
            clip = to_clip6d(raw, cfg)
            valid = np.isfinite(long["depths"][:window]) & (long["depths"][:window] > 0)
            _, centers, scale = normalize.normalize(truth[:window], valid, method)
            assert clip.xyz.shape[0] == T and clip.frame_index.tolist() == list(range(T))
            np.testing.assert_allclose(clip.scale, scale, rtol=1e-4)
            np.testing.assert_allclose(clip.centers, centers[:T], atol=1e-4 * scale)
    with pytest.raises(ValueError, match="normalization_frames"):
        ClipConfig(num_frames=49, normalization_frames=48)


def test_too_short_clips_are_skipped_not_padded(tmp_path, r):
    raw = read_megasam(scenes.write_megasam(tmp_path / "short.npz", r), captions=CaptionTable({"short": "x"}))
    assert temporal.min_source_frames(49) == 25 and temporal.min_source_frames(9) == 5
    clip = to_clip6d(raw, ClipConfig(num_frames=9, height=H, width=W))  # 5 frames reach 9 with one reflection
    assert clip.frame_index.tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0]
    with pytest.raises(BadExample, match="too_few_frames"):
        to_clip6d(raw, ClipConfig(num_frames=13, height=H, width=W))  # would need a second reflection


def test_fixed_clip_is_prepared_again(tmp_path, r):
    """A clip skipped as damaged and then fixed on disk is staged again (shards are keyed on their inputs' size and
    mtime, prepare.item_fingerprint), not served from the old shard."""
    import functools
    import os

    mega = tmp_path / "megasam"
    mega.mkdir()
    caps = CaptionTable({"good": "fine", "broken": "fine"})
    scenes.write_megasam(mega / "good.npz", r)
    scenes.write_megasam(mega / "broken.npz", dict(r, depths=np.full_like(r["depths"], np.nan)))

    def stage():
        items = prepare.discover("megasam", mega, caps)
        return staging.stage([(it.clip_id, it) for it in items], functools.partial(prepare.convert_item, config=CFG),
                             tmp_path / "stage", shard_size=1, progress=False, fingerprint=prepare.item_fingerprint)

    stats, info = stage()
    assert stats.kept == 1 and info["written"] == 2
    stats, info = stage()  # nothing changed: both shards reused
    assert stats.kept == 1 and info["written"] == 0
    scenes.write_megasam(mega / "broken.npz", r)  # fixed
    os.utime(mega / "broken.npz", ns=(1, 10**18))  # a distinct mtime even on a coarse clock
    stats, info = stage()
    assert stats.kept == 2 and info["written"] == 1 and info["done_before"] == 1
    assert len(list(staging.iter_staged(tmp_path / "stage"))) == 2
    scenes.write_megasam(mega / "good.npz", dict(r, depths=np.full_like(r["depths"], np.nan)))  # broken now
    os.utime(mega / "good.npz", ns=(1, 2 * 10**18))
    stats, _ = stage()
    assert stats.kept == 1 and len(list(staging.iter_staged(tmp_path / "stage"))) == 1  # its old examples gone


def test_packing_removes_a_killed_packings_incomplete_folder(tmp_path, r):
    """TFDS packs into ``incomplete.XXXXXX_<version>`` and renames it; a packing killed with -9 leaves that folder
    behind, and the next packing removes it."""
    from fourdnex_jax.data import tfds_builders

    mega = tmp_path / "megasam"
    mega.mkdir()
    scenes.write_megasam(mega / "good.npz", r)
    items = prepare.discover("megasam", mega, CaptionTable({"good": "fine"}))
    cfg = tfds_builders.clips_config(CFG.num_frames, CFG.height, CFG.width, CFG.normalization, CFG.intrinsics)
    config_dir = tmp_path / "tfds" / tfds_builders.Clips6D.name / cfg.name
    stale = config_dir / f"incomplete.ABC123_{tfds_builders.Clips6D.VERSION}"
    stale.mkdir(parents=True)
    out = prepare.prepare(items, tmp_path / "tfds", CFG, progress=False)
    assert not stale.exists() and sorted(p.name for p in config_dir.iterdir()) == [str(tfds_builders.Clips6D.VERSION)]
    assert out["kept"] == 1
