"""The restricted ``.pt`` reader cannot be steered (issue 26, class 2): the two attacks of the issue (``BUILD`` setting
``__defaults__`` on one of the reader's functions; a 1 MB file asking for 1.4 GB), the opcodes a plain tensor file
never needs, and a fuzz run (random opcode streams and mutated real files, a few seconds, seeded): every input either
parses or raises :class:`PtFormatError`, and no attribute of any module object changes."""

from __future__ import annotations

import collections
import io
import struct
import sys
import time
import tracemalloc
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fourdnex_jax.weights import torch_pickle as tp

GLOBAL_TENSOR = tp._global("torch._utils", "_rebuild_tensor_v2")


def _zip(path: Path, pkl: bytes, records: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/byteorder", "little")
        for name, payload in (records or {}).items():
            z.writestr(f"archive/data/{name}", payload)
    return path


def _tensor_ops(key: str, numel: int, size, stride, offset: int = 0) -> bytes:
    storage = tp._tuple([tp._str("storage"), tp._global("torch", "FloatStorage"), tp._str(key), tp._str("cpu"),
                         tp._int(numel)]) + b"Q"
    hooks = tp._global("collections", "OrderedDict") + b")R"
    args = tp._tuple([storage, tp._int(offset), tp._tuple([tp._int(s) for s in size]),
                      tp._tuple([tp._int(s) for s in stride]), b"\x89", hooks])
    return GLOBAL_TENSOR + args + b"R"


def _module_attrs(*modules) -> dict:
    """Identity of every attribute of ``modules`` and, for their functions and classes, of the attributes an
    attacker would set (``__defaults__``, ``__kwdefaults__``, ``__code__``, ``__dict__`` entries)."""
    out = {}
    for mod in modules:
        for name, value in vars(mod).items():
            out[(mod.__name__, name)] = id(value)
            if isinstance(value, types.FunctionType):
                out[(mod.__name__, name, "defaults")] = (value.__defaults__, value.__kwdefaults__, id(value.__code__))
                out[(mod.__name__, name, "dict")] = dict(value.__dict__)
            elif isinstance(value, type) or isinstance(value, (tp._Reducer, tp._StorageType)):
                out[(mod.__name__, name, "dict")] = {k: id(v) for k, v in vars(value).items()}
    out["OrderedDict"] = {k: id(v) for k, v in vars(collections.OrderedDict).items()}
    for reducer in tp._GLOBALS.values():
        out[("global", id(reducer))] = dict(vars(reducer))
    return out


WATCHED = (tp, collections, np, zipfile, io, struct)


# ------------------------------------------------------------------------------------------------ the two attacks
def build_defaults_attack(tmp_path: Path) -> Path:
    """The issue's file: ``BUILD`` with slot state ``{'__defaults__': (...)}`` on an allowed global (the reader's
    own tensor rebuild function), then an honest tensor so the conversion goes on."""
    attack = GLOBAL_TENSOR + b"N}" + tp._str("__defaults__") + tp._tuple([tp._int(7)]) + b"s\x86b0"
    pkl = b"\x80\x02" + attack + _tensor_ops("0", 4, (2, 2), (2, 1)) + b"."
    return _zip(tmp_path / "learnable_domain_embeddings.pt", pkl, {"0": np.ones(4, np.float32).tobytes()})


def memory_attack(tmp_path: Path, copies: int = 1400, numel: int = 2**18) -> Path:
    """The issue's 1 MB file asking for 1.4 GB: one 1 MB storage viewed ``copies`` times through a transposed
    (non-contiguous) view, each a 1 MB copy for a reader that copies every view."""
    side = int(numel ** 0.5)
    body = tp._global("collections", "OrderedDict") + b")R("
    for i in range(copies):
        body += tp._str(f"t{i}") + _tensor_ops("0", numel, (side, side), (1, side))
    pkl = b"\x80\x02" + body + b"u."
    return _zip(tmp_path / "big.pt", pkl, {"0": np.zeros(numel, np.float32).tobytes()})


def test_build_on_a_reader_function_is_refused_and_changes_nothing(tmp_path):
    before = _module_attrs(*WATCHED)
    path = build_defaults_attack(tmp_path)
    with pytest.raises(tp.PtFormatError, match="state"):
        tp.load_pt(path)
    assert _module_attrs(*WATCHED) == before


def test_one_mb_file_cannot_ask_for_gigabytes(tmp_path):
    path = memory_attack(tmp_path)
    assert path.stat().st_size < 1.3 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(tp.PtFormatError, match="copy"):
            tp.load_pt(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * path.stat().st_size + 2**21, peak  # the stated bound (module docstring), not 1.4 GB


def test_shared_storage_views_cost_nothing(tmp_path):
    """An honest file whose tensors are contiguous views of one storage (tied weights, q/k/v slices) parses into
    views: memory is the storage, whatever the number of views."""
    numel, n = 2**18, 500
    body = tp._global("collections", "OrderedDict") + b")R("
    for i in range(n):
        body += tp._str(f"t{i}") + _tensor_ops("0", numel, (numel // 2,), (1,), offset=(i % 2) * numel // 2)
    path = _zip(tmp_path / "tied.pt", b"\x80\x02" + body + b"u.",
                {"0": np.arange(numel, dtype=np.float32).tobytes()})
    tracemalloc.start()
    try:
        out = tp.load_pt(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(out) == n and out["t1"][0] == numel // 2
    assert peak < 4 * path.stat().st_size + 2**21, peak


def test_records_aliasing_one_local_record_are_refused(tmp_path):
    """Ten storage records that are central-directory entries pointing at one local record would read its bytes
    ten times; refused (zipfile's header check or the reader's total: storages may not exceed the archive)."""
    numel = 2**16
    payload = np.zeros(numel, np.float32).tobytes()
    body = tp._global("collections", "OrderedDict") + b")R("
    for i in range(10):
        body += tp._str(f"t{i}") + _tensor_ops(str(i), numel, (numel,), (1,))
    path = tmp_path / "alias.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + body + b"u.")
        z.writestr("archive/data/0", payload)
    # forge 39 more central-directory entries for the same local record
    raw = bytearray(path.read_bytes())
    eocd = raw.rfind(b"PK\x05\x06")
    cd_off, = struct.unpack("<I", raw[eocd + 16:eocd + 20])
    entries = raw[cd_off:eocd]
    second = entries.find(b"PK\x01\x02", 4)
    rec = entries[second:]
    name_len, = struct.unpack("<H", rec[28:30])
    assert name_len == len("archive/data/0")
    forged = b"".join(rec[:46] + f"archive/data/{i}".encode() + rec[46 + name_len:] for i in range(1, 10))
    count = 11
    new_cd = bytes(entries) + forged
    tail = bytearray(raw[eocd:])
    struct.pack_into("<HHII", tail, 8, count, count, len(new_cd), cd_off)
    path.write_bytes(bytes(raw[:cd_off]) + new_cd + bytes(tail))
    with pytest.raises(tp.PtFormatError):
        tp.load_pt(path)


@pytest.mark.parametrize("opcode", [b"i", b"o", b"\x81", b"\x92", b"\x82", b"I", b"P", b"S", b"V", b"\x8f",
                                    b"\x96", b"\x97", b"\x98", b"F", b"g", b"p"])
def test_opcodes_a_tensor_file_never_needs_are_refused(tmp_path, opcode):
    pkl = b"\x80\x02" + _tensor_ops("0", 4, (4,), (1,)) + opcode + b"0."
    with pytest.raises(tp.PtFormatError):
        tp.load_pt(_zip(tmp_path / "x.pt", pkl, {"0": bytes(16)}))


@pytest.mark.parametrize("bad_args", [
    lambda: tp._tuple([tp._str("x")] * 6),  # not a storage
    lambda: tp._tuple([tp._int(0)]),  # wrong count
    lambda: b"N",  # not a tuple
])
def test_reducer_arguments_are_type_checked(tmp_path, bad_args):
    pkl = b"\x80\x02" + GLOBAL_TENSOR + bad_args() + b"R."
    with pytest.raises(tp.PtFormatError):
        tp.load_pt(_zip(tmp_path / "x.pt", pkl))


def test_build_on_a_state_dict_keeps_only_what_torch_writes(tmp_path):
    """torch's state_dict() pickles an OrderedDict with a ``_metadata`` state (BUILD): accepted (and dropped) on
    an OrderedDict the reader built; any other state refused."""
    od = tp._global("collections", "OrderedDict") + b")R"
    ok = b"\x80\x02" + od + b"}" + tp._str("_metadata") + b"}sb."
    assert tp.load_pt(_zip(tmp_path / "a.pt", ok)) == collections.OrderedDict()
    bad = b"\x80\x02" + od + b"}" + tp._str("__class__") + b"Ksb."
    with pytest.raises(tp.PtFormatError):
        tp.load_pt(_zip(tmp_path / "b.pt", bad))
    on_dict = b"\x80\x02}}" + tp._str("_metadata") + b"}sb."
    with pytest.raises(tp.PtFormatError):
        tp.load_pt(_zip(tmp_path / "c.pt", on_dict))


# ------------------------------------------------------------------------------------------------------- fuzzing
_ARGS = {  # opcode -> argument bytes generator
    b"J": lambda r: struct.pack("<i", int(r.integers(-2**31, 2**31))), b"K": lambda r: bytes([int(r.integers(256))]),
    b"M": lambda r: struct.pack("<H", int(r.integers(2**16))), b"\x8a": lambda r: b"\x02\x01\x00",
    b"G": lambda r: struct.pack(">d", float(r.normal())), b"X": lambda r: struct.pack("<I", 3) + b"abc",
    b"\x8c": lambda r: b"\x02hi", b"C": lambda r: b"\x02hi", b"h": lambda r: bytes([int(r.integers(4))]),
    b"q": lambda r: bytes([int(r.integers(4))]), b"\x80": lambda r: b"\x02",
    b"c": lambda r: [b"torch._utils\n_rebuild_tensor_v2\n", b"collections\nOrderedDict\n", b"torch\nFloatStorage\n",
                     b"builtins\neval\n", b"torch._utils\n_rebuild_parameter\n"][int(r.integers(5))],
}
_ALPHABET = [bytes([b]) for b in b"()t\x85\x86\x87]ael}dsuNR\x88\x89Qb012.\x94\x93"] + list(_ARGS) + [b"i", b"o"]


def _random_stream(rng: np.random.Generator) -> bytes:
    out = [b"\x80\x02"]
    for _ in range(int(rng.integers(1, 40))):
        op = _ALPHABET[int(rng.integers(len(_ALPHABET)))]
        out.append(op + (_ARGS[op](rng) if op in _ARGS else b""))
    if rng.random() < 0.7:
        out.append(b".")
    return b"".join(out)


def _honest_files(tmp_path: Path) -> list[bytes]:
    rng = np.random.default_rng(0)
    files = [tp.save_pt(tmp_path / "a.pt", {"w": rng.normal(size=(3, 4)).astype(np.float32),
                                            "b": np.arange(5, dtype=np.int64)}),
             tp.save_pt(tmp_path / "b.pt", rng.normal(size=(2, 8)).astype(np.float32))]
    try:  # files torch itself writes (state_dict _metadata, Parameters, strided views), when torch is installed
        import torch

        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
        torch.save(m.state_dict(), tmp_path / "c.pt")
        base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
        torch.save({"t": base.t(), "p": torch.nn.Parameter(torch.ones(2)), "v": base[1:]}, tmp_path / "d.pt")
        files += [tmp_path / "c.pt", tmp_path / "d.pt"]
    except ImportError:
        pass
    return [Path(f).read_bytes() for f in files]


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 6))):
        kind = rng.integers(4)
        at = int(rng.integers(len(b)))
        if kind == 0:
            b[at] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            b[at] = int(rng.integers(256))
        elif kind == 2:
            del b[at:at + int(rng.integers(1, 16))]
        else:
            b[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8))
    return bytes(b)


def _mutate_pickle(data: bytes, rng: np.random.Generator, tmp: Path) -> bytes:
    """A real file with its data.pkl mutated (so the zip stays valid and the mutation reaches the interpreter)."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        records = {n: z.read(n) for n in z.namelist()}
    pkl_name = next(n for n in records if n.endswith("/data.pkl"))
    records[pkl_name] = _mutate(records[pkl_name], rng)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        for n, payload in records.items():
            z.writestr(n, payload)
    return buf.getvalue()


def _check_one(path: Path, data: bytes, counts: collections.Counter) -> None:
    path.write_bytes(data)
    try:
        out = tp.load_pt(path)
    except tp.PtFormatError:
        counts["refused"] += 1
        return
    counts["parsed"] += 1
    for leaf in (out.values() if isinstance(out, dict) else [out]):
        if isinstance(leaf, np.ndarray):
            assert leaf.nbytes <= 4 * len(data) + 2**20  # nothing far beyond the file


def test_fuzz_every_input_parses_or_raises_the_one_error_type(tmp_path):
    rng = np.random.default_rng(26)
    honest = _honest_files(tmp_path)
    before = _module_attrs(*WATCHED)
    counts: collections.Counter = collections.Counter()
    target = tmp_path / "fuzz.pt"
    records = {"0": bytes(64), "1": bytes(16)}
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 3.0 or n < 300:  # a few seconds (at least 300 cases on a slow machine)
        n += 1
        kind = n % 3
        if kind == 0:
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
                z.writestr("archive/data.pkl", _random_stream(rng))
                for name, payload in records.items():
                    z.writestr(f"archive/data/{name}", payload)
            data = buf.getvalue()
        elif kind == 1:
            data = _mutate(honest[n % len(honest)], rng)
        else:
            data = _mutate_pickle(honest[n % len(honest)], rng, tmp_path)
        _check_one(target, data, counts)
    assert _module_attrs(*WATCHED) == before
    assert counts["refused"] > 0 and counts["parsed"] > 0, counts  # both outcomes exercised
    print(f"fuzz: {n} inputs, {dict(counts)}", file=sys.stderr)
