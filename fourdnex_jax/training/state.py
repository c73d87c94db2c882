"""The train state and the frozen base, as plain pytrees placed on the mesh by the logical axis rules.

* ``TrainState`` (a dict, donated to every step and saved in every checkpoint): ``step`` (int32, batches
  consumed), ``trainable`` (nested dict of what ``config.train.trainable`` trains: ``adapter``, the LoRA +
  domain-embedding tensors, fp32; ``full``, every DiT parameter in its ``param_dtype``), ``opt_state`` (optax state;
  Adam moments get the trainable tensors' shardings, counters are replicated), ``rng`` (uint32 key data of the
  run's base key; step keys are ``fold_in(key, step)``, so a resumed run draws the same noise), ``nan_skips``
  (consecutive skipped steps) and ``skipped`` (all skipped steps).
* frozen base (nested dict, bf16 in the 14B preset, sharded like the trainable tensors by the same rules; empty
  with ``trainable='full'``): never donated, never differentiated, never saved by training. Built from ``config.seed``
  (tiny/test runs) or restored
  from a converted checkpoint straight into its sharding (``train.base_checkpoint``, see
  :func:`fourdnex_jax.weights.restore.restore_params`).

:class:`ModelParts` holds the model's graph definition and rebuilds the model from the two dicts inside a traced
function (``merge``), which is how gradients flow to the trainable tensors only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fourdnex_jax import sharding as mesh_lib
from fourdnex_jax.models import params
from fourdnex_jax.models.transformer import FROZEN, TRAINABLE_MODES, WanTransformer3D, WanTransformerConfig
from fourdnex_jax.utils.tree import flatten, nest
from fourdnex_jax.weights.restore import restore_params


@dataclasses.dataclass
class ModelParts:
    """The abstract model split into trainable / frozen / other variables (all ``{path: Variable}``) by the
    filters of ``mode`` (:data:`~fourdnex_jax.models.transformer.TRAINABLE_MODES`: 'adapter' or 'full')."""

    cfg: WanTransformerConfig
    graphdef: Any
    trainable_vars: dict[str, nnx.Variable]
    frozen_vars: dict[str, nnx.Variable]
    rest: Any
    mode: str = "adapter"

    @classmethod
    def build(cls, cfg: WanTransformerConfig, seed: int = 0, mode: str = "adapter") -> ModelParts:
        if mode not in TRAINABLE_MODES:
            raise ValueError(f"trainable mode {mode!r}: one of {sorted(TRAINABLE_MODES)}")
        abstract = nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(seed)))
        graphdef, trainable, frozen, rest = nnx.split(abstract, *TRAINABLE_MODES[mode], ...)
        if params.flat_variables(rest):
            raise ValueError(f"unexpected non-parameter state {sorted(params.flat_variables(rest))}")
        return cls(cfg, graphdef, params.flat_variables(trainable), params.flat_variables(frozen), rest, mode)

    @property
    def trainable_filter(self) -> nnx.filterlib.Filter:
        return TRAINABLE_MODES[self.mode][0]

    @property
    def frozen_filter(self) -> nnx.filterlib.Filter:
        return TRAINABLE_MODES[self.mode][1]

    def _state(self, variables: Mapping[str, nnx.Variable], values: Mapping[str, Any]) -> nnx.State:
        return nnx.from_flat_state([(tuple(p.split("/")), v.replace(values[p])) for p, v in variables.items()])

    def merge(self, trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> WanTransformer3D:
        """The model with these values (nested dicts as in the train state); usable inside jit/grad."""
        return nnx.merge(self.graphdef, self._state(self.trainable_vars, flatten(trainable)),
                         self._state(self.frozen_vars, flatten(frozen)), self.rest)

    # -- shardings ------------------------------------------------------------------------------------------------
    def trainable_shardings(self, mesh: Mesh, rules) -> dict:
        return nest(mesh_lib.variable_shardings(self.trainable_vars, mesh, rules))

    def frozen_shardings(self, mesh: Mesh, rules) -> dict:
        return nest(mesh_lib.variable_shardings(self.frozen_vars, mesh, rules))

    def abstract_trainable(self) -> dict:
        return nest({p: jax.ShapeDtypeStruct(v.shape, v.dtype) for p, v in self.trainable_vars.items()})

    def abstract_frozen(self) -> dict:
        return nest({p: jax.ShapeDtypeStruct(v.shape, v.dtype) for p, v in self.frozen_vars.items()})


def opt_state_shardings(tx: optax.GradientTransformation, abstract_trainable, trainable_sh, mesh: Mesh):
    """Moments follow the parameters' shardings; counters and other non-parameter leaves are replicated."""
    abstract = jax.eval_shape(tx.init, abstract_trainable)
    return optax.tree_map_params(tx, lambda _, s: s, abstract, trainable_sh,
                                 transform_non_params=lambda _: NamedSharding(mesh, P()))


def state_shardings(parts: ModelParts, tx, mesh: Mesh, rules) -> dict:
    rep = NamedSharding(mesh, P())
    tsh = parts.trainable_shardings(mesh, rules)
    return {"step": rep, "trainable": tsh, "opt_state": opt_state_shardings(tx, parts.abstract_trainable(), tsh, mesh),
            "rng": rep, "nan_skips": rep, "skipped": rep}


def abstract_state(parts: ModelParts, tx, shardings: Mapping[str, Any]) -> dict:
    """ShapeDtypeStructs (with shardings) of the train state: restore targets and AOT inputs."""
    shapes = {"step": jax.ShapeDtypeStruct((), jnp.int32), "trainable": parts.abstract_trainable(),
              "opt_state": jax.eval_shape(tx.init, parts.abstract_trainable()),
              "rng": jax.ShapeDtypeStruct((2,), jnp.uint32), "nan_skips": jax.ShapeDtypeStruct((), jnp.int32),
              "skipped": jax.ShapeDtypeStruct((), jnp.int32)}
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, dict(shardings))


def init_state(parts: ModelParts, tx, shardings: Mapping[str, Any], seed: int,
               initial: Mapping[str, Any] | None = None) -> dict:
    """A fresh train state: the trainable tensors as the model of ``seed`` initialises them (the adapter: LoRA-B = 0,
    domain embeddings 0), except the ``initial`` ones (nested dict, e.g. a converted base for ``trainable='full'``;
    donated)."""
    initial_flat = flatten(initial or {})
    unknown = sorted(set(initial_flat) - set(parts.trainable_vars))
    if unknown:
        raise ValueError(f"initial values for tensors that are not trained: {unknown[:5]}")

    def init(initial_flat):
        model = WanTransformer3D(parts.cfg, rngs=nnx.Rngs(seed))
        values = {p: v[...] for p, v in params.flat_variables(model, parts.trainable_filter).items()}
        values.update({p: v.astype(values[p].dtype) for p, v in initial_flat.items()})
        trainable = nest(values)
        return {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "opt_state": tx.init(trainable),
                "rng": jax.random.key_data(jax.random.key(seed + 1)).astype(jnp.uint32),
                "nan_skips": jnp.zeros((), jnp.int32), "skipped": jnp.zeros((), jnp.int32)}

    return jax.jit(init, out_shardings=dict(shardings), donate_argnums=0)(initial_flat)


def init_frozen(parts: ModelParts, shardings, seed: int) -> dict:
    """The random frozen base of ``config.seed`` (the same values a non-sharded ``WanTransformer3D`` gets)."""

    def init():
        model = WanTransformer3D(parts.cfg, rngs=nnx.Rngs(seed))
        return nest({p: v[...] for p, v in params.flat_variables(model, parts.frozen_filter).items()})

    return jax.jit(init, out_shardings=shardings)()


def restore_base(directory: str, parts: ModelParts, mesh: Mesh, rules) -> dict:
    """The base (every parameter but the adapter) of a converted folder (``fourdnex convert``), read shard by shard
    into the mesh: the frozen tensors of an 'adapter' run, the initial values of a 'full' one. The folder's
    architecture and parameter dtype must equal the run's."""
    _, values = restore_params(directory, "transformer", mesh, rules, config=parts.cfg, param_filter=FROZEN)
    return nest(values)


def count_params(tree) -> int:
    return int(sum(np.prod(x.shape, dtype=np.int64) for x in jax.tree.leaves(tree)))
