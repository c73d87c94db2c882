"""What the two verdicts say on true, noisy and adversarial pointmap videos (the evidence for their thresholds).

    python -m benchmarks.consistency_verdict --clips CLIPS6D_DIR [--split heldout] [--num 16] [--dome-radius 12]
        [--cases truth,noise_0.01,...] [--geometry-only] [--out verdict.json]

Each held-out synthetic clip's true normalised pointmap (the model's output space, the clips' normalisation) is
registered as a model output is (:func:`fourdnex_jax.geometry.register.register`) under these cases:

* ``truth``; ``noise_0.01`` / ``noise_0.03``: i.i.d. Gaussian noise of that sigma per coordinate on every pixel;
  ``noise_0.01_foreground``: the same on the floor and objects only, the sky exact (the pixels are found by
  rendering the clip's scene again: ``--dome-radius`` must be the one the clips were made with, checked against the
  clip's RGB: :func:`fourdnex_jax.pipelines.evaluate.foreground_masks`);
* ``other_scenes``: frame t (pointmap and colours) taken from clip (i + t) mod N (every frame a real, registrable
  pointmap); ``scene_cut``: frame 0 of clip i + 1, then frames 1.. of clip i (one cut);
* ``frozen``: frame 0 repeated.

The clip verdict sees the frames' colours, as in ``fourdnex generate``, unless ``--geometry-only``.

Per case: frames registered (per-frame verdict, :mod:`fourdnex_jax.geometry.status`), clips the clip verdict calls
consistent (:mod:`fourdnex_jax.geometry.consistency`), the lowest pair agreement per clip, the reasons, and the
median rotation error against the true cameras over frames 1..T-1. The first three cases must pass, the last two
must not.
"""

from __future__ import annotations

import argparse
import collections
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402

CASES = ("truth", "noise_0.01", "noise_0.01_foreground", "noise_0.03", "other_scenes", "scene_cut", "frozen")


def perturb(case: str, i: int, clips: list, fg: list, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """(xyz, rgb) of clip ``i`` under ``case`` (module docstring), None where the case needs a missing mask."""
    x = clips[i].xyz.astype(np.float64)
    t = x.shape[0]
    if case == "other_scenes":
        k = [(i + j) % len(clips) for j in range(t)]
        return (np.stack([clips[c].xyz[j] for j, c in enumerate(k)]).astype(np.float64),
                np.stack([clips[c].rgb[j] for j, c in enumerate(k)]))
    if case == "scene_cut":
        j = (i + 1) % len(clips)
        return (np.concatenate([clips[j].xyz[:1], clips[i].xyz[1:]]).astype(np.float64),
                np.concatenate([clips[j].rgb[:1], clips[i].rgb[1:]]))
    if case == "frozen":
        return np.repeat(x[:1], t, 0), np.repeat(clips[i].rgb[:1], t, 0)
    xyz = _perturb_xyz(case, x, fg[i], rng)
    return None if xyz is None else (xyz, clips[i].rgb)


def _perturb_xyz(case: str, x: np.ndarray, fg: np.ndarray | None, rng: np.random.Generator) -> np.ndarray | None:
    if case == "truth":
        return x
    if case.startswith("noise_"):
        sigma = float(case.split("_")[1])
        noise = sigma * rng.standard_normal(x.shape)
        if case.endswith("_foreground"):
            if fg is None:
                return None
            noise *= fg[..., None]
        return x + noise
    raise ValueError(case)


def _median_or_none(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def _deg(value: float | None) -> str:
    return "n/a (no camera)" if value is None else f"{value:.2f} deg"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", required=True)
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--dome-radius", type=float, default=12.0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--geometry-only", action="store_true", help="judge the pointmaps without their colours")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from fourdnex_jax.geometry import register
    from fourdnex_jax.geometry.metrics import rotation_angle_deg
    from fourdnex_jax.pipelines.evaluate import foreground_masks, load_clips

    clips = load_clips(args.clips, args.split, args.num)
    fg = foreground_masks(clips, args.dome_radius)
    rng = np.random.default_rng(0)
    rows = {}
    for case in args.cases.split(","):
        per_clip = []
        for i, c in enumerate(clips):
            case_input = perturb(case, i, clips, fg, rng)
            if case_input is None:
                continue
            x, rgb = case_input
            with np.errstate(all="ignore"):
                reg = register.register(x, c.valid.astype(bool), rgb=None if args.geometry_only else rgb,
                                        normalization=c.normalization)
            rel = np.swapaxes(c.c2w[:, :3, :3].astype(np.float64), -1, -2) @ reg.c2w[:, :3, :3]
            agree = [a for a in reg.clip.agreement if a is not None]
            per_clip.append({"clip": c.clip_id, "frames_registered": reg.status.num_registered,
                             "consistent": reg.clip.consistent, "reason": reg.clip.reason,
                             "min_agreement": min(agree) if agree else None,
                             # null: a frame without a camera (strict JSON has no NaN)
                             "rot_err_deg": [v if np.isfinite(v) else None
                                             for v in rotation_angle_deg(rel)[1:].round(3).tolist()]})
        if not per_clip:
            print(f"{case}: skipped (no clip has the pixels it needs)")
            continue
        reasons = collections.Counter((r["reason"] or "consistent").split(":")[0] for r in per_clip)
        rows[case] = {
            "clips": len(per_clip), "frames": int(sum(len(r["rot_err_deg"]) + 1 for r in per_clip)),
            "frames_registered": int(sum(r["frames_registered"] for r in per_clip)),
            "consistent": int(sum(r["consistent"] for r in per_clip)),
            "min_agreement": [None if r["min_agreement"] is None else round(r["min_agreement"], 3) for r in per_clip],
            "rot_err_median_deg": _median_or_none([v for r in per_clip for v in r["rot_err_deg"] if v is not None]),
            "reasons": dict(reasons), "per_clip": per_clip}
        r = rows[case]
        print(f"{case}: frames registered {r['frames_registered']}/{r['frames']}, consistent {r['consistent']}/"
              f"{r['clips']}, rotation error median {_deg(r['rot_err_median_deg'])}, lowest pair agreement "
              f"per clip {r['min_agreement']}, {r['reasons']}", flush=True)
    if args.out:
        from fourdnex_jax.media.io import atomic_save_json

        atomic_save_json(args.out, {"clips": args.clips, "split": args.split, "dome_radius": args.dome_radius,
                                    "cases": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
