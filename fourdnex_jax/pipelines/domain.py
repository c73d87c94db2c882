"""Is an input image like the ones a model bundle was trained on? A plain image-statistics check, said once.

A small model trained on one narrow domain (``checkpoints/tiny``: rendered synthetic scenes, checkered floors,
gradient skies, a few textured primitives) gives meaningless 4D output on a real photo; the run should say so
instead of silently writing files. The test is deliberately simple and inspectable:

* :func:`image_features` -- :data:`FEATURES`, eight statistics of the image box-resized to 64x96: luminance
  mean / std, mean saturation, median gradient magnitude, the fractions of flat (|grad| < 0.01) and edge
  (|grad| > 0.1) pixels, the median |Laplacian| (noise and fine texture, which renders lack) and the number of
  distinct 4-bit-per-channel colours (/ 4096).
* ``domain.json`` in the bundle folder (:func:`fit_domain` / :func:`write_domain`): the features' mean and std over
  the training images, the inverse of their z-scores' covariance (``precision``) and a ``threshold`` on
  :func:`distance`, calibrated on held-out images of the same domain (:data:`THRESHOLD_MARGIN` x their largest
  distance).
* :func:`distance` -- the Mahalanobis distance of the z-scores, per feature (``sqrt(z' P z / 8)``). The features are
  correlated (flat and edge fractions, |Laplacian|, luminance and saturation), and what gives an unlike image away
  is often an unusual *combination* of a few of them that an RMS z-score averages away: a retina photo (dark,
  saturated, few edges) scored 2.16 against an RMS threshold of 2.18, a greyscale photo 2.5 (``colours_4bit`` and
  ``saturation_mean`` at their floor, texture a little unlike renders); with the covariance stand-ins of both score
  1.6x the threshold or more, and 2 of 400 unseen synthetic scenes are flagged (the RMS: 1;
  ``tests/pipelines/test_domain.py``). A ``domain.json`` without ``precision`` (written before) is read as the
  identity: the RMS z-score its threshold was calibrated on.
* :func:`check_image` -- distance above the threshold: out of domain. A bundle without ``domain.json`` (a converted
  4DNeX checkpoint, trained on real videos) declares no narrow domain and is never flagged.

It flags inputs that are statistically unlike the training images; it does not judge whether an in-domain-looking
input will give a good result.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.utils.files import read_json
from fourdnex_jax.weights import manifest as manifest_lib

DOMAIN_FILE = "domain.json"
FEATURES = ("luminance_mean", "luminance_std", "saturation_mean", "gradient_median", "flat_fraction",
            "edge_fraction", "laplacian_median", "colours_4bit")
SIZE = (64, 96)  # (H, W) every image is resampled to before its statistics are measured (domain.json: size)
THRESHOLD_MARGIN = 1.5
RIDGE = 0.01  # added to the z-scores' covariance before inverting: a feature constant over the training images
              # (or fewer images than features) must not make the inverse blow up
README_SECTION = "README.md, section 'Real 4DNeX weights'"


def image_features(image: np.ndarray) -> np.ndarray:
    """(len(FEATURES),) float64 statistics (module docstring) of an (H, W, 3) uint8 RGB image."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image_features needs an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    im = np.asarray(Image.fromarray(img).resize((SIZE[1], SIZE[0]), Image.BOX), np.float64) / 255.0
    lum = im @ np.array([0.299, 0.587, 0.114])
    g = np.hypot(np.diff(lum, axis=1)[:-1], np.diff(lum, axis=0)[:, :-1])
    lap = 4 * lum[1:-1, 1:-1] - lum[:-2, 1:-1] - lum[2:, 1:-1] - lum[1:-1, :-2] - lum[1:-1, 2:]
    mx, mn = im.max(-1), im.min(-1)
    q = (im * 15.999).astype(np.int64)
    colours = len(np.unique(q[..., 0] * 256 + q[..., 1] * 16 + q[..., 2]))
    return np.array([lum.mean(), lum.std(), ((mx - mn) / np.maximum(mx, 1e-6)).mean(), np.median(g),
                     (g < 0.01).mean(), (g > 0.1).mean(), np.median(np.abs(lap)), colours / 4096.0])


def distance(domain: dict, features: np.ndarray) -> float:
    """Mahalanobis distance per feature, ``sqrt(z' P z / len(z))``, of ``features``' z-scores against the domain's
    mean, std and ``precision`` P (absent: the identity, i.e. the RMS z-score)."""
    z = (np.asarray(features, np.float64) - np.asarray(domain["mean"])) / np.asarray(domain["std"])
    precision = np.asarray(domain["precision"], np.float64) if "precision" in domain else np.eye(len(z))
    return float(np.sqrt(max(float(z @ precision @ z), 0.0) / len(z)))


def fit_domain(name: str, train_images, heldout_images, source: str) -> dict:
    """``domain.json`` content from iterables of (H, W, 3) uint8 images: statistics of ``train_images``, the
    threshold from ``heldout_images`` (module docstring); ``source`` says where the images came from."""
    tr = np.stack([image_features(im) for im in train_images])
    mean, std = tr.mean(0), np.maximum(tr.std(0), 1e-3)  # floor: a near-constant feature must not dominate
    z = (tr - mean) / std
    precision = np.linalg.inv(z.T @ z / len(z) + RIDGE * np.eye(len(mean)))
    dom = {"name": name, "features": list(FEATURES), "size": list(SIZE), "mean": mean.tolist(),
           "std": std.tolist(), "precision": ((precision + precision.T) / 2).tolist()}
    held = [distance(dom, image_features(im)) for im in heldout_images]
    dom.update(threshold=THRESHOLD_MARGIN * max(held), source=source, train_images=len(tr),
               heldout_images=len(held), heldout_distance_max=max(held),
               heldout_distance_median=float(np.median(held)))
    return dom


def write_domain(bundle_dir: str | os.PathLike, domain: dict) -> Path:
    path = atomic_save_json(Path(bundle_dir) / DOMAIN_FILE, domain)
    manifest_lib.update_file_record(bundle_dir, DOMAIN_FILE)  # the bundle's digests follow the new file
    return path


def load_domain(bundle_dir: str | os.PathLike) -> dict | None:
    """The bundle's ``domain.json``, or None when it declares no domain."""
    path = Path(bundle_dir) / DOMAIN_FILE
    if not os.path.lexists(path):
        return None
    dom = read_json(path, what="domain", fix="rebuild it with `fourdnex make-domain`")
    if list(dom.get("features", [])) != list(FEATURES):
        raise ValueError(f"{path}: features {dom.get('features')} are not this version's {list(FEATURES)}; "
                         "rebuild it with `fourdnex make-domain`")
    n = len(FEATURES)
    for key, shape in (("mean", (n,)), ("std", (n,)), ("precision", (n, n))):
        if key == "precision" and key not in dom:
            continue  # written before the covariance was kept: the RMS z-score (distance())
        try:
            arr = np.asarray(dom.get(key), np.float64)
            ok = arr.shape == shape and bool(np.isfinite(arr).all()) and (key != "std" or bool((arr > 0).all()))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{path}: '{key}' is not {'x'.join(map(str, shape))} finite numbers"
                             + (" > 0" if key == "std" else "") + "; rebuild it with `fourdnex make-domain`")
    return dom


def check_image(domain: dict | None, image: np.ndarray) -> dict:
    """``{"domain", "in_domain", "distance", "threshold"}`` of one input image (``in_domain`` None: the bundle
    declares no domain)."""
    if domain is None:
        return {"domain": None, "in_domain": None, "distance": None, "threshold": None}
    d = distance(domain, image_features(image))
    return {"domain": domain["name"], "in_domain": d <= domain["threshold"], "distance": d,
            "threshold": float(domain["threshold"])}


def notice(checks: list[dict], names: list[str], bundle: str) -> str | None:
    """The one console line for a run's out-of-domain inputs (None when there are none)."""
    bad = [n for c, n in zip(checks, names) if c["in_domain"] is False]
    if not bad:
        return None
    c = next(c for c in checks if c["in_domain"] is False)
    what = bad[0] if len(bad) == 1 else f"{len(bad)} of {len(checks)} inputs (first: {bad[0]})"
    return (f"note: {what} looks unlike the {c['domain']} images {bundle} was trained on (image-statistics "
            f"distance {c['distance']:.1f} > {c['threshold']:.1f}), so its 4D result will not be meaningful; "
            f"for real photos use the real 4DNeX weights ({README_SECTION})")
