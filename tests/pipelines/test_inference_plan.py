"""The inference planner (fourdnex_jax.pipelines.plan) at tiny size on the CPU backend (8 fake devices)."""

import json

import jax
import pytest

from fourdnex_jax.models.image_encoder import CLIPVisionConfig
from fourdnex_jax.models.quantize import memory_report
from fourdnex_jax.models.text_encoder import UMT5Config
from fourdnex_jax.models.transformer import WanTransformerConfig
from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.pipelines import plan
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SAMPLING_PRESETS, SixDSpec

DIT = WanTransformerConfig(num_layers=1, num_heads=4, head_dim=8, ffn_dim=64, text_dim=24, image_dim=24,
                           added_kv_proj_dim=32, freq_dim=16, attention="ring", attention_chunk_size=16)
MEMORY_KEYS = ("arguments_bytes", "outputs_bytes", "alias_bytes", "temp_bytes", "code_bytes", "peak_bytes")


def _models(dit=DIT):
    return plan.PlanModels(dit, WanVAEConfig.tiny(), UMT5Config.tiny(), CLIPVisionConfig.tiny(),
                           {m: "float32" for m in plan.MODELS}, 32, 48)


def _settings(**kw):
    return SampleSettings.from_preset(SAMPLING_PRESETS["tiny"], guidance_scale=5.0, num_steps=4, **kw)


def test_plan_reports_sharded_memory_per_program_and_staging():
    models, settings = _models(), _settings()
    seen = []
    p = plan.plan_pipeline(models, settings, SixDSpec(), jax.devices(), mesh_shape=(1, 2, 2, 2),
                           programs=("denoise_step",), on_program=lambda name, r: seen.append(name))
    assert seen == ["denoise_step"]
    assert p["mesh"] == {"data": 1, "fsdp": 2, "context": 2, "tensor": 2} and p["devices"] == 8
    # batch 1 per fsdp shard, CFG batched: 2 images, 4 DiT rows; 9 frames at 32 x 48 -> latent 3 x 4 x 12
    assert (p["images_per_call"], p["dit_rows"], p["cfg_over_data"]) == (2, 4, False)
    assert p["tokens_per_row"] == 3 * 4 * 12 // 4
    r = p["programs"]["denoise_step"]
    assert "error" not in r, r
    assert all(r[k] >= 0 for k in MEMORY_KEYS) and r["temp_bytes"] > 0
    assert r["peak_bytes"] == pytest.approx(r["arguments_bytes"] + r["outputs_bytes"] - r["alias_bytes"]
                                            + r["temp_bytes"] + r["code_bytes"])
    assert r["arguments_bytes"] >= r["weights_bytes"] == p["model_weights_bytes"]["transformer"] > 0
    # the DiT is split over fsdp x tensor: each device holds well under half of its bytes, at least a quarter
    total = memory_report(DIT)["base"]["bytes"]
    assert total / 4 <= p["model_weights_bytes"]["transformer"] < total / 2
    # co-resident weights per staging: all models ('keep'), the DiT with the VAE ('release'), alone ('offload')
    st, w = p["stagings"], p["model_weights_bytes"]
    alone = r["peak_bytes"] + max(0.0, w["transformer"] + r["inputs_bytes"] - r["arguments_bytes"])
    assert alone == pytest.approx(r["peak_bytes"], rel=0.05)  # the step reads (nearly) all of the DiT
    assert st["offload"]["denoise_step"] == pytest.approx(alone)
    assert st["release"]["denoise_step"] == pytest.approx(alone + w["vae"])
    assert st["keep"]["denoise_step"] == pytest.approx(alone + w["vae"] + w["text_encoder"] + w["image_encoder"])


def test_run_target_row_single_device_int8_and_verdict():
    """One CPU device standing for a card: int8 DiT weights as memory_report counts them, a verdict per HBM size,
    JSON-able."""
    target = plan.Target("card", "cpu", None, hbm_gib=1e-6, mesh=(1, 1, 1, 1), weight_quant="int8",
                         staging="offload")
    dit = DIT.replace(attention="chunked")
    row = plan.run_target(target, _models(dit), _settings(weight_quant="int8"), programs=("denoise_step",))
    json.dumps(row)
    assert row["target"] == "card" and row["chips"] == 1 and row["mesh"] == [1, 1, 1, 1]
    assert (row["images_per_call"], row["dit_rows"], row["weight_quant"]) == (1, 2, "int8")
    assert row["model_weights_gib"]["transformer"] == pytest.approx(memory_report(dit)["int8"]["bytes"] / plan.GiB,
                                                                    abs=1e-3)
    assert set(row["programs"]) == {"denoise_step"} and row["programs"]["denoise_step"]["temp_gib"] >= 0
    assert row["staging"] == "offload" and row["fits"] is False  # a 1 KiB card holds nothing
    assert row["stagings"]["offload"]["peak_gib"] == row["peak_gib"]
    assert row["missing"] == ["encode_text", "encode_image", "decode"]
    # on a large card the verdict waits for the missing programs; a merged row with all of them decides
    big = plan.restage({**row, "hbm_gib": 1e3})
    assert big["fits"] is None
    others = {name: dict(row["programs"]["denoise_step"], peak_gib=0.5) for name in big["missing"]}
    merged = plan.merge_rows(big, {**big, "programs": others})
    assert merged["missing"] == [] and merged["fits"] is True and set(merged["programs"]) == set(plan.PROGRAMS)
    with pytest.raises(ValueError, match="mesh"):
        plan.merge_rows(big, {**big, "mesh": [1, 1, 1, 2]})


def test_unknown_program_is_refused():
    with pytest.raises(ValueError, match="programs"):
        plan.plan_pipeline(_models(), _settings(), SixDSpec(), jax.devices()[:1], mesh_shape=(1, 1, 1, 1),
                           programs=("denoise",))


@pytest.mark.slow
def test_plan_all_programs_tiny():
    """All four programs (the VAE ones compile for ~15 s each at tiny size)."""
    row = plan.run_target(plan.Target("cpu-8", "cpu", None, 1.0, (1, 2, 2, 2)), _models(), _settings())
    assert set(row["programs"]) == set(plan.PROGRAMS)
    assert all("error" not in r for r in row["programs"].values())
    assert row["fits"] is True and row["peak_gib"] == max(row["stagings"]["release"]["stage_peak_gib"].values())
    # the decode executable drops the VAE encoder's weights; the stage still holds them
    dec = row["programs"]["decode"]
    assert dec["arguments_gib"] < dec["weights_gib"]
    assert row["stagings"]["offload"]["stage_peak_gib"]["decode"] >= dec["peak_gib"] + dec["weights_gib"] - \
        dec["arguments_gib"] - 1e-6


@pytest.mark.integration
def test_cli_refuses_an_unknown_inference_target():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    res = subprocess.run([sys.executable, "-m", "fourdnex_jax", "plan", "--job", "inference", "--topology", "v5e-64"],
                         env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 1
    assert "inference targets are" in res.stderr and "v5e-8" in res.stderr and "Traceback" not in res.stderr
