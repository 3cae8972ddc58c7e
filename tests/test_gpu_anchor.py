"""benchmarks/gpu_anchor.py measures what ../shared/bench/hf_torch_anchor.py measures."""

import importlib.util
import pathlib

import pytest

from codet5p_jax.config import to_hf_config

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = ("tiny", "codet5p-220m", "codet5p-770m")
SHAPE_KEYS = ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "d_kv")


def _load(path: pathlib.Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ours():
    return _load(REPO / "benchmarks" / "gpu_anchor.py", "gpu_anchor")


@pytest.fixture(scope="module")
def anchor(shared_dir):
    return _load(shared_dir / "bench" / "hf_torch_anchor.py", "hf_torch_anchor")


@pytest.mark.parametrize("name", MODELS)
def test_model_shapes_equal_anchor(ours, anchor, name):
    theirs = anchor.config(name).to_dict()
    mine = to_hf_config(ours.model_config(name))
    for key in SHAPE_KEYS + ("vocab_size", "relative_attention_num_buckets", "eos_token_id"):
        assert mine[key] == theirs[key], key
    assert mine["dropout_rate"] == theirs["dropout_rate"] == 0.0


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(32, 512, 256), (3, 17, 5)])
def test_train_flops_equal_anchor(ours, anchor, name, shape):
    expected = anchor.train_flops_per_step(anchor.config(name), *shape)
    assert ours.train_flops_per_step(ours.model_config(name), *shape) == expected
