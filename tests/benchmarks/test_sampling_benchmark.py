"""benchmarks/sampling.py on a random tiny bundle: variant rows, quality figures against the reference, the memory
report, and the variant syntax."""

import json
from pathlib import Path

import pytest

from benchmarks import sampling
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SAMPLING_PRESETS
from fourdnex_jax.testing.random_models import write_random_bundle
from tests.helpers import run_python

pytestmark = pytest.mark.integration  # the benchmark in a subprocess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return write_random_bundle(tmp_path_factory.mktemp("bench") / "bundle", captions=("a ball on the floor",))


def _settings(**kw):
    return SampleSettings.from_preset(SAMPLING_PRESETS["tiny"], **kw)


def test_sampling_benchmark(bundle_dir, tmp_path):
    out = tmp_path / "bench.json"
    res = run_python("-m", "benchmarks.sampling", "--checkpoint", str(bundle_dir), "--num-steps", "3",
                "--variants", "unipc:2", "unipc:3:cache2:int8", "--repeats", "1", "--out", str(out), timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads(out.read_text())
    rows = {r["variant"]: r for r in rep["rows"]}
    assert list(rows) == ["unipc:3", "unipc:2", "unipc:3:cache2:int8"] and rep["reference"] == "unipc:3"
    assert rows["unipc:3"]["xyz_rel_l2"] == 0 and rows["unipc:2"]["xyz_rel_l2"] > 0
    assert (rows["unipc:3:cache2:int8"]["dit_full"], rows["unipc:3:cache2:int8"]["dit_cached"]) == (2, 1)
    assert 0 <= rows["unipc:3"]["depth_abs_rel"] and 0 <= rows["unipc:3"]["depth_delta_1_25"] <= 1  # example gt
    assert rep["memory"]["int8"]["bytes"] < rep["memory"]["base"]["bytes"]
    assert "unipc:3:cache2:int8" in res.stdout and "sampling_benchmark: 3 variant(s)" in res.stdout
    with pytest.raises(ValueError, match="SOLVER:STEPS"):
        sampling.parse_variant("unipc:ten", _settings())
