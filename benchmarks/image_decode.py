"""Decoding a large photo for the pipeline: full-size decode vs reduced-size JPEG decode (``PIL.Image.draft``).

    python -m benchmarks.image_decode [--size 6000x4000] [--area 345600] [--repeats 3] [--out bench.json]

Writes a ``--size`` (W x H) JPEG (quality 90, a smooth gradient plus noise, like a photo), then times, in the same
process and interleaved, what ``fourdnex generate`` / ``ImageTo4DPipeline`` do with it before any model runs:

* ``full``: decode at full size (``load_image(path)``), then ``prepare_image`` to the preset's area (the
  Pillow-exact bicubic resize of :mod:`fourdnex_jax.media.resize`), i.e. the behaviour before the change;
* ``draft``: ``load_image(path, target=...)`` (libjpeg decodes at 1/2, 1/4 or 1/8 scale, never below twice the
  target size), then the same ``prepare_image``.

Reports the median wall seconds of each (decode and prepare separately) and their process CPU seconds (steadier on
a shared machine), the ratios, the peak resident memory growth of
each path (a fresh subprocess per path, ``ru_maxrss``), and how close the two prepared images are (PSNR, dB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fourdnex_jax.media.images import load_image
from fourdnex_jax.pipelines.inputs import prepare_image, resize_target

MULTIPLE = (16, 16)

# VmHWM (this process's own peak; ru_maxrss would carry the parent's peak over fork + exec)
_PEAK = """
import sys
from fourdnex_jax.media.images import load_image
from fourdnex_jax.pipelines.inputs import prepare_image, resize_target
def hwm():
    return int(next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM")).split()[1])
base = hwm()
area = int(sys.argv[3])
target = (lambda h, w: resize_target(h, w, area, (16, 16), "aspect")) if sys.argv[2] == "draft" else None
img, _ = load_image(sys.argv[1], target=target)
prepare_image(img, area, (16, 16), "aspect")
print(hwm() - base)
"""


def _photo(path: Path, w: int, h: int) -> None:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(0)
    img = np.stack([255 * x / w, 255 * y / h, 127 + 100 * np.sin(x / 97) * np.cos(y / 61)], -1)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, format="JPEG", quality=90)


def _run(path: Path, area: int, draft: bool) -> tuple[float, float, float, np.ndarray, dict]:
    """(decode wall s, prepare wall s, total process CPU s, prepared image, decode record)."""
    target = (lambda h, w: resize_target(h, w, area, MULTIPLE, "aspect")) if draft else None
    c0, t0 = time.process_time(), time.perf_counter()
    img, info = load_image(path, target=target)
    t1 = time.perf_counter()
    out, _ = prepare_image(img, area, MULTIPLE, "aspect")
    return t1 - t0, time.perf_counter() - t1, time.process_time() - c0, out, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="6000x4000", help="W x H of the test JPEG")
    ap.add_argument("--area", type=int, default=480 * 720, help="sampling area (the 14B preset's 480 x 720)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "photo.jpg"
        _photo(path, w, h)
        times = {"full": [], "draft": []}
        outs, infos = {}, {}
        for _ in range(args.repeats):
            for name in ("full", "draft"):  # interleaved: the machine's load affects both alike
                dec, prep, cpu, out, info = _run(path, args.area, name == "draft")
                times[name].append((dec, prep, cpu))
                outs[name], infos[name] = out, info
        peak = {name: int(subprocess.run([sys.executable, "-c", _PEAK, str(path), name, str(args.area)],
                                         capture_output=True, text=True, check=True).stdout.strip()) * 1024
                for name in ("full", "draft")}
        file_bytes = path.stat().st_size
    diff = outs["full"].astype(np.float64) - outs["draft"]
    report = {"image": f"{w}x{h} JPEG q90 ({file_bytes} bytes)", "area": args.area,
              "prepared": list(outs["full"].shape), "draft_scale": infos["draft"]["draft_scale"],
              "psnr_db": round(float(10 * np.log10(255**2 / max(np.mean(diff**2), 1e-12))), 2)}
    for name, rows in times.items():
        report[name] = {"decode_s": round(statistics.median(r[0] for r in rows), 3),
                        "prepare_s": round(statistics.median(r[1] for r in rows), 3),
                        "total_s": round(statistics.median(r[0] + r[1] for r in rows), 3),
                        "total_cpu_s": round(statistics.median(r[2] for r in rows), 3),
                        "peak_rss_growth_mb": round(peak[name] / 2**20, 1)}
    report["speedup_total"] = round(report["full"]["total_s"] / report["draft"]["total_s"], 1)
    report["speedup_decode"] = round(report["full"]["decode_s"] / report["draft"]["decode_s"], 1)
    report["speedup_total_cpu"] = round(report["full"]["total_cpu_s"] / report["draft"]["total_cpu_s"], 1)
    print(json.dumps(report, indent=2, allow_nan=False))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, allow_nan=False))


if __name__ == "__main__":
    main()
