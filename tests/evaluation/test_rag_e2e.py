"""End to end on a CodeSearchNet-format sample: index -> offline retrieval -> two tiny generators
trained with `gin/experiments/tiny_rag.gin` (K=1 with retrieval, K=0 without, same examples and
steps) -> `codet5p rag` on held-out pairs, gold excluded; plus the same RAG run with the guard
off, to show what it prevents. The embedder is a tiny random one (no trained embedding model fits
a CPU test), so retrieval is weak: the numbers are reported (docs/retrieval_index.md), and the
assertions are about the plumbing (metrics present, gold never retrieved when excluded). About 15
minutes on a busy 2-core machine, hence `slow`; `$RAG_REPORT` receives the metrics as JSON.
"""

import json
import os
import pathlib
import shutil

import flax.linen as nn
import jax
import pytest

from codet5p_jax import loading
from codet5p_jax.cli import rag as rag_cli
from codet5p_jax.cli.train import main as train_main
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation import index_records, indexing, rag
from codet5p_jax.models import init_params

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = int(os.environ.get("RAG_E2E_STEPS", 200))  # docs numbers: 100 (a busy machine)


@pytest.mark.slow
def test_rag_tiny_trained_e2e(tmp_path, shared_dir, codet5_tokenizer_dir, monkeypatch):
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))
    monkeypatch.chdir(REPO)
    src = (
        shared_dir
        / "reference/datasets/codesearchnet/go/gencodesearchnet_mrr_test_sample_cbt.jsonl"
    )
    records = index_records.read_file_records(src)
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    for path, rows in ((train, records[:80]), (test, records[80:])):
        path.write_text("".join(json.dumps({"text": r["text"], "code": r["code"]}) + "\n"
                                for r in rows))  # fmt: skip
    cfg = get_preset("tiny-bimodal").replace(kind="embedding", num_decoder_layers=0)
    params = jax.device_get(nn.unbox(init_params(cfg, jax.random.PRNGKey(0))))
    embedder = tmp_path / "embedder"
    loading.save(embedder, cfg, params, "hf")
    for f in codet5_tokenizer_dir.iterdir():
        shutil.copy(f, embedder / f.name)
    idx = tmp_path / "idx"
    indexing.index_corpus(idx, [str(src)], embedder, progress=False)  # all 100: golds included
    rag.write_neighbours(train, idx, tmp_path / "train.rag.jsonl", k=1)

    report = {}
    for k in (1, 0):
        run = tmp_path / f"gen_k{k}"
        rc = train_main(
            ["--gin_file=gin/experiments/tiny_rag.gin", f"--gin.MODEL_DIR='{run}'",
             f"--gin.RAG_TRAIN_FILE='{tmp_path / 'train.rag.jsonl'}'", f"--gin.K={k}",
             f"--gin.TRAIN_STEPS={STEPS}"]
        )  # fmt: skip
        assert rc == 0
        guards = (True, False) if k == 1 else (True,)
        for exclude in guards:
            out = tmp_path / f"rag_k{k}_{exclude}"
            rc = rag_cli.main(
                ["--gin_file=gin/runs/rag.gin", f"--gin.INDEX_DIR='{idx}'",
                 f"--gin.GENERATOR='{run}'", f"--gin.DATA_PATH='{test}'",
                 f"--gin.OUTPUT_DIR='{out}'", f"--gin.K={max(k, 1)}",
                 f"--gin.EXCLUDE_GOLD={exclude}", "--gin.run_rag.max_new_tokens=64",
                 f"--gin.run_rag.baseline={k == 0}"]
            )  # fmt: skip
            assert rc == 0
            metrics = json.loads((out / "metrics.json").read_text())
            rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
            index = {r["id"]: r for r in rag.Retriever.open(idx).index.records}
            gold_hits = sum(
                index_records.code_hash(index[i]["code"]) == index_records.code_hash(r["reference"])
                for r in rows for i in r["retrieved_ids"]
            )  # fmt: skip
            if exclude:
                assert gold_hits == 0
            key = f"generator_k{k}" + ("" if exclude else "_gold_not_excluded")
            report[key] = {**metrics, "gold_retrieved": gold_hits}
    text = json.dumps(report, indent=1)
    print(text)
    if os.environ.get("RAG_REPORT"):
        pathlib.Path(os.environ["RAG_REPORT"]).write_text(text + "\n")
    assert set(report["generator_k1"]["rag"]) == {"exact_match", "bleu"}
    assert "no_retrieval" in report["generator_k0"]
