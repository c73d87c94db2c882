"""README's Python snippet, extracted from README.md and run exactly as written, writes what `fourdnex generate`
writes and prints the result (its shapes and cameras' status). It names only shipped files (the model by its name,
the example image by `example_image()`), so it runs from any folder; tests/test_packaging.py runs it against a
wheel install outside the repository."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What `fourdnex generate` writes for one image with geometry (tests/test_packaging.py runs the command).
GENERATE_FILES = {"rgb.mp4", "xyz.mp4", "pointmaps.npz", "input.png", "summary.json", "cameras.json", "depth.npz",
                  "transforms.json", "scene.glb", "viewer.html", "novel_orbit.mp4", "ply", "images",
                  ".fourdnex-output.json"}


def readme_snippet() -> str:
    """The ```python block of README's "Python API" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Python API"):]
    body = section[section.index("```python\n") + len("```python\n"):]
    return body[:body.index("\n```")]


def test_readme_snippet_is_four_lines_of_shipped_names():
    lines = readme_snippet().splitlines()
    assert len(lines) == 4 and lines[0].startswith("from fourdnex_jax import ImageTo4DPipeline"), lines
    assert "checkpoints/" not in readme_snippet() and "examples/" not in readme_snippet()


@pytest.mark.slow
def test_readme_snippet_runs_and_writes_what_generate_writes(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    res = subprocess.run([sys.executable, "-c", readme_snippet()], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env=dict(env, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT)))
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "out" / "api"
    written = {p.name for p in out.iterdir()}
    assert written - {"transforms.json"} == GENERATE_FILES - {"transforms.json"}  # transforms: registered frames
    assert "Result(" in res.stdout and "cameras: " in res.stdout, res.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input"].endswith("examples/synth_heldout_000000.png")
    assert summary["geometry"]["message"].startswith("cameras: ")  # the geometry's verdict, as generate prints it
    z = np.load(out / "pointmaps.npz")
    from fourdnex_jax.data import synthetic

    size = (9, synthetic.TINY_HEIGHT, synthetic.TINY_WIDTH)  # the shipped model's frames, at the example's size
    assert z["xyz"].shape == (*size, 3) and z["valid"].shape == size


@pytest.mark.slow
def test_result_attributes_on_a_random_bundle(tmp_path):
    """.rgb / .xyz / .valid / .cameras / .depth of a result, and an array or a PIL image as the input."""
    from PIL import Image

    from fourdnex_jax.pipelines.api import ImageTo4DPipeline, as_image
    from fourdnex_jax.recipe import SAMPLING_PRESETS
    from fourdnex_jax.testing.random_models import write_random_bundle

    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    assert np.array_equal(as_image(Image.fromarray(img)), img)
    assert np.array_equal(as_image(img.astype(np.float32) / 255.0), img)
    with pytest.raises(ValueError, match=r"float pixels must lie in \[0, 1\]"):
        as_image(img.astype(np.float32))
    import jax

    small = dataclasses.replace(SAMPLING_PRESETS["tiny"], num_frames=5, max_area=32 * 48, num_steps=3)
    bundle = write_random_bundle(tmp_path / "b", preset=small)
    pipe = ImageTo4DPipeline.from_pretrained(bundle, num_steps=2, devices=jax.devices()[:1])
    r = pipe(img, "a box", progress=False)
    t, h, w = r.xyz.shape[:3]
    assert r.rgb.shape == (t, h, w, 3) and r.rgb.dtype == np.uint8 and r.valid.shape == (t, h, w)
    assert r.cameras["cam_to_world"].shape == (t, 4, 4) and r.cameras["K"].shape == (3, 3)
    assert r.depth.shape == (t, h, w)
    assert r.summary["settings"]["num_steps"] == 2 and r.summary["overrides"] == {"num_steps": 2}
    written = r.save(tmp_path / "out", geometry=False)
    assert set(written["files"]) <= {p.name for p in (tmp_path / "out").iterdir()}
