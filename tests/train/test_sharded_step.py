"""Loss and gradients of the tiny model: 1 device == 8 fake devices on several meshes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codet5p_jax import partitioning
from codet5p_jax.config import get_preset
from codet5p_jax.models import build_model, init_args
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective


def _batch(batch_size=8, enc_len=12, dec_len=10):
    rng = np.random.default_rng(0)
    enc = rng.integers(5, 512, (batch_size, enc_len)).astype(np.int32)
    enc[:, -3:] = 0  # padding in the encoder
    targets = rng.integers(5, 512, (batch_size, dec_len)).astype(np.int32)
    targets[:, -2:] = 0
    dec_in = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": enc,
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": (targets != 0).astype(np.int32),
        "objective_ids": np.arange(batch_size, dtype=np.int32) % 3,
    }


@pytest.fixture(scope="module")
def reference():
    # The tiny preset with a 512-row vocabulary: same layers, a fraction of the compile time.
    cfg = get_preset("tiny", vocab_size=512)
    model = build_model(cfg)
    objective = Seq2SeqObjective(model)
    boxed = model.init(jax.random.key(0), *init_args(cfg))["params"]
    params = nn.unbox(boxed)
    grad_fn = jax.jit(jax.value_and_grad(objective.loss_fn, has_aux=True))
    (loss, (metrics, _)), grads = grad_fn(params, {}, _batch(), jax.random.key(1))
    return model, objective, boxed, float(loss), grads, metrics


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_loss_and_grads_equal_single_device(reference, shape):
    model, objective, boxed, ref_loss, ref_grads, ref_metrics = reference
    cfg = model.config
    mesh = partitioning.make_mesh(*shape)
    rules = partitioning.AXIS_RULES["fsdp_tp"]
    init = lambda r: model.init(r, *init_args(cfg))["params"]
    params, shardings, _ = partitioning.sharded_init(init, mesh, rules, jax.random.key(0))
    batch = partitioning.host_local_to_global(_batch(), mesh)
    grad_fn = jax.value_and_grad(objective.loss_fn, has_aux=True)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        step = jax.jit(
            grad_fn,
            in_shardings=(shardings, None, partitioning.batch_sharding(mesh), None),
            out_shardings=(None, shardings),
        )
        (loss, (metrics, _)), grads = step(params, {}, batch, jax.random.key(1))
    # The grads really are sharded like the params (fsdp_tp shards the query kernel).
    q = grads["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert q.sharding == shardings["encoder"]["layers_0"]["attention"]["query"]["kernel"]
    assert abs(float(loss) - ref_loss) / ref_loss <= 1e-5
    for name in ("loss/span_denoising", "accuracy", "tokens/decoder_clm"):
        np.testing.assert_allclose(float(metrics[name]), float(ref_metrics[name]), rtol=1e-5)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    for (path, g), r in zip(flat, jax.tree.leaves(ref_grads), strict=True):
        assert _rel_err(g, r) <= 1e-5, jax.tree_util.keystr(path)


def test_grads_are_nonzero_everywhere(reference):
    """Guards the comparison above against vacuous (all-zero) gradients."""
    *_, ref_grads, _ = reference
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(ref_grads)]
    assert min(norms) > 0
