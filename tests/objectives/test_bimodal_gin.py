"""The stage-2 and retrieval gins parse, and build the objective the files describe."""

import argparse

import pytest

import gin
from codet5p_jax.cli import gin_flags
from codet5p_jax.models import build_model

REQUIRED = {
    "experiments/tiny_stage2.gin": ["MODEL_DIR='/tmp/x'", "INITIAL_CHECKPOINT_PATH='/tmp/s1'"],
    "experiments/retrieval_110m_embedding.gin": [
        "MODEL_DIR='/tmp/x'", "INITIAL_CHECKPOINT_PATH='/m'", "PAIRS_PATH='/p.jsonl'",
        "CORPUS_NAME='csn_gin_test'", "TRAIN_STEPS=10",
    ],
    "experiments/retrieval_220m_bimodal.gin": [
        "MODEL_DIR='/tmp/x'", "INITIAL_CHECKPOINT_PATH='/m'", "PAIRS_PATH='/p.jsonl'",
        "CORPUS_NAME='csn_gin_test'", "TRAIN_STEPS=10",
    ],
}  # fmt: skip


@pytest.fixture
def parse():
    def _parse(gin_file, bindings):
        args = argparse.Namespace(gin_file=[gin_file], gin_bindings=bindings, gin_search_paths="")
        gin_flags.parse_gin(args)

    yield _parse
    gin.clear_config()


@pytest.mark.parametrize("gin_file", sorted(REQUIRED))
def test_stage2_gins_build_the_objective(parse, gin_file):
    from codet5p_jax.objectives.bimodal import BimodalObjective

    parse(gin_file, REQUIRED[gin_file])
    cfg = gin.query_parameter("train.model_config").scoped_configurable_fn()
    objective = gin.query_parameter("train.objective_cls").scoped_configurable_fn(build_model(cfg))
    assert isinstance(objective, BimodalObjective)
    queue = gin.query_parameter("%QUEUE_SIZE")
    assert objective.queue_size == queue
    assert queue % gin.query_parameter("%BATCH_SIZE") == 0
    if "embedding" in gin_file:
        assert cfg.kind == "embedding" and objective.weights["itm"] == 0.0
    else:
        assert cfg.kind == "bimodal" and objective.weights["itm"] == 1.0
    if "retrieval" in gin_file:
        # App. D: contrastive + matching only, 57,600-entry queues, lr 2e-5.
        assert queue == 57600 and objective.weights["t2c"] == objective.weights["c2t"] == 0.0
        assert gin.query_parameter("make_schedule.peak_value") == 2e-5
    else:
        # tiny_stage2: contrastive + matching (generation off for the CPU budget, see the gin).
        assert objective.weights == dict(itc=1.0, itm=1.0, t2c=0.0, c2t=0.0)


def test_tiny_stage2_requires_the_stage1_checkpoint(parse):
    from codet5p_jax.train import trainer

    parse("experiments/tiny_stage2.gin", ["MODEL_DIR='/tmp/x'"])
    with pytest.raises(ValueError, match="INITIAL_CHECKPOINT_PATH"):
        trainer.train()
