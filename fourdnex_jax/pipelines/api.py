"""The short Python API, in the shape diffusers users know::

    from fourdnex_jax import ImageTo4DPipeline, example_image
    pipe = ImageTo4DPipeline.from_pretrained()        # no argument (or "tiny"): the shipped tiny model
    result = pipe(example_image(), "a red cube on a table")
    result.save("out/api")
    print(result)  # shapes, the out-of-domain note (when it applies) and the cameras' status

:meth:`ImageTo4DPipeline.from_pretrained` reads a bundle (the layout of ``fourdnex convert``; default: the shipped
tiny bundle): its models, its sampling preset (``manifest.json: sampling_preset``, overridable by keyword) and its
recipe. Calling the pipeline takes one image -- a path (its caption from ``IMG.txt`` next to it when no prompt is
given), a PIL image or an (H, W, 3) uint8 array -- or a list of them (:meth:`ImageTo4DPipeline.generate`) and
returns :class:`Result` objects: ``rgb`` (T, H, W, 3) uint8, ``xyz`` (T, H, W, 3) float32, ``valid`` (T, H, W) bool,
and, computed on first use by the closed-form registration (:mod:`fourdnex_jax.geometry`), ``cameras`` and
``depth``; ``note`` (the out-of-domain note, or None) and ``camera_status`` (the cameras' verdict, one line), both
also in the result's ``repr``. ``Result.save(dir)`` writes exactly the files ``fourdnex generate`` writes
(:func:`fourdnex_jax.pipelines.outputs.save_result`; the command is built on this class).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from fourdnex_jax.media.images import MIN_SIDE, ImageLike, TargetSize, load_image
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines import domain as domain_lib
from fourdnex_jax.pipelines import programs
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D, ImageTo4DOutput
from fourdnex_jax.pipelines.inputs import caption_for_image, noise_latent, resize_target
from fourdnex_jax.pipelines.outputs import save_result
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.sharding import DEFAULT_LOGICAL_AXIS_RULES
from fourdnex_jax.utils import xla_cache
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.resources import bundle_path


def as_image(image: ImageLike, *, target: TargetSize | None = None, min_side: int | None = MIN_SIDE
             ) -> np.ndarray:
    """A path, a PIL image or an array -> (H, W, 3) uint8, decoded exactly as ``fourdnex generate`` decodes it
    (:func:`fourdnex_jax.media.images.load_image`: 16-bit and 32-bit pixels scaled, transparency composited over
    white, EXIF orientation applied, floats in [0, 1]; an image under ``min_side`` pixels a side refused)."""
    return load_image(image, target=target, min_side=min_side)[0]


@dataclasses.dataclass
class Result:
    """One image's 4D result: ``rgb`` (T, H, W, 3) uint8, ``xyz`` (T, H, W, 3) float32 (the normalised pointmap in
    the first camera's frame, OpenCV axes), ``valid`` (T, H, W) bool; ``cameras`` / ``depth`` from the closed-form
    registration (computed on first access); ``output`` the pipeline's full
    :class:`~fourdnex_jax.pipelines.image_to_4d.ImageTo4DOutput`; ``summary`` what ``summary.json`` records."""

    output: ImageTo4DOutput
    summary: dict[str, Any]
    source: str | None = None  # the input's path, when it was given as one
    _registration: Any = dataclasses.field(default=None, repr=False)

    @property
    def rgb(self) -> np.ndarray:
        return self.output.rgb

    @property
    def xyz(self) -> np.ndarray:
        return self.output.xyz

    @property
    def valid(self) -> np.ndarray:
        return self.output.valid

    @property
    def registration(self):
        """The :class:`fourdnex_jax.geometry.register.Registration` of the pointmaps (cached)."""
        if self._registration is None:
            from fourdnex_jax.geometry.scene import register_pointmaps

            self._registration = register_pointmaps(self.xyz, self.valid, self.output.xyz_normalization,
                                                    rgb=self.rgb)
        return self._registration

    @property
    def cameras(self) -> dict[str, Any]:
        """``K`` (3, 3) pixels, ``cam_to_world`` (T, 4, 4) OpenCV, world = camera 0, ``status`` (which cameras are
        results: ``registered`` / ``partial`` / ``failed``, with a one-line message), ``scene_4d`` (whether the
        frames form one 4D scene: ``.consistent``, ``.message()``, :mod:`fourdnex_jax.geometry.consistency`)."""
        reg = self.registration
        return {"K": reg.K, "cam_to_world": reg.c2w, "status": reg.status, "scene_4d": reg.clip}

    @property
    def depth(self) -> np.ndarray:
        """(T, H, W) float32 z-depth in each recovered camera, 0 where invalid."""
        return self.registration.depth

    @property
    def note(self) -> str | None:
        """The out-of-domain note (the input looks unlike the images the bundle was trained on), or None."""
        return (self.summary.get("input_domain") or {}).get("note")

    @property
    def camera_status(self) -> str:
        """The cameras' verdict in one line (``cameras: 9/9 frames, ...`` or why they are not a result), as
        ``fourdnex generate`` prints it last; computes the registration on first use."""
        return self.registration.status.message()

    def __repr__(self) -> str:
        t, h, w = self.xyz.shape[:3]
        lines = [f"Result({self.source or 'image'}: {t} frames of {h}x{w}, rgb uint8, xyz float32, valid bool)",
                 self.camera_status]
        return "\n".join(lines + ([self.note] if self.note else []))

    def save(self, out_dir: str | os.PathLike, *, geometry: bool = True, fps: int = 8, overwrite: bool = False,
             official: bool = False, inputs: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
        """Writes the files ``fourdnex generate`` writes into ``out_dir`` (published as a unit: the previous
        result or the new one, never a mix) and returns the summary written; ``geometry=False`` leaves out
        cameras, depth and the exports; ``official=True`` adds the official 4DNeX layout (``official_canvas.mp4``
        at 24 fps, ``official_pointmap.npz``: :mod:`fourdnex_jax.pipelines.outputs`). A folder already holding a
        result is kept unless ``overwrite``, which replaces only a folder fourdnex wrote (its own files; the
        user's other files stay); a folder holding this result's input image or one of ``inputs`` is refused.
        The registration is computed once: :attr:`cameras` / :attr:`depth` read before or after share it."""
        if geometry:
            _ = self.registration  # computed here once, reused by save_result and by later reads of .cameras
        inputs = [*inputs, *([self.source] if self.source else [])]
        return save_result(self.output, out_dir, geometry=geometry, summary=self.summary, fps=fps,
                           overwrite=overwrite, registration=self._registration, official=official, inputs=inputs)


class ImageTo4DPipeline:
    """``ImageTo4DPipeline.from_pretrained(bundle_dir)(image, prompt) -> Result`` (module docstring). ``pipe``
    is the underlying :class:`~fourdnex_jax.pipelines.image_to_4d.ImageTo4D`, ``bundle`` the loaded bundle,
    ``settings`` the resolved sampling settings, ``timings`` seconds spent loading and setting up.

    Why two classes with two output types, as diffusers keeps a pipeline apart from its building blocks:
    :class:`~fourdnex_jax.pipelines.image_to_4d.ImageTo4D` is the array-level sampler (uint8 arrays and captions
    in, :class:`~fourdnex_jax.pipelines.image_to_4d.ImageTo4DOutput` arrays out; batched, sharded, multi-process;
    what evaluation, the benchmarks and the parity tests drive). This class is the user's front door on top of it:
    it resolves a bundle and its preset (``from_pretrained``), takes paths / PIL images / captions next to the
    images, checks each input against the bundle's training domain and returns :class:`Result`, which adds what
    a user reads and saves (cameras and depth from the registration, ``summary.json``, ``save``). Both take a
    loaded bundle (``from_bundle``); this one's builds the other's."""

    def __init__(self, bundle: bundle_lib.Bundle, settings: SampleSettings, pipe: ImageTo4D, *,
                 checkpoint: str, transformer: str | None = None, timings: dict[str, float] | None = None,
                 run_info: dict[str, Any] | None = None):
        self.bundle, self.settings, self.pipe = bundle, settings, pipe
        self.checkpoint, self.transformer = checkpoint, transformer
        self.timings = dict(timings or {})
        self.run_info = dict(run_info or {})
        self.domain = domain_lib.load_domain(bundle.directory)  # None: no narrow training domain declared

    @classmethod
    def from_pretrained(cls, bundle_dir: str | os.PathLike | None = None, *, transformer: str | os.PathLike | None
                        = None, sample: Any = None, devices=None, mesh=None, rules=DEFAULT_LOGICAL_AXIS_RULES,
                        executable_cache: str | os.PathLike | None = None, **overrides: Any) -> ImageTo4DPipeline:
        """Loads a bundle (None or ``"tiny"``: the shipped tiny one; else a bundle folder) and sets up sampling with its
        preset. ``transformer``:
        take the DiT (base + adapter) from another bundle folder; ``sample``: a config's ``sample`` section;
        ``overrides``: any :class:`~fourdnex_jax.pipelines.settings.SampleSettings` field (``num_steps=8``,
        ``solver='euler'``, ``seed=0``, ...). Settings are checked against the model configs before any weights
        load; ``devices`` / ``mesh`` / ``rules`` / ``executable_cache`` go to :class:`ImageTo4D` (with a ``mesh``
        the weights are restored straight into their shards on it, e.g. ``sharding.make_mesh(config.sharding)``)."""
        xla_cache.install()  # an untrusted compilation cache fails here, before any weights load
        directory = bundle_path(bundle_dir)
        settings = bundle_lib.resolve_settings(directory, sample, transformer_dir=transformer, **overrides)
        t0 = time.perf_counter()
        bundle = bundle_lib.load_bundle(directory, transformer_dir=transformer, mesh=mesh, rules=rules,
                                        host_blocks=settings.stream_blocks)
        load_s = time.perf_counter() - t0
        return cls.from_bundle(bundle, settings, devices=devices, mesh=mesh, rules=rules,
                               executable_cache=executable_cache,
                               transformer=None if transformer is None else str(transformer),
                               timings={"load_models": load_s})

    @classmethod
    def from_bundle(cls, bundle: bundle_lib.Bundle, settings: SampleSettings | None = None, *, devices=None,
                    mesh=None, rules=DEFAULT_LOGICAL_AXIS_RULES, executable_cache: str | os.PathLike | None = None,
                    transformer: str | None = None, timings: dict[str, float] | None = None,
                    run_info: dict[str, Any] | None = None) -> ImageTo4DPipeline:
        """From an already loaded bundle (e.g. a training run's DiT on its base bundle's towers)."""
        settings = settings if settings is not None else SampleSettings.from_preset(bundle.preset)
        t0 = time.perf_counter()  # ImageTo4D checks the settings against the models (settings.check_model)
        pipe = ImageTo4D.from_bundle(bundle, settings, devices=devices, mesh=mesh, rules=rules,
                                     executable_cache=executable_cache)
        timings = dict(timings or {}, setup=time.perf_counter() - t0)
        return cls(bundle, settings, pipe, checkpoint=str(bundle.directory), transformer=transformer,
                   timings=timings, run_info=run_info)

    def __call__(self, image: ImageLike, prompt: str | None = None, *, seed: int | None = None,
                 noise: np.ndarray | None = None, progress: bool = True) -> Result:
        """One image (path, PIL image or array) and its caption (default: ``IMG.txt`` next to a path, else
        empty) -> its :class:`Result`. ``seed`` defaults to ``settings.seed``; ``noise``: the exact initial
        latent instead of the seeded one (see :meth:`generate`)."""
        return self.generate([image], [prompt], seeds=None if seed is None else [seed], noise=noise,
                             progress=progress)[0]

    def generate(self, images: Sequence[ImageLike], prompts: Sequence[str | None] | None = None, *,
                 seeds: Sequence[int] | None = None, noise: Any = None, progress: bool = True,
                 summary: dict[str, Any] | None = None) -> list[Result | None]:
        """Many images in one run (batched by size, split over the mesh) -> one :class:`Result` each (in a
        multi-process run: for the images this process owns, None for the others; every process makes the same
        call). ``prompts``: one per image (None: its ``IMG.txt`` or empty); ``seeds``: one per image (default:
        ``settings.seed`` for every image, as 4DNeX does, so a result does not depend on its position in the list);
        ``noise``: the initial latent, one float32 array for every image or a list with one per image, each
        (T', h, 2w, 16) or (1, 16, T', h, 2w) (the official NCTHW ``randn_tensor`` output) for the image's sampling
        size (:func:`fourdnex_jax.pipelines.inputs.noise_latent`); ``summary``: extra keys recorded in every
        result's ``summary.json``."""
        prompts = list(prompts) if prompts is not None else [None] * len(images)
        if len(prompts) != len(images):
            raise InputError(f"prompts: {len(images)} images but {len(prompts)} prompts")
        sources = [str(i) if isinstance(i, (str, os.PathLike)) else None for i in images]
        s = self.settings
        target = functools.partial(resize_target, max_area=s.max_area, multiple=self.pipe.multiple,
                                   mode=s.resize_mode)  # a large JPEG decodes at reduced size (media/images.py)
        decoded = [load_image(i, target=target, min_side=MIN_SIDE) for i in images]
        arrays = [rgb for rgb, _ in decoded]
        captions = [p if p is not None else (caption_for_image(s) if s is not None else "")
                    for p, s in zip(prompts, sources)]
        latents = self._noise(noise, arrays, sources)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        outputs = self.pipe(arrays, captions, seeds, noise=latents, progress=progress, timings=timings)
        gen_s = time.perf_counter() - t0
        checks = [domain_lib.check_image(self.domain, o.image) if o is not None else None for o in outputs]
        names = [s or f"image {i}" for i, s in enumerate(sources)]
        mine = [i for i, c in enumerate(checks) if c is not None]  # this process's images
        self.last_run = {"checks": [checks[i] for i in mine], "names": [names[i] for i in mine], "generate_s": gen_s,
                         "timings": timings}
        results = []
        for o, src, check, (_, decode) in zip(outputs, sources, checks, decoded):
            if o is None:  # another process's image
                results.append(None)
                continue
            info = self._summary(o, timings, gen_s, len(outputs))
            info["input"] = src
            info["initial_noise"] = ("seeded: jax.random.normal(jax.random.key(seed), float32)" if noise is None
                                     else "given (noise=)")
            info["input_decode"] = decode
            info["input_domain"] = dict(check, note=domain_lib.notice([check], [src or "image"], self.checkpoint))
            results.append(Result(o, dict(info, **(summary or {})), source=src))
        return results

    def _noise(self, noise: Any, arrays: Sequence[np.ndarray], sources: Sequence[str | None]
               ) -> list[np.ndarray] | None:
        """``noise`` (None, one array for all images, or one per image) -> one (T', h, 2w, 16) latent per image."""
        if noise is None:
            return None
        many = isinstance(noise, (list, tuple))
        if many and len(noise) != len(arrays):
            raise InputError(f"noise: {len(arrays)} images but {len(noise)} initial latents")
        out = []
        for i, (a, src) in enumerate(zip(arrays, sources)):
            expected = self.pipe.latent_shape(*self.pipe.sample_size(a))
            out.append(noise_latent(noise[i] if many else noise, expected, f"noise[{i}]" if many else "noise",
                                    src or f"image {i}"))
        return out

    def domain_notice(self) -> str | None:
        """The one-line out-of-domain note of the last :meth:`generate` run (None when every input was like the
        bundle's training images, or the bundle declares no domain)."""
        run = getattr(self, "last_run", None)
        return domain_lib.notice(run["checks"], run["names"], self.checkpoint) if run else None

    def _summary(self, o: ImageTo4DOutput, timings: dict[str, float], gen_s: float, n: int) -> dict[str, Any]:
        pipe, s = self.pipe, self.settings
        return {
            "checkpoint": self.checkpoint, "transformer": self.transformer, **self.run_info,
            "settings": s.to_dict(), "preset": self.bundle.preset.to_dict(),
            "overrides": s.overrides_of(self.bundle.preset), "recipe": self.bundle.spec.to_dict(),
            "preset_notes": bundle_lib.preset_notes(self.bundle.manifest),
            "schedule": {"solver": pipe.schedule.solver, "sigma_schedule": s.sigma_schedule,
                         "timesteps": pipe.schedule.timesteps.tolist(), "sigmas": pipe.schedule.sigmas.tolist()},
            "devices": [str(d) for d in pipe.mesh.devices.flat], "batch_per_call": pipe.batch, "images_in_run": n,
            "timings_s": {**self.timings, "generate_all": gen_s, **timings, "per_image_generate": gen_s / n},
            "latent_shape": list(o.latents.shape), "bundle": self.bundle.info,
            # the memory levers of `fourdnex plan --job inference`: staging, streaming and the tiled decode change
            # no output value; weight_quant int8 does
            "memory": {"staging": programs.staging_of(s), "release_after_use": s.release_after_use,
                       "stream_blocks": s.stream_blocks, "decode_tile": list(s.decode_tile),
                       "weight_quant": s.weight_quant},
            "fast_paths": {"weight_quant": s.weight_quant, "step_cache_interval": s.step_cache_interval,
                           "dit_evaluations": dict(pipe.stats),  # whole pipeline lifetime, all batches
                           "aot_cache": None if pipe.executables is None else str(pipe.executables.directory),
                           "executables": pipe.executables.events if pipe.executables is not None else []},
        }
