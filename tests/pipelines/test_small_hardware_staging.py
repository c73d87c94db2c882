"""The small-hardware stagings of the pipeline on the 8 fake CPU devices with the shipped tiny model: block weights
streamed from host memory (``stream_blocks``, the bundle restored with its DiT / UMT5 blocks in host memory), the
spatially tiled VAE decode (``decode_tile``) and ``release_after_use``, together, give the resident pipeline's
latents bit for bit and its videos to fp32 rounding (<= 1e-6 relative L2)."""

import dataclasses
import json
import re
import shlex

import jax
import numpy as np
import pytest

from fourdnex_jax import sharding
from fourdnex_jax.models import streaming
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.testing.numerics import rel_l2
from tests.helpers import ROOT, run_cli

RULES = sharding.DEFAULT_LOGICAL_AXIS_RULES
PROMPTS = ["a ball", "a box on the floor"]


def _images(n=2):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(n)]


def test_settings_validate_decode_tile():
    preset = bundle_lib.read_presets(bundle_lib.DEFAULT_BUNDLE)[0]
    assert SampleSettings.from_preset(preset, decode_tile=[8, 4]).tile == (8, 4)
    assert SampleSettings.from_preset(preset).tile is None
    for bad in ((0, 4), (8,), (-1, 2)):
        with pytest.raises(ValueError, match="decode_tile"):
            SampleSettings.from_preset(preset, decode_tile=bad)


@pytest.mark.integration  # 6.4 min and 0.7 GiB on the loaded 2-core VM (2026-12-07): two pipelines on 8 devices
def test_streamed_tiled_released_pipeline_equals_resident():
    mesh = jax.make_mesh((1, 2, 2, 2), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 4)
    preset = bundle_lib.read_presets(bundle_lib.DEFAULT_BUNDLE)[0]
    # CFG on, 5 frames at 32 x 48 per modality: fused latent 2 x 8 x 24; the tiny VAE's halo is 8 latent pixels,
    # so (8, 4) tiles the width into 6 windows of 20
    base = SampleSettings.from_preset(preset, num_frames=5, max_area=32 * 48, num_steps=2, guidance_scale=3.0)
    small = dataclasses.replace(base, stream_blocks=True, decode_tile=(8, 4), release_after_use=True)

    resident = ImageTo4D.from_bundle(bundle_lib.load_bundle(mesh=mesh, rules=RULES), base, mesh=mesh,
                                     rules=RULES)(_images(), PROMPTS, progress=False)
    bundle = bundle_lib.load_bundle(mesh=mesh, rules=RULES, host_blocks=True)
    pipe = ImageTo4D.from_bundle(bundle, small, mesh=mesh, rules=RULES)
    for name in streaming.STREAMED_MODELS:
        kinds = {(streaming.is_streamed(p), a.sharding.memory_kind)
                 for p, a in jax.tree_util.tree_leaves_with_path(pipe._states[name])}
        assert kinds == {(True, streaming.HOST_MEMORY), (False, "device")}, name
    small_out = pipe(_images(), PROMPTS, progress=False)
    for a, b in zip(resident, small_out):
        np.testing.assert_array_equal(b.latents, a.latents)  # streamed blocks: bit for bit
        # tiled decode on the mesh: the same values up to the partitioned convolutions' summation order (the tiled
        # VAE decode alone on this mesh: 7.8e-8 relative L2, 3.0e-7 max abs; bit-identical on one device)
        # (2026-12-07: 1.1e-7 and 9.8e-8 relative L2, 4.8e-7 / 5.4e-7 max abs)
        assert rel_l2(b.video, a.video) <= 1e-6


def hardware_rows() -> dict[str, str]:
    """README's "Which hardware runs it" table: {hardware: its settings cell, as written (backticks dropped)}."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("#### Which hardware runs it"):]
    table = table[table.index("| your hardware"):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = " ".join(re.findall(r"`([^`]*)`", cells[2]))
    return rows


def test_readme_hardware_settings_are_config_overrides_a_shell_takes():
    from fourdnex_jax.config import base_config

    rows = hardware_rows()
    assert {"RTX 3090 / 4090 (24 GB)", "16 GB card (RTX 4080, A4000)", "TPU v5e-8"} <= set(rows)
    config = base_config()
    for hardware, settings in rows.items():
        if not settings:  # "the 24 GB row's"
            continue
        assert "(" not in re.sub(r"'[^']*'", "", settings), f"{hardware}: quote a setting with parentheses"
        for token in shlex.split(settings):
            key, _, value = token.partition("=")
            assert key.startswith("--config.") and value, (hardware, token)
            section, field = key[len("--config."):].split(".")
            assert field in config[section], (hardware, token)


@pytest.mark.integration
def test_generate_with_the_readme_16gb_settings(tmp_path):
    """README's 16 GB row's settings, as written, on the shipped tiny bundle: the run goes through and
    ``summary.json`` records where the weights lived."""
    from fourdnex_jax.media.io import write_png

    write_png(tmp_path / "a.png", _images(1)[0])
    settings = shlex.split(hardware_rows()["16 GB card (RTX 4080, A4000)"])
    res = run_cli("generate", "--image", tmp_path / "a.png", "--prompt", "a ball", "--out", tmp_path / "out",
                  "--nopostprocess", "--config.sample.num_frames=5", f"--config.sample.max_area={32 * 48}",
                  "--config.sample.num_steps=2", *settings, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["memory"] == {"staging": "release", "release_after_use": True, "stream_blocks": True,
                                 "decode_tile": [60, 45], "weight_quant": "none"}
    assert summary["settings"]["stream_blocks"] is True
