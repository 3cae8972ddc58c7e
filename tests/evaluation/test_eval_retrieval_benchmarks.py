"""`codet5p eval --gin.BENCHMARK=cosqa|advtest|csn-python` on the shared samples.

The BM25 numbers are checked against an independent computation in this file: the records read
with `json`, `rank_bm25.BM25Okapi` with its defaults, and each gold's rank range from scipy's
`rankdata` (expected reciprocal rank over ties); they must agree within 0.5 MRR points.
"""

import json

import jax
import numpy as np
import pytest
from rank_bm25 import BM25Okapi
from scipy.stats import rankdata

from codet5p_jax.cli.eval import main as eval_main
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation.retrieval import bm25_tokens
from codet5p_jax.loading import save as save_checkpoint
from codet5p_jax.models import init_params

DATA = "reference/datasets"
SETS = {
    "cosqa": "code-search/cosqa-retrieval/cosqa-retrieval-dev-500.json",
    "advtest": "code-search/advtest_test_sample100_raw.jsonl",
    "csn-python": "codesearchnet/python/csn_codexglue_hf_dummy.jsonl",
}


@pytest.fixture(scope="module")
def bimodal_ckpt(tmp_path_factory):
    cfg = get_preset("tiny-bimodal")
    path = tmp_path_factory.mktemp("ckpt") / "orbax"
    save_checkpoint(path, cfg, init_params(cfg, jax.random.key(0)), "orbax")
    return path


def _independent(name, path):
    """(queries, codes, gold) read straight from the files, per each benchmark's protocol."""
    if name == "cosqa":
        records = json.loads(path.read_text())
        base = json.loads(path.with_name("code_idx_map.txt").read_text())
        codes = sorted(base, key=base.get)
        return [r["doc"] for r in records], codes, [r["retrieval_idx"] for r in records]
    records = [json.loads(x) for x in path.read_text().splitlines()]
    code_field = "function_tokens" if name == "advtest" else "code_tokens"
    queries = [" ".join(r["docstring_tokens"]) for r in records]
    codes = [" ".join(r[code_field]) for r in records]
    return queries, codes, list(range(len(records)))


def _independent_bm25_mrr(queries, codes, gold):
    index = BM25Okapi([bm25_tokens(c) or ["<empty>"] for c in codes])
    rr = []
    for q, g in zip(queries, gold, strict=True):
        scores = -index.get_scores(bm25_tokens(q))
        lo, hi = rankdata(scores, method="min")[g], rankdata(scores, method="max")[g]
        rr.append(np.mean(1.0 / np.arange(lo, hi + 1)))
    return 100 * float(np.mean(rr))


@pytest.mark.parametrize("name", sorted(SETS))
def test_eval_code_search_benchmark_bm25_agrees_with_rank_bm25(
    name, bimodal_ckpt, shared_dir, tmp_path, monkeypatch, codet5_tokenizer_dir
):
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))
    path = shared_dir / DATA / SETS[name]
    out = tmp_path / "eval"
    options = {"path": str(path), "text_length": 16, "code_length": 48, "rerank_top_k": 3}
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{bimodal_ckpt}'",
            f"--gin.OUTPUT_DIR='{out}'",
            f"--gin.BENCHMARK='{name}'",
            f"--gin.BENCHMARK_OPTIONS={options!r}",
        ]
    )
    assert status == 0
    metrics = json.loads((out / "metrics.json").read_text())[name]
    assert metrics == json.loads((out / f"{name}_retrieval.json").read_text())
    queries, codes, gold = _independent(name, path)
    assert metrics["num_queries"] == len(queries) and metrics["num_candidates"] == len(codes)
    reference = _independent_bm25_mrr(queries, codes, gold)
    assert abs(metrics["bm25"]["mrr"] - reference) <= 0.5
    assert set(metrics) >= {"contrastive", "matching", "bm25"}
    for kind in ("contrastive", "matching", "bm25"):
        ks = {k for k in metrics[kind] if k.startswith("r@")}
        assert ks == ({"r@1", "r@5"} if len(codes) < 10 else {"r@1", "r@5", "r@10"})
        assert 0 <= metrics[kind]["mrr"] <= 100
    print(f"{name}: BM25 MRR {metrics['bm25']['mrr']:.2f}, independent {reference:.2f}")


def test_unknown_option_and_missing_path_are_one_line_errors(bimodal_ckpt, tmp_path, capsys):
    base = [
        "--gin_file=gin/runs/eval.gin",
        f"--gin.CHECKPOINT_PATH='{bimodal_ckpt}'",
        f"--gin.OUTPUT_DIR='{tmp_path}'",
        "--gin.BENCHMARK='csn-go'",
    ]
    assert eval_main(base + ["--gin.BENCHMARK_OPTIONS={'pth': 'x'}"]) == 2
    assert "unknown code-search benchmark option(s) ['pth']" in capsys.readouterr().err
    assert eval_main(base + ["--gin.BENCHMARK_OPTIONS={'path': '/nope.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if "error" in x] == [
        "codet5p eval: error: Retrieval data file not found: /nope.jsonl"
    ]
