"""ClassificationObjective's loss against numpy, the guards between classifiers and seq2seq
code, and classifier fine-tuning from an encoder-decoder checkpoint (heads new, decoder
dropped for encoder pooling)."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import loading, partitioning
from codet5p_jax.config import get_preset
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models import build_model, init_args, init_params
from codet5p_jax.objectives.classification import ClassificationObjective
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective
from codet5p_jax.train import initial_checkpoint

SMALL = dict(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32, dropout_rate=0.0)


def _classifier(**fields):
    layers = (
        {} if fields.get("pooling", "eos_decoder") == "eos_decoder" else {"num_decoder_layers": 0}
    )
    return get_preset("tiny", kind="classifier", num_labels=3, **SMALL, **layers, **fields)


def test_loss_is_the_mean_softmax_cross_entropy():
    cfg = _classifier()
    model = build_model(cfg)
    params = nn.unbox(init_params(cfg, jax.random.key(0)))
    tokens = np.random.default_rng(0).integers(5, 64, size=(4, 7)).astype(np.int32)
    tokens[:, -1] = 2
    labels = np.array([0, 2, 1, 2], np.int32)
    objective = ClassificationObjective(model)
    loss, (metrics, extra) = objective.loss_fn(
        params, {}, {"encoder_input_tokens": tokens, "labels": labels}, None, enable_dropout=False
    )
    logits = np.asarray(model.apply({"params": params}, tokens), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(loss), -logp[np.arange(4), labels].mean(), rtol=1e-5)
    assert float(metrics["accuracy"]) == np.mean(logits.argmax(-1) == labels)
    assert float(metrics["examples"]) == 4 and extra == {}


def test_classifier_and_seq2seq_guards():
    classifier = build_model(_classifier())
    with pytest.raises(ValueError, match="a classifier trains with ClassificationObjective"):
        Seq2SeqObjective(classifier)
    with pytest.raises(ValueError, match="needs a classifier model"):
        ClassificationObjective(build_model(get_preset("tiny", **SMALL)))
    with pytest.raises(ValueError, match="cannot generate"):
        generate(classifier, {}, np.ones((1, 3), np.int32), max_new_tokens=2)


@pytest.mark.parametrize("pooling", ["eos_decoder", "mean"])
def test_classifier_starts_from_an_encoder_decoder_checkpoint(tmp_path, pooling):
    source_cfg = get_preset("tiny", **SMALL)
    source = nn.unbox(init_params(source_cfg, jax.random.key(1)))
    loading.save(tmp_path / "hf", source_cfg, source, "hf")
    cfg = _classifier(pooling=pooling)
    model = build_model(cfg)
    mesh = partitioning.make_mesh(8, 1, 1)
    fresh, shardings, _ = partitioning.sharded_init(
        lambda r: model.init(r, *init_args(cfg))["params"],
        mesh,
        partitioning.AXIS_RULES["dp"],
        jax.random.key(2),
    )
    unused = () if pooling == "eos_decoder" else ("decoder/",)
    merged, added = initial_checkpoint.load_initial_params(
        tmp_path / "hf", fresh, shardings, cfg, unused_params=unused
    )
    assert added == [f"classification_head/{a}/{b}" for a in ("dense", "out_proj")
                     for b in ("bias", "kernel")]  # fmt: skip
    np.testing.assert_array_equal(
        np.asarray(merged["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]),
        np.asarray(source["encoder"]["layers_0"]["mlp"]["wi"]["kernel"]),
    )
    assert ("decoder" in merged) == (pooling == "eos_decoder")
    if pooling == "mean":
        # Without dropping the decoder, the encoder-only classifier refuses the source.
        with pytest.raises(Exception, match="unexpected params: decoder/"):
            initial_checkpoint.load_initial_params(tmp_path / "hf", fresh, shardings, cfg)
