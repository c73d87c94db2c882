"""Every config value is range-checked where it is declared, from one table (``fourdnex_jax/utils/bounds.py``),
before anything is allocated (issue 26, class 7): each case gets one line naming the key, the value and the allowed
range."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.config import load_config_file, validate
from fourdnex_jax.models.image_encoder.preprocess import CLIPPreprocessConfig
from fourdnex_jax.models.mapping import WeightMappingError
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SamplingPreset
from fourdnex_jax.sampling.unipc import UniPCConfig
from fourdnex_jax.testing.training import TINY
from fourdnex_jax.utils import bounds
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.weights import adapter as adapter_lib
from fourdnex_jax.weights.restore import read_config
from fourdnex_jax.weights.safetensors import ShardedSafetensorsWriter

ROOT = Path(__file__).resolve().parents[2]
TINY_BUNDLE = ROOT / "checkpoints" / "tiny"


def _line(e: pytest.ExceptionInfo, key: str, value) -> str:
    text = str(e.value)
    assert "\n" not in text, text
    assert key in text and str(value) in text and "use " in text, text
    return text


@pytest.mark.parametrize("key,value", [
    ("sample.num_steps", 10**12), ("sample.flow_shift", 0.0), ("sample.flow_shift", -3.0),
    ("sample.guidance_scale", float("inf")), ("sample.max_area", 400_000_000), ("sample.text_len", 100_000),
    ("sample.num_frames", 0), ("sample.batch_size", -1), ("data.text_len", 10**9), ("model.num_layers", -2),
    ("model.lora_rank", -1), ("seed", -5),
])
def test_config_values_out_of_range(key, value):
    config = load_config_file(TINY)
    *section, name = key.split(".")
    (config[section[0]] if section else config)[name] = value
    with pytest.raises(InputError) as e:
        validate(config, "--config")
    _line(e, key, value)


def test_shipped_configs_are_in_range():
    for path in sorted((ROOT / "configs").glob("*.py")):
        validate(load_config_file(path), str(path))


def test_sample_settings_from_the_api_are_checked():
    preset = SamplingPreset(num_frames=5, max_area=64 * 96, num_steps=4, guidance_scale=5.0, negative_prompt="",
                            text_len=16, flow_shift=3.0, solver="unipc")
    with pytest.raises(InputError) as e:
        SampleSettings.from_preset(preset, num_steps=10**12)
    _line(e, "sample.num_steps", 10**12)
    with pytest.raises(InputError) as e:
        SampleSettings.from_preset(preset, guidance_scale=float("nan"))
    _line(e, "sample.guidance_scale", "nan")


@pytest.mark.parametrize("cfg,key,value", [
    ({"num_train_timesteps": 0}, "scheduler.num_train_timesteps", 0),
    ({"num_train_timesteps": -5}, "scheduler.num_train_timesteps", -5),
    ({"flow_shift": 0.0}, "scheduler.flow_shift", 0.0),
])
def test_scheduler_config_out_of_range(cfg, key, value):
    with pytest.raises(InputError) as e:
        UniPCConfig.from_diffusers_config({"_class_name": "UniPCMultistepScheduler", **cfg})
    _line(e, key, value)


@pytest.mark.parametrize("cfg,key,value", [
    ({"image_std": [0.26, 0.0, 0.27]}, "image_processor.image_std", 0.0),
    ({"image_std": 0}, "image_processor.image_std", 0.0),
    ({"size": {"shortest_edge": 200000}}, "image_processor.size.shortest_edge", 200000),
    ({"crop_size": 0}, "image_processor.crop_size.height", 0),
    ({"rescale_factor": float("inf")}, "image_processor.rescale_factor", "inf"),
])
def test_image_processor_config_out_of_range(cfg, key, value):
    with pytest.raises(InputError) as e:
        CLIPPreprocessConfig.from_hf_config(cfg)
    _line(e, key, value)


def test_transformer_config_file_out_of_range_names_the_file(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(TINY_BUNDLE / "configs", bundle / "configs")
    path = bundle / "configs" / "transformer.json"
    obj = json.loads(path.read_text())
    obj["config"]["num_layers"] = -2
    path.write_text(json.dumps(obj))
    with pytest.raises(InputError) as e:
        read_config(bundle, "transformer")
    assert str(path) in _line(e, "model.num_layers", -2)


# ------------------------------------------------------------------------------------------------- adapters
def _adapter(tmp_path: Path, rank: int = 4, dim: int = 8, metadata: str | None = None) -> Path:
    d = tmp_path / "adapter"
    d.mkdir()
    tensors = {f"{adapter_lib.PREFIX}blocks.0.attn1.to_q.lora_A.weight": np.zeros((rank, dim), np.float32),
               f"{adapter_lib.PREFIX}blocks.0.attn1.to_q.lora_B.weight": np.zeros((dim, rank), np.float32)}
    writer = ShardedSafetensorsWriter(d, adapter_lib.LORA_FILE[:-len(".safetensors")],
                                      [(k, v.shape, v.dtype) for k, v in tensors.items()],
                                      metadata={adapter_lib.METADATA_KEY: metadata} if metadata else None)
    for k, v in tensors.items():
        writer.write(k, v)
    writer.close()
    return d


def test_adapter_of_rank_0_is_refused(tmp_path):
    with pytest.raises(WeightMappingError, match="rank 0"):
        adapter_lib.read_adapter(_adapter(tmp_path, rank=0))


@pytest.mark.parametrize("metadata,match", [("[4, 8]", "JSON list"), ('"r=4"', "JSON str"),
                                            ('{"r": 0, "lora_alpha": 4}', "r must be"),
                                            ('{"r": 4, "lora_alpha": NaN}', "r must be")])
def test_adapter_metadata_that_is_not_an_object_or_out_of_range(tmp_path, metadata, match):
    with pytest.raises(WeightMappingError, match=match):
        adapter_lib.read_adapter(_adapter(tmp_path, metadata=metadata))


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), -1.0])
def test_non_finite_fuse_scale_is_refused(tmp_path, scale):
    with pytest.raises(InputError) as e:
        adapter_lib.read_adapter(_adapter(tmp_path), fuse_scale=scale)
    _line(e, "adapter.fuse_scale", scale)


def test_honest_adapter_still_reads(tmp_path):
    a = adapter_lib.read_adapter(_adapter(tmp_path, metadata='{"r": 4, "lora_alpha": 8}'))
    assert a.rank == 4 and a.effective_scale == 2.0 * adapter_lib.DEFAULT_FUSE_SCALE


# --------------------------------------------------------------------------------------------- the table
def test_every_config_key_of_the_table_exists():
    """No typo in the table: every ``seed/train/optim/data/sample/model`` key names a key of the base config."""
    from fourdnex_jax.config import base_config

    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(base_config().to_dict())
    config_keys = [k for k in bounds.BOUNDS if k.split(".")[0] in ("seed", "train", "optim", "data", "sample",
                                                                   "model")]
    assert sorted(set(config_keys) - set(flat)) == []


@pytest.mark.integration
@pytest.mark.parametrize("args,match", [(["--fps", "0"], "fps"), (["--devices", "-1"], "devices"),
                                        (["--config.sample.num_steps=1000000000000"], "sample.num_steps"),
                                        (["--config.sample.flow_shift=0"], "sample.flow_shift")])
def test_generate_flags_out_of_range_are_one_line(tmp_path, args, match):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-m", "fourdnex_jax", "generate", "--image",
                          str(ROOT / "examples" / "synth_heldout_000000.png"), "--out", str(tmp_path / "o"), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode in (1, 2) and "Traceback" not in out.stderr, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], lines
    assert not (tmp_path / "o").exists()
