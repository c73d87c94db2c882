"""TFDS datasets of the data layer, written as array_record and read with ``tfds.data_source`` (no TensorFlow).

Two dataset kinds, both filled from staged shards (:mod:`staging`) by ``download_and_prepare`` (TFDS writes into an
``incomplete.*`` folder and renames it when done, so a half-built dataset is never visible):

* :class:`Clips6D` (``clips6d``): one record per raw 6D clip (:class:`fourdnex_jax.data.clip6d.Clip6D`).
* :class:`Encoded6D` (``encoded6d``): one training example per clip after the encode step
  (:mod:`fourdnex_jax.data.encode`): VAE latents of RGB and XYZ, the condition latent, UMT5 and CLIP embeddings
  (keys and shapes: :mod:`fourdnex_jax.data.schema`).

Feature choices that work without TensorFlow (measured with tensorflow-datasets 4.9.10): only plain
``tfds.features.Tensor`` (uint8, bool, int32, float16, float32; ``None`` leading dims) and ``tfds.features.Text``
(read back as ``bytes``) with the default encoding. ``Image``/``Video`` features need TF even to construct, and
``Tensor(encoding='zlib'|'bytes')`` fails on the numpy decode path; ``tfds.load``/``as_dataset`` need TF.

Reading: ``tfds.builder_from_directory(path).as_data_source(split)`` (no class registration needed) or
``tfds.data_source('clips6d/<config>', data_dir=..., split=...)`` after importing this module. TFDS orders records
by a hash of their key at build time; the loader shuffles again by seed (:mod:`loader`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from fourdnex_jax.data import schema
from fourdnex_jax.data.staging import iter_staged

Tensor, Text = tfds.features.Tensor, tfds.features.Text


def clip_features(num_frames: int, height: int, width: int) -> tfds.features.FeaturesDict:
    """Features of one :class:`Clip6D` record (see its docstring for the meaning of each field)."""
    t, h, w = num_frames, height, width
    return tfds.features.FeaturesDict({
        "rgb": Tensor(shape=(t, h, w, 3), dtype=np.uint8),
        "xyz": Tensor(shape=(t, h, w, 3), dtype=np.float16),
        "valid": Tensor(shape=(t, h, w), dtype=np.bool_),
        "dynamic_mask": Tensor(shape=(t, h, w), dtype=np.bool_),
        "has_dynamic_mask": Tensor(shape=(), dtype=np.bool_),
        "intrinsics": Tensor(shape=(t, 3, 3), dtype=np.float32),
        "c2w": Tensor(shape=(t, 4, 4), dtype=np.float32),
        "centers": Tensor(shape=(t, 3), dtype=np.float32),
        "scale": Tensor(shape=(), dtype=np.float32),
        "frame_index": Tensor(shape=(t,), dtype=np.int32),
        "num_source_frames": Tensor(shape=(), dtype=np.int32),
        "normalization": Text(),
        "intrinsics_mode": Text(),
        "caption": Text(),
        "clip_id": Text(),
        "source": Text(),
    })


@dataclasses.dataclass
class Clips6DConfig(tfds.core.BuilderConfig):
    num_frames: int = 49
    height: int = 64
    width: int = 96
    normalization: str = "reference"
    intrinsics: str = "full"


def clips_config(num_frames: int, height: int, width: int, normalization: str = "reference",
                 intrinsics: str = "full") -> Clips6DConfig:
    """Config named ``f{T}_h{H}_w{W}_{normalization}[_refK]`` (one dataset folder per clip geometry)."""
    name = f"f{num_frames}_h{height}_w{width}_{normalization}" + ("_refK" if intrinsics == "reference" else "")
    return Clips6DConfig(name=name, num_frames=num_frames, height=height, width=width, normalization=normalization,
                         intrinsics=intrinsics)


class _StagedBuilder(tfds.core.GeneratorBasedBuilder):
    """Builds each split from a staging folder: ``stage_dirs={'train': path, ...}``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First version."}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # TFDS derives checksum/metadata files from the builder's source path, and for a builder inside a package
        # that lookup imports ``importlib_resources`` (not installed with TFDS). These builders download nothing
        # and carry no checksum files: no code path.
        return None

    def __init__(self, *, stage_dirs: Mapping[str, str | os.PathLike] | None = None, **kwargs):
        self._stage_dirs = dict(stage_dirs or {})
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    # TFDS prints "Downloading and preparing dataset Unknown size ..." and "Dataset ... downloaded and prepared" to
    # stdout for every build; these builders download nothing and their callers report their own progress.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _split_generators(self, dl_manager):
        del dl_manager
        if not self._stage_dirs:
            raise ValueError("no staged shards given (stage_dirs={split: folder})")
        return {split: self._generate_examples(path) for split, path in self._stage_dirs.items()}

    def _generate_examples(self, stage_dir):
        features = self.info.features
        for ex in iter_staged(stage_dir):  # TFDS wants the exact feature dtypes
            yield ex["clip_id"], {k: (np.asarray(v, features[k].np_dtype) if isinstance(features[k], Tensor) else v)
                                  for k, v in ex.items() if k in features}


class Clips6D(_StagedBuilder):
    """Raw 6D clips (RGB uint8, normalised XYZ float16, masks, cameras, normalisation constants, caption)."""

    name = "clips6d"
    BUILDER_CONFIGS = [clips_config(49, 64, 96)]

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self, features=clip_features(c.num_frames, c.height, c.width),
            description="4DNeX 6D clips: RGB + pixel-aligned first-camera XYZ (normalised: metric = xyz * scale + "
                        "centers[t]).",
            metadata=tfds.core.MetadataDict(normalization=c.normalization, intrinsics=c.intrinsics))


# -- encoded examples --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Encoded6DConfig(tfds.core.BuilderConfig):
    latent_frames: int = 13
    latent_height: int = 8
    latent_width: int = 12
    z_dim: int = 16
    text_dim: int = 4096
    image_tokens: int = 257
    image_dim: int = 1280
    latent_dtype: str = "float32"
    embed_dtype: str = "float16"


def encoded_config(latent_frames: int, latent_height: int, latent_width: int, *, z_dim: int = 16,
                   text_dim: int = 4096, image_tokens: int = 257, image_dim: int = 1280,
                   latent_dtype: str = "float32", embed_dtype: str = "float16", tag: str = "") -> Encoded6DConfig:
    name = f"t{latent_frames}_h{latent_height}_w{latent_width}_z{z_dim}_txt{text_dim}_img{image_tokens}x{image_dim}"
    return Encoded6DConfig(name=name + (f"_{tag}" if tag else ""), latent_frames=latent_frames,
                           latent_height=latent_height, latent_width=latent_width, z_dim=z_dim, text_dim=text_dim,
                           image_tokens=image_tokens, image_dim=image_dim, latent_dtype=latent_dtype,
                           embed_dtype=embed_dtype)


def encoded_spec(c: Encoded6DConfig) -> schema.EncodedSpec:
    """The :class:`fourdnex_jax.data.schema.EncodedSpec` of a dataset config."""
    return schema.EncodedSpec(**{f.name: getattr(c, f.name) for f in dataclasses.fields(schema.EncodedSpec)})


def encoded_features(c: Encoded6DConfig) -> tfds.features.FeaturesDict:
    """The TFDS features of :mod:`fourdnex_jax.data.schema` (keys, shapes, dtypes and meaning are defined there)."""
    spec = encoded_spec(c)
    shapes, dtypes = spec.shapes(), spec.dtypes()
    features = {k: Tensor(shape=shapes[k], dtype=np.dtype(dtypes[k])) for k in (*schema.BATCH_KEYS, "text_len")}
    features.update({k: Text() for k in schema.TEXT_KEYS})
    return tfds.features.FeaturesDict(features)


class Encoded6D(_StagedBuilder):
    """Training examples of the 4DNeX DiT: latents and embeddings precomputed by the frozen encoders."""

    name = "encoded6d"
    BUILDER_CONFIGS = [encoded_config(13, 8, 12)]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=encoded_features(self.builder_config),
                                     description="4DNeX training examples: normalised VAE latents (RGB, XYZ, "
                                                 "condition), UMT5 prompt and CLIP image embeddings.")


def config_arg(builder_cls, config: tfds.core.BuilderConfig):
    """TFDS refuses a custom config named like a predefined one: pass the name of an equal predefined config."""
    for c in builder_cls.BUILDER_CONFIGS:
        if c.name == config.name:
            if c != config:
                raise ValueError(f"config {config.name!r} differs from the predefined one: {config} vs {c}")
            return c.name
    return config


def remove_stale_incomplete(builder: tfds.core.DatasetBuilder) -> list[str]:
    """Deletes the ``incomplete.XXXXXX_<version>`` folders next to ``builder``'s dataset folder: TFDS removes its own
    on an exception, but a packing killed with -9 leaves one behind (empty, or half-written). Returns what was
    removed. One packer per dataset folder at a time (as staging assumes)."""
    import shutil

    target = Path(builder.data_dir)
    stale = sorted(target.parent.glob(f"incomplete.*_{target.name}")) if target.parent.is_dir() else []
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return [os.fspath(f) for f in stale]


def build(builder_cls, data_dir: str | os.PathLike, config: tfds.core.BuilderConfig,
          stage_dirs: Mapping[str, str | os.PathLike]) -> tfds.core.DatasetBuilder:
    """Packs finished staged shards into the TFDS dataset (atomic: TFDS renames its ``incomplete.*`` folder;
    one left by a killed packing is removed first). An already built dataset is left as is."""
    tfds.disable_progress_bar()
    builder = builder_cls(data_dir=os.fspath(data_dir), config=config_arg(builder_cls, config),
                          stage_dirs=stage_dirs)
    remove_stale_incomplete(builder)
    builder.download_and_prepare()
    return builder


def data_source(dataset_dir: str | os.PathLike, split: str = "train"):
    """Random-access source over a built dataset folder (``.../<name>/<config>/<version>``), no TF needed."""
    return tfds.builder_from_directory(os.fspath(dataset_dir)).as_data_source(split)
