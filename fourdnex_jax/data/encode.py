"""The encode step: ``clips6d`` records -> ``encoded6d`` training examples with the frozen JAX encoders, data-parallel
over all local devices.

Per clip (T frames, H x W per modality), exactly what the 4DNeX trainer consumes (values from
:mod:`fourdnex_jax.recipe`):
  * RGB (uint8 -> [-1, 1]) and XYZ (already in [-1, 1]) are VAE-encoded separately (one VAE call on the 2B stack);
    the stored latent is the VAE-normalised posterior mean and standard deviation, XYZ additionally
    ``(z - XYZ_LATENT_MEAN) / XYZ_LATENT_STD`` (4DNeX's XYZ latent normalisation). ``latent + std * eps`` equals
    normalising a VAE ``sample()``, so training can draw a fresh sample every epoch (the reference caches one).
  * Condition: ``condition_video``, frame 0 as ``[RGB | XYZ init]`` (H x 2W; 4DNeX's slanted plane with z = -y)
    followed by T - 1 zero frames, VAE-encoded with the mode (as 4DNeX's inference; its trainer samples) and
    VAE-normalised only (as the reference: no XYZ mu/sigma on the condition).
  * Prompt: ``training_prompt`` (the caption plus the 4DNeX suffix) -> UMT5 (Wan's recipe, zero past the prompt
    length); stored cut at the prompt's token count.
  * Image: CLIP ``hidden_states[-2]`` of frame 0 after CLIP preprocessing.

Sharding (:mod:`fourdnex_jax.sharding`): the encoders are placed by their parameters' logical axes on the mesh
(``mesh=``, e.g. ``sharding.make_mesh(config.sharding)``; default a ``data`` axis over ``devices``), as the sampling
pipeline places them; each batch (padded to a multiple of the batch shards, data x fsdp) is split along the batch
axis, one jitted call encodes all of it.

Provenance: the dataset folder gets ``towers.json`` (:data:`TOWERS_RECORD`): the towers' content fingerprints
(:func:`fourdnex_jax.models.towers.fingerprint`) and, when given, the bundle folder that holds them. A training run
copies it into its metadata, so turning the run into a bundle can refuse towers its data was not encoded with.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from fourdnex_jax import sharding
from fourdnex_jax.data import schema, staging, tfds_builders
from fourdnex_jax.media.io import atomic_save_json
from fourdnex_jax.models import towers as towers_lib
from fourdnex_jax.models.image_encoder import CLIPPreprocessConfig, preprocess_images
from fourdnex_jax.models.text_encoder import clean_prompt
from fourdnex_jax.models.towers import Towers
from fourdnex_jax.recipe import XYZ_LATENT_MEAN, XYZ_LATENT_STD, condition_video, training_prompt
from fourdnex_jax.utils.progress import Progress


@dataclasses.dataclass
class EncodeSpec:
    tokenizer: Any
    clip_preprocess: CLIPPreprocessConfig = dataclasses.field(default_factory=CLIPPreprocessConfig)
    text_len: int = 512


def _encode(towers: Towers, rgb, xyz, cond, ids, mask, pixels):
    """The arrays of a batch of ``encoded6d`` examples (:mod:`fourdnex_jax.data.schema`), ``text_embeds`` uncut.

    rgb, xyz (B, T, H, W, 3) in [-1, 1]; cond (B, T, H, 2W, 3) (``condition_video``); ids, mask (B, text_len);
    pixels CLIP-preprocessed frame 0. Prompt, CLIP and condition latent are the :mod:`fourdnex_jax.models.towers`
    functions the pipeline calls."""
    b = rgb.shape[0]
    mean_n, std_n = towers_lib.encode_posterior(towers, jnp.concatenate([rgb, xyz], 0))  # one VAE call on 2B
    return {
        "rgb_latent": mean_n[:b], "rgb_latent_std": std_n[:b],
        "xyz_latent": (mean_n[b:] - XYZ_LATENT_MEAN) / XYZ_LATENT_STD, "xyz_latent_std": std_n[b:] / XYZ_LATENT_STD,
        "cond_latent": towers_lib.encode_condition(towers, cond),
        "text_embeds": towers_lib.encode_prompts(towers, ids, mask),
        "image_embeds": towers_lib.encode_images(towers, pixels),
    }


class Encoder:
    """``Encoder(towers, spec)(records) -> list of encoded6d examples`` on ``mesh`` (``rules``: the logical-axis
    rules) or, without one, data-parallel over ``devices``."""

    def __init__(self, towers: Towers, spec: EncodeSpec, devices: Sequence[jax.Device] | None = None, *,
                 mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] = sharding.DEFAULT_LOGICAL_AXIS_RULES):
        if mesh is not None and devices is not None:
            raise ValueError("give mesh= or devices=, not both (the mesh names its devices)")
        self.spec = spec
        if mesh is None:
            mesh = sharding.data_mesh(devices)
        self.mesh, self.rules = mesh, tuple(rules)
        graphdef, state = nnx.split(towers)
        self._state = jax.device_put(state, sharding.state_shardings(state, mesh, self.rules))
        self._data = sharding.batch_sharding(mesh, self.rules, 1)
        self._run = towers_lib.jit_encoder(_encode, graphdef)

    @property
    def num_shards(self) -> int:
        """Batch shards (data x fsdp): a batch is padded to a multiple of it."""
        return sharding.data_parallel_size(self.mesh, self.rules)

    def host_inputs(self, records: Sequence[dict[str, Any]]) -> tuple[tuple[np.ndarray, ...], list[str]]:
        """Decoded ``clips6d`` records -> the jitted function's numpy inputs and the prompts."""
        rgb_u8 = np.stack([np.asarray(r["rgb"]) for r in records])
        rgb = rgb_u8.astype(np.float32) / 127.5 - 1.0
        xyz = np.stack([np.asarray(r["xyz"], np.float32) for r in records])
        t = rgb.shape[1]
        if (t - 1) % 4:
            raise ValueError(f"the Wan VAE needs 1 + 4k frames, got {t}")
        cond = condition_video(rgb[:, 0], t)
        captions = [r["caption"].decode() if isinstance(r["caption"], bytes) else str(r["caption"]) for r in records]
        prompts = [training_prompt(c) for c in captions]
        ids, mask = self.spec.tokenizer([clean_prompt(p) for p in prompts], max_length=self.spec.text_len)
        pixels = preprocess_images(list(rgb_u8[:, 0]), self.spec.clip_preprocess)
        return (rgb, xyz, cond, ids.astype(np.int32), mask.astype(np.int32), pixels), prompts

    def __call__(self, records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        n = len(records)
        padded = list(records) + [records[-1]] * (-n % self.num_shards)  # pad to a multiple of the batch shards
        inputs, prompts = self.host_inputs(padded)
        with sharding.mesh_context(self.mesh, self.rules):
            out = self._run(self._state, *(jax.device_put(x, self._data) for x in inputs))
        out = jax.tree.map(np.asarray, out)
        mask = inputs[4]
        examples = []
        for i in range(n):
            length = int(mask[i].sum())
            ex = {k: v[i] for k, v in out.items()}
            ex["text_embeds"] = ex["text_embeds"][:length]
            ex["text_len"] = np.int32(length)
            ex["prompt"] = prompts[i]
            cid = records[i]["clip_id"]
            ex["clip_id"] = cid.decode() if isinstance(cid, bytes) else str(cid)
            schema.check_example(ex)
            examples.append(ex)
        return examples


def encoded_config_for(towers: Towers, num_frames: int, height: int, width: int, **kw):
    """The ``encoded6d`` config matching clips of (T, H, W) under these encoders."""
    v = towers.vae.config
    tc, ic = towers.text_encoder.config, towers.image_encoder.config
    return tfds_builders.encoded_config(1 + (num_frames - 1) // v.temporal_factor, height // v.spatial_factor,
                                        width // v.spatial_factor, z_dim=v.z_dim, text_dim=tc.d_model,
                                        image_tokens=ic.num_positions, image_dim=ic.hidden_size, **kw)


#: File in an encoded6d dataset folder naming the towers that encoded it (module docstring).
TOWERS_RECORD = "towers.json"


def read_towers_record(dataset_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``{"fingerprint": {tower: digest}, "bundle": folder or None}`` of an encoded dataset, None when it records
    none (encoded before the record existed)."""
    import json

    path = Path(dataset_dir) / TOWERS_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def encode_dataset(clips_dir: str | os.PathLike, data_dir: str | os.PathLike, encoder: Encoder, towers: Towers, *,
                   splits: Sequence[str] = ("train",), batch_size: int = 8, shard_size: int = 64,
                   progress: bool = True, towers_bundle: str | os.PathLike | None = None, **config_kw) -> Path:
    """Encodes every record of ``splits`` of a built ``clips6d`` folder into the ``encoded6d`` dataset under
    ``data_dir``. Resumable per shard (staging), atomic (TFDS build). Records the towers (``towers.json``:
    fingerprints, and ``towers_bundle``, the bundle folder that holds them, when given). Returns the dataset
    folder."""
    import tensorflow_datasets as tfds

    info = tfds.builder_from_directory(os.fspath(clips_dir)).info
    t, h, w = info.features["rgb"].shape[:3]
    cfg = encoded_config_for(towers, t, h, w, **config_kw)
    stage_dirs = {}
    for split in splits:
        src = tfds_builders.data_source(clips_dir, split)
        sdir = Path(data_dir) / "_staging" / tfds_builders.Encoded6D.name / cfg.name / split
        items = [(str(i), i) for i in range(len(src))]
        _, todo, _ = staging.plan_shards(items, sdir, shard_size)
        bar = Progress(sum(len(s[2]) for s in todo), f"encode {split}") if progress and todo else None
        for _, name, chunk, _ in todo:
            examples = []
            for j in range(0, len(chunk), batch_size):
                recs = [src[i] for _, i in chunk[j:j + batch_size]]
                examples += encoder(recs)
                if bar:
                    bar.update(len(recs))
            staging.write_shard(sdir, name, examples, {"kept": len(examples), "skipped": {}, "ids": {}})
        stage_dirs[split] = sdir
    tfds_builders.build(tfds_builders.Encoded6D, data_dir, cfg, stage_dirs)
    folder = Path(data_dir) / tfds_builders.Encoded6D.name / cfg.name / str(tfds_builders.Encoded6D.VERSION)
    atomic_save_json(folder / TOWERS_RECORD, {
        "fingerprint": towers_lib.fingerprint(towers),
        "bundle": None if towers_bundle is None else str(Path(towers_bundle).absolute())})
    return folder
