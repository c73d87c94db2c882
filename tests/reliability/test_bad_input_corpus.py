"""The bad-input corpus (issue 18): every case runs a ``fourdnex`` subcommand as a user would (a subprocess) on an
input the test builds itself, and must get

* exit status != 0,
* one line ``fourdnex CMD: error: ...`` (or ``usage error``) naming the file / key and the fix (a conversion
  with several problems lists one per line under that line),
* no traceback (a traceback only with ``--verbose``: checked once),
* nothing that was already on disk lost or changed (every file under the case's folder before the run is
  byte-identical after it), and no model loaded first where the input could be checked before.

docs/reliability.md lists the cases (``CASES`` ids) and what each gets.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.integration  # 56 CLI subprocesses

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "checkpoints" / "tiny"
IMAGE = ROOT / "examples" / "synth_heldout_000000.png"


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


# ----------------------------------------------------------------------------------------------------- builders
def png(path: Path, arr: np.ndarray | None = None) -> Path:
    from PIL import Image

    arr = np.random.default_rng(0).integers(0, 255, (48, 72, 3), np.uint8) if arr is None else arr
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def truncated_png(path: Path) -> Path:
    png(path)
    path.write_bytes(path.read_bytes()[:300])
    return path


def bundle_copy(tmp: Path, damage: Callable[[Path], None]) -> Path:
    dst = tmp / "bundle"
    shutil.copytree(TINY, dst)
    damage(dst)
    return dst


def edit_json(path: Path, edit: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def previous_result(tmp: Path) -> Path:
    """A folder holding a result fourdnex wrote (published with its marker)."""
    from fourdnex_jax.media.publish import publish_dir

    out = tmp / "prev"
    with publish_dir(out, writer="test") as d:
        (d / "summary.json").write_text('{"previous": true}')
        (d / "rgb.mp4").write_bytes(b"previous video")
    return out


def pointmaps(path: Path, **arrays) -> Path:
    t, h, w = 3, 12, 16
    ys, xs = np.meshgrid(np.linspace(-0.5, 0.5, h), np.linspace(-0.6, 0.6, w), indexing="ij")
    xyz = np.stack([np.stack([xs, ys, np.full_like(xs, 2.0 + 0.1 * i)], -1) for i in range(t)]).astype(np.float32)
    base = {"xyz": xyz, "valid": np.ones((t, h, w), bool),
            "rgb": np.random.default_rng(1).integers(0, 255, (t, h, w, 3), np.uint8)}
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **base)
    return path


def object_npz(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, xyz=np.array([{"a": 1}], dtype=object))
    return path


def zero_stride_pt(path: Path) -> Path:
    from fourdnex_jax.weights import torch_pickle as tp

    storage = tp._tuple([tp._str("storage"), tp._global("torch", "FloatStorage"), tp._str("0"), tp._str("cpu"),
                         tp._int(1)]) + b"Q"
    args = tp._tuple([storage, tp._int(0), tp._tuple([tp._int(2), tp._int(2**31)]),
                      tp._tuple([tp._int(0), tp._int(0)]), b"\x89", tp._global("collections", "OrderedDict") + b")R"])
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + tp._global("torch._utils", "_rebuild_tensor_v2") + args + b"R.")
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", b"\0" * 4)
    return path


def adapter_folder(tmp: Path, domain: Callable[[Path], Path] | None) -> Path:
    from fourdnex_jax.weights import adapter as adapter_lib

    rng = np.random.default_rng(0)
    lora = {f"blocks.{i}.attn{a}.{m}.lora_{x}.weight": rng.standard_normal((4, 64) if x == "A" else (64, 4))
            .astype(np.float32) for i in range(2) for a in (1, 2) for m in ("to_q", "to_k", "to_v", "to_out.0")
            for x in "AB"}
    d = tmp / "adapter"
    adapter_lib.write_adapter(d, lora, None)
    if domain is not None:
        domain(d / adapter_lib.DOMAIN_FILE)
    return d


def wan_source(tmp: Path) -> Path:
    """A tiny diffusers transformer folder + the copied components (the encoders are skipped)."""
    from tests.weights.test_convert import _copied_components, numpy_transformer

    src = tmp / "src"
    numpy_transformer(src / "transformer")
    _copied_components(src)
    return src


CONVERT_SKIP = ["--skip", "vae", "--skip", "text_encoder", "--skip", "image_encoder"]
GEN = ["generate", "--nopostprocess"]


# ----------------------------------------------------------------------------------------------------- the corpus
# id -> (build(tmp) -> argv, substrings the error line must contain). Paths in the substrings are formatted with
# {tmp}. Each case's folder is tmp; everything in it before the run must be unchanged after.
CASES: dict[str, tuple[Callable[[Path], list[str]], list[str]]] = {
    # generate: inputs (all checked before any model loads)
    "generate/missing-image": (lambda t: GEN + ["--image", str(t / "nope.png"), "--out", str(t / "o")],
                               ["{tmp}/nope.png", "no such image file"]),
    "generate/empty-image": (lambda t: GEN + ["--image", str(_write(t / "e.png", b"")), "--out", str(t / "o")],
                             ["{tmp}/e.png", "empty"]),
    "generate/garbage-image": (lambda t: GEN + ["--image", str(_write(t / "g.png", b"this is text")), "--out",
                                                str(t / "o")], ["{tmp}/g.png", "not a PNG/JPEG image"]),
    "generate/truncated-png": (lambda t: GEN + ["--image", str(truncated_png(t / "tr.png")), "--out", str(t / "o")],
                               ["{tmp}/tr.png", "not a readable PNG/JPEG"]),
    "generate/image-is-folder": (lambda t: GEN + ["--image", str(t), "--out", str(t / "o")],
                                 ["is a folder"]),
    "generate/list-missing": (lambda t: GEN + ["--images", str(t / "list.txt"), "--out", str(t / "o")],
                              ["{tmp}/list.txt", "no such list file"]),
    "generate/list-all-bad": (lambda t: GEN + ["--images", str(_write(t / "l.txt", b"a.png\nb.png\n")), "--out",
                                               str(t / "o")], ["no usable entry", "{tmp}/a.png"]),
    "generate/out-is-file": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(_write(t / "f", b"x"))],
                             ["--out {tmp}/f", "is a file"]),
    "generate/out-has-result": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(previous_result(t))],
                                ["--out {tmp}/prev", "already holds a result", "--overwrite"]),
    "generate/no-out": (lambda t: GEN + ["--image", str(png(t / "i.png"))], ["--out"]),
    # generate: bundles
    "generate/bundle-missing": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(t / "nob"),
                                                 "--out", str(t / "o")], ["{tmp}/nob", "no such bundle folder"]),
    "generate/bundle-no-adapter": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(bundle_copy(
        t, lambda b: shutil.rmtree(b / "transformer_adapter"))), "--out", str(t / "o")],
        ["{tmp}/bundle", "transformer_adapter/ missing"]),
    "generate/bundle-no-vae-metadata": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: (b / "vae" / "_METADATA").unlink())), "--out", str(t / "o")],
        ["{tmp}/bundle/vae/_METADATA missing"]),
    "generate/bundle-no-manifest": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: (b / "manifest.json").unlink())), "--out", str(t / "o")],
        ["{tmp}/bundle/manifest.json not found"]),
    "generate/bundle-manifest-corrupt": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: (b / "manifest.json").write_text("{truncated"))), "--out", str(t / "o")],
        ["{tmp}/bundle/manifest.json", "not valid JSON"]),
    "generate/bundle-config-string-int": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: edit_json(b / "configs" / "transformer.json",
                                           lambda o: o["config"].update(num_layers="2")))), "--out", str(t / "o")],
        ["{tmp}/bundle/configs/transformer.json", "num_layers='2'", "needs int"]),
    "generate/bundle-config-unknown-key": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: edit_json(b / "configs" / "transformer.json",
                                           lambda o: o["config"].update(num_layer=2)))), "--out", str(t / "o")],
        ["{tmp}/bundle/configs/transformer.json", "unknown key 'num_layer'", "did you mean 'num_layers'"]),
    "generate/bundle-config-missing": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: (b / "configs" / "vae.json").unlink())), "--out", str(t / "o")],
        ["{tmp}/bundle/configs/vae.json"]),
    "generate/bundle-chunk-missing": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: shutil.rmtree(b / "vae" / "ocdbt.process_0"))), "--out", str(t / "o")],
        ["{tmp}/bundle/vae", "files missing or truncated", "ocdbt.process_0/"]),
    "generate/bundle-chunk-truncated": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--checkpoint", str(
        bundle_copy(t, lambda b: _truncate(max((b / "transformer").rglob("d/*"), key=lambda p: p.stat().st_size)))),
        "--out", str(t / "o")], ["{tmp}/bundle/transformer", "missing or truncated", "bytes"]),
    # generate: settings
    "generate/setting-bad-choice": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(t / "o"),
                                                     "--config.sample.solver=bogus"], ["solver", "bogus"]),
    "generate/setting-unknown-key": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(t / "o"),
                                                      "--config.sample.num_step=3"], ["num_step"]),
    "generate/setting-wrong-type": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(t / "o"),
                                                     "--config.sample.num_steps=many"], ["num_steps"]),
    # generate: caches holding native code
    "generate/aot-cache-world-writable": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(t / "o"),
                                                           "--aot-cache", str(_shared_dir(t / "exe"))],
                                          ["--aot-cache {tmp}/exe", "world-writable"]),
    "generate/compilation-cache-planted": (lambda t: GEN + ["--image", str(png(t / "i.png")), "--out", str(t / "o"),
                                                            "--compilation-cache", str(_planted_xla(t / "xla"))],
                                           ["--compilation-cache {tmp}/xla", "not signed", "planted-cache"]),
    # register
    "register/pointmaps-jpeg": (lambda t: ["register", "--pointmaps", str(_jpeg(t / "p.jpg")), "--out", str(t / "o"),
                                           "--normalization", "sequence"], ["{tmp}/p.jpg", "not an .npz archive"]),
    "register/pointmaps-missing": (lambda t: ["register", "--pointmaps", str(t / "none.npz"), "--out", str(t / "o"),
                                              "--normalization", "sequence"], ["{tmp}/none.npz", "no such"]),
    "register/object-array": (lambda t: ["register", "--pointmaps", str(object_npz(t / "o.npz")), "--out",
                                         str(t / "out"), "--normalization", "sequence"],
                              ["{tmp}/o.npz", "object (pickled) arrays"]),
    "register/truncated-npz": (lambda t: ["register", "--pointmaps", str(_truncate(pointmaps(t / "p.npz"))),
                                          "--out", str(t / "o"), "--normalization", "sequence"],
                               ["{tmp}/p.npz", "truncated or corrupt"]),
    "register/all-nan": (lambda t: ["register", "--pointmaps", str(pointmaps(t / "p.npz", xyz=np.full(
        (3, 12, 16, 3), np.nan, np.float32))), "--out", str(t / "o"), "--normalization", "sequence"],
        ["{tmp}/p.npz", "no usable point"]),
    "register/all-invalid": (lambda t: ["register", "--pointmaps", str(pointmaps(t / "p.npz", valid=np.zeros(
        (3, 12, 16), bool))), "--out", str(t / "o"), "--normalization", "sequence"],
        ["{tmp}/p.npz", "no usable point"]),
    "register/wrong-array-name": (lambda t: ["register", "--pointmaps", str(pointmaps(
        t / "p.npz", points=np.zeros((3, 12, 16, 3), np.float32), xyz=None)), "--out", str(t / "o"),
        "--normalization", "sequence"], ["{tmp}/p.npz", "'xyz'", "points"]),
    "register/xyz-wrong-shape": (lambda t: ["register", "--pointmaps", str(pointmaps(
        t / "p.npz", xyz=np.zeros((12, 16, 3), np.float32), valid=None, rgb=None)), "--out", str(t / "o"),
        "--normalization", "sequence"], ["{tmp}/p.npz", "'xyz' is (12, 16, 3)"]),
    "register/valid-wrong-shape": (lambda t: ["register", "--pointmaps", str(pointmaps(
        t / "p.npz", valid=np.ones((3, 12), bool))), "--out", str(t / "o"), "--normalization", "sequence"],
        ["{tmp}/p.npz", "'valid'"]),
    "register/rgb-wrong-shape": (lambda t: ["register", "--pointmaps", str(pointmaps(
        t / "p.npz", rgb=np.zeros((3, 12, 15, 3), np.uint8))), "--out", str(t / "o"), "--normalization",
        "sequence"], ["{tmp}/p.npz", "'rgb'"]),
    "register/rgb-out-of-range": (lambda t: ["register", "--pointmaps", str(pointmaps(
        t / "p.npz", rgb=np.full((3, 12, 16, 3), 300.0, np.float32))), "--out", str(t / "o"), "--normalization",
        "sequence"], ["{tmp}/p.npz", "'rgb'", "[0, 1]"]),
    "register/xyz-strings": (lambda t: ["register", "--pointmaps", str(pointmaps(
        t / "p.npz", xyz=np.full((3, 12, 16, 3), "a"))), "--out", str(t / "o"), "--normalization", "sequence"],
        ["{tmp}/p.npz", "'xyz'"]),
    "register/out-is-file": (lambda t: ["register", "--pointmaps", str(pointmaps(t / "p.npz")), "--out",
                                        str(_write(t / "f", b"x")), "--normalization", "sequence"],
                             ["--out {tmp}/f", "is a file"]),
    "register/out-has-result": (lambda t: ["register", "--pointmaps", str(pointmaps(t / "p.npz")), "--out",
                                           str(previous_result(t)), "--normalization", "sequence"],
                                ["--out {tmp}/prev", "--overwrite"]),
    "register/bad-normalization": (lambda t: ["register", "--pointmaps", str(pointmaps(t / "p.npz")), "--out",
                                              str(t / "o"), "--normalization", "metrc"], ["normalization"]),
    # render
    "render/scene-without-cameras": (lambda t: ["render", "--scene", str(t), "--out", str(t / "v.mp4")],
                                     ["--scene {tmp}", "no cameras.json"]),
    "render/out-exists": (lambda t: ["render", "--scene", str(_scene(t)), "--out",
                                     str(_write(t / "v.mp4", b"previous video"))],
                          ["--out {tmp}/v.mp4", "--overwrite"]),
    "render/out-is-folder": (lambda t: ["render", "--scene", str(_scene(t)), "--out", str(t)], ["is a folder"]),
    # export (jax-to-torch)
    "export/src-missing": (lambda t: ["export", "--src", str(t / "none"), "--out", str(t / "o")],
                           ["{tmp}/none", "no such folder"]),
    "export/src-damaged": (lambda t: ["export", "--src", str(bundle_copy(
        t, lambda b: (b / "transformer" / "_METADATA").unlink())), "--out", str(t / "o")],
        ["{tmp}/bundle/transformer/_METADATA missing"]),
    "export/out-has-result": (lambda t: ["export", "--src", str(TINY), "--out", str(previous_result(t))],
                              ["--out {tmp}/prev", "--overwrite"]),
    # train
    "train/nan-policy-typo": (lambda t: ["train", "--config", "tiny", "--out", str(t / "run"),
                                         f"--config.data.dir={t}", "--config.train.nan_policy=ignore"],
                              ["train.nan_policy='ignore'", "'skip', 'stop'"]),
    "train/optim-preset-typo": (lambda t: ["train", "--config", "tiny", "--out", str(t / "run"),
                                           f"--config.data.dir={t}", "--config.optim.preset=reference"],
                                ["optim.preset='reference'", "reference_effective"]),
    "train/model-bad-choice": (lambda t: ["train", "--config", "tiny", "--out", str(t / "run"),
                                          f"--config.data.dir={t}", "--config.model.attention=fastest"],
                               ["--config.model", "attention"]),
    "train/data-dir-missing": (lambda t: ["train", "--config", "tiny", "--out", str(t / "run"),
                                          f"--config.data.dir={t / 'nods'}"],
                               ["config.data.dir {tmp}/nods", "no encoded6d dataset"]),
    # convert (torch-to-jax)
    "convert/src-incomplete": (lambda t: ["convert", "--src", str(_mkdir(t / "empty")), "--out", str(t / "o")],
                               ["component transformer/ missing", "--skip transformer"]),
    "convert/adapter-no-domain": (lambda t: ["convert", "--src", str(wan_source(t)), "--adapter", str(
        adapter_folder(t, None)), "--out", str(t / "o"), "--preset", "tiny", *CONVERT_SKIP],
        ["learnable_domain_embeddings.pt missing", "--allow-no-domain-embeddings"]),
    "convert/adapter-pt-16gib": (lambda t: ["convert", "--src", str(wan_source(t)), "--adapter", str(
        adapter_folder(t, zero_stride_pt)), "--out", str(t / "o"), "--preset", "tiny", *CONVERT_SKIP],
        ["learnable_domain_embeddings.pt", "overlapping strides"]),
    "convert/adapter-pt-zip-bomb": (lambda t: ["convert", "--src", str(wan_source(t)), "--adapter", str(
        adapter_folder(t, _zip_bomb)), "--out", str(t / "o"), "--preset", "tiny", *CONVERT_SKIP],
        ["learnable_domain_embeddings.pt", "compressed"]),
    "convert/adapter-pt-code": (lambda t: ["convert", "--src", str(wan_source(t)), "--adapter", str(
        adapter_folder(t, _evil_pt)), "--out", str(t / "o"), "--preset", "tiny", *CONVERT_SKIP],
        ["learnable_domain_embeddings.pt", "refusing to load global"]),
    "convert/out-has-result": (lambda t: ["convert", "--src", str(wan_source(t)), "--out", str(previous_result(t)),
                                          "--preset", "tiny", *CONVERT_SKIP], ["--out {tmp}/prev", "--overwrite"]),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _shared_dir(path: Path) -> Path:
    path.mkdir()
    os.chmod(path, 0o777)
    return path


def _planted_xla(path: Path) -> Path:
    path.mkdir(mode=0o700)
    (path / "planted-cache").write_bytes(b"native code from elsewhere")
    return path


def _jpeg(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path, format="JPEG")
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _scene(tmp: Path) -> Path:
    scene = tmp / "scene"
    scene.mkdir()
    (scene / "cameras.json").write_text("{}")
    return scene


def _zip_bomb(path: Path) -> Path:
    n = 2**22
    from fourdnex_jax.weights import torch_pickle as tp

    storage = tp._tuple([tp._str("storage"), tp._global("torch", "FloatStorage"), tp._str("0"), tp._str("cpu"),
                         tp._int(n)]) + b"Q"
    args = tp._tuple([storage, tp._int(0), tp._tuple([tp._int(2), tp._int(n // 2)]),
                      tp._tuple([tp._int(n // 2), tp._int(1)]), b"\x89",
                      tp._global("collections", "OrderedDict") + b")R"])
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + tp._global("torch._utils", "_rebuild_tensor_v2") + args + b"R.")
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", b"\0" * (4 * n))
    return path


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _evil_pt(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"learnable_domain_embeddings": _Evil()}, protocol=2))
        z.writestr("archive/byteorder", "little")
    return path


def check_case(case: str, tmp: Path, verbose: bool = False) -> tuple[subprocess.CompletedProcess, str]:
    build, needles = CASES[case]
    argv = build(tmp)
    assert argv, f"{case}: builder returned no command"
    before = snapshot(tmp)
    res = run_cli(*argv, *(["--verbose"] if verbose else []), cwd=tmp, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"{case}: exit status 0\n{out[-3000:]}"
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    cmd = argv[0]
    starts = [i for i, ln in enumerate(lines)
              if ln.startswith((f"fourdnex {cmd}: error: ", f"fourdnex {cmd}: usage error: "))]
    assert starts, f"{case}: no one-line error\n{out[-3000:]}"
    # the error line; a converter error with several problems lists one per line under it
    line = "\n".join(lines[starts[-1]:])
    assert "\n" not in line or cmd == "convert", f"{case}: message over several lines:\n{line}"
    for needle in needles:
        assert needle.format(tmp=tmp) in line, f"{case}: {needle.format(tmp=tmp)!r} not in: {line}"
    if not verbose:
        assert "Traceback" not in out, f"{case}: traceback\n{out[-3000:]}"
    after = snapshot(tmp)
    lost = {k: v for k, v in before.items() if after.get(k) != v}
    assert not lost, f"{case}: files lost or changed: {sorted(lost)}"
    assert not (tmp / "pwned").exists()
    return res, line


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(case, tmp_path):
    check_case(case, tmp_path)


def test_verbose_shows_the_traceback(tmp_path):
    res, _ = check_case("generate/missing-image", tmp_path, verbose=True)
    assert "Traceback" in res.stderr


def test_register_float_rgb_in_unit_range_keeps_its_colours(tmp_path):
    """Not an error: float RGB in [0, 1] is scaled to 8 bit (it used to be cast to near-black)."""
    rgb = np.random.default_rng(2).uniform(0.2, 1.0, (3, 12, 16, 3)).astype(np.float32)
    p = pointmaps(tmp_path / "p.npz", rgb=rgb)
    res = run_cli("register", "--pointmaps", p, "--out", tmp_path / "o", "--normalization", "sequence", "--novideo",
                  cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    from PIL import Image

    first = sorted((tmp_path / "o" / "images").glob("*.png"))[0]
    got = np.asarray(Image.open(first).convert("RGB"))
    np.testing.assert_array_equal(got, np.round(rgb[0] * 255).astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "p.npz"]  # published, no temporary folder


def test_corpus_is_counted_in_the_docs():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    missing = [c for c in CASES if f"`{c}`" not in doc]
    assert not missing, f"docs/reliability.md does not list {missing}"
    assert f"{len(CASES)} bad-input cases" in doc
