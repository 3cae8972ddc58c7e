"""`rag-<lang>` plumbing and its metrics (EM, corpus BLEU-4, CodeBLEU), with a stand-in RAG module.

The retriever + generator (`codet5p_jax.evaluation.rag.rag_generate`) is another module's; here
a stand-in records its calls, so the test checks what the benchmark sends (queries, the gold
codes for the leakage guard, k) and how it scores what comes back. BLEU values are computed by
hand from the definition (CodeXGLUE text-to-code `bleu.py`); CodeBLEU's own references are in
`test_codebleu.py`.
"""

import json
import math
import sys
import types

import pytest

from codet5p_jax.evaluation import benchmarks, codegen_metrics, rag_benchmark

CSN_PY = "reference/datasets/codesearchnet/python/csn_codexglue_hf_dummy.jsonl"
CODEBLEU_PARTS = ("", "_ngram_match", "_weighted_ngram_match", "_syntax_match", "_dataflow_match")


def test_exact_match_and_bleu_by_hand():
    assert codegen_metrics.exact_match(["a  b", "c d"], ["a b", "c e"]) == 50.0
    # One pair, hypothesis "a b c d e" vs reference "a b c d f": precisions 4/5, 3/4, 2/3, 1/2,
    # equal lengths (no brevity penalty).
    got = codegen_metrics.corpus_bleu(["a b c d f"], ["a b c d e"])
    assert got == pytest.approx(100 * (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    # Shorter candidate corpus: brevity exp(1 - r/c) with r = 6, c = 4; clipped counts.
    got = codegen_metrics.corpus_bleu(["x y z w v u"], ["x y z w"])
    assert got == pytest.approx(100 * math.exp(1 - 6 / 4))
    assert codegen_metrics.corpus_bleu(["a b c d"], ["a a a a"]) == 0.0  # no bigram match
    with pytest.raises(ValueError, match="as many predictions"):
        codegen_metrics.exact_match(["a"], [])


@pytest.fixture()
def fake_rag(monkeypatch):
    calls = []

    def rag_generate(queries, index_dir, generator, *, k=1, gold_codes=None, **options):
        calls.append({"k": k, "gold_codes": gold_codes, "index": index_dir, **options})
        texts = list(gold_codes) if k else ["pass"] * len(queries)
        ids = [[i] * k for i in range(len(queries))]
        return types.SimpleNamespace(texts=texts, retrieved_ids=ids, input_ids=None)

    module = types.ModuleType(rag_benchmark.RAG_MODULE)
    module.rag_generate = rag_generate
    monkeypatch.setitem(sys.modules, rag_benchmark.RAG_MODULE, module)
    return calls


def test_rag_python_scores_rag_and_baseline(fake_rag, shared_dir, tmp_path):
    path = shared_dir / CSN_PY
    records = [json.loads(x) for x in path.read_text().splitlines()]
    metrics = benchmarks.run_benchmark(
        "rag-python", None, tmp_path, generator="GEN", path=str(path), index="IDX", k=2,
        max_new_tokens=16,
    )  # fmt: skip
    golds = [" ".join(r["code_tokens"]) for r in records]
    assert fake_rag[0]["gold_codes"] == golds and fake_rag[0]["k"] == 2  # leakage guard
    assert fake_rag[1]["k"] == 0 and fake_rag[0]["max_new_tokens"] == 16
    assert metrics["rag"] == {
        "exact_match": 100.0,
        "bleu": pytest.approx(100.0),
        **{f"codebleu{part}": 100.0 for part in CODEBLEU_PARTS},
    }
    assert metrics["no_retrieval"]["exact_match"] == 0.0
    assert metrics["no_retrieval"]["bleu"] == codegen_metrics.corpus_bleu(golds, ["pass"] * 9)
    # CodeBLEU with the benchmark's language: as the package scores "pass" against the golds.
    from codebleu import calc_codebleu

    direct = calc_codebleu(golds, ["pass"] * 9, lang="python")
    assert metrics["no_retrieval"]["codebleu"] == 100 * direct["codebleu"] < 50
    assert metrics["no_retrieval"]["codebleu_syntax_match"] == 100 * direct["syntax_match_score"]
    rows = [
        json.loads(x)
        for x in (tmp_path / "rag-python_predictions.jsonl").read_text().split("\n")
        if x
    ]
    assert [r["query"] for r in rows] == [" ".join(r["docstring_tokens"]) for r in records]
    assert json.loads((tmp_path / "rag-python_rag.json").read_text()) == metrics


def test_rag_codebleu_optional_and_checked_before_generating(
    fake_rag, shared_dir, tmp_path, monkeypatch
):
    path = str(shared_dir / CSN_PY)
    run = dict(generator="G", path=path, index="I", baseline=False)
    metrics = benchmarks.run_benchmark("rag-python", None, tmp_path, codebleu=False, **run)
    assert set(metrics["rag"]) == {"exact_match", "bleu"}
    monkeypatch.setitem(sys.modules, "codebleu", None)  # not installed
    with pytest.raises(ValueError, match="CodeBLEU needs the codebleu package: pip install"):
        benchmarks.run_benchmark("rag-python", None, tmp_path, **run)
    assert len(fake_rag) == 1  # only the codebleu=False run generated


def test_rag_bad_requests(fake_rag, shared_dir, tmp_path):
    path = str(shared_dir / CSN_PY)
    with pytest.raises(ValueError, match="needs BENCHMARK_OPTIONS=\\{'index'"):
        benchmarks.run_benchmark("rag-python", None, tmp_path, generator="G", path=path)
    with pytest.raises(ValueError, match="a 'python' record in a rag-go run"):
        benchmarks.run_benchmark("rag-go", None, tmp_path, generator="G", path=path, index="I")
    with pytest.raises(ValueError, match=r"unknown rag benchmark option\(s\) \['kk'\]"):
        benchmarks.run_benchmark("rag-go", None, tmp_path, generator="G", kk=1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        benchmarks.run_benchmark("rag-go", None, tmp_path, generator="G", k=0)


def test_codet5p_eval_hands_the_checkpoint_to_rag(
    fake_rag, shared_dir, tmp_path, monkeypatch, codet5_tokenizer_dir
):
    import jax

    from codet5p_jax.cli.eval import main as eval_main
    from codet5p_jax.config import get_preset
    from codet5p_jax.loading import save as save_checkpoint
    from codet5p_jax.models import init_params
    from codet5p_jax.pretrained import Pretrained

    seen = []
    original = sys.modules[rag_benchmark.RAG_MODULE].rag_generate

    def spy(queries, index_dir, generator, **kw):
        seen.append(generator)
        return original(queries, index_dir, generator, **kw)

    monkeypatch.setattr(sys.modules[rag_benchmark.RAG_MODULE], "rag_generate", spy)
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))
    cfg = get_preset("tiny")
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, cfg, init_params(cfg, jax.random.key(0)), "orbax")
    options = {"path": str(shared_dir / CSN_PY), "index": "IDX", "limit": 3, "baseline": False}
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{ckpt}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'out'}'",
            "--gin.BENCHMARK='rag-python'",
            f"--gin.BENCHMARK_OPTIONS={options!r}",
        ]
    )
    assert status == 0
    assert len(seen) == 1 and isinstance(seen[0], Pretrained) and seen[0].config == cfg
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["rag-python"]
    assert metrics["num_examples"] == 3 and metrics["rag"]["exact_match"] == 100.0
