"""Bundle reading does each job once: ``manifest.json`` is read once per ``load_bundle``."""

from pathlib import Path

from fourdnex_jax.pipelines import bundle as bundle_lib
from fourdnex_jax.weights import manifest as manifest_lib


def test_load_bundle_reads_the_manifest_once(monkeypatch):
    calls = []
    real = manifest_lib.read_manifest
    monkeypatch.setattr(manifest_lib, "read_manifest", lambda d: calls.append(Path(d)) or real(d))
    b = bundle_lib.load_bundle()
    assert calls == [b.directory]
    stored = b.manifest["sampling_preset"]  # the shipped bundle predates sigma_schedule: it gets the default
    assert {k: v for k, v in b.preset.to_dict().items() if k in stored} == stored
