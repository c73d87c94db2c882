"""Configs: presets build, unknown keys are rejected, every logical axis has a sharding rule, describe counts."""

from pathlib import Path

import pytest

from fourdnex_jax.config import load_config_file, model_config
from fourdnex_jax.models import params
from fourdnex_jax.weights.registry import abstract_model
from tests.helpers import run_python

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ["tiny", "small", "wan21_i2v_14b_480p"]


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_abstractly_with_full_axis_rule_coverage(name):
    config = load_config_file(ROOT / "configs" / f"{name}.py")
    model = abstract_model(model_config(config))
    rules = {logical for logical, _ in config.sharding.logical_axis_rules}
    names = {ax for v in params.flat_variables(model).values() for ax in v.get_metadata()["out_sharding"]}
    assert names - rules == set(), f"logical axes without a sharding rule: {names - rules}"
    for path, var in params.flat_variables(model).items():
        assert len(var.get_metadata()["out_sharding"]) == len(var.shape), path


def test_axis_rules_cover_vae_and_encoders():
    from flax import nnx

    from fourdnex_jax.models import image_encoder, text_encoder
    from fourdnex_jax.models.vae import WanVAEConfig, abstract_vae
    from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES

    rules = {logical for logical, _ in DEFAULT_LOGICAL_AXIS_RULES}
    models = [abstract_vae(WanVAEConfig.wan21()),
              nnx.eval_shape(lambda: text_encoder.UMT5Encoder(text_encoder.UMT5Config.umt5_xxl(), rngs=nnx.Rngs(0))),
              nnx.eval_shape(lambda: image_encoder.CLIPVisionTower(image_encoder.CLIPVisionConfig.vit_h14(),
                                                                   rngs=nnx.Rngs(0)))]
    for model in models:
        names = {ax for v in params.flat_variables(model).values() for ax in v.get_metadata()["out_sharding"]}
        assert names - rules == set(), f"{type(model).__name__}: logical axes without a rule: {names - rules}"


def test_unknown_keys_are_rejected():
    config = load_config_file(ROOT / "configs" / "tiny.py")
    with pytest.raises(AttributeError, match="does not exist"):
        config.model.num_layer = 3  # typo of num_layers
    config.model.num_layers = 3  # existing keys can change
    assert model_config(config).num_layers == 3
    with pytest.raises(ValueError, match="modality_layout='diagonal'"):
        config.model.modality_layout = "diagonal"
        model_config(config)


@pytest.mark.integration
def test_describe_rejects_unknown_override():
    res = run_python("-m", "fourdnex_jax", "describe", "--config", "tiny", "--config.model.num_layer=3")
    assert res.returncode != 0 and "num_layer" in res.stderr


@pytest.mark.oracle
def test_describe_14b_reports_the_diffusers_parameter_count():
    torch = pytest.importorskip("torch")
    from diffusers import WanTransformer3DModel

    cfg = model_config(load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
    with torch.device("meta"):
        reference = WanTransformer3DModel(**{k: v for k, v in cfg.to_diffusers_config().items()
                                             if not k.startswith("_")})
    expected = sum(p.numel() for p in reference.parameters())
    assert expected == 16_394_878_784
    res = run_python("-m", "fourdnex_jax", "describe", "--config", "wan21_i2v_14b_480p")
    assert res.returncode == 0, res.stderr
    assert f"summary: {expected:,} base + 209,725,440 trainable" in res.stdout, res.stdout


def test_config_argument_selects_variants():
    config = load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py", "optim=reference_declared")
    assert config.optim.preset == "reference_declared"
    assert load_config_file(ROOT / "configs" / "tiny.py").optim.preset == "reference_declared"
    assert load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py").optim.preset == "reference_effective"
    with pytest.raises(ValueError, match="unknown config argument 'optimizer'"):
        load_config_file(ROOT / "configs" / "tiny.py", "optimizer=x")


@pytest.mark.parametrize("name", PRESETS)
def test_config_files_write_one_setting_per_line(name):
    import re

    text = (ROOT / "configs" / f"{name}.py").read_text()
    assert not re.search(r"^\s*\w+(\.\w+)*\s*,\s*\w+(\.\w+)*\s*=", text, re.M), "tuple assignment in a config file"
