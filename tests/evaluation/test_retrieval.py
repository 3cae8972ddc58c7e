"""Retrieval evaluation: data loading, MRR/R@k, matching re-rank, BM25, batched embedding."""

import json

import numpy as np
import pytest

from codet5p_jax.evaluation import retrieval as R


def test_metrics_match_hand_computed_ranks():
    # Gold is the diagonal; gold ranks are 1, 3, 2, 5 by construction.
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.0, 0.3],
            [0.8, 0.5, 0.7, 0.0, 0.1],
            [0.1, 0.9, 0.5, 0.0, 0.2],
            [0.9, 0.8, 0.7, 0.1, 0.6],
        ]
    )
    ranks = R.gold_ranks(scores)
    np.testing.assert_array_equal(ranks.best, [1, 3, 2, 5])
    np.testing.assert_array_equal(ranks.worst, ranks.best)  # no ties
    m = R.retrieval_metrics(scores, ks=(1, 5))
    assert m["mrr"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 2 + 1 / 5) / 4)
    assert m["r@1"] == pytest.approx(25.0)
    assert m["r@5"] == pytest.approx(100.0)


def test_corpus_smaller_than_k_is_a_clear_error():
    with pytest.raises(ValueError, match=r"R@\[10\].*only 5 candidates"):
        R.retrieval_metrics(np.eye(5), ks=(1, 5, 10))
    with pytest.raises(ValueError, match="smaller than k=10"):
        R.check_corpus([R.Pair("a", "b")] * 3, (1, 10))


def test_random_baseline_mrr_is_harmonic_mean():
    assert R.random_baseline_mrr(4) == pytest.approx(100 * (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_load_codesearchnet_jsonl_uses_token_fields(shared_dir):
    path = shared_dir / "reference/datasets/codesearchnet/python/csn_codexglue_hf_dummy.jsonl"
    pairs = R.load_pairs(path)
    first = json.loads(path.read_text().splitlines()[0])
    assert len(pairs) == 9
    assert pairs[0].text == " ".join(first["docstring_tokens"])
    assert pairs[0].code == " ".join(first["code_tokens"])
    assert first["docstring_tokens"][0] not in pairs[0].code.split()[:3]


def test_load_genbench_and_cosqa_formats(shared_dir):
    base = shared_dir / "reference/datasets"
    gen = R.load_pairs(base / "codesearchnet/go/gencodesearchnet_mrr_test_sample_cbt.jsonl")
    assert len(gen) == 100 and gen[0].code.startswith("func ")
    cosqa = R.load_pairs(base / "code-search/cosqa-dev.json", limit=5)
    records = json.loads((base / "code-search/cosqa-dev.json").read_text())
    assert records[0]["label"] == 0  # "python check relation is symmetric": not a gold pair
    assert cosqa[0].text == next(r["doc"] for r in records if r["label"] == 1)
    # Only label-1 records are gold pairs: 313 of the 604 (README).
    assert len(R.load_pairs(base / "code-search/cosqa-dev.json")) == 313


def test_empty_text_or_code_errors_or_is_skipped(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"text": "add two numbers", "code": "def add(a, b): return a + b"}]
    rows += [{"text": "", "code": "x = 1"}, {"text": "noop", "code": "   "}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: empty text"):
        R.load_pairs(path)
    assert R.load_pairs(path, on_empty="skip") == [R.Pair(rows[0]["text"], rows[0]["code"])]


def test_malformed_inputs_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        R.load_pairs(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "code": "b"}\n{not json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        R.load_pairs(bad)
    bad.write_text('{"title": "a", "body": "b"}\n')
    with pytest.raises(ValueError, match="no text/code fields"):
        R.load_pairs(bad)


def test_token_ids_are_roberta_style_and_keep_eos_when_truncated():
    ids = R.to_token_ids(["ab", "abcdefgh"], lambda s: [10 + ord(c) - 97 for c in s], 6)
    np.testing.assert_array_equal(ids, [[1, 10, 11, 2, 0, 0], [1, 10, 11, 12, 13, 2]])
    with pytest.raises(ValueError, match="max_length"):
        R.to_token_ids(["a"], list, 2)


def test_matching_rerank_scores_only_top_k_with_enc_token():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(3, 6)).astype(np.float32)
    text_ids = np.arange(3)[:, None] + np.zeros((3, 4), np.int32)
    code_ids = np.arange(6)[:, None] * 10 + np.ones((6, 5), np.int32)
    seen = []

    def match_fn(texts, dec_codes):
        seen.append(dec_codes[:, 0].copy())
        # A deterministic stand-in for the itm head: depends on the pair's ids.
        return texts[:, 1] * 0.5 - dec_codes[:, 1] * 0.01

    out = R.matching_rerank(match_fn, text_ids, code_ids, scores, top_k=2)
    for q in range(3):
        top = np.argsort(-scores[q])[:2]
        expected = q * 0.5 - code_ids[top, 1] * 0.01 + scores[q, top]
        np.testing.assert_allclose(out[q, top], expected, rtol=1e-6)
    assert all((s == 32100).all() for s in seen)
    assert code_ids[0, 0] == 1  # the caller's array is not modified


def test_bm25_on_identical_records_is_random_and_beats_random_on_real_pairs(shared_dir):
    base = shared_dir / "reference/datasets/codesearchnet"
    # The synthetic fixture repeats one record 256 times: every candidate ties with the gold,
    # so BM25 must score exactly the random baseline (it reported 100 when ties favoured it).
    pairs = R.load_pairs(base / "python/csn_repo_tests_python.jsonl")
    scores = R.bm25_scores([p.text for p in pairs], [p.code for p in pairs])
    m = R.retrieval_metrics(scores)
    assert m["mrr"] == pytest.approx(R.random_baseline_mrr(len(pairs)))
    assert R.bm25_tokens("getHTTPResponse_code2") == ["get", "http", "response", "code", "2"]
    pairs = R.load_pairs(base / "go/gencodesearchnet_mrr_test_sample_cbt.jsonl")
    m = R.retrieval_metrics(R.bm25_scores([p.text for p in pairs], [p.code for p in pairs]))
    assert m["mrr"] > 3 * R.random_baseline_mrr(len(pairs))


def test_batched_embedding_equals_per_row_model_embed():
    import flax.linen as nn
    import jax

    from codet5p_jax.config import get_preset
    from codet5p_jax.models import build_model, init_params

    cfg = get_preset("tiny-bimodal")
    model = build_model(cfg)
    params = nn.unbox(init_params(cfg, jax.random.PRNGKey(0)))
    pairs = [R.Pair(f"text {i} " * (i + 1), f"code_{i}() " * (2 * i + 1)) for i in range(5)]
    encode = lambda s: [100 + ord(c) for c in s]  # noqa: E731
    results = R.evaluate_pairs(
        model, params, pairs, encode, text_length=16, code_length=24, batch_size=2, ks=(1, 5),
        rerank_top_k=3, with_bm25=True,
    )  # fmt: skip
    text_ids = R.to_token_ids([p.text for p in pairs], encode, 16)
    code_ids = R.to_token_ids([p.code for p in pairs], encode, 24)
    one = lambda ids: np.asarray(model.apply({"params": params}, ids[None], method=model.embed))[0]  # noqa: E731
    tv = np.stack([one(t) for t in text_ids])
    cv = np.stack([one(c) for c in code_ids])
    expected = R.retrieval_metrics(tv @ cv.T, ks=(1, 5))
    for k, v in expected.items():
        assert results["contrastive"][k] == pytest.approx(v, abs=1e-4)
    assert set(results) == {"contrastive", "matching", "bm25"}
