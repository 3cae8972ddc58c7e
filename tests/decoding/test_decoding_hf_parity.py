"""Greedy and beam search equal HF `T5ForConditionalGeneration.generate` on the same weights."""

import numpy as np
import pytest
import torch
from testlib import hf_generate, padded_prompts

from codet5p_jax.decoding.generate import generate


def hf_lengths(ref: np.ndarray, eos_id: int) -> np.ndarray:
    """New tokens per HF row: up to and including the first EOS, else the whole (trimmed) row."""
    is_eos = ref == eos_id
    return np.where(is_eos.any(1), is_eos.argmax(1) + 1, ref.shape[1])


def assert_same_tokens(out, hf_sequences, eos_id: int, prefix_len: int = 0):
    """`out.tokens [B, N, T]` vs HF `[B*N, 1 + prefix + L]` (start token, prefix, new tokens).

    HF fills finished beams with `pad_token_id or eos_token_id`, i.e. with EOS when pad is 0;
    we fill with pad, so each row is compared up to its length and the tails separately.
    """
    ref = hf_sequences.numpy()[:, 1 + prefix_len :]
    ours = out.tokens.reshape(ref.shape[0], -1)
    lengths = hf_lengths(ref, eos_id)
    np.testing.assert_array_equal(out.lengths.reshape(-1), lengths)
    for row, ref_row, n in zip(ours, ref, lengths, strict=True):
        np.testing.assert_array_equal(row[:n], ref_row[:n])
        assert (row[n:] == 0).all()
        assert np.isin(ref_row[n:], (0, eos_id)).all()


@pytest.mark.parametrize(
    "preset, vocab, scan",
    [
        ("codet5p-220m", None, False),  # the preset's real 32100-token vocabulary
        ("codet5p-220m", 16, False),  # tiny vocabulary: EOS comes often
        ("codet5p-770m", 16, False),
        ("codet5p-770m", 16, True),  # scanned layer layout
    ],
)
def test_greedy_matches_hf(pair, preset, vocab, scan):
    hf, model, params, cfg = pair(preset, vocab, scan)
    ids, mask = padded_prompts(cfg.vocab_size)
    # Shapes shared with other tests in this folder, so their jitted loops compile once.
    ref = hf_generate(hf, ids, mask, max_new_tokens=10)
    out = generate(model, params, ids, mask, max_new_tokens=10)
    assert_same_tokens(out, ref.sequences, cfg.eos_token_id)
    assert out.scores is None
    if vocab == 16:
        assert (ref.sequences == cfg.eos_token_id).any(), "test must exercise EOS"


@pytest.mark.parametrize(
    "early_stopping, length_penalty",
    # True: stop when K hypotheses are kept; False: HF's current-length bound (with 0 and 1
    # length penalties); "never" with a positive penalty: the max-length bound.
    [(False, 1.0), (True, 1.0), (False, 0.0), ("never", 2.0)],
)
def test_beam_matches_hf(pair, early_stopping, length_penalty):
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size, batch=3)
    kw = dict(max_new_tokens=10, num_beams=4, early_stopping=early_stopping)
    ref = hf_generate(hf, ids, mask, num_return_sequences=4, length_penalty=length_penalty, **kw)
    out = generate(model, params, ids, mask, method="beam", length_penalty=length_penalty, **kw)
    assert_same_tokens(out, ref.sequences, cfg.eos_token_id)
    np.testing.assert_allclose(
        out.scores.reshape(-1), ref.sequences_scores.numpy(), rtol=1e-4, atol=1e-4
    )
    assert (ref.sequences == cfg.eos_token_id).any(), "test must exercise finished beams"


@pytest.mark.parametrize("preset, scan", [("codet5p-770m", True), ("codet5p-220m", False)])
def test_beam_matches_hf_presets(pair, preset, scan):
    hf, model, params, cfg = pair(preset, None, scan)
    ids, mask = padded_prompts(cfg.vocab_size, batch=2)
    kw = dict(max_new_tokens=8, num_beams=3)
    ref = hf_generate(hf, ids, mask, num_return_sequences=3, **kw)
    out = generate(model, params, ids, mask, method="beam", **kw)
    assert_same_tokens(out, ref.sequences, cfg.eos_token_id)
    np.testing.assert_allclose(out.scores.reshape(-1), ref.sequences_scores.numpy(), atol=1e-4)


def test_one_beam_is_greedy(pair):
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size)
    beam = generate(model, params, ids, mask, method="beam", num_beams=1, max_new_tokens=10)
    greedy = generate(model, params, ids, mask, max_new_tokens=10)
    np.testing.assert_array_equal(beam.tokens, greedy.tokens)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_decoder_prefix_matches_hf(pair, method):
    """A decoder prefix equals HF `decoder_input_ids = [start] + prefix`; outputs exclude it."""
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size)
    prefix = np.random.default_rng(1).integers(5, cfg.vocab_size, (3, 4))
    start = np.full((3, 1), cfg.decoder_start_token_id)
    beams = 3 if method == "beam" else 1
    kw = dict(max_new_tokens=9, num_beams=beams)
    ref = hf_generate(
        hf,
        ids,
        mask,
        decoder_input_ids=torch.tensor(np.concatenate([start, prefix], 1)),
        num_return_sequences=beams,
        **kw,
    )
    out = generate(model, params, ids, mask, method=method, decoder_prefix_ids=prefix, **kw)
    assert_same_tokens(out, ref.sequences, cfg.eos_token_id, prefix_len=4)
    if method == "beam":
        np.testing.assert_allclose(out.scores.reshape(-1), ref.sequences_scores.numpy(), atol=1e-4)


def test_facade_generate_from_hf_directory(pair, tmp_path):
    """`from_pretrained(hf_dir).generate` equals HF `generate` on the saved model."""
    from codet5p_jax.pretrained import from_pretrained

    hf, model, params, cfg = pair("codet5p-220m", 16)
    hf.save_pretrained(tmp_path / "hf")
    ids, mask = padded_prompts(cfg.vocab_size)
    out = from_pretrained(tmp_path / "hf").generate(
        ids, mask, method="beam", num_beams=2, max_new_tokens=9
    )
    ref = hf_generate(hf, ids, mask, num_beams=2, num_return_sequences=2, max_new_tokens=9)
    assert_same_tokens(out, ref.sequences, cfg.eos_token_id)
    np.testing.assert_allclose(out.scores.reshape(-1), ref.sequences_scores.numpy(), atol=1e-4)
