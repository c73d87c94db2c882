"""Quality of a model bundle, or of a VAE alone, on held-out synthetic scenes (:mod:`fourdnex_jax.pipelines.evaluate`).

    fourdnex eval-quality --clips CLIPS6D_DIR [--split heldout] [--num 16] [--checkpoint DIR] [--config tiny]
        [--dome-radius 12] [--vae VAE_RUN] [--out report.json] [--config.sample.guidance_scale=1.0 ...]

Samples each held-out clip's first frame + caption with the bundle (``--config.sample.KEY=VALUE`` overrides a
sampling setting of the bundle's preset) and scores the model, the slanted-plane prior, the VAE's reconstruction of
the truth and the truth: first-frame depth, pointmap error, RGB PSNR, and what predicts 4D (foreground reprojection
error through the true cameras, camera recovery, the clip verdict). ``--vae RUN`` scores only that VAE's
reconstruction (a ``fourdnex train-tiny-vae`` run: the VAE milestone, before any DiT is trained). The last line
says which targets are met. ``--dome-radius``: the sky dome the clips were rendered with (``fourdnex synth-data
--dome-radius``), to find their floor and object pixels.
"""

from __future__ import annotations

import json
import time

from absl import flags
from ml_collections import config_flags

from fourdnex_jax.utils.resources import config_path, default_bundle

CONFIG = config_flags.DEFINE_config_file("config", str(config_path("tiny")), "Experiment config (its sample "
                                         "section overrides the bundle's sampling preset).", lock_config=True)
_CLIPS = flags.DEFINE_string("clips", None, "clips6d dataset folder (.../clips6d/<config>/<version>).",
                             required=True)
_SPLIT = flags.DEFINE_string("split", "heldout", "Split of --clips to evaluate.")
_NUM = flags.DEFINE_integer("num", 16, "Clips to evaluate (the first N of the split).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Model bundle folder (default: the shipped tiny bundle).")
_VAE = flags.DEFINE_string("vae", None, "Score only this VAE's reconstruction (a train-tiny-vae run folder).")
_DOME = flags.DEFINE_float("dome-radius", 12.0, "Sky dome radius the clips were rendered with (synth-data "
                           "--dome-radius); clips it does not reproduce get no foreground figures.")
_OUT = flags.DEFINE_string("out", None, "Write the full report (per clip, per frame) as JSON here.")


def _fmt(v):
    return round(v, 4) if isinstance(v, float) else v


def main(argv) -> int:
    del argv
    from fourdnex_jax.pipelines import evaluate

    t0 = time.perf_counter()
    clips = evaluate.load_clips(_CLIPS.value, _SPLIT.value, _NUM.value)
    log = lambda m: print(m, flush=True)  # noqa: E731 - progress lines
    if _VAE.value:
        from fourdnex_jax.weights.restore import restore_model

        report = evaluate.evaluate_vae(restore_model(_VAE.value, "vae"), clips, _DOME.value, log=log)
        source = {"vae": _VAE.value}
    else:
        from fourdnex_jax.pipelines import bundle as bundle_lib
        from fourdnex_jax.pipelines.settings import SampleSettings

        bundle = bundle_lib.load_bundle(_CHECKPOINT.value or default_bundle())
        settings = SampleSettings.from_config(CONFIG.value.sample, bundle.preset)  # preset + --config.sample
        report = evaluate.evaluate_bundle(bundle, settings, clips, _DOME.value, log=log)
        source = {"checkpoint": str(bundle.directory), "settings": settings.to_dict()}
    report = {"clips": _CLIPS.value, "split": _SPLIT.value, "num_clips": len(clips), "dome_radius": _DOME.value,
              **source, **report, "total_s": round(time.perf_counter() - t0, 1)}
    summary, targets = report["summary"], report["targets"]
    print(json.dumps({"num_clips": len(clips), **{k: {kk: _fmt(vv) for kk, vv in v.items()
                                                      if kk != "pointmap_err_per_frame"}
                                                  for k, v in summary.items()}}, indent=1))
    for k, v in summary.items():
        print(f"{k}: pointmap error per frame {v['pointmap_err_per_frame']}")
    if _OUT.value:
        from fourdnex_jax.media.io import atomic_save_json

        atomic_save_json(_OUT.value, report)
    met = [k for k, t in targets.items() if t["met"]]
    print(f"eval-quality: {len(clips)} scenes; targets met {len(met)}/{len(targets)}: "
          + ", ".join(f"{k} {t['value']:.3g} ({t['target']}{'' if t['met'] else ', missed'})"
                      for k, t in targets.items()))
    return 0
