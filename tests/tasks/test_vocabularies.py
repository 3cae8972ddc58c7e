"""Vocabulary parity with `transformers` tokenizers on real stdlib files (Python and tf.data)."""

import pickle

import numpy as np
import pytest
import tensorflow as tf
import transformers

from codet5p_jax.config import STAGE2_ADDED_TOKENS
from tasks import vocabularies as V
from tasks.tokenizer_training import train_bpe


@pytest.fixture(scope="module")
def roberta(codet5_tokenizer_dir):
    """The HF reference: RobertaTokenizer on the CodeT5 files + the codet5p added tokens."""
    tok = transformers.RobertaTokenizer(
        str(codet5_tokenizer_dir / "codet5-vocab.json"),
        str(codet5_tokenizer_dir / "codet5-merges.txt"),
    )
    # codet5p-220m's tokenizer: <extra_id_99> .. <extra_id_0> after the BPE (T5 order), then the
    # two-stage models' [ENC], [TDEC], [CDEC].
    tok.add_tokens([f"<extra_id_{n}>" for n in range(99, -1, -1)], special_tokens=True)
    tok.add_tokens(["[ENC]", "[TDEC]", "[CDEC]"], special_tokens=True)
    return tok


@pytest.fixture(scope="module")
def codegen_vocab(codegen_tokenizer_dir):
    return V.CodeGenVocabulary(codegen_tokenizer_dir)


def test_codet5_special_ids_match_hf(codet5_vocab, roberta):
    ids = roberta.convert_tokens_to_ids
    assert codet5_vocab.vocab_size == len(roberta) == 32103
    assert [codet5_vocab.sentinel_id(n) for n in (0, 1, 99)] == [
        ids("<extra_id_0>"),
        ids("<extra_id_1>"),
        ids("<extra_id_99>"),
    ]
    assert V.sentinel_id(0) == 32099 and V.sentinel_id(99) == 32000
    assert tuple(ids(["[ENC]", "[TDEC]", "[CDEC]"])) == (V.ENC_ID, V.TDEC_ID, V.CDEC_ID)
    # The model side's ids (codet5p_jax.config, which tasks may not import) are the same ids.
    task_ids = dict(zip(V.STAGE2_TOKENS, (V.ENC_ID, V.TDEC_ID, V.CDEC_ID), strict=True))
    assert task_ids == STAGE2_ADDED_TOKENS
    assert codet5_vocab.pad_id == roberta.pad_token_id == 0
    assert codet5_vocab.cls_id == roberta.cls_token_id == 1
    assert codet5_vocab.eos_id == roberta.eos_token_id == 2
    assert codet5_vocab.clm_id == roberta.unk_token_id == 3


def test_codet5_encode_decode_matches_roberta(codet5_vocab, roberta, stdlib_samples):
    for text in stdlib_samples:
        ids = codet5_vocab.encode(text)
        assert ids == roberta.encode(text, add_special_tokens=False)
        assert codet5_vocab.decode(ids) == text
        assert roberta.decode(ids) == text
    mixed = "x = <extra_id_0> + f(y)<extra_id_7>\n[CDEC] def g():\n\treturn 1"
    ids = codet5_vocab.encode(mixed)
    assert ids == roberta.encode(mixed, add_special_tokens=False)
    assert codet5_vocab.decode(ids) == roberta.decode(ids) == mixed
    # decode stops at the first EOS and drops padding, as seqio vocabularies do.
    assert codet5_vocab.decode(ids + [2, 5, 6]) == mixed
    assert codet5_vocab.decode([0] + ids + [0, 0]) == mixed


def test_codet5_inside_tf_data(codet5_vocab, stdlib_samples):
    ds = tf.data.Dataset.from_tensor_slices(stdlib_samples)
    ds = ds.map(lambda s: {"text": s, "ids": codet5_vocab.encode_tf(s)})
    for ex, text in zip(ds.as_numpy_iterator(), stdlib_samples, strict=True):
        assert ex["ids"].dtype == np.int32
        assert ex["ids"].tolist() == codet5_vocab.encode(text)
    # Batched (ragged) encode and padded batch decode in graph mode.
    ragged = codet5_vocab.encode_tf(tf.constant(stdlib_samples[:3]))
    assert ragged.to_list() == [codet5_vocab.encode(t) for t in stdlib_samples[:3]]
    padded = ragged.to_tensor()
    decoded = tf.function(codet5_vocab.decode_tf)(padded).numpy()
    assert [d.decode() for d in decoded] == stdlib_samples[:3]


def test_codegen_matches_hf_tokenizer(codegen_vocab, codegen_tokenizer_dir, stdlib_samples):
    hf = transformers.AutoTokenizer.from_pretrained(str(codegen_tokenizer_dir))
    assert codegen_vocab.vocab_size == len(hf) == 50295
    assert codegen_vocab.model_vocab_size == 51200
    assert codegen_vocab.eos_id == hf.eos_token_id == 50256
    assert hf.convert_tokens_to_ids(" " * 31) == 50257
    for text in stdlib_samples:
        ids = codegen_vocab.encode(text)
        assert ids == hf.encode(text)
        assert codegen_vocab.decode(ids) == hf.decode(ids) == text
    # CodeGen's whitespace tokens appear on indented code.
    assert any(i >= 50257 for i in codegen_vocab.encode(stdlib_samples[0]))
    ds = tf.data.Dataset.from_tensor_slices(stdlib_samples[:4]).map(codegen_vocab.encode_tf)
    got = [x.tolist() for x in ds.as_numpy_iterator()]
    assert got == [hf.encode(t) for t in stdlib_samples[:4]]
    # Decode in graph mode; rows are padded with <|endoftext|>, CodeGen's pad (= eos).
    ragged = codegen_vocab.encode_tf(tf.constant(stdlib_samples[:3]))
    padded = ragged.to_tensor(default_value=codegen_vocab.pad_id)
    decoded = tf.function(codegen_vocab.decode_tf)(padded).numpy()
    assert [d.decode() for d in decoded] == stdlib_samples[:3]


def test_vocab_and_merges_files_and_pickle(codet5_tokenizer_dir, codet5_vocab, stdlib_samples):
    by_files = V.CodeT5Vocabulary(
        vocab_file=codet5_tokenizer_dir / "codet5-vocab.json",
        merges_file=codet5_tokenizer_dir / "codet5-merges.txt",
    )
    text = stdlib_samples[1]
    assert by_files.encode(text) == codet5_vocab.encode(text)
    clone = pickle.loads(pickle.dumps(codet5_vocab))
    assert clone.encode(text) == codet5_vocab.encode(text)


def test_trained_tokenizer_keeps_the_codet5_layout(tmp_path, stdlib_samples):
    out = train_bpe(stdlib_samples, tmp_path / "bpe", vocab_size=600, min_frequency=2)
    vocab = V.CodeT5Vocabulary(out)
    tok = vocab.tokenizer
    assert [tok.token_to_id(t) for t in ("<pad>", "<s>", "</s>", "<unk>", "<mask>")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    # Padded to 32,000 so the sentinels and stage-2 tokens sit at their released ids.
    assert tok.token_to_id("<extra_id_0>") == 32099
    assert tok.token_to_id("<extra_id_99>") == 32000
    assert tok.token_to_id("[CDEC]") == 32102
    ids = vocab.encode(stdlib_samples[2])
    assert max(ids) < 600 and vocab.decode(ids) == stdlib_samples[2]


def test_bad_tokenizer_locations(tmp_path, codegen_tokenizer_dir):
    with pytest.raises(FileNotFoundError, match="neither a directory"):
        V.CodeT5Vocabulary(tmp_path / "missing").encode("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        V.CodeT5Vocabulary(tmp_path / "empty").encode("x")
    with pytest.raises(ValueError, match="CodeT5 layout"):
        V.CodeT5Vocabulary(codegen_tokenizer_dir).encode("x")


def test_without_stage2_tokens(codet5_tokenizer_dir, codet5_vocab):
    plain = V.CodeT5Vocabulary(codet5_tokenizer_dir, stage2_tokens=False)
    assert plain.vocab_size == 32100 and plain != codet5_vocab
    assert plain.tokenizer.token_to_id("[ENC]") is None
    assert V.ENC_ID not in plain.encode("[ENC] x")
