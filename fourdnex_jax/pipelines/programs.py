"""The image-to-4D pipeline's compiled programs, defined once: what
:class:`~fourdnex_jax.pipelines.image_to_4d.ImageTo4D` runs, what the memory plan (:mod:`fourdnex_jax.pipelines.plan`)
compiles for a chip it does not have, and what the benchmarks (:mod:`benchmarks.dit_gpu`) time. The pipeline keeps
the host loop (batching, seeds, progress, the executable cache), the plan keeps compiling and memory accounting;
neither wraps the model code itself.

The programs (:func:`build`, keys of :data:`FUNCTIONS`), each a ``jax.jit`` function whose first arguments are the
``nnx.State`` of the models it runs (:data:`PROGRAMS`) and whose outputs are split by image
(:attr:`Layout.image_sharding`):

  * ``encode_text(te, ids, mask)``: UMT5 on (B, text_len) int32 token ids -> (B, text_len, text_dim) fp32;
  * ``encode_image(ie, vae, pixels, cond_video)``: CLIP on (B, S, S, 3) pixels -> (B, Li, image_dim), and the VAE
    mode of the condition video (B, T, H, 2W, 3) VAE-normalised -> (B, T', h, 2w, z) fp32 (the encode step,
    :mod:`fourdnex_jax.data.encode`, calls the same :mod:`~fourdnex_jax.models.towers` functions);
  * ``init(x)``: the solver state of the initial latents (B, T', h, 2w, z);
  * ``step`` / ``step_full`` / ``step_cached`` ``(dit, solver_state, residual, cond, text, neg, clip, row, t)``:
    one solver step (:func:`denoise_step`) in each step-cache mode (:data:`STEP_MODES`; ``residual`` is None but for
    ``step_cached``; ``step_full`` also returns the block residual, split over the DiT's rows);
  * ``decode(vae, latents)``: the fused decode (:func:`decode_latents`, the XYZ half un-normalised first)
    -> (B, T, H, 2W, 3) fp32.

:func:`abstract_inputs` gives every program's non-weight arguments as ``ShapeDtypeStruct``s with the shardings the
pipeline gives them, and :func:`abstract_state` a model's weights so: ``fn.lower(*abstract)`` is the pipeline's
program (a test compares the lowered text). ``staging`` (:data:`STAGINGS`) says which models' weights are on the
devices during each program; a staging that changes a program itself (e.g. the DiT's weights streamed from host
memory) branches in :func:`weight_shardings` and :func:`build`, so the pipeline, the plan and the benchmarks get it
together.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from fourdnex_jax import sharding
from fourdnex_jax.models import streaming
from fourdnex_jax.models import towers as towers_lib
from fourdnex_jax.models.transformer import layouts
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import MODALITY_LAYOUT, SixDSpec, dit_input, guided_mask
from fourdnex_jax.sampling.flow_matching import classifier_free_guidance, solver_fns

#: The pipeline's models, in the order its stages finish with them (and :meth:`ImageTo4D.release` may free them);
#: a bundle holds one checkpoint of each.
MODELS = ("text_encoder", "image_encoder", "transformer", "vae")
#: The programs the memory plan accounts for, in pipeline order, and the models whose weights each takes.
PROGRAMS: dict[str, tuple[str, ...]] = {"encode_text": ("text_encoder",), "encode_image": ("image_encoder", "vae"),
                                        "denoise_step": ("transformer",), "decode": ("vae",)}
#: Every jitted function of :func:`build` (the names of the pipeline's executable cache entries).
FUNCTIONS = ("encode_text", "encode_image", "init", "step", "step_full", "step_cached", "decode")
#: Weights on the devices during each program besides its own, per staging:
#:   * ``keep``: all four models placed when the pipeline is built and kept (``release_after_use=False``);
#:   * ``release``: the same, each model deleted after its last stage (``release_after_use=True``): UMT5 after the
#:     prompts, CLIP after the images, the DiT before the decode;
#:   * ``offload``: one model on the devices at a time (the encoders run and are freed before the DiT is placed).
STAGINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "keep": {p: tuple(m for m in MODELS if m not in own) for p, own in PROGRAMS.items()},
    "release": {"encode_text": ("image_encoder", "transformer", "vae"), "encode_image": ("transformer",),
                "denoise_step": ("vae",), "decode": ()},
    "offload": {p: () for p in PROGRAMS},
}


#: ``mode`` of :func:`denoise_step`: 'plain' (the DiT's ``__call__``), 'full' (blocks run, their residual returned
#: for the step cache), 'cached' (blocks skipped, the given residual added to the tokens).
STEP_MODES = ("plain", "full", "cached")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the pipeline's arrays live on ``mesh`` (see the module docstring).

    ``cfg_over_data``: CFG's two branches go over the mesh's ``data`` axis (guided sampling on an even ``data``
    axis that the rules' ``batch`` axis uses); ``images``: images per call; ``image_sharding``: every per-image
    array (leading batch axis: latents, solver state, condition, embeddings, token ids) over the batch axes
    (without ``data`` when ``cfg_over_data``); ``rows_sharding``: the DiT's batch (2B rows with CFG) over all batch
    axes."""

    mesh: Mesh
    rules: tuple
    cfg_over_data: bool
    images: int
    image_sharding: NamedSharding
    rows_sharding: NamedSharding

    @classmethod
    def of(cls, mesh: Mesh, rules: Sequence[tuple[str, Any]], guidance_scale: float, batch_size: int) -> Layout:
        rules = tuple(rules)
        dp = sharding.data_parallel_size(mesh, rules)
        cfg_over_data = (guidance_scale > 1.0 and "data" in sharding.batch_axes(mesh, rules)
                         and mesh.shape["data"] % 2 == 0)
        return cls(mesh, rules, cfg_over_data, batch_size * (dp // 2 if cfg_over_data else dp),
                   sharding.batch_sharding(mesh, rules, 1, exclude=("data",) if cfg_over_data else ()),
                   sharding.batch_sharding(mesh, rules, 1))


def _rows(a: jax.Array) -> jax.Array:
    """The DiT batch (rows) split over the rules' batch axes under a mesh (no-op outside)."""
    return sharding.with_logical_constraint(a, ("batch",) + (None,) * (a.ndim - 1))


def _branches(a: jax.Array) -> jax.Array:
    """(2, B, ...) CFG branches: the branch axis over ``data``, the images over the remaining batch axes."""
    return sharding.with_logical_constraint(a, ("cfg_branch", "batch") + (None,) * (a.ndim - 2))


def guided_velocity(dit, x: jax.Array, cond: jax.Array, text: jax.Array, neg: jax.Array, clip: jax.Array,
                    t: jax.Array, *, guidance_scale: float, residual: jax.Array | None = None, mode: str = "plain",
                    cfg_over_data: bool = False) -> tuple[jax.Array, jax.Array | None]:
    """The guided velocity (B, T', h, 2w, 16) fp32 of samples ``x`` (B, T', h, 2w, 16) fp32 at timestep ``t``
    (scalar), and the block residual (2B or B, L, D) fp32 for ``mode='full'`` (else None).

    ``cond``: the condition latent, shaped as ``x``; ``text`` / ``neg``: prompt / negative prompt embeddings
    (B, Lt, Dt); ``clip``: image embeddings (B, Li, Di). The DiT input is ``[x | guided mask | cond]`` (36
    channels). With ``guidance_scale > 1`` (diffusers' ``do_classifier_free_guidance``) the conditional and
    unconditional passes run as one batch of 2B: interleaved per sample (each batch shard keeps both halves of its
    samples), or with ``cfg_over_data`` branch-major ``[cond; uncond]`` (the two branches split over the mesh's
    ``data`` axis); ``mode='cached'`` adds ``residual`` to the embedded tokens instead of running the blocks."""
    if mode not in STEP_MODES:
        raise ValueError(f"mode={mode!r}; use one of {STEP_MODES}")
    b, t_lat, h_lat, w2, _ = x.shape
    inp = dit_input(x, guided_mask(b, t_lat, h_lat, w2 // 2, MODALITY_LAYOUT), cond)
    guided = guidance_scale > 1.0
    if guided:
        def pair(a, c):
            if cfg_over_data:  # (2, B, ...) with the branch axis over data, then its rows: no data movement
                return _branches(jnp.stack([a, c], 0)).reshape(2 * b, *a.shape[1:])
            return jnp.stack([a, c], 1).reshape(2 * b, *a.shape[1:])

        args = (pair(inp, inp), jnp.full((2 * b,), t, jnp.float32), pair(text, neg), pair(clip, clip))
    else:
        args = (inp, jnp.full((b,), t, jnp.float32), text, clip)
    args = tuple(_rows(a) for a in args)
    new_residual = None
    if mode == "plain":
        v = dit(*args)
    else:
        tokens = dit.embed(*args)
        if mode == "full":
            h = dit.run_blocks(tokens)
            new_residual = h.astype(jnp.float32) - tokens.x.astype(jnp.float32)
            new_residual = sharding.with_logical_constraint(new_residual, ("batch", "length", None))
        else:
            h = (tokens.x.astype(jnp.float32) + residual).astype(tokens.x.dtype)
        v = dit.head(h, tokens)
    v = v.astype(jnp.float32)
    if guided:
        if cfg_over_data:
            v = _branches(v.reshape(2, b, *v.shape[1:]))
            v = classifier_free_guidance(v[0], v[1], guidance_scale)
        else:
            v = v.reshape(b, 2, *v.shape[1:])
            v = classifier_free_guidance(v[:, 0], v[:, 1], guidance_scale)
    return v, new_residual


def denoise_step(dit, solver_state, cond: jax.Array, text: jax.Array, neg: jax.Array, clip: jax.Array,
                 row: jax.Array, t: jax.Array, residual: jax.Array | None = None, *, guidance_scale: float,
                 solver: str, mode: str = "plain", cfg_over_data: bool = False):
    """One solver step: the guided velocity (:func:`guided_velocity`) of ``solver_state.x`` at timestep ``t``,
    then ``solver``'s update with the schedule's table row ``row`` (``settings.schedule(...).table[i]``). Returns the
    new solver state, and for ``mode='full'`` also the block residual: ``(state, residual)``."""
    _, step_fn = solver_fns(solver)
    v, new_residual = guided_velocity(dit, solver_state.x, cond, text, neg, clip, t, guidance_scale=guidance_scale,
                                      residual=residual, mode=mode, cfg_over_data=cfg_over_data)
    state = step_fn(solver_state, v, row)
    return (state, new_residual) if mode == "full" else state


def decode_latents(vae, latents: jax.Array, spec: SixDSpec, tile: tuple[int, int] | None = None) -> jax.Array:
    """Fused latents (B, T', h, 2w, 16) -> the decoded canvas (B, T, H, 2W, 3) fp32: the XYZ half un-normalised
    with the recipe's mean/std (``spec``), the fused latent VAE-de-normalised and decoded in one pass (``tile``:
    spatially tiled, the same result in less memory, ``WanVAE.decode``)."""
    rgb, xyz = layouts.split(latents, MODALITY_LAYOUT)
    xyz = xyz * float(spec.xyz_latent_std) + float(spec.xyz_latent_mean)  # undo 4DNeX's XYZ latent normalisation
    fused = vae.denormalize_latents(layouts.fuse(rgb, xyz, MODALITY_LAYOUT))
    return vae.decode(fused, tile=tile).astype(jnp.float32)


def staging_of(settings: SampleSettings) -> str:
    """The :data:`STAGINGS` entry the pipeline runs ``settings`` with."""
    return "release" if settings.release_after_use else "keep"


def _check_staging(staging: str) -> None:
    if staging not in STAGINGS:
        raise ValueError(f"staging {staging!r}: use one of {tuple(STAGINGS)}")


def weight_shardings(state: nnx.State, mesh: Mesh, rules: Sequence[tuple[str, Any]], staging: str = "keep",
                     host_blocks: bool = False):
    """Where a model's weights live while its programs run: every parameter by its logical axes under ``rules``
    (:func:`fourdnex_jax.sharding.state_shardings`), for every staging of :data:`STAGINGS`; ``host_blocks``: the
    stacked ``blocks`` in host memory (``settings.stream_blocks`` for the models of
    :data:`~fourdnex_jax.models.streaming.STREAMED_MODELS`: :func:`~fourdnex_jax.models.streaming.host_shardings`)."""
    _check_staging(staging)
    shardings = sharding.state_shardings(state, mesh, rules)
    return streaming.host_shardings(shardings) if host_blocks else shardings


def streamed_module(name: str, module: nnx.Module, settings: SampleSettings) -> nnx.Module:
    """Model ``name`` as the pipeline runs it with ``settings``: with ``stream_blocks`` the DiT and UMT5 fetch their
    blocks a block ahead (:func:`fourdnex_jax.models.streaming.streamed`, the weights shared), else ``module``."""
    return streaming.streamed(module) if settings.stream_blocks and name in streaming.STREAMED_MODELS else module


def abstract_state(module: nnx.Module, mesh: Mesh, rules: Sequence[tuple[str, Any]], staging: str = "keep",
                   host_blocks: bool = False) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, state) of a (possibly abstract) ``module`` whose leaves are ``ShapeDtypeStruct``s with the
    shardings of :func:`weight_shardings` (where the pipeline places them)."""
    graphdef, state = nnx.split(module)
    shardings = weight_shardings(state, mesh, rules, staging, host_blocks)
    state = jax.tree.map(lambda v, s: v.replace(jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=s)), state,
                         shardings, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return graphdef, state


def step_function(settings: SampleSettings) -> str:
    """The step function the sampling loop runs most with ``settings`` (the plan's ``denoise_step``): ``step``, or
    ``step_full`` (the larger of the step cache's two) with a step cache."""
    return "step_full" if settings.step_cache_interval else "step"


def build(graphdefs: Mapping[str, nnx.GraphDef], settings: SampleSettings, spec: SixDSpec, layout: Layout, *,
          staging: str = "keep") -> dict[str, Callable]:
    """``{name: jitted function}`` for every name of :data:`FUNCTIONS` (see the module docstring), for the models of
    ``graphdefs`` (``{model: graphdef}``, :data:`MODELS`) sampled with ``settings`` and the recipe ``spec`` on
    ``layout``. Call (or lower) them inside :func:`fourdnex_jax.sharding.mesh_context`."""
    _check_staging(staging)
    s, img, gd = settings, layout.image_sharding, graphdefs
    init_fn, _ = solver_fns(s.solver)

    def encode_text(te, ids, mask):
        return towers_lib.encode_prompts(towers_lib.Towers(None, nnx.merge(gd["text_encoder"], te), None), ids, mask)

    def encode_image(ie, vae, pixels, cond_video):
        towers = towers_lib.Towers(nnx.merge(gd["vae"], vae), None, nnx.merge(gd["image_encoder"], ie))
        return towers_lib.encode_images(towers, pixels), towers_lib.encode_condition(towers, cond_video)

    def step(dit, solver_state, residual, cond, text, neg, clip, row, t, *, mode):
        return denoise_step(nnx.merge(gd["transformer"], dit), solver_state, cond, text, neg, clip, row, t, residual,
                            guidance_scale=s.guidance_scale, solver=s.solver, mode=mode,
                            cfg_over_data=layout.cfg_over_data)

    def decode(vae, latents):
        return decode_latents(nnx.merge(gd["vae"], vae), latents, spec, s.tile)

    # the solver state stays split by image (the same shardings every step: one signature per program); the step
    # cache's residual (2B, L, D) is split over the DiT's batch rows
    steps = {name: jax.jit(functools.partial(step, mode=mode),
                           out_shardings=(img, layout.rows_sharding) if mode == "full" else img)
             for name, mode in (("step", "plain"), ("step_full", "full"), ("step_cached", "cached"))}
    return {"encode_text": jax.jit(encode_text, out_shardings=img),
            "encode_image": jax.jit(encode_image, out_shardings=img),
            "init": jax.jit(init_fn, out_shardings=img), **steps,
            "decode": jax.jit(decode, out_shardings=img)}


def noise_program(shape: Sequence[int], placement: NamedSharding) -> Callable:
    """``seed (int32) -> standard normal (shape) fp32`` from ``jax.random.key(seed)``, jitted with its output at
    ``placement`` (bit-identical to the eager ``jax.random.normal`` for int32 seeds)."""
    shape = tuple(int(d) for d in shape)
    return jax.jit(lambda sd: jax.random.normal(jax.random.key(sd), shape, jnp.float32), out_shardings=placement)


def latent_shape(settings: SampleSettings, vae_config, height: int, width: int) -> tuple[int, int, int, int]:
    """(T', h, 2w, z): the fused latent of one image sampled at ``height x width`` pixels per modality."""
    v = vae_config
    return (1 + (settings.num_frames - 1) // v.temporal_factor, height // v.spatial_factor,
            2 * (width // v.spatial_factor), v.z_dim)


def _sds(shape: Sequence[int], dtype, placement) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(int(d) for d in shape), jnp.dtype(dtype), sharding=placement)


def abstract_inputs(settings: SampleSettings, layout: Layout, height: int, width: int, *, transformer_config,
                    vae_config, image_encoder_config, scheduler=None) -> dict[str, tuple]:
    """``{function: its non-weight arguments}`` for every name of :data:`FUNCTIONS`, as ``ShapeDtypeStruct``s with
    the pipeline's shardings, for one call of ``layout.images`` images sampled at ``height x width`` per modality
    (``scheduler``: the bundle's UniPC config; only the table's shape matters). The weights come first in a call:
    ``fn(*model_states, *abstract_inputs(...)[name])`` with the states of :data:`PROGRAMS`' models."""
    img, repl = layout.image_sharding, sharding.replicated(layout.mesh)
    b, dit, ie = layout.images, transformer_config, image_encoder_config
    latent = _sds((b, *latent_shape(settings, vae_config, height, width)), jnp.float32, img)
    ids = _sds((b, settings.text_len), jnp.int32, img)
    text = _sds((b, settings.text_len, dit.text_dim), jnp.float32, img)
    clip = _sds((b, ie.num_positions, dit.image_dim), jnp.float32, img)
    pixels = _sds((b, ie.image_size, ie.image_size, 3), jnp.float32, img)
    # recipe.condition_video's output: (B, T, H, 2W, 3) fp32
    cond_video = _sds((b, settings.num_frames, height, 2 * width, 3), jnp.float32, img)
    init_fn, _ = solver_fns(settings.solver)
    solver_state = jax.tree.map(lambda x: _sds(x.shape, x.dtype, img), jax.eval_shape(init_fn, latent))
    table = settings.schedule(scheduler).table
    row, t = _sds(table.shape[1:], table.dtype, repl), _sds((), jnp.float32, repl)
    rows = (2 if settings.guidance_scale > 1.0 else 1) * b
    tokens = (latent.shape[1] // dit.patch_size[0]) * (latent.shape[2] // dit.patch_size[1]) * (
        latent.shape[3] // dit.patch_size[2])
    residual = _sds((rows, tokens, dit.num_heads * dit.head_dim), jnp.float32, layout.rows_sharding)
    step = (solver_state, None, latent, text, text, clip, row, t)
    return {"encode_text": (ids, ids), "encode_image": (pixels, cond_video), "init": (latent,), "step": step,
            "step_full": step, "step_cached": (solver_state, residual, *step[2:]), "decode": (latent,)}
