"""Modality layouts: position-id builders, domain ids, fuse/split and patchify (pure layout code: exact)."""

import jax.numpy as jnp
import numpy as np
import pytest

from fourdnex_jax.models.transformer import layouts

GRID = (4, 2, 6)  # (t, h, w) in patches: even on every axis so each layout can halve it


def ids_grid(layout, grid=GRID):
    return np.asarray(layouts.position_ids(layout, grid)).reshape(*grid, 3)


def test_plain_ids_follow_token_order():
    ids = ids_grid("none")
    t, h, w = np.meshgrid(*(np.arange(g) for g in GRID), indexing="ij")
    np.testing.assert_array_equal(ids, np.stack([t, h, w], -1))
    np.testing.assert_array_equal(ids_grid("channel"), ids)
    np.testing.assert_array_equal(ids_grid("batch"), ids)


@pytest.mark.parametrize("layout,axis", [("width", 2), ("height", 1), ("frame", 0)])
def test_fused_layouts_share_positions_between_halves(layout, axis):
    ids = ids_grid(layout)
    half = GRID[axis] // 2
    first, second = np.split(ids, 2, axis=axis)
    np.testing.assert_array_equal(first, second)  # token and its counterpart: identical RoPE phase
    np.testing.assert_array_equal(first, ids_grid("none", tuple(g // 2 if i == axis else g
                                                                for i, g in enumerate(GRID))))
    assert ids[..., axis].max() == half - 1
    dom = np.asarray(layouts.domain_ids(layout, GRID, 2)).reshape(*GRID)
    np.testing.assert_array_equal(np.split(dom, 2, axis=axis)[0], 0)
    np.testing.assert_array_equal(np.split(dom, 2, axis=axis)[1], 1)


def test_batch_and_single_group_domain_ids():
    np.testing.assert_array_equal(np.asarray(layouts.domain_ids("batch", GRID, 4))[:, 0], [0, 1, 0, 1])
    assert layouts.domain_ids("none", GRID, 2) is None
    assert layouts.domain_ids("channel", GRID, 2) is None
    with pytest.raises(ValueError, match="even batch"):
        layouts.domain_ids("batch", GRID, 3)
    with pytest.raises(ValueError, match="even number of patches along grid axis w"):
        layouts.position_ids("width", (4, 2, 5))


@pytest.mark.parametrize("layout", ["width", "height", "frame", "channel", "batch"])
def test_fuse_split_roundtrip(layout):
    rng = np.random.default_rng(0)
    rgb, xyz = (jnp.asarray(rng.standard_normal((2, 3, 4, 6, 5)), jnp.float32) for _ in range(2))
    fused = layouts.fuse(rgb, xyz, layout)
    a, b = layouts.split(fused, layout)
    np.testing.assert_array_equal(a, rgb)
    np.testing.assert_array_equal(b, xyz)
    if layout == "width":  # 4DNeX: RGB left, XYZ right
        np.testing.assert_array_equal(fused[:, :, :, :6], rgb)
    if layout == "batch":
        np.testing.assert_array_equal(fused[1], xyz[0])


def test_patchify_roundtrip_and_order():
    x = jnp.arange(2 * 2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 2, 4, 6, 3)
    tokens = layouts.patchify(x, (1, 2, 2))
    assert tokens.shape == (2, 2 * 2 * 3, 12)
    # token 1 = (t=0, h=0, w=1): pixels (0, 0:2, 2:4), features ordered (ph, pw, c)
    np.testing.assert_array_equal(tokens[0, 1], x[0, 0, 0:2, 2:4].reshape(-1))
    np.testing.assert_array_equal(layouts.unpatchify(tokens, (2, 2, 3), (1, 2, 2)), x)
    with pytest.raises(ValueError, match="not divisible"):
        layouts.patchify(x[:, :, :3], (1, 2, 2))
