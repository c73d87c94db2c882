"""Synthetic clips -> `fourdnex prepare-data` (resumable, atomic) -> TFDS array_record -> grain: deterministic
shuffling, per-host sharding, batching, and an iterator whose JSON state (what training checkpoints store) resumes on
the exact next batch."""

import json
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.data import loader, tfds_builders
from fourdnex_jax.data.clip6d import Clip6D
from tests.helpers import run_cli

pytestmark = pytest.mark.integration  # the dataset is built by `fourdnex synth-data` + `prepare-data` subprocesses

ROOT = Path(__file__).resolve().parents[2]
T, H, W, N = 5, 32, 48, 10


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    dims = ["--frames", str(T), "--height", str(H), "--width", str(W)]
    s = run_cli("synth-data", "--out", str(tmp / "raw"), "--num-clips", str(N), "--workers", "0", *dims, check=True)
    assert f"{N} clips ({N} new" in s.stdout and "new clips/min" in s.stdout
    again = run_cli("synth-data", "--out", str(tmp / "raw"), "--num-clips", str(N), "--workers", "0", *dims, check=True)
    assert f"{N} clips (0 new, {N} already there)" in again.stdout and "clips/min" not in again.stdout  # no rate
    run_cli("synth-data", "--out", str(tmp / "raw_heldout"), "--num-clips", "2", "--split", "heldout",
          "--workers", "0", *dims, check=True)
    p = run_cli("prepare-data", "--layout", "synthetic", "--input", str(tmp / "raw"), "--out",
              str(tmp / "tfds"), "--shard-size", "4", *dims, check=True)
    assert "10/10 examples kept, none skipped; shards 3 written, 0 reused" in p.stdout
    assert "Downloading and preparing" not in p.stdout + p.stderr and "downloaded and prepared" not in p.stdout
    p = run_cli("prepare-data", "--layout", "synthetic", "--input", str(tmp / "raw_heldout"), "--out",
              str(tmp / "tfds"), "--split", "heldout", "--shard-size", "4", *dims, check=True)
    folder = p.stdout.strip().split("-> ")[-1].split(" [")[0]
    return tmp, Path(folder)


def test_prepared_dataset(dataset):
    tmp, folder = dataset
    assert folder.name == "1.0.0" and folder.parent.name == f"f{T}_h{H}_w{W}_reference"
    info = json.loads((folder / "dataset_info.json").read_text())
    assert {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]} == {"train": N, "heldout": 2}
    src = tfds_builders.data_source(folder, "train")
    clip = Clip6D.from_example(src[0])
    assert clip.rgb.shape == (T, H, W, 3) and clip.xyz.dtype == np.float32 and clip.normalization == "reference"
    assert clip.caption.startswith("A synthetic 3D scene") and np.abs(clip.xyz).max() <= 1.0
    assert not any(p.name.startswith("incomplete") for p in folder.parent.iterdir())


def test_prepare_is_resumable(dataset, tmp_path):
    tmp, _ = dataset
    dims = ["--frames", str(T), "--height", str(H), "--width", str(W)]
    args = ["prepare-data", "--layout", "synthetic", "--input", str(tmp / "raw"), "--out",
            str(tmp_path), "--shard-size", "4", "--limit", "8", *dims]
    run_cli(*args, check=True)
    stage = tmp_path / "_staging" / "clips6d" / f"f{T}_h{H}_w{W}_reference" / "train"
    (stage / "shard-00001-of-00002.json").unlink()  # as if the run died before finishing shard 1
    (stage / "shard-00001-of-00002.npz").write_bytes(b"half-written")  # an orphan is overwritten, never read
    before = (stage / "shard-00000-of-00002.npz").stat().st_mtime_ns
    out = run_cli(*args, check=True)
    assert "shards 1 written, 1 reused" in out.stdout
    assert (stage / "shard-00000-of-00002.npz").stat().st_mtime_ns == before
    assert not list(stage.glob("*.tmp"))


def _ids(batch):
    return batch["clip_id"].tolist()


def test_shuffle_shard_batch(dataset):
    _, folder = dataset
    src = tfds_builders.data_source(folder, "train")
    make = lambda seed, bs=2, **kw: loader.make_dataset(src, batch_size=bs, seed=seed, num_epochs=1, **kw)
    a = [_ids(b) for b in make(0, shard_index=0, shard_count=1)]
    assert a == [_ids(b) for b in make(0, shard_index=0, shard_count=1)]
    assert a != [_ids(b) for b in make(1, shard_index=0, shard_count=1)]
    assert sorted(sum(a, [])) == sorted(f"synth_train_{i:06d}" for i in range(N))
    h0 = sum((_ids(b) for b in make(0, bs=1, shard_index=0, shard_count=2)), [])
    h1 = sum((_ids(b) for b in make(0, bs=1, shard_index=1, shard_count=2)), [])
    assert len(h0) == len(h1) == N // 2 and not set(h0) & set(h1)
    b = make(0, shard_index=0, shard_count=1)[0]
    assert b["rgb"].shape == (2, T, H, W, 3) and b["rgb"].dtype == np.float32 and -1 <= b["rgb"].min()
    ep = loader.make_dataset(src, batch_size=5, seed=0, num_epochs=2, shard_index=0, shard_count=1)
    e1, e2 = [_ids(ep[i]) + _ids(ep[i + 1]) for i in (0, 2)]
    assert sorted(e1) == sorted(e2) and e1 != e2  # every epoch is a new permutation


def test_iterator_resumes_exactly_from_its_json_state(dataset):
    _, folder = dataset
    src = tfds_builders.data_source(folder, "train")
    make = lambda: loader.make_iterator(loader.make_dataset(src, batch_size=3, seed=7, shard_index=0,
                                                                shard_count=1), num_threads=2)
    it = make()
    for _ in range(4):  # crosses an epoch boundary (10 clips, batches of 3)
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as training/checkpoint.py stores it (orbax JsonSave)
    expected = [next(it) for _ in range(5)]
    it2 = make()
    it2.set_state(state)
    for want in expected:
        got = next(it2)
        assert _ids(got) == _ids(want)
        np.testing.assert_array_equal(got["xyz"], want["xyz"])
