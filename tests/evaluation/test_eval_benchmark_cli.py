"""`codet5p eval --gin.BENCHMARK=humaneval` end to end: checkpoint, generate, sandbox, pass@k."""

import json

import jax
import numpy as np

from codet5p_jax.cli.eval import main as eval_main
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation.pass_at_k import estimate_pass_at_k
from codet5p_jax.loading import save as save_checkpoint
from codet5p_jax.models import init_params


def test_eval_humaneval_benchmark_writes_consistent_results(
    tmp_path, monkeypatch, codet5_tokenizer_dir
):
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))
    cfg = get_preset("tiny", vocab_size=32100)
    ckpt, out = tmp_path / "ckpt", tmp_path / "eval"
    save_checkpoint(ckpt, cfg, init_params(cfg, jax.random.key(0)), "orbax")

    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{ckpt}'",
            f"--gin.OUTPUT_DIR='{out}'",
            "--gin.BENCHMARK='humaneval'",
            "--gin.BENCHMARK_OPTIONS={'limit': 2, 'num_samples': 2, 'ks': '1,2', 'n_workers': 2}",
            "--gin.evaluate.max_new_tokens=8",
            "--gin.evaluate.decode_method='sample'",
        ]
    )
    assert status == 0

    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["task_id"] for s in samples] == ["HumanEval/0"] * 2 + ["HumanEval/1"] * 2
    verdicts = [json.loads(x) for x in (out / "samples_results.jsonl").read_text().splitlines()]
    assert len(verdicts) == 4
    # pass@k in metrics.json must be the unbiased estimate over the per-sample verdicts.
    correct = [
        sum(v["passed"] for v in verdicts if v["task_id"] == t)
        for t in ("HumanEval/0", "HumanEval/1")
    ]
    metrics = json.loads((out / "metrics.json").read_text())
    for k in (1, 2):
        expected = float(np.mean(estimate_pass_at_k(2, correct, k)))
        assert np.isclose(_find(metrics, f"pass@{k}"), expected)


def test_several_samples_with_greedy_decoding_is_an_error(tmp_path, capsys):
    cfg = get_preset("tiny", vocab_size=32100)
    ckpt = tmp_path / "ckpt"
    save_checkpoint(ckpt, cfg, init_params(cfg, jax.random.key(0)), "orbax")
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{ckpt}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
            "--gin.BENCHMARK='humaneval'",
            "--gin.BENCHMARK_OPTIONS={'limit': 1, 'num_samples': 3}",
        ]
    )
    assert status == 2
    assert "num_samples=3 needs sampling" in capsys.readouterr().err


def _find(tree, key):
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for v in tree.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None
