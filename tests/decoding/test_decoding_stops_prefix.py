"""Stop sequences and ragged decoder prefixes, against HF `generate` and numpy references."""

import numpy as np
import pytest
import torch
from testlib import hf_generate, padded_prompts

from codet5p_jax.decoding.generate import generate
from codet5p_jax.decoding.sampling import stop_sequence_table


def first_stop(tokens, seq):
    """Length up to and including the first occurrence of `seq` in `tokens`, else None."""
    for end in range(len(seq), len(tokens) + 1):
        if list(tokens[end - len(seq) : end]) == list(seq):
            return end
    return None


def test_stop_sequence_table_right_aligns():
    table = stop_sequence_table([7, [3, 4, 5], [9, 9]])
    np.testing.assert_array_equal(table, [[-1, -1, 7], [3, 4, 5], [-1, 9, 9]])
    with pytest.raises(ValueError, match=r"\[\]"):
        stop_sequence_table([[]])


def test_multi_token_stop_sequence_truncates_greedy(pair):
    hf, model, params, cfg = pair("codet5p-220m", None)
    ids, mask = padded_prompts(cfg.vocab_size)
    free = generate(model, params, ids, mask, max_new_tokens=10)
    seq = free.tokens[2, 0, 2:4].tolist()  # a bigram that row 2 emits at positions 2-3
    out = generate(model, params, ids, mask, max_new_tokens=10, stop_token_ids=[seq])
    for row_free, row, n in zip(
        free.tokens[:, 0], out.tokens[:, 0], out.lengths[:, 0], strict=True
    ):
        end = first_stop(row_free, seq) or 10
        assert n == end
        np.testing.assert_array_equal(row[:end], row_free[:end])
        assert (row[end:] == cfg.pad_token_id).all()
    assert out.lengths[2, 0] <= 4


@pytest.mark.parametrize("method, beams", [("greedy", 1), ("beam", 3)])
def test_single_token_stops_equal_hf_eos_list(pair, method, beams):
    """A one-token stop sequence is an extra end id, as HF `eos_token_id=[eos, t]`."""
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size)
    stop = 7
    kw = dict(max_new_tokens=10, num_beams=beams)
    ref = hf_generate(
        hf, ids, mask, eos_token_id=[cfg.eos_token_id, stop], num_return_sequences=beams, **kw
    )
    out = generate(model, params, ids, mask, method=method, stop_token_ids=[stop], **kw)
    ref_tokens = ref.sequences.numpy()[:, 1:]
    ends = np.isin(ref_tokens, (cfg.eos_token_id, stop))
    ref_len = np.where(ends.any(1), ends.argmax(1) + 1, ref_tokens.shape[1])
    assert (ref_tokens == stop).any(), "test must exercise the stop id"
    np.testing.assert_array_equal(out.lengths.reshape(-1), ref_len)
    ours = out.tokens.reshape(ref_tokens.shape[0], -1)
    for row, ref_row, n in zip(ours, ref_tokens, ref_len, strict=True):
        np.testing.assert_array_equal(row[:n], ref_row[:n])
    if beams > 1:
        np.testing.assert_allclose(out.scores.reshape(-1), ref.sequences_scores.numpy(), atol=1e-4)


@pytest.mark.parametrize("method, beams", [("greedy", 1), ("beam", 3)])
def test_ragged_decoder_prefix_equals_hf_per_row(pair, method, beams):
    """Rows with prefixes of 4, 1 and 0 tokens in one batch equal HF run row by row."""
    hf, model, params, cfg = pair("codet5p-220m", 16)
    ids, mask = padded_prompts(cfg.vocab_size)
    prefix = np.array([[9, 5, 11, 6], [8, 0, 0, 0], [0, 0, 0, 0]])
    lengths = [4, 1, 0]
    kw = dict(max_new_tokens=8, num_beams=beams)
    out = generate(model, params, ids, mask, method=method, decoder_prefix_ids=prefix, **kw)
    for b, n in enumerate(lengths):
        start = [cfg.decoder_start_token_id] + prefix[b, :n].tolist()
        ref = hf_generate(
            hf, ids[b : b + 1], mask[b : b + 1], decoder_input_ids=torch.tensor([start]),
            num_return_sequences=beams, **kw,
        )  # fmt: skip
        ref_tokens = ref.sequences.numpy()[:, 1 + n :]
        for k, ref_row in enumerate(ref_tokens):
            is_eos = ref_row == cfg.eos_token_id
            ref_len = is_eos.argmax() + 1 if is_eos.any() else len(ref_row)
            assert out.lengths[b, k] == ref_len
            np.testing.assert_array_equal(out.tokens[b, k, :ref_len], ref_row[:ref_len])
        if beams > 1:
            np.testing.assert_allclose(out.scores[b], ref.sequences_scores.numpy(), atol=1e-4)
