"""The inference plan with streamed block weights and the tiled VAE decode (tiny size, CPU backend, 8 fake
devices): the streamed DiT's blocks are counted in host memory, not on the devices, and the row carries the
streaming cost."""

import dataclasses

import jax
import pytest

from fourdnex_jax.models.image_encoder import CLIPVisionConfig
from fourdnex_jax.models.text_encoder import UMT5Config
from fourdnex_jax.models.transformer import WanTransformerConfig
from fourdnex_jax.models.vae.config import WanVAEConfig
from fourdnex_jax.pipelines import plan
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SAMPLING_PRESETS, SixDSpec

DIT = WanTransformerConfig(num_layers=2, num_heads=4, head_dim=8, ffn_dim=64, text_dim=24, image_dim=24,
                           added_kv_proj_dim=32, freq_dim=16, attention="ring", attention_chunk_size=16)


def _models():
    return plan.PlanModels(DIT, WanVAEConfig.tiny(), UMT5Config.tiny(), CLIPVisionConfig.tiny(),
                           {m: "float32" for m in plan.MODELS}, 32, 48)


def _settings(**kw):
    return SampleSettings.from_preset(SAMPLING_PRESETS["tiny"], guidance_scale=5.0, num_steps=4, **kw)


@pytest.mark.integration  # ~40-200 s on the 2-core VM (compiles the tiny models)
def test_streamed_plan_keeps_the_blocks_off_the_devices():
    programs = ("denoise_step", "encode_text")
    resident = plan.plan_pipeline(_models(), _settings(), SixDSpec(), jax.devices(), mesh_shape=(1, 2, 2, 2),
                                  programs=programs)
    streamed = plan.plan_pipeline(_models(), _settings(stream_blocks=True), SixDSpec(), jax.devices(),
                                  mesh_shape=(1, 2, 2, 2), programs=programs)
    assert streamed["stream_blocks"] and not resident["stream_blocks"]
    rw, sw, host = resident["model_weights_bytes"], streamed["model_weights_bytes"], streamed["host_weights_bytes"]
    assert resident["host_weights_bytes"] == {m: 0.0 for m in plan.MODELS}
    for model in ("transformer", "text_encoder"):  # the streamed models: the blocks move to host memory
        assert host[model] > 0 and sw[model] == pytest.approx(rw[model] - host[model])
    assert host["vae"] == host["image_encoder"] == 0 and sw["vae"] == rw["vae"]
    r, s = resident["programs"]["denoise_step"], streamed["programs"]["denoise_step"]
    assert s["host_arguments_bytes"] == host["transformer"]
    # XLA:CPU counts host arguments as device ones: the plan reports the device part
    assert s["arguments_bytes"] == pytest.approx(r["arguments_bytes"] - host["transformer"])
    assert s["peak_bytes"] < r["peak_bytes"]
    assert streamed["step_flops_per_device"] == resident["step_flops_per_device"] > 0


def test_stream_cost_arithmetic():
    cost = plan.stream_cost(40e9, 40, 4e15, ("RTX 4090", "H100 SXM"))
    assert cost["bytes_per_step"] == pytest.approx(41e9)  # every block once, the last one twice
    card = cost["cards"]["RTX 4090"]
    assert card["link_s"] == pytest.approx(41e9 / 31.5e9) and card["compute_s"] == pytest.approx(4e15 / 165.2e12)
    assert card["hidden"] is True and card["step_bound_s"] == card["compute_s"]
    assert plan.stream_cost(40e9, 40, 1e12, ("RTX 4090",))["cards"]["RTX 4090"]["hidden"] is False


def test_targets_and_labels():
    assert plan.TARGETS["gpu-24gb"].weight_quant == "none" and plan.TARGETS["gpu-24gb"].stream_blocks
    assert all(c in plan.CARDS for t in plan.TARGETS.values() for c in t.cards)
    row = {"staging": "release", "stream_blocks": True, "decode_tile": [60, 45]}
    assert plan.staging_label(row) == "release + stream + tiled decode 60x45"
    assert plan.staging_label({"staging": "offload"}) == "offload"


@pytest.mark.slow
def test_tiled_decode_program_uses_less_temp():
    """The decode program with a spatial tile (2 x 4 latent pixels; the tiny VAE's halo is 9, so only a wider
    latent tiles: 64 x 96 pixels -> 8 x 24 fused latent) against the whole-frame decode."""
    models = dataclasses.replace(_models(), height=64, width=96)
    whole = plan.plan_pipeline(models, _settings(), SixDSpec(), jax.devices()[:1], mesh_shape=(1, 1, 1, 1),
                               programs=("decode",))
    tiled = plan.plan_pipeline(models, _settings(decode_tile=(8, 4)), SixDSpec(), jax.devices()[:1],
                               mesh_shape=(1, 1, 1, 1), programs=("decode",))
    assert tiled["decode_tile"] == [8, 4]
    assert tiled["programs"]["decode"]["temp_bytes"] < whole["programs"]["decode"]["temp_bytes"]
