"""What a new user meets first: --version, help into a closed pipe, a near-miss flag, --config-help without the
required flags, usage errors that suggest only what exists, the names of the shipped files, and the run -> bundle
towers check (fourdnex_jax/pipelines/runs.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fourdnex_jax.utils import resources

ROOT = Path(__file__).resolve().parents[2]


def _fourdnex(*args, stdout=subprocess.PIPE):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.run([sys.executable, "-m", "fourdnex_jax", *map(str, args)], cwd=ROOT, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=300, env=dict(env, JAX_PLATFORMS="cpu"))


def test_version():
    from fourdnex_jax import __version__

    res = _fourdnex("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"fourdnex_jax {__version__}", res


def test_help_into_a_closed_pipe_is_quiet():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte (as `fourdnex generate --help | head -0`)
    try:
        res = _fourdnex("generate", "--help", stdout=write)
    finally:
        os.close(write)
    assert res.returncode == 141 and res.stderr == "", res.stderr


def test_near_miss_flag_names_the_right_one_and_config_help_only_where_it_exists():
    res = _fourdnex("generate", "--image", "x.png", "--output", "o")
    assert res.returncode == 2 and "did you mean --out?" in res.stderr and "--config-help" in res.stderr
    res = _fourdnex("register", "--bogus", "1")
    assert res.returncode == 2 and "--config-help" not in res.stderr, res.stderr


def test_config_help_needs_no_other_flag():
    res = _fourdnex("train", "--config-help")
    assert res.returncode == 0 and "--config.train.num_steps=" in res.stdout, res.stderr


def test_shipped_names_and_the_error_for_a_missing_bundle(tmp_path, monkeypatch):
    assert resources.bundle_path("tiny") == resources.bundle_path(None) == resources.default_bundle()
    assert resources.example_image().is_file() and resources.example_image().with_suffix(".txt").is_file()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"from_pretrained\(\)` with no argument"):
        resources.bundle_path("checkpoints/tiny")  # a checkout's relative path, elsewhere


@pytest.mark.slow
def test_bundle_refuses_towers_that_did_not_encode_the_run(tmp_path):
    """check_towers against a run's record: the same towers pass; other towers are refused in one line naming
    both fingerprints and the bundle the record names."""
    from fourdnex_jax.models.towers import Towers, fingerprint
    from fourdnex_jax.pipelines.bundle import load_bundle
    from fourdnex_jax.pipelines.runs import check_towers
    from fourdnex_jax.testing.random_models import write_random_bundle
    from fourdnex_jax.utils.errors import InputError

    a = load_bundle(write_random_bundle(tmp_path / "a", seed=0))
    b = load_bundle(write_random_bundle(tmp_path / "b", seed=5))
    record = {"fingerprint": fingerprint(Towers(a.vae, a.text_encoder, a.image_encoder)), "bundle": str(tmp_path / "a")}
    assert check_towers("RUN", {"towers": record}, tmp_path / "a", a) == "matched"
    with pytest.raises(InputError) as e:
        check_towers("RUN", {"towers": record}, tmp_path / "b", b)
    msg = str(e.value)
    assert "\n" not in msg and record["fingerprint"]["vae"] in msg and f"pass --base {tmp_path / 'a'}" in msg
    assert check_towers("RUN", {}, tmp_path / "b", b).startswith("unchecked")
    # the VAE's decoder is not part of what encoded the data: a decoder-only change keeps the fingerprint
    from flax import nnx

    from fourdnex_jax.models import params

    before = fingerprint(Towers(a.vae, a.text_encoder, a.image_encoder))
    dec = next(v for p, v in params.flat_variables(a.vae, nnx.Param).items() if p.startswith("decoder"))
    dec[...] = dec[...] + 1.0
    assert fingerprint(Towers(a.vae, a.text_encoder, a.image_encoder)) == before


def test_register_reads_the_shipped_ground_truth_npz_and_names_what_it_ignores():
    from fourdnex_jax.geometry.scene import load_pointmaps

    ignored = []
    arrays = load_pointmaps(ROOT / "examples" / "synth_heldout_000000_gt.npz", ignored)
    assert set(arrays) == {"xyz", "rgb", "valid", "centers", "scale"}
    assert ignored == ["c2w", "depth", "dome_radius", "intrinsics"]
