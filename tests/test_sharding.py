"""fourdnex_jax.sharding: mesh shapes, the logical-rule resolver, batch/variable shardings, activation constraints,
and a golden dump of the 14B preset's parameter PartitionSpecs.

The golden file ``tests/fixtures/sharding_14b.json`` holds, for every parameter of the 14B preset's four models
(``configs/wan21_i2v_14b_480p.py``'s DiT with its LoRA adapter, UMT5-XXL, CLIP ViT-H/14, the Wan VAE), its shape
and PartitionSpec on two abstract meshes (computed with ``nnx.eval_shape``: nothing is allocated). After an
intended change of the rules or of a parameter's logical axes, regenerate it with

    FOURDNEX_REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/test_sharding.py -k golden

and review the diff of the JSON file.
"""

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fourdnex_jax import sharding
from fourdnex_jax.config import load_config_file, model_config
from fourdnex_jax.models import params
from tests.helpers import tiny_dit_config

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "sharding_14b.json"
GOLDEN_MESHES = {"data1_fsdp8_context1_tensor1": (1, 8, 1, 1), "data1_fsdp4_context1_tensor2": (1, 4, 1, 2)}


class _Cfg:
    mesh_axes = sharding.MESH_AXES
    logical_axis_rules = sharding.DEFAULT_LOGICAL_AXIS_RULES

    def __init__(self, mesh_shape):
        self.mesh_shape = mesh_shape


def test_resolve_mesh_shape():
    assert sharding.resolve_mesh_shape((1, -1, 1, 1), 8) == (1, 8, 1, 1)
    assert sharding.resolve_mesh_shape((2, -1, 1, 2), 8) == (2, 2, 1, 2)
    assert sharding.resolve_mesh_shape((2, 2, 1, 2), 8) == (2, 2, 1, 2)
    for bad in ((-1, -1, 1, 1), (3, -1, 1, 1), (2, 2, 2, 2)):
        with pytest.raises(ValueError):
            sharding.resolve_mesh_shape(bad, 8)


def test_make_mesh_axes_are_auto_and_batch_sharding():
    mesh = sharding.make_mesh(_Cfg((2, -1, 1, 2)))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    rules = sharding.rules_of(_Cfg(None))
    assert dict(rules)["batch"] == ("data", "fsdp")
    assert sharding.batch_axes(mesh, rules) == ("data", "fsdp")
    assert sharding.data_parallel_size(mesh, rules) == 4
    assert sharding.batch_sharding(mesh, rules, 3).spec == P(("data", "fsdp"), None, None)
    assert sharding.batch_sharding(mesh, rules, 3, leading=1).spec == P(None, ("data", "fsdp"), None)
    assert sharding.replicated(mesh).spec == P()


def test_partition_spec_fallbacks():
    mesh = AbstractMesh((1, 4, 1, 2), sharding.MESH_AXES)
    rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
    assert sharding.partition_spec(("layers", "embed", "mlp"), (40, 5120, 13824), mesh, rules) == P(None, "fsdp",
                                                                                                    "tensor")
    assert sharding.partition_spec(None, (3,), mesh, rules) == P()
    assert sharding.partition_spec(("embed", "mlp"), (6, 13), mesh, rules) == P(None, None)  # 4 / 2 do not divide
    assert sharding.partition_spec(("unknown", "embed"), (8, 8), mesh, rules) == P(None, "fsdp")
    # a mesh axis is used once per array: the second ``embed`` stays unsharded
    assert sharding.partition_spec(("embed", "embed"), (8, 8), mesh, rules) == P("fsdp", None)
    # mesh axes absent from the mesh are dropped
    small = AbstractMesh((4,), ("fsdp",))
    assert sharding.partition_spec(("batch", "heads"), (8, 8), small, rules) == P("fsdp", None)


def test_variable_shardings_and_sharded_targets():
    from fourdnex_jax.models.transformer import WanTransformer3D

    cfg = tiny_dit_config()
    variables = params.flat_variables(nnx.eval_shape(lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0))))
    mesh = sharding.make_mesh(_Cfg((1, 4, 1, 2)))
    rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
    shs = sharding.variable_shardings(variables, mesh, rules)
    targets = sharding.sharded_targets(variables, mesh, rules)
    assert set(shs) == set(targets) == set(variables)
    for p, v in variables.items():
        assert targets[p].shape == tuple(v.shape) and targets[p].dtype == v.dtype
        assert targets[p].sharding == shs[p]
        assert shs[p].spec == sharding.partition_spec(v.get_metadata().get("out_sharding"), v.shape, mesh, rules)
    local = sharding.sharded_targets(variables, None, rules)
    assert all(t.sharding == jax.sharding.SingleDeviceSharding(jax.local_devices()[0]) for t in local.values())


def test_with_logical_constraint():
    x = jnp.arange(8 * 6, dtype=jnp.float32).reshape(8, 6)
    axes = ("activation_batch", "embed")
    rules = (("activation_batch", ("data", "fsdp")), ("embed", "tensor"))
    # outside a mesh context: the array itself, untouched
    assert sharding.with_logical_constraint(x, axes, rules) is x
    with pytest.raises(ValueError):
        sharding.with_logical_constraint(x, ("embed",), rules)
    mesh = sharding.make_mesh(_Cfg((2, 2, 1, 2)))
    f = jax.jit(lambda a: sharding.with_logical_constraint(a * 2, axes, rules) + 1)
    with jax.set_mesh(mesh):
        y = f(x)
    assert y.sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"), "tensor")), 2)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x) * 2 + 1)
    # an explicit mesh, no context; rules default to DEFAULT_LOGICAL_AXIS_RULES (embed -> fsdp)
    g = jax.jit(lambda a: sharding.with_logical_constraint(a, ("batch", "embed"), mesh=mesh))
    assert g(x).sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"), None)), 2)
    assert g(jnp.ones((4, 4))).sharding.is_equivalent_to(NamedSharding(mesh, P(("data", "fsdp"), None)), 2)


def _preset_variables() -> dict[str, dict[str, nnx.Variable]]:
    """``{model: {path: abstract Variable}}`` of the 14B preset's four models (abstract: no allocation)."""
    from fourdnex_jax.models.image_encoder.config import CLIPVisionConfig
    from fourdnex_jax.models.image_encoder.model import CLIPVisionTower
    from fourdnex_jax.models.text_encoder.config import UMT5Config
    from fourdnex_jax.models.text_encoder.model import UMT5Encoder
    from fourdnex_jax.models.transformer import WanTransformer3D
    from fourdnex_jax.models.vae.config import WanVAEConfig
    from fourdnex_jax.models.vae.model import WanVAE

    cfg = model_config(load_config_file(ROOT / "configs" / "wan21_i2v_14b_480p.py"))
    bf16 = jnp.bfloat16
    build = {
        "transformer": lambda: WanTransformer3D(cfg, rngs=nnx.Rngs(0)),
        "text_encoder": lambda: UMT5Encoder(UMT5Config(), rngs=nnx.Rngs(0), param_dtype=bf16, compute_dtype=None),
        "image_encoder": lambda: CLIPVisionTower(CLIPVisionConfig.vit_h14(), rngs=nnx.Rngs(0), param_dtype=bf16,
                                                 compute_dtype=None),
        "vae": lambda: WanVAE(WanVAEConfig(), rngs=nnx.Rngs(0), param_dtype=bf16),
    }
    return {name: params.flat_variables(nnx.eval_shape(fn)) for name, fn in build.items()}


def _spec_json(spec: P) -> list:
    return [list(a) if isinstance(a, tuple) else a for a in spec]


def test_golden_14b_parameter_shardings():
    variables = _preset_variables()
    rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
    got = {"shapes": {m: {p: list(v.shape) for p, v in sorted(vs.items())} for m, vs in variables.items()},
           "specs": {}}
    for mesh_name, shape in GOLDEN_MESHES.items():
        mesh = AbstractMesh(shape, sharding.MESH_AXES)
        got["specs"][mesh_name] = {
            m: {p: _spec_json(sharding.partition_spec(v.get_metadata().get("out_sharding"), v.shape, mesh, rules))
                for p, v in sorted(vs.items())}
            for m, vs in variables.items()}
    if os.environ.get("FOURDNEX_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got["shapes"] == want["shapes"]
    for mesh_name in GOLDEN_MESHES:
        for m in variables:
            diff = {p: (want["specs"][mesh_name][m].get(p), s) for p, s in got["specs"][mesh_name][m].items()
                    if want["specs"][mesh_name][m].get(p) != s}
            assert not diff, f"{mesh_name} {m}: (golden, now) {dict(list(diff.items())[:10])}"
    assert got["specs"] == want["specs"]
    # the big DiT matrices are split over fsdp x tensor; every parameter of the DiT carries logical axes
    fsdp_tp = got["specs"]["data1_fsdp4_context1_tensor2"]["transformer"]
    assert fsdp_tp["blocks/ffn/proj_in/kernel"] == [None, "fsdp", "tensor"]
    assert all(v.get_metadata().get("out_sharding") for v in variables["transformer"].values())
