"""The GPU check (benchmarks/gpu_check.py) on the CPU: its stage machinery, its report, and that neither it nor
any stage imports the data stack (grain, tensorflow-datasets, array_record: absent on the GPU machine). The data
stack is made unimportable for the child processes (a directory of failing stand-ins first on PYTHONPATH) and
``sys.modules`` is checked. No timing is asserted.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_check
from benchmarks.dit_gpu import STAGES
from fourdnex_jax.testing.training import ROOT

STAGE_KEYS = {  # what each stage's results must hold on the CPU path (the GPU run adds nothing but values)
    "env": {"device_kind", "platform", "versions", "matmul", "copy"},
    "attention": {"implementation", "reference_implementation", "candidate", "reference", "errors", "shape"},
    "dit": {"params", "tokens", "guided_step", "guided_step_compile", "sampling_extrapolated_s", "mfu",
            "peak_bytes", "forward_flops_per_sample"},
    "stream_24gb": {"guided_step", "guided_step_compile", "peak_bytes", "bytes_limit", "host_weights_bytes",
                    "block_copy", "stream"},
    "stream_16gb": {"guided_step", "guided_step_compile", "peak_bytes", "bytes_limit", "host_weights_bytes",
                    "block_copy", "stream"},
    "vae": {"latent", "video", "decode", "decode_compile", "peak_bytes"},
    "diffusers": {"forward", "peak_bytes", "tokens", "diffusers", "torch"},
    "train": {"step", "compile", "remat_policy", "train_flops", "peak_bytes"},
}


def blocked_data_stack(tmp_path) -> dict[str, str]:
    """An environment in which importing grain / tensorflow_datasets / array_record fails, as on the GPU machine."""
    root = tmp_path / "blocked"
    for name in ("grain", "tensorflow_datasets", "array_record"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(f"raise ImportError('{name} is absent on the GPU machine')\n")
    path = os.pathsep.join([str(root), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, JAX_PLATFORMS="cpu")


@pytest.mark.integration
def test_import_probe_and_cpu_path_skip_the_data_stack(tmp_path):
    out = tmp_path / "r.json"
    code = (f"import sys; import benchmarks.gpu_check as g; assert g.main(['--probe']) == 0; "
            f"rc = g.main(['--allow-cpu', '--budget', '1', '--out', {str(out)!r}]); "
            f"bad = [m for m in g.DATA_STACK if m in sys.modules]; assert not bad, bad; assert rc == 0, rc")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=blocked_data_stack(tmp_path),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "probe ok" in res.stdout and "summary:" in res.stdout
    r = json.loads(out.read_text())
    assert r["kind"] == "gpu_check" and r["stage_order"] == list(STAGES) and r["budget_s"] == 1
    assert {"date_utc", "loadavg"} <= set(r["host"])
    for name in STAGES:  # a budget too small for any stage: each is skipped with the reason, none is left out
        assert r["stages"][name]["status"] == "skipped" and "budget gone" in r["stages"][name]["reason"]
    assert r["derived"]["guided_step_s"] is None and r["derived"]["targets_met"]["mfu"] is None


def test_run_child_kills_a_stage_over_its_limit():
    status, wall, tail = gpu_check.run_child(
        [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(60)"], "sleeper", 3.0)
    assert status.startswith("timed out after 3 s") and tail == ["started"] and wall < 30


@pytest.mark.integration
def test_no_accelerator_is_recorded_and_later_stages_skipped(tmp_path):
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--stages", "env,dit", "--budget", "200",
                          "--out", str(out)], cwd=ROOT, env=blocked_data_stack(tmp_path), capture_output=True,
                         text=True, timeout=300)
    r = json.loads(out.read_text())
    env = r["stages"]["env"]
    assert env["status"] == "no accelerator" and "--allow-cpu" in env["results"]["error"], env
    assert r["stages"]["dit"]["status"] == "skipped" and "no accelerator" in r["stages"]["dit"]["reason"]
    assert res.returncode == 1  # a check that measured nothing does not pass


def test_unknown_stage_is_refused():
    with pytest.raises(SystemExit, match="unknown stage"):
        gpu_check.main(["--stages", "env,warp", "--allow-cpu", "--budget", "1"])


def test_json_safe_keeps_strict_json():
    assert gpu_check.json_safe({"a": float("nan"), "b": [1.0, float("inf")]}) == {"a": "nan", "b": [1.0, "inf"]}


@pytest.mark.slow
def test_cpu_run_end_to_end(tmp_path):
    """``--allow-cpu``: every stage, the same code as on the GPU at small shapes, in child processes that cannot
    import the data stack."""
    pytest.importorskip("diffusers")
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--allow-cpu", "--out", str(out)], cwd=ROOT,
                         env=blocked_data_stack(tmp_path), capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"].startswith("cpu") and r["stage_order"] == list(STAGES) and set(r["stages"]) == set(STAGES)
    for name, keys in STAGE_KEYS.items():
        e = r["stages"][name]
        assert e["status"] == "ok", (name, e)
        assert keys <= set(e["results"]), (name, keys - set(e["results"]))
        assert e["results"]["data_stack_modules"] == []
    att = r["stages"]["attention"]["results"]
    assert att["implementation"] == "xla" and "cudnn needs a CUDA GPU" in att["note"]  # recorded as such
    assert att["errors"]["finite"] and att["errors"]["candidate_vs_fp32"] < 2e-2
    dit = r["stages"]["dit"]["results"]
    assert dit["tokens"] == 144 and dit["guided_step"]["repeats_done"] >= 1 and dit["mfu"] is None  # no CPU peak
    assert r["derived"]["jax_over_diffusers"] > 0
    table = res.stdout[res.stdout.index("stage "):]
    assert all(f"\n{name} " in table for name in STAGES) and "summary: cpu" in table


def test_stream_caps_are_the_plan_cards():
    """The streamed stages' caps are the plan's 24 GB / 16 GB cards, as fractions of the card in hand (an H100's
    81,559 MiB); no card (CPU), no cap."""
    from benchmarks.dit_gpu import STREAM_CAPS_GIB, stream_cap_env
    from fourdnex_jax.pipelines.plan import TARGETS

    assert STREAM_CAPS_GIB == {"stream_24gb": TARGETS["gpu-24gb"].hbm_gib, "stream_16gb": TARGETS["gpu-16gb"].hbm_gib}
    env = stream_cap_env("stream_16gb", 81559 * 2 ** 20)
    assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) * 81559 / 1024 == pytest.approx(15.99, abs=0.01)
    assert stream_cap_env("stream_24gb", None) == {} and stream_cap_env("dit", 81559 * 2 ** 20) == {}


@pytest.mark.integration  # ~2 min here: one small compile per leaf shape
def test_random_streamed_state_puts_the_blocks_in_host_memory():
    import jax
    import numpy as np
    from flax import nnx

    from benchmarks.dit_gpu import random_streamed_state
    from fourdnex_jax.models import streaming
    from fourdnex_jax.models.transformer import WanTransformer3D, WanTransformerConfig

    cfg = WanTransformerConfig(num_layers=5, num_heads=2, head_dim=8, ffn_dim=32, text_dim=16, image_dim=8,
                               added_kv_proj_dim=16, freq_dim=16, param_dtype="bfloat16", stream_blocks=True)
    _, abstract = nnx.split(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    state = random_streamed_state(abstract, jax.devices()[0], chunk_layers=2)  # 2 + 2 + 1 layers per leaf
    for path, x in jax.tree_util.tree_leaves_with_path(state):
        assert x.sharding.memory_kind == (streaming.HOST_MEMORY if streaming.is_streamed(path) else "device")
        v = np.asarray(x, np.float32)
        assert np.isfinite(v).all() and (v.size < 2 or v.std() > 0.005), path
    ffn = [x for p, x in jax.tree_util.tree_leaves_with_path(state) if streaming.is_streamed(p)][0]
    assert not np.array_equal(np.asarray(ffn[0], np.float32), np.asarray(ffn[4], np.float32))  # chunks differ
