"""Decoder-only line completion (`tasks.completion_decoder`): the decoder sequence is context +
next line + EOS, the encoder input `[CLM]`, and the loss weights cover exactly the next line and
its EOS. Checked on a fixture file of ../shared/reference/datasets/codexglue-understanding."""

import json

import numpy as np
import pytest
import seqio

from tasks import completion_decoder, understanding

FIXTURE = "reference/datasets/codexglue-understanding/code-completion-line-python/test.json"
CLM, EOS = 3, 2
# The fixture's third record ends `... self . markers = [ ] <EOL> def getvalue (`: read as a
# token-level file, its last training example is that context and the line "def getvalue (".
LAST_LINE = "def getvalue ("


@pytest.fixture()
def data_dir(shared_dir, tmp_path):
    rows = [json.loads(x) for x in (shared_dir / FIXTURE).read_text().splitlines()]
    d = tmp_path / "py150"
    d.mkdir()
    (d / "train.txt").write_text(rows[2]["input"] + "\n")
    (d / "test.json").write_text((shared_dir / FIXTURE).read_text())
    return d, rows


def _batches(name, lengths, split="train"):
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split=split, shuffle=False)
    converter = completion_decoder.CompletionDecoderFeatureConverter()
    return list(converter(ds, lengths).as_numpy_iterator())


def _last(examples):
    return examples[-1]


def test_loss_mask_covers_exactly_the_next_line(data_dir, codet5_vocab):
    d, rows = data_dir
    name = understanding.register_line_completion(
        "fixture", d, vocabulary=codet5_vocab, mode="decoder_only"
    )
    assert name == "codet5p_completion_fixture_decoder"
    lengths = {"inputs": 1, "targets": 256}
    ex = _last(_batches(name, lengths))
    line = codet5_vocab.encode(LAST_LINE)
    context = codet5_vocab.encode(rows[2]["input"][: -len(LAST_LINE)].strip())
    n_ctx, n_line = len(context), len(line)
    assert n_ctx + n_line + 1 < 256  # no truncation in this case
    assert ex["encoder_input_tokens"].tolist() == [CLM]
    expected = [*context, *line, EOS] + [0] * (256 - n_ctx - n_line - 1)
    assert ex["decoder_target_tokens"].tolist() == expected
    assert ex["decoder_input_tokens"].tolist() == [0, *expected[:-1]]
    weights = [0] * n_ctx + [1] * (n_line + 1) + [0] * (256 - n_ctx - n_line - 1)
    assert ex["decoder_loss_weights"].tolist() == weights
    # The weighted targets decode to the line itself.
    masked = ex["decoder_target_tokens"][ex["decoder_loss_weights"] == 1].tolist()
    assert masked[-1] == EOS and codet5_vocab.decode(masked[:-1]) == LAST_LINE


def test_short_decoder_keeps_the_context_end_and_the_whole_line(data_dir, codet5_vocab):
    d, rows = data_dir
    name = understanding.register_line_completion(
        "fixture", d, vocabulary=codet5_vocab, mode="decoder_only"
    )
    ex = _last(_batches(name, {"inputs": 1, "targets": 12}))
    line = codet5_vocab.encode(LAST_LINE)
    context = codet5_vocab.encode(rows[2]["input"][: -len(LAST_LINE)].strip())
    keep = 12 - 1 - len(line)
    assert ex["decoder_target_tokens"].tolist() == [*context[-keep:], *line, EOS]
    assert ex["decoder_loss_weights"].tolist() == [0] * keep + [1] * (len(line) + 1)


def test_max_line_tokens_cuts_the_line(data_dir, codet5_vocab):
    d, _ = data_dir
    name = understanding.register_line_completion(
        "fixture", d, vocabulary=codet5_vocab, mode="decoder_only", max_line_tokens=2
    )
    ex = _last(_batches(name, {"inputs": 1, "targets": 12}))
    line = codet5_vocab.encode(LAST_LINE)
    assert len(line) > 2
    assert ex["decoder_target_tokens"][-3:].tolist() == [*line[:2], EOS]
    assert ex["decoder_loss_weights"].tolist() == [0] * 9 + [1] * 3


def test_test_split_empty_line_weights_only_eos(data_dir, codet5_vocab):
    """The fixture's line-level records have an empty `gt`: only the EOS carries loss."""
    d, rows = data_dir
    name = understanding.register_line_completion(
        "fixture", d, vocabulary=codet5_vocab, mode="decoder_only"
    )
    examples = _batches(name, {"inputs": 1, "targets": 64}, split="test")
    assert len(examples) == len(rows) == 5
    for ex, row in zip(examples, rows, strict=True):
        assert row["gt"] == ""
        context = codet5_vocab.encode(row["input"])[-63:]
        assert ex["decoder_target_tokens"].tolist() == [*context, EOS]
        assert ex["decoder_loss_weights"].tolist() == [0] * 63 + [1]


def test_bad_mode_and_missing_mask_are_one_line_errors(data_dir, codet5_vocab):
    d, _ = data_dir
    with pytest.raises(ValueError, match=r"register_line_completion.mode .*'decoder'") as info:
        understanding.register_line_completion("fixture", d, mode="decoder")
    # gin appends a line naming the configurable; the CLI prints the first one.
    assert "one of ('seq2seq', 'decoder_only')" in str(info.value).splitlines()[0]
    seq2seq = understanding.register_line_completion("fixture", d, vocabulary=codet5_vocab)
    lengths = {"inputs": 32, "targets": 16}
    ds = seqio.get_mixture_or_task(seq2seq).get_dataset(lengths, split="train", shuffle=False)
    with pytest.raises(ValueError, match="targets_loss_mask") as info:
        completion_decoder.CompletionDecoderFeatureConverter()(ds, lengths)
    assert "\n" not in str(info.value)


def test_seq2seq_mode_is_unchanged(data_dir, codet5_vocab):
    d, rows = data_dir
    name = understanding.register_line_completion("fixture", d, vocabulary=codet5_vocab)
    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 8, "targets": 8}, split="train", shuffle=False
    )
    ex = list(ds.as_numpy_iterator())[-1]
    context = codet5_vocab.encode(rows[2]["input"][: -len(LAST_LINE)].strip())
    np.testing.assert_array_equal(ex["inputs"], [*context[-7:], EOS])
