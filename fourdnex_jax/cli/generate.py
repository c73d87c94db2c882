"""Image -> 4D: an RGB video and a pixel-aligned XYZ pointmap video from one image (or many), then cameras, depth
and 3D exports.

    fourdnex generate --image IMG [--prompt TEXT] [--checkpoint DIR] --out DIR [--config.sample.KEY=VALUE]
    fourdnex generate --images LIST.txt [--checkpoint DIR] --out DIR      # many images, one model load
    fourdnex generate --example --out DIR     # the shipped example image (any directory, after pip install)

``--checkpoint``: a model bundle (``fourdnex convert`` of the real 4DNeX weights, ``fourdnex bundle`` of a training
run, or ours), or a training run folder itself (``fourdnex train --out``; its towers from ``--base``); default:
the shipped tiny bundle (also named ``tiny``). ``--transformer`` takes the DiT (base + adapter) from another bundle.
The architecture and the sampling preset (frames, pixel area, steps, solver, flow shift, CFG, negative prompt, text
length) come from the bundle; ``--config.sample.KEY=VALUE`` overrides one (``num_steps=8``, ``solver=euler``,
``resize_mode=cover_crop``,
``weight_quant=int8``, ``step_cache_interval=2``, ``sigma_schedule``, ``seed``, ``batch_size``; ``--config-help`` lists
them), and a
value the model cannot run is an error before any weights load. The image keeps its aspect ratio at the preset's
area (4DNeX's sizing; the chosen size is in summary.json: ``sizing``). Without ``--prompt``, ``IMG.txt`` next to
the image is used when it exists (else the empty caption); the prompt always gets the recipe's suffix. Every image
starts from the noise of one seed (``--seed``, default ``config.sample.seed`` = 42, as 4DNeX), so its result does
not depend on its place in the list; ``--noise FILE.npy`` gives the exact initial latent instead (e.g. the official
run's), ``--official-outputs`` also writes the official 4DNeX files (``official_canvas.mp4``,
``official_pointmap.npz``).

A list file has one image per line: ``path`` or ``path<TAB>prompt`` (relative paths are relative to the list
file); results go to ``OUT/<image stem>/``. The models run on the mesh of ``config.sharding`` (``mesh_shape`` over
(data, fsdp, context, tensor); default all devices on fsdp; ``--devices N`` limits them), every weight restored
straight into its shard; images are sampled in batches of ``config.sample.batch_size`` per batch shard. Several
processes (``--distributed``, e.g. one per host, all with the same flags) split the list: each image is written
exactly once, by the process that holds its first shard. Start-up: ``--compilation-cache DIR`` (JAX's
persistent compilation cache) and ``--aot-cache DIR`` (serialized executables, fourdnex_jax/pipelines/aot.py). Both
hold native code that runs when loaded, so both must be private folders of yours, and every entry must carry an
HMAC tag made with the folder's own secret key: anything else is refused with an error, never loaded
(fourdnex_jax/utils/trust.py).

Writes per image (fourdnex_jax/pipelines/outputs.py): ``rgb.mp4``, ``xyz.mp4``, ``pointmaps.npz`` (xyz float32
[T,H,W,3], rgb uint8, valid bool), ``input.png``, the geometry outputs unless ``--nopostprocess`` (``cameras.json``,
``depth.npz``, ``transforms.json``, ``ply/``, ``scene.glb``, ``viewer.html``, ``novel_orbit.mp4``), and
``summary.json`` (settings, preset and overrides, sizing, seed, timings, fast paths, geometry status). Each
result folder is published as a unit (written beside it, then renamed): a killed run leaves the previous complete
result or none; a folder that already holds a result is kept unless ``--overwrite``. Every input image is decoded
and every output folder checked before any model loads; with ``--images`` a bad entry is reported and skipped, the
rest are written, and the exit status is 1. The same files as ``ImageTo4DPipeline(...)(image).save(dir)``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from fourdnex_jax.cli.common import UsageError
from fourdnex_jax.utils.bounds import flag_bounds
from fourdnex_jax.utils.errors import InputError
from fourdnex_jax.utils.progress import Stage
from fourdnex_jax.utils.resources import config_path

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("tiny")), "Experiment config (only its sample "
                                         "and sharding sections are used: overrides of the bundle's preset and the "
                                         "run's options).",
                                         lock_config=True)
_IMAGE = flags.DEFINE_string("image", None, "Input image (PNG/JPEG).")
_IMAGES = flags.DEFINE_string("images", None, "List file: one 'path[<TAB>prompt]' per line.")
_EXAMPLE = flags.DEFINE_bool("example", False, "Use the shipped example image (a held-out synthetic scene, with its "
                             "caption; fourdnex_jax.example_image()) instead of --image.")
_PROMPT = flags.DEFINE_string("prompt", None, "Caption of the image (default: IMG.txt next to it, else empty).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model bundle folder, or a training run folder (default: the "
                                  "shipped tiny bundle, also named 'tiny').")
_BASE = flags.DEFINE_string("base", None, "With a training run as --checkpoint: the bundle whose VAE / encoders / "
                            "tokenizer / preset go with it ('tiny': the shipped one; default: the bundle the run's "
                            "data "
                            "records, else the run's base folder).")
_TRANSFORMER = flags.DEFINE_string("transformer", None, "Take the DiT from this bundle folder (same layout).")
_OUT = flags.DEFINE_string("out", None, "Output folder (with --images: one sub-folder per image).")
_FPS = flags.DEFINE_integer("fps", 8, "Frame rate of the written mp4 files.", **flag_bounds("generate.fps"))
_SEED = flags.DEFINE_integer("seed", None, "Seed of every image's initial noise (default: config.sample.seed, 42; "
                             "the same seed for every image, as 4DNeX, so a result never depends on the image's "
                             "place in --images).")
_NOISE = flags.DEFINE_string("noise", None, "A .npy float32 initial latent used for every image instead of the "
                             "seeded noise: (T', h, 2w, 16) or the official (1, 16, T', h, 2w) layout, e.g. the "
                             "official run's torch noise (README: reproducing an official run).")
_OFFICIAL = flags.DEFINE_bool("official-outputs", False, "Also write the official 4DNeX layout per image: "
                              "official_canvas.mp4 ([RGB | XYZ], 24 fps, truncated to uint8) and "
                              "official_pointmap.npz (pcd, rgb, colors in [0, 1]; xyz = 2 pcd - 1).")
_DEVICES = flags.DEFINE_integer("devices", 0, "Use only the first N devices (0: all).",
                                **flag_bounds("generate.devices"))
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Multi-process run (jax.distributed.initialize, e.g. one "
                                 "process per host): every process gets the same flags; each image is written once, "
                                 "by the process holding its first shard. Coordinator / count / id from the flags "
                                 "below, else from the environment (TPU pods, SLURM, JAX_COORDINATOR_ADDRESS).")
_COORDINATOR = flags.DEFINE_string("coordinator-address", "", "With --distributed: host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num-processes", 0, "With --distributed: number of processes (0: from env).")
_PROCESS_ID = flags.DEFINE_integer("process-id", -1, "With --distributed: this process's id (-1: from env).")
_TRUST = ("Its entries are native code run when loaded: it must be a private folder of yours (created 0700; refused "
          "if another user owns it or it is group/world-writable) and every entry must carry an HMAC-SHA256 tag made "
          "with the folder's own secret key (.fourdnex-cache-key, 0600); an entry that fails is refused with an "
          "error, never loaded. Never use a folder you did not create.")
_COMPILATION_CACHE = flags.DEFINE_string("compilation-cache", None, "JAX persistent compilation cache folder. "
                                         + _TRUST)
_AOT_CACHE = flags.DEFINE_string("aot-cache", None, "Folder of serialized executables (loaded or written). " + _TRUST)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a previous result in --out (default: a folder that "
                                "already holds one is kept and the run refused). Results are published as a unit.")
_POSTPROCESS = flags.DEFINE_bool("postprocess", True, "Recover cameras and depth, export PLY/GLB/viewer and render "
                                 "a novel-view video (fourdnex_jax.geometry) after generation.")


def _run_inputs() -> list[str]:
    """Every path the run reads: a folder holding one is never an output folder."""
    return [p for p in (_IMAGE.value, _IMAGES.value, _CHECKPOINT.value, _BASE.value, _TRANSFORMER.value) if p]


def _inputs() -> tuple[list[tuple[Path, str | None]], list[Path], list[str]]:
    """The (image, prompt) pairs and output folders to generate, every image decoded (and its caption file read)
    and every output folder checked before any model loads; with --images a bad entry is reported and skipped (the
    third list: one line per skipped entry), with --image it is an error."""
    from fourdnex_jax.media.images import MIN_SIDE
    from fourdnex_jax.media.io import check_image
    from fourdnex_jax.media.publish import check_output_dir, check_output_parent
    from fourdnex_jax.pipelines.inputs import caption_for_image, output_name, read_image_list

    if not _OUT.value or (_IMAGE.value is not None) + (_IMAGES.value is not None) + _EXAMPLE.value != 1:
        raise UsageError("give --out and exactly one of --image / --images / --example")
    protect = _run_inputs()
    if _IMAGE.value or _EXAMPLE.value:
        from fourdnex_jax.utils.resources import example_image

        image = example_image() if _EXAMPLE.value else Path(_IMAGE.value)
        check_image(image, MIN_SIDE)
        if _PROMPT.value is None:
            caption_for_image(image)  # a caption file that cannot be read fails here, not after the model
        return ([(image, _PROMPT.value)], [check_output_dir(_OUT.value, _OVERWRITE.value, inputs=protect)], [])
    if not os.path.lexists(_IMAGES.value):
        raise InputError(f"--images {_IMAGES.value}: no such list file; pass a text file with one "
                         "'path[<TAB>prompt]' per line")
    check_output_parent(_OUT.value)  # the parent folder of the per-image folders: only not a file
    items = read_image_list(_IMAGES.value)
    if not items:
        raise InputError(f"--images {_IMAGES.value}: the list has no image; add one 'path[<TAB>prompt]' per line")
    outs = [Path(_OUT.value) / output_name(p) for p, _ in items]
    if len(set(outs)) != len(outs):
        raise InputError(f"--images {_IMAGES.value}: two images share a file stem (their outputs would collide); "
                         "rename one")
    kept, kept_outs, failed = [], [], []
    for item, out in zip(items, outs):
        try:
            check_image(item[0], MIN_SIDE)
            if item[1] is None:
                caption_for_image(item[0])
            check_output_dir(out, _OVERWRITE.value, inputs=protect)
        except InputError as e:
            failed.append(str(e))
            continue
        kept.append(item)
        kept_outs.append(out)
    if not kept:
        raise InputError(f"--images {_IMAGES.value}: no usable entry ({len(failed)} skipped; first: {failed[0]})")
    return kept, kept_outs, failed


def _noise(settings, config_dir: Path, transformer_dir: Path, images: list[Path]):
    """The --noise array, checked against every image's initial latent from the configs alone (before any
    weights load); None without --noise."""
    if not _NOISE.value:
        return None
    from fourdnex_jax.media.io import check_image, load_npy_checked
    from fourdnex_jax.pipelines.inputs import noise_latent, sample_size
    from fourdnex_jax.pipelines.programs import latent_shape
    from fourdnex_jax.pipelines.settings import size_multiple
    from fourdnex_jax.weights.restore import read_config

    noise = load_npy_checked(_NOISE.value, "noise")
    dit_config, _ = read_config(transformer_dir, "transformer")
    vae_config, _ = read_config(config_dir, "vae")
    multiple = size_multiple(dit_config, vae_config)
    for path in images:
        size = sample_size(*check_image(path), settings.max_area, multiple, settings.resize_mode)
        noise_latent(noise, latent_shape(settings, vae_config, *size), f"--noise {_NOISE.value}", str(path))
    return noise


#: Bytes a result takes per frame and pixel of the sampling area, about (pointmaps.npz 16; with the geometry
#: also depth, PLY, GLB and videos): the free space `generate` asks for before any model loads.
RESULT_BYTES_PER_PIXEL = {True: 64, False: 20}


#: Result folders published by this run (each one whole), for what Ctrl-C reports.
_PUBLISHED: list[Path] = []


def interrupted_note() -> str:
    """What Ctrl-C leaves (common.interrupted): nothing, or the results already published (never a half one)."""
    if not _PUBLISHED:
        return "nothing written to --out"
    return (f"{len(_PUBLISHED)} complete result(s) written before it ({', '.join(map(str, _PUBLISHED))}), no "
            "partial one")


def main(argv) -> int:
    del argv
    from fourdnex_jax.media.publish import output_lock

    if _IMAGES.value and _OUT.value:  # a container of per-image results: its lock lives inside it
        with output_lock(_OUT.value, inside=True):
            return _main()
    if _OUT.value:
        with output_lock(_OUT.value):  # one writer per --out, from the checks to the publishing rename
            return _main()
    return _main()


def _main() -> int:
    t_start = time.perf_counter()
    items, outs, failed = _inputs()
    for line in failed:
        print(f"fourdnex generate: skipped: {line}", file=sys.stderr)
    config = CONFIG.value
    import types

    import jax

    from fourdnex_jax import sharding

    sharding.maybe_initialize_distributed(types.SimpleNamespace(  # before any other JAX call
        distributed=_DISTRIBUTED.value, coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
        process_id=_PROCESS_ID.value))

    from fourdnex_jax.media.publish import check_writable
    from fourdnex_jax.pipelines import bundle as bundle_lib
    from fourdnex_jax.pipelines import runs
    from fourdnex_jax.pipelines.aot import enable_compilation_cache
    from fourdnex_jax.pipelines.api import ImageTo4DPipeline
    from fourdnex_jax.pipelines.inputs import upscale_note
    from fourdnex_jax.utils.resources import bundle_path

    ckpt = bundle_path(_CHECKPOINT.value)  # None / 'tiny': the shipped bundle
    if _COMPILATION_CACHE.value:  # before anything compiles
        enable_compilation_cache(_COMPILATION_CACHE.value)
    devices = jax.devices()[: _DEVICES.value] if _DEVICES.value else jax.devices()
    # config.sharding: the mesh (its -1 axis takes the devices left); every weight restored straight into its shard
    mesh, rules = sharding.make_mesh(config.sharding, devices), sharding.rules_of(config.sharding)
    seed = {} if _SEED.value is None else {"seed": _SEED.value}  # --seed over config.sample.seed
    if runs.is_run(ckpt):
        if _TRANSFORMER.value:
            raise UsageError("--transformer does not combine with a training run as --checkpoint")
        base_dir, _, _ = runs.base_bundle_of(ckpt, _BASE.value)
        settings = bundle_lib.resolve_settings(base_dir, config.sample, **seed)  # checked against the base's configs
        noise = _noise(settings, base_dir, base_dir, [p for p, _ in items])
    else:
        settings = bundle_lib.resolve_settings(ckpt, config.sample, transformer_dir=_TRANSFORMER.value, **seed)
        noise = _noise(settings, ckpt, Path(_TRANSFORMER.value or ckpt), [p for p, _ in items])
    # the destination can take the results: writable, and about the space they need (before any model runs)
    check_writable(outs[0].parent, len(items) * settings.num_frames * settings.max_area
                   * RESULT_BYTES_PER_PIXEL[_POSTPROCESS.value])
    with Stage(f"loading models from {ckpt}") as load:
        if runs.is_run(ckpt):
            bundle = runs.load_run_bundle(ckpt, _BASE.value, mesh=mesh, rules=rules)
        else:
            bundle = bundle_lib.load_bundle(ckpt, transformer_dir=_TRANSFORMER.value, mesh=mesh, rules=rules)
    with Stage("setting up the sampler"):
        pipe = ImageTo4DPipeline.from_bundle(bundle, settings, mesh=mesh, rules=rules,
                                             executable_cache=_AOT_CACHE.value,
                                             transformer=_TRANSFORMER.value, timings={"load_models": load.seconds},
                                             run_info={"checkpoint": str(ckpt), "config": config.name})
    extra = {"compilation_cache": _COMPILATION_CACHE.value}
    if noise is not None:
        extra["initial_noise"] = f"given: --noise {_NOISE.value}"
    results = pipe.generate([p for p, _ in items], [given for _, given in items], noise=noise, summary=extra)
    # multi-process: each process writes the images it owns (None: another process's)
    mine = [k for k, r in enumerate(results) if r is not None]
    items, outs, results = [items[k] for k in mine], [outs[k] for k in mine], [results[k] for k in mine]
    camera_lines, files = [], {}
    with Stage(("geometry + exports" if _POSTPROCESS.value else "writing outputs") + f" of {len(results)} result(s)"):
        for (path, _), out, res in zip(items, outs, results):
            written = res.save(out, geometry=_POSTPROCESS.value, fps=_FPS.value, overwrite=_OVERWRITE.value,
                               official=_OFFICIAL.value, inputs=_run_inputs())
            _PUBLISHED.append(out)
            files.update(dict.fromkeys(written["files"] + written.get("geometry", {}).get("files", [])))
            if _POSTPROCESS.value:  # transforms.json's note, the cameras, then whether the frames form one 4D scene
                prefix = "" if len(results) == 1 else f"{path.name}: "
                geo = written["geometry"]
                camera_lines += [prefix + geo["transforms"], prefix + geo["message"],
                                 prefix + geo["scene_4d"]["message"]]
    run, n = pipe.last_run, len(results)
    timings, s = run["timings"], settings
    sizes = sorted({f"{r.output.sizing['height']}x{r.output.sizing['width']}" for r in results})
    print(f"generate: {n} image(s) -> {outs[0] if n == 1 else Path(_OUT.value)} in "
          f"{time.perf_counter() - t_start:.1f}s (load {load.seconds:.1f}s, generate {run['generate_s']:.1f}s: "
          f"encode {timings.get('encode_s', 0):.1f}s, sampling {timings.get('sampling_s', 0):.1f}s, decode "
          f"{timings.get('decode_s', 0):.1f}s; {s.num_frames} frames at {', '.join(sizes)}, "
          f"{pipe.pipe.schedule.solver} {s.num_steps} steps, CFG {s.guidance_scale}, {len(devices)} device(s)"
          + (", int8 weights" if s.weight_quant == "int8" else "")
          + (f", step cache every {s.step_cache_interval} ({pipe.pipe.stats['dit_cached']} cached DiT evaluations)"
             if s.step_cache_interval else "") + "): " + " ".join(files))
    note = pipe.domain_notice()
    if note:  # once per run, however many inputs
        print(note)
    for (path, _), res in zip(items, results):
        small = upscale_note(res.output.sizing, path.name)
        if small:
            print(small)
    for line in camera_lines:  # the geometry's verdicts last (geometry/status.py, geometry/consistency.py)
        print(line)
    if failed:
        print(f"fourdnex generate: {len(failed)} of {len(failed) + n} image(s) skipped (listed above)",
              file=sys.stderr)
        return 1
    return 0
