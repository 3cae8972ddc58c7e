"""Retrieval CLI and embedding export on a training MODEL_DIR (stage-2 params incl. temperature)."""

import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import checkpointing
from codet5p_jax.cli import retrieval as retrieval_cli
from codet5p_jax.cli.export_embedding import export_embedding
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation import retrieval
from codet5p_jax.models import build_model, init_params
from codet5p_jax.objectives.bimodal import TEMPERATURE_KEY, BimodalObjective


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = get_preset("tiny-bimodal")
    obj = BimodalObjective(build_model(cfg), queue_size=8)
    params = jax.device_get(nn.unbox(obj.init_params(init_params(cfg, jax.random.PRNGKey(0)))))
    path = tmp_path_factory.mktemp("run") / "model_dir"
    checkpointing.save_params(path, params, cfg, step=7)
    return path, cfg, params


def test_cli_on_model_dir_matches_library_and_reports_skipped_k(
    model_dir, codet5_tokenizer_dir, tmp_path, capsys
):
    from tasks.vocabularies import CodeT5Vocabulary

    path, cfg, params = model_dir
    rows = [
        {"text": f"return item number {i}", "code": f"def item_{i}(): return {i}"} for i in range(6)
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    rc = retrieval_cli.main(
        ["--model", str(path), "--data", str(data), "--tokenizer", str(codet5_tokenizer_dir),
         "--text-length", "16", "--code-length", "24", "--rerank-top-k", "3"]
    )  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["num_queries"] == out["num_candidates"] == 6 and "R@[10]" in out["skipped"]
    net = {k: v for k, v in params.items() if k != TEMPERATURE_KEY}
    pairs = retrieval.load_pairs(data)
    expected = retrieval.evaluate_pairs(
        build_model(cfg), net, pairs, CodeT5Vocabulary(codet5_tokenizer_dir).encode,
        text_length=16, code_length=24, ks=(1, 5), rerank_top_k=3,
    )  # fmt: skip
    for kind in ("contrastive", "matching"):
        for k, v in expected[kind].items():
            assert out[kind][k] == pytest.approx(v, abs=1e-4)


def test_cli_bad_data_exits_2(model_dir, tmp_path, capsys):
    path, _, _ = model_dir
    data = tmp_path / "empty_side.jsonl"
    data.write_text(json.dumps({"text": "", "code": "x"}) + "\n")
    assert retrieval_cli.main(["--model", str(path), "--data", str(data)]) == 2
    assert "empty text" in capsys.readouterr().err


def test_export_embedding_from_model_dir(model_dir, tmp_path):
    path, cfg, params = model_dir
    emb_cfg = export_embedding(path, tmp_path / "emb")
    assert emb_cfg.kind == "embedding" and emb_cfg.embed_dim == cfg.embed_dim
    from codet5p_jax import from_pretrained

    emb = from_pretrained(tmp_path / "emb")
    ids = np.array([[1, 100, 200, 2, 0]], np.int32)
    model = build_model(cfg)
    net = {k: v for k, v in params.items() if k != TEMPERATURE_KEY}
    expected = model.apply({"params": net}, ids, method=model.embed)
    np.testing.assert_allclose(np.asarray(emb.embed(ids)), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_cli_rejects_non_positive_limit(model_dir, limit, capsys):
    path, _, _ = model_dir
    with pytest.raises(SystemExit) as e:
        retrieval_cli.main(["--model", str(path), "--data", "x.jsonl", "--limit", limit])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="limit must be >= 1"):
        retrieval.load_eval_pairs("x.jsonl", limit=int(limit))


def test_missing_file_with_a_colon_is_a_missing_file(model_dir, tmp_path, capsys):
    path, _, _ = model_dir
    missing = tmp_path / "run:2" / "pairs.jsonl"
    assert retrieval_cli.main(["--model", str(path), "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(missing) in err
    assert not retrieval.is_corpus_name("pairs:v2.jsonl")
    assert retrieval.is_corpus_name("stdlib:validation")
