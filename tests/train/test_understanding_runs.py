"""The tiny understanding / completion experiments end to end on CPU: `codet5p train` with the
experiment gin, then `codet5p eval --gin.BENCHMARK=...` on its checkpoint; both write metrics.

Data: the CodeXGLUE format fixtures (../shared/reference/datasets/codexglue-understanding), and
for completion a token-level `train.txt` made here from stdlib files (the fixture has only the
line-level test file).

Slow tier: each test compiles a train step and an eval on 8 fake CPU devices (~1-2 min).
"""

import io
import json
import pathlib
import shutil
import sysconfig
import tokenize

import jax
import pytest

from codet5p_jax.cli.eval import main as eval_main
from codet5p_jax.cli.train import main as train_main

FIXTURES = "reference/datasets/codexglue-understanding"
STEPS = "--gin.TRAIN_STEPS=6"


@pytest.fixture(autouse=True)
def _tokenizer(monkeypatch, codet5_tokenizer_dir):
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))


def codexglue_tokens(source: str) -> str:
    """A Python file as PY150's token level: `<s> tokens <EOL> ... </s>` (strings kept as is)."""
    out = ["<s>"]
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NEWLINE:
            out.append("<EOL>")
        elif tok.type not in skip and tok.string.strip():
            out.append(" ".join(tok.string.split()))
    return " ".join(out + ["</s>"])


def _metrics_rows(model_dir) -> list[dict]:
    lines = (pathlib.Path(model_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines]


def _train(gin_name, model_dir, data_dir, *extra):
    status = train_main(
        [
            f"--gin_file=gin/experiments/{gin_name}",
            f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.DATA_DIR='{data_dir}'",
            STEPS,
            "--gin.train.save_every=6",
            "--gin.train.log_every=3",
            *extra,
        ]
    )
    assert status == 0
    rows = _metrics_rows(model_dir)
    assert [r["step"] for r in rows] == [3, 6]
    assert all(jax.numpy.isfinite(r["loss"]) for r in rows)
    return rows


def _eval(model_dir, out, benchmark, options, *extra):
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{model_dir}'",
            f"--gin.OUTPUT_DIR='{out}'",
            f"--gin.BENCHMARK='{benchmark}'",
            f"--gin.BENCHMARK_OPTIONS={options!r}",
            *extra,
        ]
    )
    assert status == 0
    return json.loads((pathlib.Path(out) / "metrics.json").read_text())[benchmark]


@pytest.mark.slow
def test_tiny_defect_experiment(shared_dir, tmp_path):
    data = shared_dir / FIXTURES / "defect-detection"
    rows = _train("tiny_defect.gin", tmp_path / "run", data)
    assert "accuracy" in rows[-1]
    metrics = _eval(
        tmp_path / "run", tmp_path / "eval", "defect", {"path": str(data), "split": "test"},
        "--gin.evaluate.max_input_length=128",
    )  # fmt: skip
    assert metrics["benchmark"] == "defect" and metrics["num_examples"] == 2
    assert metrics["accuracy"] in (0.0, 50.0, 100.0)


@pytest.mark.slow
def test_tiny_clone_bcb_experiment(shared_dir, tmp_path):
    data = shared_dir / FIXTURES / "clone-detection-bigclonebench"
    _train("tiny_clone_bcb.gin", tmp_path / "run", data)
    metrics = _eval(
        tmp_path / "run", tmp_path / "eval", "clone-bcb", {"path": str(data)},
        "--gin.evaluate.max_input_length=128",
    )  # fmt: skip
    assert metrics["num_examples"] == 3 and set(metrics) >= {"precision", "recall", "f1"}


@pytest.mark.slow
def test_tiny_completion_experiment(shared_dir, tmp_path):
    data = tmp_path / "py150"
    data.mkdir()
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    streams = [codexglue_tokens((stdlib / m).read_text()) for m in ("bisect.py", "colorsys.py")]
    (data / "train.txt").write_text("\n".join(streams) + "\n")
    shutil.copy(shared_dir / FIXTURES / "code-completion-line-python" / "test.json", data)
    _train("tiny_completion.gin", tmp_path / "run", data)
    metrics = _eval(
        tmp_path / "run", tmp_path / "eval", "completion-py150", {"path": str(data)},
        "--gin.evaluate.max_new_tokens=4",
    )  # fmt: skip
    assert metrics["num_examples"] == 5 and set(metrics) >= {"exact_match", "edit_sim"}


@pytest.mark.slow
def test_tiny_completion_decoder_only_experiment(shared_dir, tmp_path):
    """Decoder-only mode: trains with the line-only loss, then `codet5p eval` generates from
    `[CLM]` + the context as decoder prefix and writes EM / edit similarity per example."""
    data = tmp_path / "py150"
    data.mkdir()
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    streams = [codexglue_tokens((stdlib / m).read_text()) for m in ("bisect.py", "colorsys.py")]
    (data / "train.txt").write_text("\n".join(streams) + "\n")
    shutil.copy(shared_dir / FIXTURES / "code-completion-line-python" / "test.json", data)
    _train("tiny_completion_decoder_only.gin", tmp_path / "run", data)
    metrics = _eval(
        tmp_path / "run", tmp_path / "eval", "completion-py150", {"path": str(data)},
        "--gin.evaluate.max_new_tokens=4", "--gin.evaluate.generation_mode='decoder_only'",
        "--gin.evaluate.max_input_length=144",
    )  # fmt: skip
    assert metrics["num_examples"] == 5 and set(metrics) >= {"exact_match", "edit_sim"}
    rows = [json.loads(x) for x in (tmp_path / "eval" / "samples_results.jsonl").open()]
    assert len(rows) == 5 and all({"exact_match", "edit_sim"} <= set(r) for r in rows)
    assert metrics["edit_sim"] == pytest.approx(sum(r["edit_sim"] for r in rows) / 5, abs=0.01)


@pytest.mark.slow
def test_tiny_clone_poj104_experiment(shared_dir, tmp_path):
    from codet5p_jax.config import get_preset
    from codet5p_jax.loading import save
    from codet5p_jax.models import init_params

    cfg = get_preset("tiny-bimodal")
    save(tmp_path / "ckpt", cfg, init_params(cfg, jax.random.key(0)), "orbax")
    data = shared_dir / FIXTURES / "clone-detection-poj104"
    status = eval_main(
        [
            "--gin_file=gin/experiments/tiny_clone_poj104.gin",
            f"--gin.CHECKPOINT_PATH='{tmp_path / 'ckpt'}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
            f"--gin.DATA_DIR='{data}'",
        ]
    )
    assert status == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["clone-poj104"]["num_examples"] == 6
    assert 0.0 <= metrics["clone-poj104"]["map_at_r"] <= 100.0


def test_classifier_gin_with_a_seq2seq_model_is_one_line(shared_dir, tmp_path, capsys):
    data = shared_dir / FIXTURES / "defect-detection"
    status = train_main(
        [
            "--gin_file=gin/experiments/tiny_defect.gin",
            f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
            f"--gin.DATA_DIR='{data}'",
            "--gin.get_preset.kind='t5'",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a classifier model" in err[0], err
