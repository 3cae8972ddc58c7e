"""`codet5p prepare-corpus` and `codet5p train-tokenizer`, and the default-tokenizer rule."""

import json

import pytest

from codet5p_jax import cli
from codet5p_jax.cli import train_tokenizer
from tasks import tokenizer_training, vocabularies


def test_prepare_corpus_command(source_tree, capsys):
    rc = cli.main(["prepare-corpus", "--name", "clitree", "--kind", "directory",
                   "--path", str(source_tree)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    stats = json.loads(out[out.index("{") :])
    assert sum(stats["records"]["code"].values()) == 4
    assert stats["skipped"]["binary"] == 1 and stats["duplicates"]["code"] == 1
    rc = cli.main(["prepare-corpus", "--name", "nope", "--kind", "directory", "--path", "/nope"])
    assert rc == 1 and "does not exist" in capsys.readouterr().out


def test_train_tokenizer_command(source_tree, tmp_path, capsys):
    out = tmp_path / "bpe"
    rc = cli.main(["train-tokenizer", "--out", str(out), "--vocab-size", "300",
                   "--min-frequency", "1", str(source_tree)])  # fmt: skip
    assert rc == 0
    meta = json.loads((out / "training.json").read_text())
    assert meta["documents"] == 5 and meta["special_tokens"][:2] == ["<pad>", "<s>"]
    vocab = vocabularies.CodeT5Vocabulary(out)
    text = (source_tree / "a.py").read_text()
    assert vocab.decode(vocab.encode(text)) == text
    with pytest.raises(SystemExit):
        train_tokenizer.main(["--out", str(tmp_path / "x")])  # neither PATH nor --stdlib
    with pytest.raises(ValueError, match="vocab_size"):
        tokenizer_training.train_bpe(["x"], tmp_path / "y", vocab_size=10)


def test_default_rule_falls_back_to_the_trained_stdlib_tokenizer(monkeypatch, stdlib_samples):
    # gin/env first ...
    assert vocabularies.tokenizer_path("/some/dir").as_posix() == "/some/dir"
    monkeypatch.setenv(vocabularies.ENV_TOKENIZER_DIR, "/env/dir")
    assert vocabularies.tokenizer_path().as_posix() == "/env/dir"
    # ... else the stdlib-trained tokenizer (small vocab here to keep the test fast).
    monkeypatch.delenv(vocabularies.ENV_TOKENIZER_DIR)
    trained = tokenizer_training.default_stdlib_tokenizer_dir(vocab_size=1000)
    assert json.loads((trained / "training.json").read_text())["vocab_size"] == 1000
    monkeypatch.setattr(tokenizer_training, "default_stdlib_tokenizer_dir", lambda: trained)
    vocab = vocabularies.CodeT5Vocabulary()
    assert vocab.decode(vocab.encode(stdlib_samples[0])) == stdlib_samples[0]
    assert vocab.tokenizer.token_to_id("<extra_id_0>") == 32099
