"""The one table of value ranges of every numeric setting (:data:`BOUNDS`), checked where each value is declared,
before anything is allocated from it.

Keys are dotted names by section:

* ``seed``, ``train.*``, ``optim.*``, ``data.*``, ``sample.*``, ``model.*``: the experiment config
  (:func:`fourdnex_jax.config.base_config`, checked by :func:`fourdnex_jax.config.validate`); ``sample.*`` is also
  :class:`~fourdnex_jax.pipelines.settings.SampleSettings` and ``model.*`` also
  :class:`~fourdnex_jax.models.transformer.WanTransformerConfig` (a bundle's ``configs/transformer.json``), each
  checked when built;
* ``scheduler.*``: :class:`~fourdnex_jax.sampling.unipc.UniPCConfig` (``scheduler/scheduler_config.json``);
* ``image_processor.*``: :class:`~fourdnex_jax.models.image_encoder.preprocess.CLIPPreprocessConfig`
  (``image_processor/preprocessor_config.json``; ``size.shortest_edge`` is a key of the ``size`` mapping, a list
  value such as ``image_std`` is checked element by element);
* ``adapter.*``: a LoRA adapter read for conversion (:func:`fourdnex_jax.weights.adapter.read_adapter`);
* ``generate.*``: command-line flags (absl checks them as the flags are parsed).

The limits are wide enough for every real model and run (the 14B model at 720p, thousands of training steps) and
narrow enough that no accepted value asks for absurd memory or time (``sample.num_steps=1e12``, a 200000-pixel
CLIP resize) or means nothing (a learning rate of NaN, ``max_to_keep=0``). A value outside its range raises
:class:`~fourdnex_jax.utils.errors.InputError` with one line naming the key, the value and the range. The table is
here, at the bottom of the import graph, because the models and samplers that declare these values may not import
the config module above them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from fourdnex_jax.utils.errors import InputError


@dataclasses.dataclass(frozen=True)
class Range:
    """``lo <= v <= hi`` (``lo < v`` with ``lo_open``); ``integer``: an int (a bool is not); every value finite."""

    lo: float | None = None
    hi: float | None = None
    integer: bool = False
    lo_open: bool = False

    def holds(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def text(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        hi = None if self.hi is None else f"<= {_num(self.hi)}"
        return " ".join([kind, " and ".join(p for p in (lo, hi) if p)])


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _int(lo: int, hi: int) -> Range:
    return Range(lo, hi, integer=True)


def _pos(hi: float) -> Range:
    return Range(0, hi, lo_open=True)


_STEPS = 10**9  # training steps / intervals: far beyond any run
_PIXELS = 8192  # one image side
BOUNDS: dict[str, Range] = {
    "seed": _int(0, 2**31 - 1),
    # training
    "train.num_steps": _int(1, _STEPS),
    "train.global_batch_size": _int(1, 2**20),
    "train.grad_accum_steps": _int(1, 2**16),
    "train.log_every": _int(1, _STEPS),
    "train.checkpoint_every": _int(1, _STEPS),
    "train.max_to_keep": _int(1, 10**6),  # 0 would keep no checkpoint at all
    "train.max_nan_skips": _int(0, _STEPS),
    "train.peak_tflops_per_device": Range(0, 1e6),
    "train.profile_steps": _int(0, _STEPS),
    "train.num_processes": _int(0, 2**20),
    "train.process_id": _int(-1, 2**20),
    "optim.learning_rate": _pos(10.0),
    "optim.b1": Range(0, 1 - 1e-12),
    "optim.b2": Range(0, 1 - 1e-12),
    "optim.eps": _pos(1.0),
    "optim.weight_decay": Range(0, 10.0),
    "optim.grad_clip_norm": Range(0, 1e9),  # 0: no clipping
    "optim.warmup_steps": _int(0, _STEPS),
    "optim.end_learning_rate": Range(0, 10.0),
    "optim.decay_steps": _int(0, _STEPS),
    "data.text_len": _int(1, 4096),
    "data.num_threads": _int(0, 256),
    "data.num_workers": _int(0, 256),
    "data.synthetic_clips": _int(1, 10**6),
    "data.synthetic_frames": _int(1, 1025),
    "data.synthetic_height": _int(8, _PIXELS),
    "data.synthetic_width": _int(8, _PIXELS),
    # sampling (config.sample / SampleSettings)
    "sample.num_frames": _int(1, 1025),
    "sample.max_area": _int(1, 4096 * 4096),  # pixels per modality (the 14B 720p preset: 1280 x 720)
    "sample.num_steps": _int(1, 1000),
    "sample.flow_shift": _pos(100.0),
    "sample.guidance_scale": Range(0, 100.0),
    "sample.text_len": _int(1, 4096),
    "sample.seed": _int(0, 2**31 - 1),
    "sample.decode_tile": _int(0, 4096),  # latent pixels per tile of the tiled VAE decode (0, 0: whole frames)
    "sample.batch_size": _int(1, 1024),
    "sample.step_cache_interval": _int(0, 1000),
    # the DiT (config.model / configs/transformer.json)
    "model.patch_size": _int(1, 64),
    "model.num_heads": _int(1, 1024),
    "model.head_dim": _int(6, 1024),
    "model.in_channels": _int(1, 4096),
    "model.out_channels": _int(1, 4096),
    "model.text_dim": _int(1, 65536),
    "model.freq_dim": _int(2, 65536),
    "model.ffn_dim": _int(1, 2**20),
    "model.num_layers": _int(1, 1024),
    "model.eps": _pos(1.0),
    "model.image_dim": _int(1, 65536),
    "model.added_kv_proj_dim": _int(1, 65536),
    "model.rope_max_seq_len": _int(1, 2**20),
    "model.rope_theta": _pos(1e12),
    "model.lora_rank": _int(0, 65536),
    "model.lora_alpha": Range(0, 1e6),
    "model.attention_chunk_size": _int(1, 2**24),
    # scheduler/scheduler_config.json
    "scheduler.num_train_timesteps": _int(1, 100_000),
    "scheduler.flow_shift": _pos(100.0),
    "scheduler.disable_corrector": _int(0, 100_000),
    # image_processor/preprocessor_config.json
    "image_processor.size.shortest_edge": _int(1, _PIXELS),
    "image_processor.size.height": _int(1, _PIXELS),
    "image_processor.size.width": _int(1, _PIXELS),
    "image_processor.crop_size.height": _int(1, _PIXELS),
    "image_processor.crop_size.width": _int(1, _PIXELS),
    "image_processor.rescale_factor": _pos(1.0),
    "image_processor.image_mean": Range(-1e3, 1e3),
    "image_processor.image_std": _pos(1e3),  # divides: 0 would make infinities
    # a LoRA adapter being converted
    "adapter.rank": _int(1, 65536),
    "adapter.r": _int(1, 65536),  # lora_adapter_metadata
    "adapter.lora_alpha": _pos(1e6),
    "adapter.fuse_scale": Range(0, 1e3),
    # command-line flags
    "generate.fps": _int(1, 240),
    "generate.devices": _int(0, 2**20),  # 0: all
}


#: The section of :data:`BOUNDS` of each dataclass whose fields it ranges.
SECTION_OF = {"WanTransformerConfig": "model", "UniPCConfig": "scheduler", "CLIPPreprocessConfig": "image_processor",
              "SampleSettings": "sample"}


def check_dataclass(obj: Any, where: str | None = None) -> None:
    """The fields of a (config) dataclass instance of :data:`SECTION_OF` (called from their ``__post_init__``)."""
    section = SECTION_OF[type(obj).__name__]
    check_section(section, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)},
                  where or type(obj).__name__)


def flag_bounds(key: str) -> dict[str, float]:
    """``lower_bound`` / ``upper_bound`` of an absl ``DEFINE_integer`` / ``DEFINE_float`` flag ranged by ``key``."""
    rng = BOUNDS[key]
    return {"lower_bound": rng.lo, "upper_bound": rng.hi}


def check_value(key: str, value: Any, where: str) -> None:
    """``value`` of ``key`` against :data:`BOUNDS` (a list / tuple element by element; None and keys without a
    range pass)."""
    rng = BOUNDS.get(key)
    if rng is None or value is None:
        return
    many = isinstance(value, (list, tuple))
    for v in value if many else [value]:
        if not rng.holds(v):
            shown = f"{v!r}" + (f" (in {list(value)!r})" if many else "")
            raise InputError(f"{where}: {key}={shown} is out of range: use {rng.text()}")


def check_section(section: str, values: Mapping[str, Any], where: str) -> None:
    """Every key of ``values`` (a mapping of section ``section``, nested mappings as dotted keys) that has a range."""
    for key, value in values.items():
        dotted = f"{section}.{key}" if section else str(key)
        if isinstance(value, Mapping):
            check_section(dotted, value, where)
        else:
            check_value(dotted, value, where)


def check_config(config: Mapping[str, Any], where: str = "config") -> None:
    """Every ranged key of a nested config mapping (an ml_collections config's ``to_dict()``)."""
    check_section("", config, where)
