"""Image -> 4D: generates an RGB video and a pixel-aligned XYZ pointmap video from one image (or many).

    python tools/generate.py --image IMG [--prompt TEXT] [--config configs/tiny.py] [--checkpoint DIR] --out DIR
    python tools/generate.py --images LIST.txt [--checkpoint DIR] --out DIR      # many images, one model load

``--checkpoint``: a model bundle in the layout of ``tools/convert.py torch-to-jax`` (a converted 4DNeX checkpoint,
or ours); default: the bundled tiny model ``checkpoints/tiny``. ``--transformer`` optionally takes the DiT (base +
adapter) from another such folder. The architecture comes from the checkpoint; the config supplies the sampling
settings (``config.sample``: frames, size, steps, solver unipc|euler, flow_shift, guidance, seed, text_len, ...),
overridable as ``--config.sample.num_steps=20``. Without ``--prompt``, ``IMG.txt`` next to the image is used when it
exists (else the empty caption); the prompt always gets the 4DNeX suffix " POINTMAP_STYLE.".

A list file has one image per line: ``path`` or ``path<TAB>prompt`` (relative paths are relative to the list
file); results go to ``OUT/<image stem>/``. Images are sampled in batches of ``config.sample.batch_size`` per device,
data-parallel over all devices (``--devices N`` limits them).

Fast paths (their quality cost is measured by tools/sampling_benchmark.py): ``--weight-quant int8`` (int8
weight-only DiT block linears), ``--step-cache-interval K`` (transformer blocks in full every K steps and at the
last, block residual reused between), fewer steps (``--config.sample.num_steps``) or Euler
(``--config.sample.solver=euler``). Start-up: ``--compilation-cache DIR`` (JAX's persistent compilation cache, every
program cached) and ``--aot-cache DIR`` (serialized executables keyed by configs, shapes, jax version and backend;
reloaded without tracing or compiling, recompiled with a message when the key differs).

Writes per image: ``rgb.mp4``, ``xyz.mp4``, ``pointmaps.npz`` (xyz float32 [T,H,W,3], rgb uint8, valid bool),
``input.png`` and ``summary.json`` (settings, seed, timings, fast paths), each atomically.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py"),
                                          "Experiment config (its sample section is used).", lock_config=True)
_IMAGE = flags.DEFINE_string("image", None, "Input image (PNG/JPEG).")
_IMAGES = flags.DEFINE_string("images", None, "List file: one 'path[<TAB>prompt]' per line.")
_PROMPT = flags.DEFINE_string("prompt", None, "Caption of the image (default: IMG.txt next to it, else empty).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model bundle folder (default: checkpoints/tiny).")
_TRANSFORMER = flags.DEFINE_string("transformer", None, "Take the DiT from this folder (same layout).")
_OUT = flags.DEFINE_string("out", None, "Output folder.")
_FPS = flags.DEFINE_integer("fps", 8, "Frame rate of the written mp4 files.")
_DEVICES = flags.DEFINE_integer("devices", 0, "Use only the first N devices (0: all).")
_WEIGHT_QUANT = flags.DEFINE_enum("weight-quant", None, ["none", "int8"],
                                  "DiT weight quantisation (default: config.sample.weight_quant, else none).")
_STEP_CACHE = flags.DEFINE_integer("step-cache-interval", None, "Transformer blocks in full every K steps, cached "
                                   "between (0: off; default: config.sample.step_cache_interval, else 0).")
_COMPILATION_CACHE = flags.DEFINE_string("compilation-cache", None, "JAX persistent compilation cache folder.")
_AOT_CACHE = flags.DEFINE_string("aot-cache", None, "Folder of serialized executables (loaded or written).")
_POSTPROCESS = flags.DEFINE_bool("postprocess", True, "Recover cameras and depth, export PLY/GLB/viewer and render "
                                 "a novel-view video (fourdnex_jax.geometry) after generation.")


def _read_list(path: Path) -> list[tuple[Path, str | None]]:
    items = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, prompt = line.partition("\t")
        p = Path(name.strip())
        items.append((p if p.is_absolute() else path.parent / p, prompt.strip() if prompt else None))
    return items


def _caption(image: Path, given: str | None) -> str:
    if given is not None:
        return given
    side = image.with_suffix(".txt")
    return side.read_text().strip() if side.exists() else ""


def main(argv) -> None:
    del argv
    t_start = time.perf_counter()
    if not _OUT.value or (_IMAGE.value is None) == (_IMAGES.value is None):
        raise app.UsageError("give --out and exactly one of --image / --images")
    import dataclasses

    import jax

    from fourdnex_jax.pipelines.aot import enable_compilation_cache

    if _COMPILATION_CACHE.value:  # before anything compiles
        enable_compilation_cache(_COMPILATION_CACHE.value)
    from fourdnex_jax.data.media import read_image
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines.image_to_4d import ImageTo4D, SampleSettings, prepare_image
    from fourdnex_jax.pipelines.postprocess import POSTPROCESS_HOOKS, geometry_hook, write_result

    config = _CONFIG.value
    settings = SampleSettings.from_config(config.sample)
    overrides = {"weight_quant": _WEIGHT_QUANT.value, "step_cache_interval": _STEP_CACHE.value}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    if _POSTPROCESS.value and geometry_hook not in POSTPROCESS_HOOKS:
        POSTPROCESS_HOOKS.append(geometry_hook)
    if _IMAGE.value:
        items = [(Path(_IMAGE.value), _PROMPT.value)]
        outs = [Path(_OUT.value)]
    else:
        items = _read_list(Path(_IMAGES.value))
        outs = [Path(_OUT.value) / p.stem for p, _ in items]
        if len(set(outs)) != len(outs):
            raise app.UsageError("two images of the list share a file stem")
    ckpt = Path(_CHECKPOINT.value) if _CHECKPOINT.value else bundle_lib.DEFAULT_BUNDLE
    t0 = time.perf_counter()
    bundle = bundle_lib.load_bundle(ckpt, transformer_dir=_TRANSFORMER.value)
    load_s = time.perf_counter() - t0
    devices = jax.devices()[: _DEVICES.value] if _DEVICES.value else jax.devices()
    t0 = time.perf_counter()
    pipe = ImageTo4D.from_bundle(bundle, settings, devices=devices, executable_cache=_AOT_CACHE.value)
    init_s = time.perf_counter() - t0
    images = [prepare_image(read_image(p), settings.height, settings.width) for p, _ in items]
    prompts = [_caption(p, given) for p, given in items]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    results = pipe(images, prompts, timings=timings)
    gen_s = time.perf_counter() - t0
    n = len(results)
    for (path, _), out, res in zip(items, outs, results):
        summary = {
            "input": str(path), "prompt": res.prompt, "seed": res.seed, "checkpoint": str(ckpt),
            "transformer": _TRANSFORMER.value, "config": config.name, "settings": settings.to_dict(),
            "schedule": {"solver": pipe.schedule.solver, "timesteps": pipe.schedule.timesteps.tolist(),
                         "sigmas": pipe.schedule.sigmas.tolist()},
            "devices": [str(d) for d in devices], "batch_per_call": pipe.batch, "images_in_run": n,
            "timings_s": {"load_models": load_s, "setup": init_s, "generate_all": gen_s,
                          **{k: v for k, v in timings.items()}, "per_image_generate": gen_s / n},
            "latent_shape": list(res.latents.shape), "bundle": bundle.info,
            "fast_paths": {"weight_quant": settings.weight_quant, "step_cache_interval": settings.step_cache_interval,
                           "dit_evaluations": dict(pipe.stats),  # whole run, all batches
                           "compilation_cache": _COMPILATION_CACHE.value, "aot_cache": _AOT_CACHE.value,
                           "executables": pipe.executables.events if pipe.executables is not None else []},
        }
        write_result(out, res.rgb, res.xyz, summary, normalization=settings.xyz_normalization, fps=_FPS.value,
                     input_image=res.image)
    total = time.perf_counter() - t_start
    print(f"generate: {n} image(s) -> {outs[0] if n == 1 else Path(_OUT.value)} in {total:.1f}s "
          f"(load {load_s:.1f}s, generate {gen_s:.1f}s: sampling {timings.get('sampling_s', 0):.1f}s, decode "
          f"{timings.get('decode_s', 0):.1f}s; {pipe.schedule.solver} {settings.num_steps} steps, CFG "
          f"{settings.guidance_scale}, {len(devices)} device(s)"
          + (", int8 weights" if settings.weight_quant == "int8" else "")
          + (f", step cache every {settings.step_cache_interval} ({pipe.stats['dit_cached']} cached DiT evaluations)"
             if settings.step_cache_interval else "") + ")")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app.run(main)
