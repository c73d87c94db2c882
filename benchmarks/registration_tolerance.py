"""How far a pointmap video may be from the truth before camera recovery fails (what a model must reach).

    python -m benchmarks.registration_tolerance --clips CLIPS6D_DIR [--split heldout] [--num 8] [--out tol.json]

Each held-out clip's true normalised pointmap (the model's output space) is perturbed and registered as a model
output is (``geometry.metrics.camera_recovery``, the clips' normalisation): i.i.d. Gaussian noise of sigma 0.01 /
0.03 / 0.1 per coordinate, a k x k box down-and-up sampling (k = 2, 4: the blur of a spatial bottleneck) and a smooth
low-frequency bias of amplitude 0.05 along the width. Per perturbation: the mean pointmap error (mean Euclidean
distance over valid pixels, as ``fourdnex eval-quality`` reports it) and how many clips have every frame
registered.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np


def box(x: np.ndarray, k: int) -> np.ndarray:
    t, h, w, c = x.shape
    return np.repeat(np.repeat(x.reshape(t, h // k, k, w // k, k, c).mean((2, 4)), k, 1), k, 2)


def perturbations(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {f"noise_{s}": (lambda x, s=s: x + s * rng.standard_normal(x.shape)) for s in (0.01, 0.03, 0.1)}
    out.update({f"box_{k}": (lambda x, k=k: box(x, k)) for k in (2, 4)})
    out["smooth_bias_0.05"] = lambda x: x + 0.05 * np.sin(np.linspace(0, 3, x.shape[2]))[None, None, :, None]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", required=True)
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--num", type=int, default=8)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from fourdnex_jax.data import tfds_builders
    from fourdnex_jax.data.clip6d import Clip6D
    from fourdnex_jax.geometry.metrics import camera_recovery

    src = tfds_builders.data_source(args.clips, args.split)
    clips = [Clip6D.from_example(src[i]) for i in range(min(args.num, len(src)))]
    rows = {}
    for name, perturb in perturbations().items():
        registered, errors = [], []
        for c in clips:
            x = perturb(c.xyz.astype(np.float64))
            r = camera_recovery(x, None, c.normalization, c.c2w, float(c.intrinsics[0, 0, 0]))
            registered.append(r["frames_registered"])
            errors.append(float(np.linalg.norm(x - c.xyz, axis=-1)[c.valid.astype(bool)].mean()))
        rows[name] = {"pointmap_err_mean": float(np.mean(errors)), "frames_registered": registered,
                      "clips_all_registered": int(sum(n == c.num_frames for n, c in zip(registered, clips)))}
        print(f"{name}: pointmap error {rows[name]['pointmap_err_mean']:.3f}, every frame registered on "
              f"{rows[name]['clips_all_registered']}/{len(clips)} clips")
    if args.out:
        from fourdnex_jax.media.io import atomic_save_json

        atomic_save_json(args.out, {"clips": args.clips, "split": args.split, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
