"""The out-of-domain notice (fourdnex_jax.pipelines.domain) with the shipped checkpoints/tiny/domain.json: the
bundled held-out example is in domain, a photo-like image (natural 1/f texture, soft shapes, sensor noise) is not,
and a bundle without domain.json flags nothing."""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fourdnex_jax.media.io import read_image
from fourdnex_jax.pipelines import bundle, domain


def _photo_like(seed: int, h: int = 480, w: int = 640) -> np.ndarray:
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None])
    f[0, 0] = 1.0
    tex = [np.real(np.fft.ifft2((rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) / f)) for _ in range(3)]
    tex = np.stack([(t - t.mean()) / t.std() for t in tex], -1) * 0.12 + np.array([0.45, 0.40, 0.33])
    img = Image.fromarray((np.clip(tex, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    draw.ellipse([w * 0.3, h * 0.35, w * 0.65, h * 0.8], fill=(200, 190, 170))  # a cup-like object, then lens blur
    draw.rectangle([w * 0.62, h * 0.45, w * 0.72, h * 0.6], fill=(190, 180, 160))
    img = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), np.float64)
    return np.clip(img + rng.normal(size=img.shape) * 4, 0, 255).astype(np.uint8)  # sensor noise


def test_example_in_domain_photo_out_of_domain():
    dom = domain.load_domain(bundle.DEFAULT_BUNDLE)
    assert dom is not None and dom["name"] == "synthetic"
    ex = domain.check_image(dom, read_image(bundle.DEFAULT_BUNDLE.parents[1] / "examples" / "synth_heldout_000000.png"))
    assert ex["in_domain"] is True, ex
    photo = domain.check_image(dom, _photo_like(0))
    assert photo["in_domain"] is False and photo["distance"] > 2 * photo["threshold"], photo
    line = domain.notice([ex, photo], ["example.png", "photo.jpg"], "checkpoints/tiny")
    assert line.startswith("note: photo.jpg looks unlike the synthetic images") and "README" in line
    assert domain.notice([ex], ["example.png"], "checkpoints/tiny") is None


def test_fit_domain_threshold_and_undeclared_domain(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 255, (32, 48, 3), dtype=np.uint8) for _ in range(6)]
    dom = domain.fit_domain("noise", imgs[:4], imgs[4:], source="test")
    assert dom["threshold"] == domain.THRESHOLD_MARGIN * dom["heldout_distance_max"]
    domain.write_domain(tmp_path, dom)
    assert domain.load_domain(tmp_path)["mean"] == dom["mean"]
    assert domain.load_domain(tmp_path / "none") is None
    assert domain.check_image(None, imgs[0])["in_domain"] is None
