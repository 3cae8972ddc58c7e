"""Decoder-prefix generation (the released HumanEval recipe of CodeT5+ >= 2B, FACTS §1.5) on the
shallow_deep family: greedy, sampling and beam search with the prompt fed to the decoder after
the start token (= the pad id, 50256), each against an uncached reference that re-runs the whole
teacher-forced network on `[start] + prefix + generated` at every step.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codet5p_jax import families
from codet5p_jax.decoding.generate import generate
from codet5p_jax.decoding.sampling import process_logits
from codet5p_jax.models.shallow_deep_config import get_preset

START = 50256


@pytest.fixture(scope="module")
def tiny():
    cfg = get_preset("tiny-shallow-deep")
    model = families.build_model(cfg)
    params = model.init(jax.random.key(3), *families.init_args(cfg))["params"]
    params = nn.unbox(params)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50000, size=(3, 7)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    mask[1, 5:] = False  # a padded prompt (padding is id 0, a real token: the mask matters)
    ids[1, 5:] = 0
    return cfg, model, params, ids, mask


@pytest.fixture(scope="module")
def forward(tiny):
    cfg, model, params, _, _ = tiny

    @jax.jit
    def logits(enc, enc_mask, dec):
        return model.apply({"params": params}, enc, dec, encoder_mask=enc_mask)

    return logits


def _next_logits(forward, ids, mask, row, dec):
    out = forward(ids[row : row + 1], mask[row : row + 1], jnp.asarray([dec], jnp.int32))
    return np.asarray(out[0, -1])


def test_start_id_is_the_pad_id(tiny):
    cfg = tiny[0]
    assert cfg.decoder_start_token_id == cfg.pad_token_id == START


def test_greedy_with_ragged_prefixes_equals_uncached_reference(tiny, forward):
    cfg, model, params, ids, mask = tiny
    prefix = np.full((3, 4), START, np.int32)
    prefix[0, :4] = [11, 12, 13, 14]
    prefix[1, :1] = [21]  # row 2 has no prefix at all
    lengths = [4, 1, 0]
    out = generate(
        model, params, ids, mask, max_new_tokens=6, decoder_prefix_ids=prefix,
        decoder_prefix_mask=np.arange(4) < np.asarray(lengths)[:, None],
    )  # fmt: skip
    for b, n in enumerate(lengths):
        dec = [START] + prefix[b, :n].tolist()
        want = []
        for _ in range(6):
            token = int(np.argmax(_next_logits(forward, ids, mask, b, dec + want)))
            want.append(token)
        np.testing.assert_array_equal(out.tokens[b, 0], want)


def test_sampling_with_prefix_equals_uncached_reference(tiny, forward):
    """The released sampling settings (T 0.8, top-p 0.95), same PRNG keys: row r draws at step
    i with `fold_in(fold_in(key(seed), i), r)` from its processed logits."""
    cfg, model, params, ids, mask = tiny
    prefix = np.asarray([[31, 32], [41, 42], [51, 52]], np.int32)
    kw = dict(temperature=0.8, top_p=0.95)
    out = generate(
        model, params, ids, mask, method="sample", max_new_tokens=5, seed=7,
        decoder_prefix_ids=prefix, **kw,
    )  # fmt: skip
    rng = jax.random.PRNGKey(7)
    seqs = [[START, *p] for p in prefix.tolist()]
    for step in range(5):
        logits = np.stack([_next_logits(forward, ids, mask, b, seqs[b]) for b in range(3)])
        scores = process_logits(jnp.asarray(logits), kw["temperature"], 0, kw["top_p"])
        for b in range(3):
            key = jax.random.fold_in(jax.random.fold_in(rng, step), b)
            seqs[b].append(int(jax.random.categorical(key, scores[b])))
    np.testing.assert_array_equal(out.tokens[:, 0], [s[3:] for s in seqs])


def test_beam_with_prefix_scores_are_the_prefix_conditioned_logprobs(tiny, forward):
    """Each returned beam's score (length_penalty 0: the sum of its log-probabilities) equals
    the teacher-forced log-probability of its tokens after `[start] + prefix`; and a single
    beam is the greedy path."""
    cfg, model, params, ids, mask = tiny
    prefix = np.asarray([[61, 62, 63], [71, START, START], [81, 82, START]], np.int32)
    lengths = [3, 1, 2]
    out = generate(
        model, params, ids, mask, method="beam", num_beams=3, max_new_tokens=4,
        length_penalty=0.0, decoder_prefix_ids=prefix,
    )  # fmt: skip
    for b, n in enumerate(lengths):
        dec = [START] + prefix[b, :n].tolist()
        for k in range(3):
            toks = out.tokens[b, k].tolist()
            total = 0.0
            for i, t in enumerate(toks):
                logp = jax.nn.log_softmax(_next_logits(forward, ids, mask, b, dec + toks[:i]))
                total += float(logp[t])
            np.testing.assert_allclose(out.scores[b, k], total, atol=1e-4)
    one = generate(
        model, params, ids, mask, method="beam", num_beams=1, max_new_tokens=4,
        decoder_prefix_ids=prefix,
    )  # fmt: skip
    greedy = generate(model, params, ids, mask, max_new_tokens=4, decoder_prefix_ids=prefix)
    np.testing.assert_array_equal(one.tokens, greedy.tokens)
