"""Peak memory of the restricted ``.pt`` reader against the file's size (issue 26: no file may allocate far beyond
its size).

Writes a few ``.pt`` files (honest ones and the issue's attack) into a temporary folder, parses each in a fresh
process and reports the growth of the peak resident set size (the kernel's high-water mark, reset after the
imports, minus the resident size then: the interpreter and imports excluded) as a multiple of the file's size.
The stated bound (``fourdnex_jax/weights/torch_pickle.py``): about ``(1 + COPY_FACTOR) x file +
PICKLE_OBJECT_FACTOR x data.pkl + 1 MiB``, i.e. <= 3x for weights files.

    python -m benchmarks.pt_reader_memory [--out benchmarks/results/pt_reader_memory.json] [--mb 64]
        [--compare /path/to/other/checkout]

``--compare``: also parse every file with the reader of another checkout (e.g. the commit before issue 26), in
the same run, for a before/after on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from benchmarks.common import host_info, print_table, write_json
from fourdnex_jax.weights import torch_pickle as tp

# The peak is the kernel's high-water mark (VmHWM), reset after the imports (``clear_refs`` 5), so only the parse
# counts; the baseline is the resident size at that moment.
_CHILD = """
import json, sys
from fourdnex_jax.weights import torch_pickle as tp

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
try:
    out = tp.load_pt(sys.argv[1]); outcome = f"parsed ({len(out) if isinstance(out, dict) else 1} tensors)"
except tp.PtFormatError as e:
    outcome = "refused: " + str(e).split(": ", 1)[-1][:70]
print(json.dumps({"outcome": outcome, "peak_growth_bytes": status("VmHWM") - before}, allow_nan=False))
"""


def _tensor(key: str, numel: int, size, stride) -> bytes:
    storage = tp._tuple([tp._str("storage"), tp._global("torch", "FloatStorage"), tp._str(key), tp._str("cpu"),
                         tp._int(numel)]) + b"Q"
    args = tp._tuple([storage, tp._int(0), tp._tuple([tp._int(s) for s in size]),
                      tp._tuple([tp._int(s) for s in stride]), b"\x89",
                      tp._global("collections", "OrderedDict") + b")R"])
    return tp._global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _crafted(path: Path, entries: list[tuple[str, str, int, tuple, tuple]], storages: dict[str, int]) -> Path:
    body = tp._global("collections", "OrderedDict") + b")R("
    for name, key, numel, size, stride in entries:
        body += tp._str(name) + _tensor(key, numel, size, stride)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + body + b"u.")
        z.writestr("archive/byteorder", "little")
        for key, numel in storages.items():
            z.writestr(f"archive/data/{key}", np.zeros(numel, np.float32).tobytes())
    return path


def build(folder: Path, mb: int) -> dict[str, Path]:
    n = 16
    per = mb * 2**20 // 4 // n
    side = int(per ** 0.5)
    per = side * side
    rng = np.random.default_rng(0)
    files = {"honest contiguous (save_pt)": tp.save_pt(folder / "honest.pt", {
        f"w{i}": rng.standard_normal(per, dtype=np.float32) for i in range(n)})}
    files["honest transposed (each tensor a strided view)"] = _crafted(
        folder / "transposed.pt", [(f"w{i}", str(i), per, (side, side), (1, side)) for i in range(n)],
        {str(i): per for i in range(n)})
    numel = 2**18
    s = int(numel ** 0.5)
    files["tied: 500 contiguous views of one 1 MB storage"] = _crafted(
        folder / "tied.pt", [(f"t{i}", "0", numel, (numel,), (1,)) for i in range(500)], {"0": numel})
    files["issue attack: 1400 strided views of one 1 MB storage"] = _crafted(
        folder / "attack.pt", [(f"t{i}", "0", numel, (s, s), (1, s)) for i in range(1400)], {"0": numel})
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="Size of the honest files.")
    parser.add_argument("--out", default=None, help="JSON report path.")
    parser.add_argument("--compare", default=None, help="Another checkout whose reader also parses every file.")
    args = parser.parse_args()
    rows, results = [], []
    readers = [("this", None)] + ([("compare", args.compare)] if args.compare else [])
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in build(Path(tmp), args.mb).items():
            for reader, root in readers:
                env = {**os.environ, **({"PYTHONPATH": root} if root else {})}
                proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                                      check=True, env=env, cwd=root or os.getcwd())
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                size = path.stat().st_size
                r.update(file=name, reader=root or "this checkout", file_bytes=size,
                         ratio=round(r["peak_growth_bytes"] / size, 2))
                results.append(r)
                rows.append([name, reader, f"{size / 2**20:.1f}", f"{r['peak_growth_bytes'] / 2**20:.1f}", r["ratio"],
                             r["outcome"][:60]])
    print_table(["file", "reader", "MiB", "peak RSS growth MiB", "x file", "outcome"], rows)
    write_json(args.out, {"command": " ".join(sys.argv), "host": host_info(), "results": results})


if __name__ == "__main__":
    main()
