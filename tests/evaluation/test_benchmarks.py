"""run_benchmark with stub generation callbacks that return known-right and known-wrong outputs."""

import json

import pytest

from codet5p_jax.evaluation import benchmarks, humaneval, mbpp
from codet5p_jax.evaluation.results_io import read_jsonl

PROBLEMS = humaneval.load_problems()
CANONICAL = {p["prompt"]: p["canonical_solution"] for p in PROBLEMS.values()}
FAST = {"n_workers": 2, "timeout": 3.0}


def _read_json(path):
    return json.loads(path.read_text())


def test_humaneval_pass_at_k_and_files(tmp_path):
    calls = []

    def generate_fn(prompts, num_samples, **gen_kwargs):
        calls.append((len(prompts), num_samples, gen_kwargs))
        return [[CANONICAL[p], "    return None\n"] for p in prompts]

    metrics = benchmarks.run_benchmark(
        "humaneval",
        generate_fn,
        tmp_path,
        num_samples=2,
        ks="1,2,10",
        limit=5,
        prompts_per_call=2,
        gen_kwargs={"temperature": 0.2},
        **FAST,
    )
    # One right and one wrong sample per problem: pass@1 = 1/2, pass@2 = 1; k=10 > n is skipped.
    assert metrics["pass@1"] == 0.5 and metrics["pass@2"] == 1.0
    assert metrics["skipped_ks"] == [10] and metrics["num_problems"] == 5
    assert calls == [(2, 2, {"temperature": 0.2})] * 2 + [(1, 2, {"temperature": 0.2})]
    assert _read_json(tmp_path / "metrics.json") == metrics
    samples = [r for _, r in read_jsonl(tmp_path / "samples.jsonl")]
    assert len(samples) == 10 and set(samples[0]) == {"task_id", "completion"}
    problems = [r for _, r in read_jsonl(tmp_path / "problems.jsonl")]
    assert [p["num_correct"] for p in problems] == [1] * 5


def test_humaneval_codet5p_prompts_round_trip(tmp_path):
    # No canonical solution contains a stop sequence, so tabbed canonical code + a trailing
    # function must come back as the canonical completion and pass.
    by_tabbed = {humaneval.to_codet5p_prompt(p): c for p, c in CANONICAL.items()}

    def generate_fn(prompts, num_samples, **_):
        assert all("    " not in p for p in prompts)  # CodeT5+ feeds tab-indented prompts
        return [[by_tabbed[p].replace("    ", "\t") + "\ndef junk():\n\tpass"] for p in prompts]

    metrics = benchmarks.run_benchmark(
        "humaneval", generate_fn, tmp_path, codet5p_prompts=True, limit=4, **FAST
    )
    assert metrics["pass@1"] == 1.0
    completions = [r["completion"] for _, r in read_jsonl(tmp_path / "samples.jsonl")]
    assert completions == [p["canonical_solution"] for p in list(PROBLEMS.values())[:4]]


def test_mbpp_reference_code_passes(tmp_path, shared_dir):
    path = shared_dir / "reference" / "datasets" / "mbpp" / "mbpp_30adf0ec.jsonl"
    problems = mbpp.load_problems(path)
    assert len(problems) == 500 and min(int(t.split("/")[1]) for t in problems) == 11
    by_prompt = {mbpp.build_prompt(p): p["code"] for p in problems.values()}

    def generate_fn(prompts, num_samples, **_):
        return [[by_prompt[p]] * num_samples for p in prompts]

    metrics = benchmarks.run_benchmark(
        "mbpp", generate_fn, tmp_path, path=str(path), limit=6, **FAST
    )
    assert metrics["pass@1"] == 1.0 and metrics["num_problems"] == 6
    assert "Your code should pass these tests:" in next(iter(by_prompt))


def test_gsm8k_python(tmp_path, shared_dir):
    path = shared_dir / "reference" / "datasets" / "gsm8k" / "test.jsonl"
    programs = ["answer = (16 - 3 - 4) * 2", "answer = 2 + 1", "answer = 1"]  # golds 18, 3, 70000

    def generate_fn(prompts, num_samples, **_):
        return [[programs[i]] for i in range(len(prompts))]

    metrics = benchmarks.run_benchmark(
        "gsm8k-python", generate_fn, tmp_path, path=str(path), limit=3, prompts_per_call=3, **FAST
    )
    assert metrics["pass@1"] == pytest.approx(2 / 3)


def test_summarization_bleu(tmp_path, shared_dir):
    path = shared_dir / "reference" / "datasets" / "codesearchnet" / "python"
    path = path / "csn_codexglue_hf_dummy.jsonl"
    problems = benchmarks.load_problems("summarization", benchmarks.make_options(path=str(path)))
    by_code = {p["model_prompt"]: p["reference"] for p in problems.values()}

    def generate_fn(prompts, num_samples, **_):
        return [[by_code[p]] for p in prompts]

    metrics = benchmarks.run_benchmark("summarization", generate_fn, tmp_path, path=str(path))
    assert metrics["bleu"] == pytest.approx(100.0) and metrics["num_examples"] == 9
    assert not (tmp_path / "problems.jsonl").exists()


def _echo(prompts, num_samples, **_):
    return [[""] * num_samples for _ in prompts]


def test_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'humaneval-x'"):
        benchmarks.run_benchmark("humaneval-x", _echo, tmp_path)
    with pytest.raises(ValueError, match=r"unknown benchmark option\(s\) \['temperature'\]"):
        benchmarks.run_benchmark("humaneval", _echo, tmp_path, temperature=0.2)
    with pytest.raises(ValueError, match="'mbpp' needs a data file"):
        benchmarks.run_benchmark("mbpp", _echo, tmp_path)
    with pytest.raises(ValueError, match="bad k '0'"):
        benchmarks.run_benchmark("humaneval", _echo, tmp_path, ks="0")
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        benchmarks.run_benchmark("humaneval", _echo, tmp_path, num_samples=0)
    with pytest.raises(ValueError, match="generate_fn must return 1 lists of 2 strings"):
        benchmarks.run_benchmark(
            "humaneval", lambda p, n: [["x"]], tmp_path, limit=1, num_samples=2
        )
    assert not (tmp_path / "metrics.json").exists()  # nothing half-written


@pytest.mark.parametrize("lang", ["go", "java", "javascript", "php", "python", "ruby"])
def test_summarize_lang_on_codesearchnet_samples(tmp_path, shared_dir, lang):
    path = shared_dir / "reference" / "datasets" / "codesearchnet" / lang
    path = str(path / "csn_codexglue_hf_dummy.jsonl")
    name = f"summarize-{lang}"
    problems = benchmarks.load_problems(name, benchmarks.make_options(path=path))
    by_code = {p["model_prompt"]: p["reference"] for p in problems.values()}
    perfect = benchmarks.run_benchmark(
        name, lambda prompts, n, **_: [[by_code[p]] for p in prompts], tmp_path / "a", path=path
    )
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["num_examples"] == 9
    assert perfect["benchmark"] == name
    # An imperfect summary scores as the language-agnostic summarization benchmark does.
    weak = lambda prompts, n, **_: [["returns the value of the"] for _ in prompts]  # noqa: E731
    got = benchmarks.run_benchmark(name, weak, tmp_path / "b", path=path)["bleu"]
    ref = benchmarks.run_benchmark("summarization", weak, tmp_path / "c", path=path)["bleu"]
    assert got == pytest.approx(ref) and got < 100.0
    other = "ruby" if lang != "ruby" else "go"
    with pytest.raises(ValueError, match=f"a '{lang}' record in a summarize-{other} run"):
        benchmarks.load_problems(f"summarize-{other}", benchmarks.make_options(path=path))
