"""gin/partitioning/multislice_fsdp.gin: 2 slices, DCN data parallelism x ICI FSDP.

The device layout is built from 8 fake TPU devices in 2 slices (jax's hybrid mesh reads only
`slice_index`, `coords`, `core_on_chip`, `device_kind`); the shardings and a train step run on
the 8 fake CPU devices arranged in the same mesh shape.
"""

import dataclasses

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import gin
from codet5p_jax import partitioning
from codet5p_jax.cli import gin_flags
from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_args

NUM_SLICES, PER_SLICE = 2, 4


@dataclasses.dataclass(frozen=True)
class FakeTpu:
    """A TPU v4 chip as `mesh_utils` sees it."""

    id: int
    slice_index: int
    process_index: int
    coords: tuple[int, int, int]
    core_on_chip: int = 0
    platform: str = "tpu"
    device_kind: str = "TPU v4"


def _fake_slices() -> list[FakeTpu]:
    # Each slice: 4 chips on a 2x2x1 torus, 2 chips per host; ids run slice by slice.
    return [
        FakeTpu(i, i // PER_SLICE, i // 2, (i % 2, (i // 2) % 2, 0))
        for i in range(NUM_SLICES * PER_SLICE)
    ]


@pytest.fixture
def multislice_gin():
    args = gin_flags.parse_args(["--gin_file=gin/partitioning/multislice_fsdp.gin"], "test", "")
    gin_flags.parse_gin(args)
    yield
    gin.clear_config()


def test_slices_are_the_data_axis_and_fsdp_stays_inside_a_slice(multislice_gin):
    mesh = partitioning.make_mesh(devices=_fake_slices())
    assert dict(mesh.shape) == {"data": NUM_SLICES, "fsdp": PER_SLICE, "tensor": 1}
    for d in range(NUM_SLICES):
        # One data replica = one whole slice: FSDP all-gathers never cross the DCN.
        assert {dev.slice_index for dev in mesh.devices[d].ravel()} == {d}
    # And every FSDP shard index has one device in each slice (the DCN all-reduce pairs).
    for f in range(PER_SLICE):
        assert sorted(dev.slice_index for dev in mesh.devices[:, f, 0]) == [0, 1]


def test_a_single_slice_is_refused(multislice_gin):
    with pytest.raises(ValueError, match="DCN mesh .* needs 2 slices but 1 are available"):
        partitioning.make_mesh(devices=_fake_slices()[:PER_SLICE])


def test_tiny_model_shards_by_slice_shape_and_trains(multislice_gin):
    """The multislice mesh shape on 8 CPU devices: params split 4 ways (never across the 2
    slices), the batch 8 ways, and one sharded train step runs."""
    rules = partitioning.get_axis_rules(gin.query_parameter("train.axis_rules"))
    layout = partitioning.make_mesh(devices=_fake_slices())
    devices = np.asarray(jax.devices()[: layout.devices.size]).reshape(layout.devices.shape)
    mesh = Mesh(devices, layout.axis_names)
    cfg = get_preset("tiny")
    model = build_model(cfg)
    abstract = jax.eval_shape(lambda r: model.init(r, *init_args(cfg))["params"], jax.random.key(0))
    shardings = partitioning.logical_to_shardings(abstract, mesh, rules)
    leaves = jax.tree.leaves(partitioning.unbox_abstract(abstract))
    split = 0
    for leaf, sharding in zip(leaves, jax.tree.leaves(shardings), strict=True):
        shard = sharding.shard_shape(leaf.shape)
        ratio = int(np.prod(leaf.shape)) // int(np.prod(shard))
        assert ratio in (1, PER_SLICE), (leaf.shape, shard)  # never divided by the slice count
        split += ratio == PER_SLICE
    assert split > len(leaves) // 2  # most weights are sharded (the norms are too small to)
    emb = shardings["token_embedder"]["embedding"]
    assert emb.shard_shape((cfg.vocab_size, cfg.emb_dim)) == (cfg.vocab_size, cfg.emb_dim // 4)
    batch = partitioning.batch_sharding(mesh)
    assert batch.shard_shape((16, 32)) == (16 // (NUM_SLICES * PER_SLICE), 32)
    params = partitioning.sharded_init(
        lambda r: model.init(r, *init_args(cfg))["params"], mesh, rules, jax.random.key(0)
    )[0]
    tokens = jax.device_put(np.ones((16, 8), np.int32), batch)
    logits = jax.jit(lambda p, x: model.apply({"params": p}, x, x))(params, tokens)
    assert logits.shape == (16, 8, cfg.vocab_size) and np.isfinite(np.asarray(logits)).all()
