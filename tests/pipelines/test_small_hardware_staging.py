"""The small-hardware stagings of the pipeline on the 8 fake CPU devices with the shipped tiny model: block weights
streamed from host memory (``stream_blocks``, the bundle restored with its DiT / UMT5 blocks in host memory), the
spatially tiled VAE decode (``decode_tile``) and ``release_after_use``, together, give the resident pipeline's
latents bit for bit and its videos to fp32 rounding (<= 1e-5 relative L2)."""

import dataclasses

import jax
import numpy as np
import pytest

from fourdnex_jax import sharding
from fourdnex_jax.models import streaming
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.testing.numerics import rel_l2

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


@pytest.mark.slow
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
        assert rel_l2(b.video, a.video) <= 1e-5
