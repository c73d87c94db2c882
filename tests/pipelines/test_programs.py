"""One definition of the pipeline's programs (fourdnex_jax.pipelines.programs): the memory plan lowers exactly what
ImageTo4D runs. The shipped tiny bundle on 8 CPU devices: each plan program's lowered StableHLO text (shapes,
shardings, out-shardings, body) equals that of the pipeline's own jitted function called on the arrays it makes
for a batch of images (lowering only, nothing compiled)."""

import types

import jax
import numpy as np
import pytest

from fourdnex_jax import sharding
from fourdnex_jax.models.image_encoder import preprocess_images
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines import plan, programs
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import condition_video
from fourdnex_jax.weights.restore import read_config


def _mesh(shape):
    return sharding.make_mesh(types.SimpleNamespace(mesh_shape=shape, mesh_axes=sharding.MESH_AXES),
                              devices=jax.devices()[:8])


def _pipeline_args(pipe: ImageTo4D, height: int, width: int) -> dict[str, tuple]:
    """The arguments the pipeline passes each program for one batch at ``height x width`` (host inputs placed as
    the pipeline places them; encoder outputs as its jitted encoders' output shapes and shardings)."""
    n = pipe.batch
    images = [np.full((height, width, 3), 100 + i, np.uint8) for i in range(n)]
    ids, mask = pipe._tokens(["a ball"] * n)
    pixels = pipe._put(preprocess_images(images, pipe.clip_preprocess))
    rgb0 = np.stack(images).astype(np.float32) / 127.5 - 1.0
    cond_video = pipe._put(condition_video(rgb0, pipe.settings.num_frames))
    with sharding.mesh_context(pipe.mesh, pipe.rules):
        text = pipe._encode_text.eval_shape(pipe._state("text_encoder"), ids, mask)
        clip, cond = pipe._encode_image.eval_shape(pipe._state("image_encoder"), pipe._state("vae"), pixels,
                                                   cond_video)
        x0 = pipe._put(np.zeros((n, *pipe.latent_shape(height, width)), np.float32))
        state = pipe._init.eval_shape(x0)
        row, t = pipe._put(pipe.schedule.table[0], pipe._repl), pipe._put(np.float32(999.0), pipe._repl)
        step = (state, None, cond, text, text, clip, row, t)
        _, residual = pipe._steps["full"].eval_shape(pipe._state("transformer"), *step)
    return {"encode_text": (pipe._state("text_encoder"), ids, mask),
            "encode_image": (pipe._state("image_encoder"), pipe._state("vae"), pixels, cond_video),
            "step": (pipe._state("transformer"), *step), "step_full": (pipe._state("transformer"), *step),
            "step_cached": (pipe._state("transformer"), state, residual, *step[2:]),
            "decode": (pipe._state("vae"), x0)}


@pytest.mark.parametrize("mesh_shape,overrides", [
    ((1, 2, 2, 2), {}),
    # CFG branches over data, the step cache's full step, the int8 DiT
    ((2, 2, 1, 2), {"step_cache_interval": 2, "weight_quant": "int8"}),
])
def test_plan_lowers_the_pipelines_programs(mesh_shape, overrides):
    mesh = _mesh(mesh_shape)
    bundle = bundle_lib.load_bundle(mesh=mesh)
    settings = SampleSettings.from_preset(bundle.preset, guidance_scale=5.0, num_steps=4, **overrides)
    pipe = ImageTo4D.from_bundle(bundle, settings, mesh=mesh)
    height, width = pipe.sample_size(np.zeros((480, 720, 3), np.uint8))
    configs = {m: read_config(bundle.directory, m) for m in programs.MODELS}
    models = plan.PlanModels(*(configs[m][0] for m in ("transformer", "vae", "text_encoder", "image_encoder")),
                             {m: configs[m][1] for m in programs.MODELS}, height, width)
    built, _, layout = plan.build_programs(models, settings, bundle.spec, mesh, sharding.DEFAULT_LOGICAL_AXIS_RULES)
    assert layout == pipe.layout
    ours = _pipeline_args(pipe, height, width)
    fns = {"encode_text": pipe._encode_text, "encode_image": pipe._encode_image, "decode": pipe._decode,
           **{name: pipe._steps[mode] for name, mode in (("step", "plain"), ("step_full", "full"),
                                                          ("step_cached", "cached"))}}
    step = programs.step_function(settings)
    assert step == ("step_full" if overrides else "step")
    with sharding.mesh_context(mesh, pipe.rules):
        for program, name in (("encode_text", "encode_text"), ("encode_image", "encode_image"),
                              ("denoise_step", step), ("decode", "decode")):
            fn, args = built[program]
            planned = fn.lower(*args).as_text()
            run = fns[name].lower(*ours[name]).as_text()
            assert planned == run, f"{program}: the plan lowers another program than the pipeline runs"
        # the cached step (not a plan program) takes the full step's residual as the pipeline passes it
        if overrides:
            inputs = programs.abstract_inputs(settings, layout, height, width, transformer_config=models.transformer,
                                              vae_config=models.vae, image_encoder_config=models.image_encoder)
            cached = fns["step_cached"].lower(built["denoise_step"][1][0], *inputs["step_cached"]).as_text()
            assert cached == fns["step_cached"].lower(*ours["step_cached"]).as_text()
