"""The image-to-4D pipeline and `fourdnex generate` without torch: a random tiny bundle written by save_bundle and
read back (with its own sampling preset, used without any --config flag), data-parallel sampling equal to
single-device sampling, several images per run, the output files and their formats, aspect-adaptive sizing (a
portrait stays a portrait), settings the model cannot run refused before any weights load, the shipped bundle's
loadability and presets."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from fourdnex_jax.config import load_config_file
from fourdnex_jax.data import synthetic
from fourdnex_jax.media.io import read_video, write_png
from fourdnex_jax.models.image_encoder import CLIPVisionConfig, CLIPVisionTower
from fourdnex_jax.models.text_encoder import UMT5Config, UMT5Encoder
from fourdnex_jax.models.transformer import WanTransformer3D
from fourdnex_jax.models.vae import WanVAE, WanVAEConfig
from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.pipelines.image_to_4d import ImageTo4D
from fourdnex_jax.pipelines.inputs import aspect_size, caption_for_image, prepare_image, read_image_list
from fourdnex_jax.pipelines.outputs import valid_mask
from fourdnex_jax.pipelines.settings import SampleSettings
from fourdnex_jax.recipe import SAMPLING_PRESETS, SamplingPreset, SixDSpec, xyz_init_pointmap
from tests.helpers import tiny_dit_config

ROOT = Path(__file__).resolve().parents[2]
T, H, W = 5, 32, 48
#: The random bundle's preset: unlike the tiny config's and the 14B's, so a run that silently used another shows.
PRESET = SamplingPreset(num_frames=T, max_area=H * W, num_steps=2, guidance_scale=1.0, negative_prompt="",
                        text_len=16, flow_shift=3.0, solver="unipc")


def _tokenizer_dir(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = "a synthetic 3d scene with ball box on floor sky the camera orbits pointmap_style .".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    path.mkdir(parents=True)
    tok.save(str(path / "tokenizer.json"))
    return path


@pytest.fixture(scope="module")
def random_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    cfg = tiny_dit_config()
    rngs = nnx.Rngs(0)
    dit = WanTransformer3D(cfg, rngs=rngs)
    # non-zero adapter so a save/load mix-up would show
    for path, var in nnx.to_flat_state(nnx.state(dit, nnx.LoRAParam)):
        var.value = 0.05 * jax.random.normal(jax.random.key(len(path)), var.value.shape)
    save = dict(transformer=dit, vae=WanVAE(WanVAEConfig.tiny(), rngs=rngs),
                text_encoder=UMT5Encoder(dataclasses.replace(UMT5Config.tiny(), d_model=cfg.text_dim), rngs=rngs),
                image_encoder=CLIPVisionTower(CLIPVisionConfig.tiny(), rngs=rngs))
    out = bundle_lib.save_bundle(tmp / "b", tokenizer_dir=_tokenizer_dir(tmp / "tok"),
                                 clip_preprocess={"size": {"shortest_edge": 32},
                                                  "crop_size": {"height": 32, "width": 32}},
                                 preset=PRESET, info={"test": True}, **save)
    return out, save


def _settings(**kw):
    return SampleSettings.from_preset(PRESET, **{"num_steps": 3, **kw})


def test_bundle_roundtrip(random_bundle):
    path, models = random_bundle
    b = bundle_lib.load_bundle(path)
    assert b.info == {"test": True} and b.scheduler.flow_shift == 3.0
    assert b.preset == PRESET and b.spec == SixDSpec() and bundle_lib.read_presets(path) == (PRESET, SixDSpec())
    for name in bundle_lib.MODELS:
        ours = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(getattr(b, name), nnx.Param))}
        theirs = {p: np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(models[name], nnx.Param))}
        assert ours.keys() == theirs.keys(), name
        for k in ours:
            np.testing.assert_array_equal(ours[k], theirs[k], err_msg=f"{name} {k}")


def test_data_parallel_equals_single_device(random_bundle, solver="unipc"):
    b = bundle_lib.load_bundle(random_bundle[0])
    rng = np.random.default_rng(0)
    images = [(rng.random((H, W, 3)) * 255).astype(np.uint8) for _ in range(3)]
    prompts = ["a ball on the floor", "a box", ""]
    multi = ImageTo4D.from_bundle(b, _settings(solver=solver), devices=jax.devices()[:4])
    single = ImageTo4D.from_bundle(b, _settings(solver=solver), devices=jax.devices()[:1])
    r8 = multi(images, prompts, seeds=[1, 2, 3], progress=False)
    r1 = single(images, prompts, seeds=[1, 2, 3], progress=False)
    assert len(r8) == 3 and r8[0].rgb.shape == (T, H, W, 3) and r8[0].rgb.dtype == np.uint8
    assert r8[0].xyz.shape == (T, H, W, 3) and r8[0].xyz.dtype == np.float32
    assert r8[0].valid.shape == (T, H, W) and r8[0].valid.dtype == bool and r8[0].xyz_normalization == "reference"
    assert r8[0].sizing == {"mode": "aspect", "input_height": H, "input_width": W, "height": H, "width": W,
                            "max_area": H * W, "multiple": [16, 16]}
    assert r8[2].prompt == " POINTMAP_STYLE." and r8[0].prompt.endswith(" POINTMAP_STYLE.")
    for a, c in zip(r8, r1):
        np.testing.assert_allclose(a.latents, c.latents, rtol=1e-4, atol=1e-4)
    # seeds matter, images matter
    assert not np.allclose(r8[0].latents, r8[1].latents)
    # the XYZ init of the condition is 4DNeX's slanted plane (z = -y)
    p = xyz_init_pointmap(4, 6)
    np.testing.assert_array_equal(p[..., 2], -p[..., 1])


def test_prepare_image_and_valid_mask():
    img = np.zeros((100, 300, 3), np.uint8)
    assert prepare_image(img, H * W, (16, 16), "cover_crop")[0].shape == (H, W, 3)
    out, sizing = prepare_image(img, H * W, (16, 16), "aspect")  # 1:3 kept: 16 x 64 (area 1024 <= 1536)
    assert out.shape == (16, 64, 3) and sizing["mode"] == "aspect" and (sizing["height"], sizing["width"]) == (16, 64)
    with pytest.raises(ValueError, match="resize_mode"):
        prepare_image(img, H * W, (16, 16), "stretch")
    xyz = np.zeros((1, 2, 2, 3), np.float32)
    xyz[0, 0, 0] = [0, 0, 1.0]  # saturated
    xyz[0, 0, 1] = [0, 0, -0.5]  # behind the camera
    v = valid_mask(xyz, "sequence")
    assert v.tolist() == [[[False, False], [False, False]]]
    xyz[0, 1] = [0.1, 0.1, 0.5]
    assert valid_mask(xyz, "sequence")[0, 1].all() and valid_mask(xyz, "reference")[0, 0, 1]


def test_aspect_sizing_is_the_reference_rule():
    """4DNeX core/inference/wan.py:110-115 at 480 * 720, multiples of 16: 3:2, 16:9 and 9:16 (issue 14)."""
    assert aspect_size(480, 720, 480 * 720, (16, 16)) == (480, 720)
    assert aspect_size(1080, 1920, 480 * 720, (16, 16)) == (432, 784)
    assert aspect_size(1920, 1080, 480 * 720, (16, 16)) == (784, 432)
    assert aspect_size(160, 90, 64 * 96, (8, 8)) == (104, 56)  # the tiny model's rule at its own area
    # the resize is Pillow's bicubic, bit-exact, nothing cropped
    from PIL import Image

    img = (np.random.default_rng(0).random((90, 160, 3)) * 255).astype(np.uint8)
    out, sizing = prepare_image(img, 480 * 720, (16, 16))
    assert out.shape == (432, 784, 3) and sizing["input_height"] == 90 and sizing["input_width"] == 160
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(img).resize((784, 432), Image.BICUBIC)))


def test_caption_and_list_file(tmp_path):
    (tmp_path / "a.txt").write_text("  a ball \n")
    assert caption_for_image(tmp_path / "a.png") == "a ball" and caption_for_image(tmp_path / "b.png") == ""
    (tmp_path / "list.txt").write_text("# images\na.png\n\n/abs/b.png\ta box\n")
    assert read_image_list(tmp_path / "list.txt") == [(tmp_path / "a.png", None), (Path("/abs/b.png"), "a box")]


@pytest.mark.integration
def test_settings_the_model_cannot_run_fail_before_loading(random_bundle, monkeypatch, tmp_path):
    path = random_bundle[0]

    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(bundle_lib, "restore_model", no_loading)
    assert bundle_lib.resolve_settings(path) == SampleSettings.from_preset(PRESET)
    with pytest.raises(ValueError, match=r"num_frames=6: this model needs 1 \+ 4k frames"):
        bundle_lib.resolve_settings(path, num_frames=6)
    with pytest.raises(ValueError, match="max_area=100: below one 16 x 16"):
        bundle_lib.resolve_settings(path, max_area=100)
    with pytest.raises(ValueError, match="solver='heun'"):
        bundle_lib.resolve_settings(path, solver="heun")
    # a bundle that does not record its preset is refused, naming what is missing
    bare = tmp_path / "bare"
    bare.mkdir()
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["sampling_preset"]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="has no sampling_preset"):
        bundle_lib.load_bundle(bare)
    # the CLI: a clear error, no output written (a readable image, so the settings are what is wrong)
    from PIL import Image
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "x.png")
    res = subprocess.run([sys.executable, "-m", "fourdnex_jax", "generate", "--image", str(tmp_path / "x.png"),
                          "--checkpoint", str(path), "--out", str(tmp_path / "out"), "--config.sample.num_frames=6"],
                         capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode != 0 and "num_frames=6: this model needs 1 + 4k frames" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.integration
def test_generate_cli_list_file(random_bundle, tmp_path):
    """The bundle's own preset (5 frames, 32 x 48, 2 steps, CFG 1) without any --config flag."""
    _, r, cap = synthetic.generate_clip("heldout", 0, 1, H, W)
    for name in ("a", "b"):
        write_png(tmp_path / f"{name}.png", r["images"][0])
    (tmp_path / "a.txt").write_text(cap)
    (tmp_path / "c.png").write_bytes(b"not an image")  # a bad entry: reported and skipped, the rest written
    (tmp_path / "list.txt").write_text("a.png\nc.png\nb.png\ta box\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "fourdnex_jax", "generate", "--images", str(tmp_path / "list.txt"),
           "--checkpoint", str(random_bundle[0]), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
    assert res.returncode == 1, res.stderr[-3000:]  # some input failed
    assert f"skipped: {tmp_path / 'c.png'}: not a PNG/JPEG image" in res.stderr and "Traceback" not in res.stderr
    assert "1 of 3 image(s) skipped" in res.stderr and not (out / "c").exists()
    for name, prompt in (("a", cap), ("b", "a box")):
        d = out / name
        z = np.load(d / "pointmaps.npz")
        assert z["xyz"].shape == (T, H, W, 3) and z["xyz"].dtype == np.float32
        assert z["rgb"].shape == (T, H, W, 3) and z["rgb"].dtype == np.uint8
        assert z["valid"].shape == (T, H, W) and z["valid"].dtype == bool
        s = json.loads((d / "summary.json").read_text())
        assert s["prompt"] == prompt + " POINTMAP_STYLE." and s["seed"] == 42  # one seed for every image
        assert s["settings"]["num_steps"] == 2 and s["schedule"]["timesteps"][0] == 999
        assert {k: s["settings"][k] for k in PRESET.to_dict()} == PRESET.to_dict() == s["preset"]
        assert s["overrides"] == {} and s["recipe"] == SixDSpec().to_dict() and s["xyz_normalization"] == "reference"
        assert s["sizing"] == {"mode": "aspect", "input_height": H, "input_width": W, "height": H, "width": W,
                               "max_area": H * W, "multiple": [16, 16]}
        assert {"sampling_s", "decode_s", "load_models"} <= set(s["timings_s"])
        assert read_video(d / "rgb.mp4").shape == (T, H, W, 3) and read_video(d / "xyz.mp4").shape == (T, H, W, 3)
        # The main job ends with cameras, depth, PLY/GLB exports and a novel-view video (fourdnex_jax.geometry).
        cams = json.loads((d / "cameras.json").read_text())
        # one entry per frame: a 4x4 pose where the frame registered, null (with its status) where it did not
        assert len(cams["cam_to_world"]) == T and s["cameras"] == "cameras.json"
        assert all(c is None or np.asarray(c).shape == (4, 4) for c in cams["cam_to_world"])
        assert s["geometry"]["frames"] == T and 0 <= s["geometry"]["frames_registered"] <= T
        # transforms.json only when a camera registered (nerfstudio needs a frame)
        assert (d / "depth.npz").exists()
        assert (d / "transforms.json").exists() == (s["geometry"]["frames_registered"] > 0)
        assert list(d.glob("*.glb")) and list(d.rglob("*.ply")) and list(d.glob("*.mp4"))
        assert any("novel" in p.name for p in d.glob("*.mp4"))
    assert "generate: 2 image(s)" in res.stdout


def test_shipped_bundle_loads_and_is_small():
    """The bundled tiny model is committed (checkpoints/tiny): it must load and stay small."""
    assert (bundle_lib.DEFAULT_BUNDLE / "manifest.json").exists(), "checkpoints/tiny is missing from the checkout"
    size = sum(p.stat().st_size for p in bundle_lib.DEFAULT_BUNDLE.rglob("*") if p.is_file())
    assert size < 30e6
    b = bundle_lib.load_bundle()
    cfg = load_config_file(ROOT / "configs" / "tiny.py")
    assert b.preset == SAMPLING_PRESETS["tiny"] and b.spec == SixDSpec()
    assert b.transformer.config.modality_layout == "width" and b.preset.text_len == cfg.data.text_len
    assert b.info["dit_step"] > 0 and all(r["steps"] > 0 for r in b.info["vae_reports"])


@pytest.mark.slow
def test_shipped_model_beats_the_plane_prior_on_heldout_scenes():
    """The shipped model against the slanted-plane prior it is conditioned on, on the first 8 held-out synthetic
    scenes (rendered here, exactly as `fourdnex synth-data` + `prepare-data` make them): mean first-frame depth
    AbsRel (one scale + shift fit) and mean pointmap error over all frames must both be lower (`fourdnex eval-quality`
    reports the same on 16 scenes: docs/tiny_model.md)."""
    from fourdnex_jax.data.annotations import ClipConfig, to_clip6d
    from fourdnex_jax.data.clip6d import RawClip
    from fourdnex_jax.geometry import metrics

    cfg = load_config_file(ROOT / "configs" / "tiny.py")
    bundle = bundle_lib.load_bundle()
    s = SampleSettings.from_config(cfg.sample, bundle.preset)
    pipe = ImageTo4D.from_bundle(bundle, s)
    height, width = synthetic.TINY_HEIGHT, synthetic.TINY_WIDTH  # the training frame; the aspect rule keeps it
    assert pipe.sample_size(np.zeros((height, width, 3), np.uint8)) == (height, width)
    clips = []
    for i in range(8):
        clip_id, a, caption = synthetic.generate_clip("heldout", i, s.num_frames, height, width,
                                                      synthetic.TINY_DOME_RADIUS)
        raw = RawClip(clip_id=clip_id, rgb=a["images"], c2w=a["cam_c2w"], K=a["intrinsics"], depth=a["depths"],
                      dynamic_mask=a["dynamic_mask"], caption=caption, source="synthetic")
        clips.append(to_clip6d(raw, ClipConfig(num_frames=s.num_frames, height=height, width=width)))
    results = pipe([c.rgb[0] for c in clips], [c.caption for c in clips])
    plane = xyz_init_pointmap(height, width)
    scores = {"model": [], "plane": []}
    for c, r in zip(clips, results):
        assert np.isfinite(r.xyz).all()
        valid, gt = c.valid.astype(bool), c.xyz.astype(np.float32)
        depth0 = c.metric_xyz()[:1, ..., 2]
        for name, xyz in (("model", r.xyz), ("plane", np.broadcast_to(plane, gt.shape))):
            abs_rel = metrics.depth_metrics(xyz[:1, ..., 2], depth0, valid[:1])["abs_rel"]
            err = np.linalg.norm(xyz - gt, axis=-1)[valid].mean()
            scores[name].append((abs_rel, err))
    model, prior = np.mean(scores["model"], 0), np.mean(scores["plane"], 0)
    assert model[0] < prior[0] and model[1] < 0.95 * prior[1], (model, prior)


@pytest.mark.integration
def test_generate_portrait_with_the_shipped_bundle(tmp_path):
    """A 9:16 portrait through the shipped tiny model stays a portrait at the bundle's area (issue 14); the
    preset comes from the bundle, --config.sample.* overrides it; cover_crop (an option) gives the 2:3 frame."""
    img = (np.random.default_rng(3).random((160, 90, 3)) * 255).astype(np.uint8)
    write_png(tmp_path / "portrait.png", img)
    base = [sys.executable, "-m", "fourdnex_jax", "generate", "--image", str(tmp_path / "portrait.png"),
            "--checkpoint", str(ROOT / "checkpoints" / "tiny"), "--nopostprocess", "--config.sample.num_steps=2"]
    env = {**__import__("os").environ, "JAX_PLATFORMS": "cpu"}
    tiny = SAMPLING_PRESETS["tiny"]
    for mode, (h, w) in (("aspect", (52, 28)), ("cover_crop", (32, 48))):  # 1536 px, multiples of 4
        out = tmp_path / mode
        res = subprocess.run(base + ["--out", str(out), f"--config.sample.resize_mode={mode}"], capture_output=True,
                             text=True, timeout=600, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        s = json.loads((out / "summary.json").read_text())
        assert s["sizing"]["height"] == h and s["sizing"]["width"] == w and s["sizing"]["max_area"] == tiny.max_area
        assert (s["height"], s["width"], s["frames"]) == (h, w, tiny.num_frames)
        assert s["preset"] == tiny.to_dict() and s["overrides"] == {"num_steps": 2}
        assert np.load(out / "pointmaps.npz")["xyz"].shape == (tiny.num_frames, h, w, 3)
        assert read_video(out / "rgb.mp4").shape[1:3] == (h, w)
