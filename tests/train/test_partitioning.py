"""Meshes, rule presets and shape-first sharded init on the 8 fake CPU devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from codet5p_jax import partitioning
from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_args


def _spec(sharding):
    """The PartitionSpec without trailing Nones (P(None, None) and P() mean the same)."""
    parts = list(sharding.spec)
    while parts and parts[-1] is None:
        parts.pop()
    return P(*parts)


class _Toy(nn.Module):
    """Two logically partitioned weights with the model's axis names."""

    @nn.compact
    def __call__(self, x):
        w = self.param(
            "wi",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("embed", "mlp")),
            (8, 16),
        )
        e = self.param(
            "emb",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            (32, 8),
        )
        return (e[x] @ w).sum()


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2), (-1, 2, 1)])
def test_make_mesh_shapes(shape):
    mesh = partitioning.make_mesh(*shape)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    want = tuple(8 // int(np.prod([s for s in shape if s != -1])) if s == -1 else s for s in shape)
    assert tuple(mesh.shape.values()) == want
    assert partitioning.data_parallel_size(mesh) == want[0] * want[1]


def test_make_mesh_rejects_wrong_device_count():
    with pytest.raises(ValueError, match="needs 12 devices but 8"):
        partitioning.make_mesh(3, 2, 2)
    with pytest.raises(ValueError, match="not divisible by 3"):
        partitioning.make_mesh(-1, 3, 1)


def test_multi_slice_needs_slices():
    """DCN dims count slices; fake CPU devices form one slice."""
    with pytest.raises(ValueError, match="DCN mesh .* needs 2 slices but 1 are available"):
        partitioning.make_mesh(-1, 1, 1, dcn_data=2)


def test_batch_size_must_divide_data_parallel_size():
    mesh = partitioning.make_mesh(2, 2, 2)
    partitioning.check_batch_size(8, mesh)
    with pytest.raises(
        ValueError, match="BATCH_SIZE=6 is not divisible by the data-parallel size 4"
    ):
        partitioning.check_batch_size(6, mesh)


def test_unknown_rule_preset():
    with pytest.raises(ValueError, match="Unknown axis-rule preset 'zero3'"):
        partitioning.get_axis_rules("zero3")


@pytest.mark.parametrize(
    "rules,wi_spec,emb_spec",
    [
        ("dp", P(), P()),
        ("fsdp", P("fsdp"), P(None, "fsdp")),
        ("fsdp_tp", P("fsdp", "tensor"), P(None, "fsdp")),
    ],
)
def test_sharded_init_places_shards_and_matches_unsharded(rules, wi_spec, emb_spec):
    mesh = partitioning.make_mesh(2, 2, 2)
    x = jnp.arange(4)
    init = lambda rng: _Toy().init(rng, x)["params"]
    values, shardings, abstract = partitioning.sharded_init(
        init, mesh, partitioning.AXIS_RULES[rules], jax.random.key(0)
    )
    assert _spec(values["wi"].sharding) == wi_spec
    assert _spec(values["emb"].sharding) == emb_spec
    assert _spec(shardings["wi"]) == wi_spec
    # Same random values as a plain single-device init: sharding changes placement only.
    ref = nn.unbox(init(jax.random.key(0)))
    np.testing.assert_array_equal(np.asarray(values["wi"]), np.asarray(ref["wi"]))
    np.testing.assert_array_equal(np.asarray(values["emb"]), np.asarray(ref["emb"]))
    # The boxes survive in the abstract tree, so the logical names can be re-attached.
    reboxed = partitioning.rebox(abstract, values)
    assert reboxed["wi"].names == ("embed", "mlp")


@pytest.mark.parametrize("rules", list(partitioning.AXIS_RULES))
def test_every_preset_gives_valid_shardings_for_tiny_model(rules):
    """Every rule preset maps every tiny-model weight to a sharding whose axes divide its shape."""
    cfg = get_preset("tiny")
    model = build_model(cfg)
    abstract = jax.eval_shape(lambda r: model.init(r, *init_args(cfg))["params"], jax.random.key(0))
    mesh = partitioning.make_mesh(2, 2, 2)
    shardings = partitioning.logical_to_shardings(abstract, mesh, partitioning.AXIS_RULES[rules])
    flat = zip(
        jax.tree.leaves(partitioning.unbox_abstract(abstract)),
        jax.tree.leaves(shardings),
        strict=True,
    )
    for leaf, sharding in flat:
        if rules == "dp":
            assert sharding.is_fully_replicated
        sharding.shard_shape(leaf.shape)  # raises if a mesh axis does not divide the dimension
    emb = shardings["token_embedder"]["embedding"]
    assert _spec(emb) == {"dp": P(), "fsdp": P(None, "fsdp"), "fsdp_tp": P(None, "fsdp")}[rules]


@pytest.mark.parametrize(
    "opt", [optax.adamw(1e-3), optax.adafactor(1e-3, min_dim_size_to_factor=4)]
)
def test_optimizer_state_follows_param_shardings(opt):
    mesh = partitioning.make_mesh(1, 4, 2)
    x = jnp.arange(4)
    init = lambda rng: _Toy().init(rng, x)["params"]
    params, shardings, _ = partitioning.sharded_init(
        init, mesh, partitioning.AXIS_RULES["fsdp_tp"], jax.random.key(0)
    )
    abstract_opt = jax.eval_shape(opt.init, params)
    opt_sh = partitioning.shardings_like_params(abstract_opt, shardings, params, mesh)
    paired = jax.tree_util.tree_flatten_with_path(abstract_opt)[0]
    for (path, leaf), sh in zip(paired, jax.tree.leaves(opt_sh), strict=True):
        keys = partitioning._dict_key_path(path)
        if keys and keys[-1] in params and leaf.shape == params[keys[-1]].shape:
            assert sh == shardings[keys[-1]], path
        else:
            assert sh.is_fully_replicated, path
    if isinstance(abstract_opt[0], optax.ScaleByAdamState):
        assert _spec(opt_sh[0].mu["wi"]) == P("fsdp", "tensor")


def test_host_local_to_global_single_process():
    mesh = partitioning.make_mesh(4, 2, 1)
    batch = {"x": np.arange(16).reshape(8, 2)}
    out = partitioning.host_local_to_global(batch, mesh)
    assert out["x"].shape == (8, 2)
    assert out["x"].sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(out["x"]), batch["x"])
