"""`codet5p embed`: vectors written to .npy / .safetensors equal the model's embeddings."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import loading
from codet5p_jax.cli import embed as embed_cli
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation import retrieval
from codet5p_jax.models import build_model, init_params


@pytest.fixture(scope="module")
def embedding_dir(tmp_path_factory):
    cfg = get_preset("tiny-bimodal").replace(kind="embedding", num_decoder_layers=0)
    params = jax.device_get(nn.unbox(init_params(cfg, jax.random.PRNGKey(0))))
    path = tmp_path_factory.mktemp("embed") / "model"
    loading.save(path, cfg, params, "hf")
    return path, cfg, params


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_embed_cli_writes_model_embeddings(embedding_dir, codet5_tokenizer_dir, tmp_path, suffix):
    from tasks.vocabularies import CodeT5Vocabulary

    path, cfg, params = embedding_dir
    items = ["sort a list in place", "def add(a, b):\\n    return a + b", "read a json file"]
    (tmp_path / "in.txt").write_text("\n".join(items) + "\n")
    out = tmp_path / f"vecs{suffix}"
    rc = embed_cli.main(
        ["--model", str(path), "--input", str(tmp_path / "in.txt"), "--output", str(out),
         "--tokenizer", str(codet5_tokenizer_dir), "--kind", "code", "--batch-size", "2"]
    )  # fmt: skip
    assert rc == 0
    if suffix == ".npy":
        vecs = np.load(out)
    else:
        from safetensors.numpy import load_file

        vecs = load_file(str(out))[embed_cli.OUTPUT_KEY]
    vocab = CodeT5Vocabulary(codet5_tokenizer_dir)
    texts = [s.replace("\\n", "\n") for s in items]
    ids = retrieval.to_token_ids(texts, vocab.encode, 360)
    assert ids[1, 0] == 1 and 2 in ids[1]  # <s> ... </s> framing with the released BPE
    model = build_model(cfg)
    expected = np.asarray(model.apply({"params": params}, ids, method=model.embed))
    assert vecs.shape == (3, cfg.embed_dim)
    np.testing.assert_allclose(vecs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)


def test_embed_cli_jsonl_field_and_bad_inputs(embedding_dir, codet5_tokenizer_dir, tmp_path):
    path, _, _ = embedding_dir
    common = ["--model", str(path), "--tokenizer", str(codet5_tokenizer_dir)]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text(json.dumps({"code": "x = 1"}) + "\n" + json.dumps({"code": "y = 2"}) + "\n")
    out = tmp_path / "v.npy"
    assert (
        embed_cli.main(common + ["--input", str(jsonl), "--field", "code", "--output", str(out)])
        == 0
    )
    assert np.load(out).shape[0] == 2

    jsonl.write_text(json.dumps({"code": "x = 1"}) + "\n" + json.dumps({"code": " "}) + "\n")
    bad_out = tmp_path / "bad.npy"
    rc = embed_cli.main(
        common + ["--input", str(jsonl), "--field", "code", "--output", str(bad_out)]
    )
    assert rc == 2 and not bad_out.exists()
    with pytest.raises(ValueError, match=r"in.jsonl:2: empty item"):
        embed_cli.read_items(jsonl, "code")
    with pytest.raises(ValueError, match="no field 'docstring'"):
        embed_cli.read_items(jsonl, "docstring")
    with pytest.raises(ValueError, match=r"\.npy or \.safetensors"):
        embed_cli.write_vectors(tmp_path / "v.txt", np.zeros((1, 2)))
    assert (
        embed_cli.main(common + ["--input", str(tmp_path / "nope.txt"), "--output", str(out)]) == 2
    )
    assert list(tmp_path.glob(".*")) == []  # no temp files left behind


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_written_vectors_get_an_ordinary_file_mode(tmp_path, suffix):
    """The temp file of mkstemp is 0600; the output must be 0644 under umask 022, like any file."""
    old = os.umask(0o022)
    try:
        embed_cli.write_vectors(tmp_path / f"v{suffix}", np.zeros((2, 3), np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / f"v{suffix}").stat().st_mode & 0o777 == 0o644


def test_written_vectors_follow_a_restrictive_umask_too(tmp_path):
    old = os.umask(0o027)
    try:
        embed_cli.write_vectors(tmp_path / "v.npy", np.zeros((2, 3), np.float32))
    finally:
        os.umask(old)
    assert (tmp_path / "v.npy").stat().st_mode & 0o777 == 0o640


def test_list_fields_are_joined_and_json_lists_are_read(tmp_path):
    rows = [{"code_tokens": ["def", "f", "(", ")", ":"], "code": "def f():"}]
    (tmp_path / "a.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    for name in ("a.jsonl", "a.json"):
        assert embed_cli.read_items(tmp_path / name, "code_tokens") == ["def f ( ) :"]
        assert embed_cli.read_items(tmp_path / name, "code") == ["def f():"]


def test_json_without_field_is_refused_not_embedded_raw(tmp_path):
    path = tmp_path / "corpus.txt"  # JSONL content under a text name
    path.write_text(json.dumps({"code": "x = 1"}) + "\n")
    with pytest.raises(ValueError, match="holds JSON records: pass --field"):
        embed_cli.read_items(path)
    assert embed_cli.read_items(path, raw_lines=True) == ['{"code": "x = 1"}']


def test_embed_flags_reject_bad_values(embedding_dir, tmp_path, capsys):
    path, _, _ = embedding_dir
    (tmp_path / "in.txt").write_text("a\n")
    with pytest.raises(SystemExit) as e:
        embed_cli.main(
            ["--model", str(path), "--input", str(tmp_path / "in.txt"), "--output",
             str(tmp_path / "v.npy"), "--batch-size", "0"]
        )  # fmt: skip
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
