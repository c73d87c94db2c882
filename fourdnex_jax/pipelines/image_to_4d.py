"""Image -> 4D (RGB video + XYZ pointmap video) with the 4DNeX recipe, in JAX.

``ImageTo4D(...)(images, prompts)`` follows the method vocabulary of diffusers' Wan I2V pipeline; what 4DNeX's
``WanSameRopeWBWImageToVideoPipeline`` does (``inference.py`` + ``core/inference/wan.py`` of 3DTopia/4DNeX):

  1. :meth:`~ImageTo4D.check_inputs`: every argument checked, errors name it;
  2. the images resized to their sampling size (:mod:`fourdnex_jax.pipelines.inputs`: aspect ratio kept at the
     preset's area, Pillow bicubic, no crop, as the reference; or cover + centre crop) and grouped by size;
  3. :meth:`~ImageTo4D.encode_prompt`: ``caption + spec.prompt_suffix`` (the bundle's recipe) and the negative
     prompt (default empty; encoded once per pipeline) -> UMT5 embeddings, zero past each prompt's length, padded
     to ``text_len``;
  4. :meth:`~ImageTo4D.encode_image`: CLIP ``hidden_states[-2]``, and the condition latent: frame 0 =
     ``[RGB | slanted-plane XYZ init]`` (H x 2W, z = -y), then T - 1 zero frames, VAE-encoded with the mode and
     VAE-normalised (no XYZ mu/sigma: reference quirk 8) -- exactly the training condition
     (:func:`fourdnex_jax.recipe.condition_video`);
  5. :meth:`~ImageTo4D.prepare_latents` + :meth:`~ImageTo4D.denoise`: noise (T', h, 2w, 16) from each image's
     seed (default: ``settings.seed`` for every image, the official rule, so a result never depends on the
     image's position in the list; or injected), sampled with UniPC (Wan's scheduler) or Euler; guided mask 1
     (RGB) / 0.5 (XYZ) on latent
     frame 0; classifier-free guidance batched with the conditional pass (one DiT call of 2B per step);
  6. :meth:`~ImageTo4D.decode`: the XYZ half of the latent un-normalised (``z * spec.xyz_latent_std +
     spec.xyz_latent_mean``, the bundle's recipe), the fused latent VAE-de-normalised and decoded in one pass (the
     reference decodes the 2W-wide latent), split into RGB | XYZ in pixel space -> one :class:`ImageTo4DOutput`
     per image.

Static shapes: a batch holds images of one size (the last batch of a size is padded by repetition); the solver's
step is one compiled function per mode whose coefficients are a traced table row
(:mod:`fourdnex_jax.sampling.unipc`), so each image size compiles once.

Sharding (:class:`Layout`, :mod:`fourdnex_jax.sharding`): the pipeline runs on a ``(data, fsdp, context, tensor)``
mesh (``mesh=``, e.g. ``sharding.make_mesh(config.sharding)``; default: a ``data`` axis over ``devices``). Every
model is placed by its parameters' logical axes and the rules (the DiT's and UMT5's matrices over fsdp x tensor;
the small models as the rules say), so a model is never replicated unless the rules replicate it; a bundle
restored onto the same mesh (``load_bundle(mesh=..., rules=...)``) is used in place. A call samples
``batch_size x`` (data x fsdp) images, split over ``fsdp`` (and ``data``); with CFG and an even ``data`` axis the
conditional and unconditional branches go over ``data`` instead (half the images per call, the same work per
device). The DiT constrains its block inputs/outputs, q/k/v and FFN hidden to batch x sequence (``context``) x
heads (``tensor``), and ``attention='ring'`` (or ``'auto'``) splits the 35,100-token self-attention over
``context``. Multi-process (``jax.distributed``): every process makes the same call with the same inputs; each
image's result is returned by exactly one process (the one holding its first shard), ``None`` elsewhere.
``settings.release_after_use``: stage by stage over the whole call (all prompts, then all images, then all
denoising, then all decodes), deleting each model's weights after its last stage.

Fast paths (each measured by the sampling benchmark):
  * fewer steps / Euler: ``settings.num_steps`` / ``settings.solver``;
  * ``settings.weight_quant='int8'``: the pipeline samples with an int8 copy of the DiT (block linears, int8
    weights with per-output-channel fp32 scales, :mod:`fourdnex_jax.models.quantize`); the caller's model is kept;
  * ``settings.step_cache_interval=k >= 1``: the transformer blocks run in full every k steps (and at the last
    step); the steps between reuse the last block residual (the ``step_cached`` program of
    :mod:`fourdnex_jax.pipelines.programs`, the schedule from :mod:`fourdnex_jax.sampling.step_cache`);
    ``ImageTo4D.stats`` counts full and cached DiT evaluations;
  * ``settings.stream_blocks``: the DiT's and UMT5's stacked block weights are placed in host memory and each
    block is brought to the device one block ahead of its use (:mod:`fourdnex_jax.models.streaming`; same values);
    ``settings.decode_tile``: the VAE decode runs tile by tile in space (``WanVAE.decode(tile=...)``, same result):
    the two memory levers of small GPUs (``fourdnex plan --job inference``);
  * ``executable_cache=DIR``: every compiled function is loaded from / saved to serialized executables
    (:mod:`fourdnex_jax.pipelines.aot`); JAX's persistent compilation cache is set up by the caller
    (:func:`fourdnex_jax.pipelines.aot.enable_compilation_cache`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding

from fourdnex_jax import sharding
from fourdnex_jax.models import streaming
from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, preprocess_images
from fourdnex_jax.models.quantize import quantize_int8
from fourdnex_jax.models.text_encoder import clean_prompt
from fourdnex_jax.pipelines import programs
from fourdnex_jax.pipelines.aot import ExecutableCache
from fourdnex_jax.pipelines.inputs import prepare_image, sample_size
from fourdnex_jax.pipelines.outputs import valid_mask
from fourdnex_jax.pipelines.programs import Layout
from fourdnex_jax.pipelines.settings import SampleSettings, check_model, size_multiple
from fourdnex_jax.recipe import MODALITY_LAYOUT, RGB_FIRST_FRAME_MASK, XYZ_FIRST_FRAME_MASK, SixDSpec, condition_video
from fourdnex_jax.sampling import step_cache
from fourdnex_jax.sampling.unipc import UniPCConfig
from fourdnex_jax.utils import xla_cache
from fourdnex_jax.utils.progress import Progress, Stage


@dataclasses.dataclass
class ImageTo4DOutput:
    """One image's result (saved by :func:`fourdnex_jax.pipelines.outputs.save_result`).

    ``rgb`` (T, H, W, 3) uint8; ``xyz`` (T, H, W, 3) float32, the decoded pointmap in the model's normalised units
    (~[-1, 1], ``xyz_normalization``); ``valid`` (T, H, W) bool (finite, not saturated, see
    :func:`~fourdnex_jax.pipelines.outputs.valid_mask`); ``video`` (T, H, 2W, 3) float32 in [-1, 1], the decoded
    canvas before the split; ``latents`` (T', h, 2w, 16) the final fused latent; ``prompt`` the full prompt (with
    the recipe's suffix); ``seed``; ``image`` (H, W, 3) uint8 the conditioning image at the sampled size;
    ``xyz_normalization`` ('reference' | 'sequence', from the bundle's recipe); ``sizing`` how the input was
    resized (:func:`fourdnex_jax.pipelines.inputs.prepare_image`)."""

    rgb: np.ndarray
    xyz: np.ndarray
    valid: np.ndarray
    video: np.ndarray
    latents: np.ndarray
    prompt: str
    seed: int
    image: np.ndarray
    xyz_normalization: str
    sizing: dict[str, Any]


class ImageTo4D:
    """``ImageTo4D(models..., settings, spec=...)(images, prompts, seeds) -> list[ImageTo4DOutput]`` (see the
    module docstring); :meth:`from_bundle` takes the models, the preset and the recipe from a bundle.

    ``mesh``: the mesh to run on (axes of :data:`fourdnex_jax.sharding.MESH_AXES`; ``rules``: the logical-axis
    rules, default :data:`~fourdnex_jax.sharding.DEFAULT_LOGICAL_AXIS_RULES`); without one, a ``data`` axis over
    ``devices`` (default all). ``layout`` is the :class:`Layout` (``layout.images`` images per call).
    ``settings.weight_quant='int8'`` samples with an int8 copy of ``transformer`` (``transformer`` is not
    modified). ``spec``: the 6D recipe the model was trained with (prompt suffix, XYZ latent mean/std, XYZ
    normalisation; the mask values and the layout must be 4DNeX's). ``executable_cache``: a folder of serialized
    executables (loaded when their key matches, else compiled and saved; ``strict_executables=True`` raises on a
    key mismatch instead of recompiling). ``executables`` is the :class:`~fourdnex_jax.pipelines.aot.ExecutableCache`
    (None without a folder); ``stats`` counts DiT evaluations: ``dit_full`` (blocks run) and ``dit_cached`` (blocks
    skipped). With ``settings.release_after_use`` the models' device buffers are deleted during the first call
    (also those of the modules passed in, which share them): the pipeline and those modules serve that call only."""

    def __init__(self, transformer, vae, text_encoder, image_encoder, tokenizer, clip_preprocess: CLIPPreprocessConfig,
                 settings: SampleSettings, *, spec: SixDSpec, scheduler: UniPCConfig = UniPCConfig(),
                 devices: Sequence[jax.Device] | None = None, mesh: Mesh | None = None,
                 rules: Sequence[tuple[str, Any]] = sharding.DEFAULT_LOGICAL_AXIS_RULES,
                 executable_cache: str | os.PathLike | None = None, strict_executables: bool = False):
        xla_cache.install()  # a compilation cache JAX was pointed at (JAX_COMPILATION_CACHE_DIR) is checked first
        check_model(settings, transformer.config, vae.config)
        if (spec.layout, spec.rgb_first_frame_mask, spec.xyz_first_frame_mask) != (
                MODALITY_LAYOUT, RGB_FIRST_FRAME_MASK, XYZ_FIRST_FRAME_MASK):
            raise ValueError(f"spec: layout {spec.layout!r} with first-frame masks {spec.rgb_first_frame_mask} / "
                             f"{spec.xyz_first_frame_mask}; this pipeline implements 4DNeX's {MODALITY_LAYOUT!r} "
                             f"layout with {RGB_FIRST_FRAME_MASK} / {XYZ_FIRST_FRAME_MASK}")
        if mesh is not None and devices is not None:
            raise ValueError("give mesh= or devices=, not both (the mesh names its devices)")
        s = settings
        self.settings, self.spec, self.tokenizer, self.clip_preprocess = settings, spec, tokenizer, clip_preprocess
        self.dit_config, self.vae_config = transformer.config, vae.config
        self.multiple = size_multiple(transformer.config, vae.config)
        self.schedule = s.schedule(scheduler)
        if mesh is None:
            mesh = sharding.data_mesh(devices)
        self.mesh, self.rules = mesh, tuple(rules)
        self.layout = Layout.of(mesh, self.rules, s.guidance_scale, s.batch_size)
        self.batch = self.layout.images
        self._img = self.layout.image_sharding
        self._repl = sharding.replicated(mesh)
        if s.weight_quant == "int8":
            transformer = quantize_int8(transformer)  # a copy: the caller's model keeps its weights
        self.full_steps = (step_cache.full_evaluation_schedule(s.num_steps, s.step_cache_interval)
                           if s.step_cache_interval else None)
        self.stats = {"dit_full": 0, "dit_cached": 0}
        self._neg = None
        self._graphdefs, self._states = {}, {}
        modules = {"transformer": transformer, "vae": vae, "text_encoder": text_encoder,
                   "image_encoder": image_encoder}
        for name in programs.MODELS:
            graphdef, state = nnx.split(programs.streamed_module(name, modules[name], s))
            # by the parameters' logical axes; arrays already placed so (a bundle restored onto this mesh) stay;
            # with stream_blocks the DiT's and UMT5's blocks in host memory
            self._graphdefs[name] = graphdef
            host = s.stream_blocks and name in streaming.STREAMED_MODELS
            self._states[name] = jax.device_put(state, programs.weight_shardings(state, mesh, self.rules,
                                                                                 programs.staging_of(s), host))
        self.executables = None
        if executable_cache is not None:
            context = {"transformer": transformer.config.to_dict(), "vae": dataclasses.asdict(vae.config),
                       "text_encoder": dataclasses.asdict(text_encoder.config),
                       "image_encoder": dataclasses.asdict(image_encoder.config), "settings": s.to_dict(),
                       "spec": spec.to_dict(), "batch": self.batch, "mesh": dict(mesh.shape),
                       "rules": [list(r) for r in self.rules]}
            self.executables = ExecutableCache(executable_cache, context, devices=list(mesh.devices.flat),
                                               strict=strict_executables)
        self._compile()

    @classmethod
    def from_bundle(cls, bundle, settings: SampleSettings | None = None, **kwargs) -> ImageTo4D:
        """From a :class:`~fourdnex_jax.pipelines.bundle.Bundle`: its models, recipe and scheduler; ``settings``
        default to the bundle's preset (``SampleSettings.from_preset(bundle.preset)``); ``kwargs`` (``mesh``,
        ``rules``, ``devices``, ...) go to the constructor."""
        settings = settings if settings is not None else SampleSettings.from_preset(bundle.preset)
        return cls(bundle.transformer, bundle.vae, bundle.text_encoder, bundle.image_encoder, bundle.tokenizer,
                   bundle.clip_preprocess, settings, spec=bundle.spec, scheduler=bundle.scheduler, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    def _compile(self) -> None:
        # the programs (fourdnex_jax.pipelines.programs), named as before in the executable cache
        fns = programs.build(self._graphdefs, self.settings, self.spec, self.layout,
                             staging=programs.staging_of(self.settings))
        if self.executables is not None:
            fns = {name: self.executables.wrap(name, fn) for name, fn in fns.items()}
        self._encode_text, self._encode_image, self._decode, self._init = (
            fns[k] for k in ("encode_text", "encode_image", "decode", "init"))
        self._steps = {"plain": fns["step"], "full": fns["step_full"], "cached": fns["step_cached"]}
        self._noise_fns: dict[tuple[int, ...], Callable] = {}

    def _run(self, timings, key, fn, *args):
        """``fn(*args)`` traced/compiled inside the mesh context (activation constraints, ring attention), waited
        for; its seconds added to ``timings[key]``."""
        t0 = time.perf_counter()
        with sharding.mesh_context(self.mesh, self.rules):
            out = jax.block_until_ready(fn(*args))
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return out

    def _put(self, a: np.ndarray, placement: NamedSharding | None = None) -> jax.Array:
        """A host array (identical on every process) as a global array split as ``placement`` (default: by image);
        each device receives only its slice."""
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, placement or self._img, lambda index: a[index])

    def _state(self, name: str) -> nnx.State:
        state = self._states.get(name)
        if state is None:
            raise RuntimeError(f"the {name} weights were released (settings.release_after_use): this pipeline "
                               "served its one call; build a new one (or set release_after_use=False)")
        return state

    def release(self, name: str) -> None:
        """Deletes model ``name``'s device buffers (one of :data:`~fourdnex_jax.pipelines.programs.MODELS`);
        later stages that need it raise."""
        state = self._states.pop(name, None)
        if state is not None:
            for leaf in jax.tree.leaves(state):
                leaf.delete()
        self._states[name] = None

    def _check_batch(self, name: str, n: int) -> None:
        if n != self.batch:
            raise ValueError(f"{name}: one batch of {self.batch} images (layout.images) expected, got {n}")

    def to_host(self, a: jax.Array) -> np.ndarray:
        """The whole of a pipeline array as numpy on this process (gathered from the other processes if needed)."""
        return np.asarray(a) if a.is_fully_addressable else multihost_utils.process_allgather(a, tiled=True)

    def owned_rows(self, a: jax.Array) -> dict[int, np.ndarray]:
        """``{row: a[row] as numpy}`` for the rows of ``a`` (split along its leading axis) that this process owns:
        a row belongs to the process of the first device (by id) holding it, so every row has exactly one owner
        among the processes."""
        owner: dict[int, int] = {}
        n = a.shape[0]
        for device, index in sorted(a.sharding.devices_indices_map(a.shape).items(), key=lambda kv: kv[0].id):
            for r in range(n)[index[0]]:
                owner.setdefault(r, device.process_index)
        me, out = jax.process_index(), {}
        for shard in a.addressable_shards:
            rows = range(n)[shard.index[0]]
            for k, r in enumerate(rows):
                if owner[r] == me and r not in out:
                    out[r] = np.asarray(shard.data[k])
        return out

    # ------------------------------------------------------------------------------------------------------------
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(T', h, 2w, 16): the fused latent of one image sampled at ``height x width`` pixels."""
        return programs.latent_shape(self.settings, self.vae_config, height, width)

    def sample_size(self, image: np.ndarray) -> tuple[int, int]:
        """(H, W) that ``image`` (h, w, 3) is sampled at (``settings.resize_mode`` at ``settings.max_area``)."""
        h, w = np.shape(image)[:2]
        return sample_size(h, w, self.settings.max_area, self.multiple, self.settings.resize_mode)

    def check_inputs(self, images: Sequence[np.ndarray], prompts: Sequence[str], seeds: Sequence[int] | None = None,
                     noise: Sequence[np.ndarray] | None = None) -> None:
        """Raises ValueError naming the argument: ``images`` (h, w, 3) uint8, one ``prompts`` string per image,
        ``seeds`` (one per image, ``0 <= seed < 2**31``), ``noise`` (one (T', h, 2w, 16) latent per image, for
        its sampling size)."""
        if len(images) == 0:
            raise ValueError("images: give at least one image")
        for i, img in enumerate(images):
            a = np.asarray(img)
            if a.ndim != 3 or a.shape[-1] != 3 or a.dtype != np.uint8:
                raise ValueError(f"images[{i}]: expected an (H, W, 3) uint8 image, got {a.shape} {a.dtype}")
        if len(prompts) != len(images):
            raise ValueError(f"prompts: {len(images)} images but {len(prompts)} prompts")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise ValueError(f"prompts[{i}]: expected a string, got {type(p).__name__}")
        if seeds is not None:
            if len(seeds) != len(images):
                raise ValueError(f"seeds: {len(images)} images but {len(seeds)} seeds")
            for i, sd in enumerate(seeds):
                if not 0 <= int(sd) < 2**31:
                    raise ValueError(f"seeds[{i}]={sd} out of range: use 0 <= seed < 2**31")
        if noise is not None:
            if len(noise) != len(images):
                raise ValueError(f"noise: {len(images)} images but {len(noise)} initial latents")
            for i, (x, img) in enumerate(zip(noise, images)):
                want = self.latent_shape(*self.sample_size(img))
                if np.shape(x) != want:
                    raise ValueError(f"noise[{i}]: shape {np.shape(x)}, expected {want} for image {i}")

    def encode_prompt(self, prompts: Sequence[str], timings: dict[str, float] | None = None
                      ) -> tuple[jax.Array, jax.Array]:
        """One batch of prompts (captions; the recipe's suffix is appended here) -> UMT5 embeddings of the prompts
        and of the negative prompt, each (batch, text_len, text_dim) fp32, split by image. The negative prompt is
        encoded at the first call and cached for the pipeline's lifetime (it is a setting)."""
        self._check_batch("prompts", len(prompts))
        text = self._run(timings, "encode_s", self._encode_text, self._state("text_encoder"),
                         *self._tokens([self.full_prompt(p) for p in prompts]))
        return text, self.negative_embeddings(timings)

    def full_prompt(self, caption: str) -> str:
        """The prompt the model was trained with: ``caption`` + the recipe's suffix (``spec.prompt_suffix``)."""
        return caption.rstrip() + self.spec.prompt_suffix

    def negative_embeddings(self, timings: dict[str, float] | None = None) -> jax.Array:
        """The negative prompt's UMT5 embeddings (batch, text_len, text_dim) fp32, split by image, identical rows."""
        if self._neg is None:
            self._neg = self._run(timings, "encode_negative_s", self._encode_text, self._state("text_encoder"),
                                  *self._tokens([self.settings.negative_prompt] * self.batch))
        return self._neg

    def _tokens(self, prompts: Sequence[str]) -> tuple[jax.Array, jax.Array]:
        ids, mask = self.tokenizer([clean_prompt(p) for p in prompts], max_length=self.settings.text_len)
        return self._put(ids.astype(np.int32)), self._put(mask.astype(np.int32))

    def encode_image(self, images: Sequence[np.ndarray], timings: dict[str, float] | None = None
                     ) -> tuple[jax.Array, jax.Array]:
        """One batch of images, all (H, W, 3) uint8 at their sampling size -> CLIP embeddings (batch, Li, Di) fp32
        and the condition latent (batch, T', h, 2w, 16) fp32 (VAE mode of ``[image | XYZ init]`` + zero frames,
        VAE-normalised), split by image."""
        self._check_batch("images", len(images))
        if len({np.shape(img) for img in images}) != 1:
            raise ValueError(f"images: one batch has one size, got {sorted({np.shape(i) for i in images})}")
        pixels = preprocess_images(list(images), self.clip_preprocess)
        rgb0 = np.stack(images).astype(np.float32) / 127.5 - 1.0
        cond_video = condition_video(rgb0, self.settings.num_frames)
        return self._run(timings, "encode_s", self._encode_image, self._state("image_encoder"), self._state("vae"),
                         self._put(pixels), self._put(cond_video))

    def noise(self, seed: int, height: int, width: int) -> np.ndarray:
        """The initial latent of one image sampled at ``height x width``: standard normal (T', h, 2w, 16) from
        ``jax.random.key(seed)`` (independent of the batch composition, the mesh and the process count)."""
        if not 0 <= int(seed) < 2**31:
            raise ValueError(f"seed {seed} out of range: use 0 <= seed < 2**31")
        shape = self.latent_shape(height, width)
        fn = self._noise_fns.get(shape)
        if fn is None:
            fn = programs.noise_program(shape, self._repl)
            if self.executables is not None:  # the shape is not an argument: it names the program
                fn = self.executables.wrap("noise-" + "x".join(map(str, shape)), fn)
            self._noise_fns[shape] = fn
        return np.asarray(fn(self._put(np.int32(seed), self._repl)))

    def prepare_latents(self, seeds: Sequence[int], height: int, width: int,
                        noise: Sequence[np.ndarray] | None = None):
        """The solver's initial state for one batch: ``noise`` (B latents) or each seed's :meth:`noise`."""
        self._check_batch("seeds", len(seeds))
        x0 = np.stack(noise if noise is not None else [self.noise(sd, height, width) for sd in seeds])
        return self._run(None, "init_s", self._init, self._put(x0.astype(np.float32)))

    def denoise(self, solver_state, cond: jax.Array, text: jax.Array, neg: jax.Array, clip: jax.Array, *,
                on_step: Callable[[int, np.ndarray], None] | None = None, bar: Progress | None = None,
                timings: dict[str, float] | None = None) -> jax.Array:
        """The sampling loop over the schedule: one :func:`~fourdnex_jax.pipelines.programs.denoise_step` per
        step (step-cache mode per ``self.full_steps``) -> the final latents (B, T', h, 2w, 16) fp32, split by
        image. ``on_step(i, latents)`` sees every step's latents (the whole batch, as numpy)."""
        sch, residual = self.schedule, None
        dit = self._state("transformer")
        t0 = time.perf_counter()
        with sharding.mesh_context(self.mesh, self.rules):
            for i in range(len(sch.timesteps)):
                row = self._put(sch.table[i], self._repl)
                t = self._put(np.float32(sch.timesteps[i]), self._repl)
                mode = "plain" if self.full_steps is None else ("full" if self.full_steps[i] else "cached")
                out = self._steps[mode](dit, solver_state, residual if mode == "cached" else None, cond, text, neg,
                                        clip, row, t)
                solver_state, residual = out if mode == "full" else (out, residual)
                self.stats["dit_cached" if mode == "cached" else "dit_full"] += 1
                if on_step is not None:
                    on_step(i, self.to_host(solver_state.x))
                if bar is not None:
                    jax.block_until_ready(solver_state.x)
                    bar.update(info=f"t={float(sch.timesteps[i]):.0f}{' cached' if mode == 'cached' else ''}")
            latents = jax.block_until_ready(solver_state.x)
        if timings is not None:
            timings["sampling_s"] = timings.get("sampling_s", 0.0) + time.perf_counter() - t0
        return latents

    def decode(self, latents: jax.Array, timings: dict[str, float] | None = None) -> jax.Array:
        """Fused latents (B, T', h, 2w, 16) -> the decoded canvas (B, T, H, 2W, 3) fp32 in [-1, 1]
        (:func:`~fourdnex_jax.pipelines.programs.decode_latents`), split by image (a global array:
        :meth:`owned_rows` / :meth:`to_host`)."""
        return self._run(timings, "decode_s", self._decode, self._state("vae"), latents)

    # ------------------------------------------------------------------------------------------------------------
    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[str], seeds: Sequence[int] | None = None, *,
                 noise: Sequence[np.ndarray] | None = None, progress: bool = True,
                 on_step: Callable[[int, np.ndarray], None] | None = None,
                 timings: dict[str, float] | None = None) -> list[ImageTo4DOutput | None]:
        """One :class:`ImageTo4DOutput` per image (in a multi-process run: for the images this process owns, None
        for the others; every process must make the same call). ``images``: (h, w, 3) uint8 of any size (resized
        here); ``prompts``: captions (the recipe's suffix is added); ``seeds`` default to ``settings.seed`` for
        every image (4DNeX's rule: one seed for all, so each result is independent of the list order and of the
        batching); ``noise`` (one (T', h, 2w, 16) float32 latent per image) replaces the seeded initial latents,
        e.g. the official run's. ``on_step(i, latents)`` sees each step's
        (B, T', h, 2w, 16) latents of every batch. ``timings`` accumulates seconds per stage."""
        s = self.settings
        # 1. Check inputs
        self.check_inputs(images, prompts, seeds, noise)
        seeds = [int(sd) for sd in seeds] if seeds is not None else [int(s.seed)] * len(images)
        timings = timings if timings is not None else {}

        # 2. Prepare the images: resize each to its sampling size; batch the images of one size together
        prepared = [prepare_image(img, s.max_area, self.multiple, s.resize_mode) for img in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, (_, sizing) in enumerate(prepared):
            by_size.setdefault((sizing["height"], sizing["width"]), []).append(i)
        batches = [(size, idx[k:k + self.batch]) for size, idx in by_size.items()
                   for k in range(0, len(idx), self.batch)]
        # every stage reports on stderr: a line per encode / decode stage, a step bar per denoised batch
        stage = Stage if progress else (lambda label: contextlib.nullcontext())
        results: list[ImageTo4DOutput | None] = [None] * len(images)
        # batch by batch; with release_after_use stage by stage over all batches, each model freed after its stage
        groups = [batches] if s.release_after_use else [[b] for b in batches]
        for group in groups:
            pads = [idx + [idx[-1]] * (self.batch - len(idx)) for _, idx in group]  # static shapes: repeat the last
            n_img = sum(len(idx) for _, idx in group)
            with stage(f"encoding {n_img} prompt(s) and image(s)"):
                # 3. Encode the prompts (+ the cached negative prompt)
                texts = [self.encode_prompt([prompts[i] for i in pad], timings) for pad in pads]
                self._done("text_encoder")
                # 4. Encode the images (CLIP + condition latent)
                conds = [self.encode_image([prepared[i][0] for i in pad], timings) for pad in pads]
                self._done("image_encoder")
            # 5. Prepare the latents and denoise
            finals = []
            for ((height, width), _), pad, (text, neg), (clip, cond) in zip(group, pads, texts, conds):
                state = self.prepare_latents([seeds[i] for i in pad], height, width,
                                             None if noise is None else [noise[i] for i in pad])
                bar = Progress(s.num_steps, f"sampling {len(pad)} image(s) at {height}x{width}, {s.solver} "
                               f"{s.num_steps} steps", every=1) if progress else None
                finals.append(self.denoise(state, cond, text, neg, clip, on_step=on_step, bar=bar, timings=timings))
            del texts, conds
            self._done("transformer")
            # 6. Decode, split [RGB | XYZ]: each process keeps the images it owns
            for (_, idx), latents in zip(group, finals):
                with stage(f"decoding {len(idx)} video(s)"):
                    video = self.owned_rows(self.decode(latents, timings))
                latents = self.owned_rows(latents)
                for k, i in enumerate(idx):
                    if k in video:
                        if not np.isfinite(latents[k]).all() or not np.isfinite(video[k]).all():
                            raise FloatingPointError(f"sampling image {i} produced non-finite values")
                        results[i] = self._output(video[k], latents[k], prompts[i], seeds[i], *prepared[i])
            self._done("vae")
        return results

    def _done(self, name: str) -> None:
        if self.settings.release_after_use:
            self.release(name)

    def _output(self, video, latents, caption, seed, image, sizing) -> ImageTo4DOutput:
        w = video.shape[2] // 2
        rgb = np.clip(np.round((video[..., :w, :] / 2 + 0.5) * 255), 0, 255).astype(np.uint8)
        xyz = video[..., w:, :].copy()
        return ImageTo4DOutput(rgb=rgb, xyz=xyz, valid=valid_mask(xyz, self.spec.xyz_normalization), video=video,
                               latents=latents, prompt=self.full_prompt(caption), seed=int(seed), image=image,
                               xyz_normalization=self.spec.xyz_normalization, sizing=sizing)
