"""Every gin file in the repository parses, and every experiment states its launch command."""

import pathlib

import pytest

import gin
from codet5p_jax import gin_cli

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
    args = gin_cli.parse_args([f"--gin_file={path}"], "test", "")
    try:
        gin_cli.parse_gin(args)  # imports, includes and every @reference must resolve
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
