"""Image -> 4D (RGB video + XYZ pointmap video) with the 4DNeX recipe, in JAX.

Per image (what 4DNeX's ``WanSameRopeWBWImageToVideoPipeline`` does, §4 of the reference notes):
  1. prompt ``caption + " POINTMAP_STYLE."`` and the negative prompt (default empty) -> UMT5 embeddings, zero
     past each prompt's length, padded to ``text_len``;
  2. the image, resized to cover (H, W) (antialiased bilinear) and centre-cropped -> CLIP ``hidden_states[-2]``;
  3. condition: frame 0 = ``[RGB | slanted-plane XYZ init]`` (H x 2W, z = -y), then T - 1 zero frames, VAE-encoded
     with the mode and VAE-normalised (no XYZ mu/sigma: quirk 8) -- exactly the training condition of
     :mod:`fourdnex_jax.data.encode`; guided mask 1 (RGB) / 0.5 (XYZ) on latent frame 0;
  4. noise (T', h, 2w, 16) from the image's seed (or injected), sampled with UniPC (Wan's scheduler) or Euler,
     classifier-free guidance batched with the conditional pass (one DiT call of 2B per step);
  5. the XYZ half of the latent un-normalised (``z * 1.70 - 0.13``), the fused latent VAE-de-normalised and decoded
     in one pass (the reference decodes the 2W-wide latent), split into RGB | XYZ in pixel space.

Static shapes: every batch has the same shape (the last one is padded by repetition), the solver's step is one
compiled function whose coefficients are a traced table row (:mod:`fourdnex_jax.sampling.unipc`), so a run
compiles once. Data parallel: a 1-D ``data`` mesh over the given devices; models replicated, the batch split.
The negative prompt is encoded once per pipeline (at the batch shape, so the numbers are those of a per-batch
encoding) and reused by every batch.

Fast paths (each measured by ``tools/sampling_benchmark.py``):
  * fewer steps / Euler: ``settings.num_steps`` / ``settings.solver``;
  * ``settings.weight_quant='int8'``: the DiT's block linears are quantised in place to int8 weights with
    per-output-channel fp32 scales (:mod:`fourdnex_jax.models.quantize`);
  * ``settings.step_cache_interval=k >= 1``: the transformer blocks run in full every k steps (and at the last
    step); the steps between reuse the last block residual (:mod:`fourdnex_jax.sampling.step_cache`);
    ``ImageTo4D.stats`` counts full and cached DiT evaluations;
  * ``executable_cache=DIR``: every compiled function is loaded from / saved to serialized executables
    (:mod:`fourdnex_jax.pipelines.aot`); JAX's persistent compilation cache is set up by the caller
    (:func:`fourdnex_jax.pipelines.aot.enable_compilation_cache`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fourdnex_jax.data.captions import training_prompt
from fourdnex_jax.data.encode import XYZ_LATENT_MEAN, XYZ_LATENT_STD, condition_video
from fourdnex_jax.data.resize import cover_crop_plan, resize_rgb
from fourdnex_jax.io_utils import Progress
from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, preprocess_images
from fourdnex_jax.models.text_encoder import clean_prompt, wan_prompt_embeds
from fourdnex_jax.models.transformer import layouts
from fourdnex_jax.models.quantize import quantize_int8
from fourdnex_jax.pipelines.aot import ExecutableCache
from fourdnex_jax.pipelines.conditioning import dit_input, guided_mask
from fourdnex_jax.sampling import step_cache
from fourdnex_jax.sampling.flow_matching import SOLVERS, classifier_free_guidance, make_schedule, solver_fns
from fourdnex_jax.sampling.unipc import UniPCConfig

#: ``SampleSettings.weight_quant`` values: 'none' (the checkpoint's dtypes) or 'int8' (weight-only, block linears).
WEIGHT_QUANT = ("none", "int8")
#: Settings that a config's ``sample`` section may omit (fast-path options; their defaults are the exact sampler).
_OPTIONAL_SETTINGS = ("weight_quant", "step_cache_interval")


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """Sampling settings (``config.sample``); sizes are per modality in pixels.

    ``weight_quant``: 'none' | 'int8' (the DiT's block linears, see :mod:`fourdnex_jax.models.quantize`).
    ``step_cache_interval``: 0 = no step cache (the exact sampler); k >= 1 = the transformer blocks run in full
    every k steps and at the last step, the steps between reuse the cached block residual (k = 1: every step full,
    bit-identical to 0; see :mod:`fourdnex_jax.sampling.step_cache`)."""

    num_frames: int = 49
    height: int = 480
    width: int = 720
    num_steps: int = 50
    solver: str = "unipc"
    flow_shift: float = 3.0
    guidance_scale: float = 5.0
    negative_prompt: str = ""
    seed: int = 42
    text_len: int = 512
    batch_size: int = 1
    xyz_normalization: str = "reference"
    weight_quant: str = "none"
    step_cache_interval: int = 0

    def __post_init__(self):
        if self.weight_quant not in WEIGHT_QUANT:
            raise ValueError(f"weight_quant={self.weight_quant!r}; use one of {WEIGHT_QUANT}")
        if int(self.step_cache_interval) < 0:
            raise ValueError(f"step_cache_interval={self.step_cache_interval}; use 0 (off) or k >= 1 (full DiT "
                             "evaluation every k steps)")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r}; use one of {SOLVERS}")

    @classmethod
    def from_config(cls, sample) -> "SampleSettings":
        """From ``config.sample``: every field required except the fast-path options (defaults when absent)."""
        return cls(**{f.name: sample[f.name] for f in dataclasses.fields(cls)
                      if f.name not in _OPTIONAL_SETTINGS or f.name in sample})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def prepare_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (height, width, 3) uint8: cover resize (antialiased bilinear) + centre crop, as the
    training clips were made (:mod:`fourdnex_jax.data.resize`)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    plan = cover_crop_plan(image.shape[0], image.shape[1], height, width)
    return resize_rgb(image[None], plan)[0]


class Models(nnx.Module):
    """All models in one module, so one ``nnx.split`` replicates them."""

    def __init__(self, transformer, vae, text_encoder, image_encoder):
        self.transformer, self.vae = transformer, vae
        self.text_encoder, self.image_encoder = text_encoder, image_encoder


@dataclasses.dataclass
class Result:
    """One image's output: ``rgb`` (T, H, W, 3) uint8, ``xyz`` (T, H, W, 3) float32 (the decoded, normalised
    pointmap in [-1, 1]), ``video`` (T, H, 2W, 3) float32 in [-1, 1] (decoded, before the split), ``latents`` the
    final fused latent (T', h, 2w, 16), and the inputs that made it."""

    rgb: np.ndarray
    xyz: np.ndarray
    video: np.ndarray
    latents: np.ndarray
    prompt: str
    seed: int
    image: np.ndarray


class ImageTo4D:
    """``ImageTo4D(models..., settings)(images, prompts, seeds) -> list[Result]`` (see the module docstring).

    ``settings.weight_quant='int8'`` quantises ``transformer`` *in place* (pass ``nnx.clone(transformer)`` to keep
    the original). ``executable_cache``: a folder of serialized executables (loaded when their key matches, else
    compiled and saved; ``strict_executables=True`` raises on a key mismatch instead of recompiling).
    ``executables`` is the :class:`~fourdnex_jax.pipelines.aot.ExecutableCache` (None without a folder);
    ``stats`` counts DiT evaluations per batch: ``dit_full`` (blocks run) and ``dit_cached`` (blocks skipped)."""

    def __init__(self, transformer, vae, text_encoder, image_encoder, tokenizer, clip_preprocess: CLIPPreprocessConfig,
                 settings: SampleSettings, *, scheduler: UniPCConfig = UniPCConfig(),
                 devices: Sequence[jax.Device] | None = None,
                 executable_cache: str | os.PathLike | None = None, strict_executables: bool = False):
        cfg = transformer.config
        if cfg.modality_layout != "width":
            raise ValueError(f"the 4DNeX pipeline needs the width layout, the DiT has {cfg.modality_layout!r}")
        vcfg = vae.config
        s = settings
        if (s.num_frames - 1) % vcfg.temporal_factor or s.height % (vcfg.spatial_factor * cfg.patch_size[1]) \
                or s.width % (vcfg.spatial_factor * cfg.patch_size[2]):
            raise ValueError(f"frames must be 1 + {vcfg.temporal_factor}k and height/width multiples of "
                             f"{vcfg.spatial_factor * cfg.patch_size[1]}; got {s.num_frames}x{s.height}x{s.width}")
        self.settings, self.tokenizer, self.clip_preprocess = settings, tokenizer, clip_preprocess
        self.dit_config, self.vae_config = cfg, vcfg
        self.schedule = make_schedule(s.solver, s.num_steps, s.flow_shift, scheduler)
        self.latent_shape = (1 + (s.num_frames - 1) // vcfg.temporal_factor, s.height // vcfg.spatial_factor,
                             2 * (s.width // vcfg.spatial_factor), vcfg.z_dim)
        self.mesh = Mesh(np.asarray(devices if devices is not None else jax.devices()), ("data",))
        self.batch = s.batch_size * self.mesh.size
        if s.weight_quant == "int8":
            quantize_int8(transformer)
        self.full_steps = (step_cache.full_evaluation_schedule(s.num_steps, s.step_cache_interval)
                           if s.step_cache_interval else None)
        self.stats = {"dit_full": 0, "dit_cached": 0}
        self._neg = None
        graphdef, state = nnx.split(Models(transformer, vae, text_encoder, image_encoder))
        self._state = jax.device_put(state, NamedSharding(self.mesh, P()))
        self._data = NamedSharding(self.mesh, P("data"))
        self._repl = NamedSharding(self.mesh, P())
        self.executables = None
        if executable_cache is not None:
            context = {"transformer": cfg.to_dict(), "vae": dataclasses.asdict(vcfg),
                       "text_encoder": dataclasses.asdict(text_encoder.config),
                       "image_encoder": dataclasses.asdict(image_encoder.config), "settings": s.to_dict(),
                       "batch": self.batch}
            self.executables = ExecutableCache(executable_cache, context, devices=list(self.mesh.devices.flat),
                                               strict=strict_executables)
        self._compile(graphdef)

    @classmethod
    def from_bundle(cls, bundle, settings: SampleSettings, devices: Sequence[jax.Device] | None = None, **kwargs):
        """From a :class:`~fourdnex_jax.pipelines.bundle.Bundle`; ``kwargs`` go to the constructor."""
        return cls(bundle.transformer, bundle.vae, bundle.text_encoder, bundle.image_encoder, bundle.tokenizer,
                   bundle.clip_preprocess, settings, scheduler=bundle.scheduler, devices=devices, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    def _compile(self, graphdef) -> None:
        s = self.settings
        t_lat, h_lat, w2, _ = self.latent_shape
        guided = s.guidance_scale > 1.0  # diffusers: do_classifier_free_guidance = guidance_scale > 1
        init_fn, step_fn = solver_fns(s.solver)
        data = self._data

        @functools.partial(jax.jit, out_shardings=data)
        def encode(state, ids, mask, pixels, cond_video):
            m = nnx.merge(graphdef, state)
            text = wan_prompt_embeds(m.text_encoder, ids, mask).astype(jnp.float32)
            clip = m.image_encoder(pixels).astype(jnp.float32)
            vae = m.vae
            cond = vae.normalize_latents(vae.encode(cond_video).mode().astype(jnp.float32))
            return text, clip, cond

        @functools.partial(jax.jit, out_shardings=data)
        def encode_text(state, ids, mask):
            return wan_prompt_embeds(nnx.merge(graphdef, state).text_encoder, ids, mask).astype(jnp.float32)

        def velocity(dit, x, cond, text, neg, clip, t, residual, parts):
            """Guided velocity (B, T', h, 2w, 16) fp32 of samples x; ``parts``: through step_cache.forward (which
            also returns the block residual of a full evaluation) instead of the model's __call__."""
            b = x.shape[0]
            mask = guided_mask(b, t_lat, h_lat, w2 // 2, "width")
            inp = dit_input(x, mask, cond)
            if guided:  # [cond, uncond] interleaved per sample, so each device keeps both halves of its samples
                pair = lambda a, c: jnp.stack([a, c], 1).reshape(2 * b, *a.shape[1:])  # noqa: E731
                args = (pair(inp, inp), jnp.full((2 * b,), t, jnp.float32), pair(text, neg), pair(clip, clip))
            else:
                args = (inp, jnp.full((b,), t, jnp.float32), text, clip)
            v, new_residual = step_cache.forward(dit, *args, residual) if parts else (dit(*args), None)
            v = v.astype(jnp.float32)
            if guided:
                v = v.reshape(b, 2, *v.shape[1:])
                v = classifier_free_guidance(v[:, 0], v[:, 1], s.guidance_scale)
            return v, new_residual

        @functools.partial(jax.jit, out_shardings=data)
        def step(state, solver_state, cond, text, neg, clip, row, t):
            dit = nnx.merge(graphdef, state).transformer
            v, _ = velocity(dit, solver_state.x, cond, text, neg, clip, t, None, parts=False)
            return step_fn(solver_state, v, row)

        @functools.partial(jax.jit, out_shardings=data)
        def step_full(state, solver_state, cond, text, neg, clip, row, t):
            dit = nnx.merge(graphdef, state).transformer
            v, residual = velocity(dit, solver_state.x, cond, text, neg, clip, t, None, parts=True)
            return step_fn(solver_state, v, row), residual

        @functools.partial(jax.jit, out_shardings=data)
        def step_cached(state, solver_state, residual, cond, text, neg, clip, row, t):
            dit = nnx.merge(graphdef, state).transformer
            v, _ = velocity(dit, solver_state.x, cond, text, neg, clip, t, residual, parts=True)
            return step_fn(solver_state, v, row)

        @functools.partial(jax.jit, out_shardings=data)
        def decode(state, latents):
            vae = nnx.merge(graphdef, state).vae
            rgb, xyz = layouts.split(latents, "width")
            xyz = xyz * XYZ_LATENT_STD + XYZ_LATENT_MEAN  # undo 4DNeX's XYZ latent normalisation
            fused = vae.denormalize_latents(layouts.fuse(rgb, xyz, "width"))
            return vae.decode(fused).astype(jnp.float32)

        fns = {"encode": encode, "encode_text": encode_text, "step": step, "step_full": step_full,
               "step_cached": step_cached, "decode": decode, "init": jax.jit(init_fn, out_shardings=data)}
        if self.executables is not None:
            fns = {name: self.executables.wrap(name, fn) for name, fn in fns.items()}
        self._encode, self._encode_text, self._decode, self._init = (fns[k] for k in ("encode", "encode_text",
                                                                                      "decode", "init"))
        self._step, self._step_full, self._step_cached = fns["step"], fns["step_full"], fns["step_cached"]

    # ------------------------------------------------------------------------------------------------------------
    def noise(self, seed: int) -> np.ndarray:
        """The initial latent of one image: standard normal (T', h, 2w, 16) from ``jax.random.key(seed)``
        (independent of the batch composition and of the device count)."""
        return np.asarray(jax.random.normal(jax.random.key(seed), self.latent_shape, jnp.float32))

    def host_inputs(self, images: Sequence[np.ndarray], prompts: Sequence[str]):
        """(token ids (B, text_len) int32, attention mask (B, text_len) int32, CLIP pixels, condition video
        (B, T, H, 2W, 3)) of one batch, and the full prompts (with the 4DNeX suffix)."""
        s = self.settings
        full = [training_prompt(p) for p in prompts]
        ids, mask = self.tokenizer([clean_prompt(p) for p in full], max_length=s.text_len)
        pixels = preprocess_images(list(images), self.clip_preprocess)
        rgb0 = np.stack(images).astype(np.float32) / 127.5 - 1.0
        cond_video = condition_video(rgb0, s.num_frames)
        return (ids.astype(np.int32), mask.astype(np.int32), pixels, cond_video), full

    def negative_embeddings(self, timings: dict[str, float] | None = None) -> jax.Array:
        """The negative prompt's UMT5 embeddings (batch, text_len, text_dim) fp32, data-sharded, identical rows:
        encoded at the first call and cached for the pipeline's lifetime (the prompt is a setting)."""
        if self._neg is None:
            s = self.settings
            ids, mask = self.tokenizer([clean_prompt(s.negative_prompt)] * self.batch, max_length=s.text_len)
            put = lambda a: jax.device_put(a.astype(np.int32), self._data)  # noqa: E731
            self._neg = self._timed(timings if timings is not None else {}, "encode_negative_s", self._encode_text,
                                    self._state, put(ids), put(mask))
        return self._neg

    def __call__(self, images: Sequence[np.ndarray], prompts: Sequence[str], seeds: Sequence[int] | None = None, *,
                 noise: Sequence[np.ndarray] | None = None, progress: bool = True,
                 on_step: Callable[[int, np.ndarray], None] | None = None,
                 timings: dict[str, float] | None = None) -> list[Result]:
        """Generates one result per image. ``images`` are (H, W, 3) uint8 at the settings' size (see
        :func:`prepare_image`); ``seeds`` default to ``settings.seed + index``; ``noise`` replaces the seeded
        initial latents (parity tests). ``on_step(i, latents)`` sees each step's (B, T', h, 2w, 16) latents of
        every batch. ``timings`` accumulates seconds per stage."""
        n = len(images)
        if len(prompts) != n:
            raise ValueError(f"{n} images but {len(prompts)} prompts")
        seeds = list(seeds) if seeds is not None else [self.settings.seed + i for i in range(n)]
        s = self.settings
        for img in images:
            if np.asarray(img).shape != (s.height, s.width, 3):
                raise ValueError(f"image of shape {np.asarray(img).shape}, expected {(s.height, s.width, 3)}; "
                                 "use prepare_image")
        timings = timings if timings is not None else {}
        results: list[Result] = []
        bar = Progress(s.num_steps * -(-n // self.batch), f"sampling {n} image(s), {s.solver} {s.num_steps} steps",
                       every=1) if progress else None
        for start in range(0, n, self.batch):
            idx = list(range(start, min(start + self.batch, n)))
            pad = idx + [idx[-1]] * (self.batch - len(idx))
            results += self._run_batch([images[i] for i in pad], [prompts[i] for i in pad], [seeds[i] for i in pad],
                                       None if noise is None else [noise[i] for i in pad], bar, on_step,
                                       timings)[:len(idx)]
        return results

    def _timed(self, timings, key, fn, *args):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        return out

    def _run_batch(self, images, prompts, seeds, noise, bar, on_step, timings) -> list[Result]:
        arrays, full = self.host_inputs(images, prompts)
        put = lambda a: jax.device_put(a, self._data)  # noqa: E731
        neg = self.negative_embeddings(timings)
        text, clip, cond = self._timed(timings, "encode_s", self._encode, self._state, *map(put, arrays))
        x0 = np.stack(noise if noise is not None else [self.noise(sd) for sd in seeds]).astype(np.float32)
        if x0.shape[1:] != self.latent_shape:
            raise ValueError(f"noise of shape {x0.shape[1:]}, expected {self.latent_shape}")
        state = self._init(put(x0))
        sch = self.schedule
        residual = None
        t0 = time.perf_counter()
        for i in range(len(sch.timesteps)):
            row = jax.device_put(sch.table[i], self._repl)
            t = np.float32(sch.timesteps[i])
            if self.full_steps is None:
                state = self._step(self._state, state, cond, text, neg, clip, row, t)
            elif self.full_steps[i]:
                state, residual = self._step_full(self._state, state, cond, text, neg, clip, row, t)
            else:
                state = self._step_cached(self._state, state, residual, cond, text, neg, clip, row, t)
            cached = self.full_steps is not None and not self.full_steps[i]
            self.stats["dit_cached" if cached else "dit_full"] += 1
            if on_step is not None:
                on_step(i, np.asarray(state.x))
            if bar is not None:
                jax.block_until_ready(state.x)
                bar.update(info=f"t={float(sch.timesteps[i]):.0f}{' cached' if cached else ''}")
        latents = jax.block_until_ready(state.x)
        timings["sampling_s"] = timings.get("sampling_s", 0.0) + time.perf_counter() - t0
        video = np.asarray(self._timed(timings, "decode_s", self._decode, self._state, latents))
        latents = np.asarray(latents)
        if not np.isfinite(latents).all() or not np.isfinite(video).all():
            raise FloatingPointError("sampling produced non-finite values")
        w = video.shape[3] // 2
        out = []
        for k in range(len(images)):
            rgb = np.clip(np.round((video[k, ..., :w, :] / 2 + 0.5) * 255), 0, 255).astype(np.uint8)
            out.append(Result(rgb=rgb, xyz=video[k, ..., w:, :].copy(), video=video[k], latents=latents[k],
                              prompt=full[k], seed=int(seeds[k]), image=np.asarray(images[k])))
        return out

    def condition_latents(self, images: Sequence[np.ndarray], prompts: Sequence[str]) -> dict[str, np.ndarray]:
        """The encoded inputs of one batch (for tests): text, negative text (the cached rows, one per image), CLIP
        embeddings, condition latent."""
        n = len(images)
        if not 0 < n <= self.batch:
            raise ValueError(f"condition_latents takes one batch: 1 to {self.batch} images, got {n}")
        pad = list(range(n)) + [n - 1] * (self.batch - n)
        arrays, _ = self.host_inputs([images[i] for i in pad], [prompts[i] for i in pad])
        text, clip, cond = self._encode(self._state, *(jax.device_put(a, self._data) for a in arrays))
        neg = np.asarray(self.negative_embeddings())
        return {"text": np.asarray(text)[:n], "negative": np.repeat(neg[:1], n, 0), "clip": np.asarray(clip)[:n],
                "cond": np.asarray(cond)[:n]}
