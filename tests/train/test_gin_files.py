"""Every gin file in the repository parses, and every experiment states its launch command."""

import pathlib

import numpy as np
import pytest

import gin
from codet5p_jax.cli import gin_flags

REPO = pathlib.Path(__file__).resolve().parents[2]
GIN_FILES = sorted(
    p for p in REPO.rglob("*.gin") if ".venv" not in p.parts and not p.name.startswith(".")
)


def test_found_the_gin_tree():
    names = {p.relative_to(REPO).as_posix() for p in GIN_FILES}
    for required in (
        "gin/runs/pretrain.gin",
        "gin/runs/finetune.gin",
        "gin/runs/eval.gin",
        "gin/runs/infer.gin",
        "gin/partitioning/dp.gin",
        "gin/partitioning/fsdp.gin",
        "gin/partitioning/fsdp_tp.gin",
        "gin/experiments/tiny_stage1.gin",
        "gin/experiments/tiny_stage2.gin",
    ):
        assert required in names, required


def test_every_preset_has_a_model_gin():
    from codet5p_jax.config import PRESETS

    for name in PRESETS:
        assert (REPO / "gin" / "models" / f"{name}.gin").is_file(), name


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_gin_file_parses(path):
    args = gin_flags.parse_args([f"--gin_file={path}"], "test", "")
    try:
        gin_flags.parse_gin(args)  # imports, includes and every @reference must resolve
    finally:
        gin.clear_config()


@pytest.mark.parametrize(
    "path",
    [p for p in GIN_FILES if "experiments" in p.parts],
    ids=lambda p: p.name,
)
def test_experiment_has_launch_command(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    assert any("codet5p " in line or "python -m" in line for line in header), path


@pytest.mark.parametrize(
    "name", ["stage1_220m.gin", "stage1_770m.gin", "finetune_summarize_220m.gin"]
)
def test_real_size_experiment_shards_shape_first(name):
    """The real-size experiments' model, mesh and rules give valid shardings for every param
    on 8 devices - computed from shapes only (nothing of the model is materialised)."""
    import jax

    from codet5p_jax import partitioning
    from codet5p_jax.models import build_model, init_args
    from codet5p_jax.train import trainer

    args = gin_flags.parse_args([f"--gin_file=gin/experiments/{name}"], "test", "")
    gin_flags.parse_gin(args)
    try:
        cfg = trainer.configured_get_preset()
        rules = partitioning.get_axis_rules(gin.query_parameter("train.axis_rules"))
        mesh = partitioning.make_mesh(
            gin.query_parameter("make_mesh.data"),
            gin.query_parameter("make_mesh.fsdp"),
            gin.query_parameter("make_mesh.tensor"),
        )
    finally:
        gin.clear_config()
    model = build_model(cfg)
    abstract = jax.eval_shape(lambda r: model.init(r, *init_args(cfg))["params"], jax.random.key(0))
    shardings = partitioning.logical_to_shardings(abstract, mesh, rules)
    leaves = jax.tree.leaves(partitioning.unbox_abstract(abstract))
    for leaf, sharding in zip(leaves, jax.tree.leaves(shardings), strict=True):
        sharding.shard_shape(leaf.shape)  # raises if a mesh axis does not divide the dimension
    n = sum(int(np.prod(x.shape)) for x in leaves)
    assert n > 200e6  # really the 220M / 770M networks
    if mesh.shape["fsdp"] > 1:
        assert not all(s.is_fully_replicated for s in jax.tree.leaves(shardings))
