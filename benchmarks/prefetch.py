"""Data badput of a tiny CPU training run with and without device prefetch, in one process.

Runs `train()` from gin files (default: the tiny stage-1 experiment, real SeqIO pipeline on the
stdlib corpus) several times in this process, each into a fresh temporary MODEL_DIR, alternating
`make_prefetcher.buffer_size=0` (the loop reads and copies each batch itself) and
`--buffer-size` (a thread does it ahead of the step), in ABBA order so a drifting machine load
hits both sides alike. A discarded warm-up run first pays the one-time costs (tokenizer and
corpus files into the page cache). Per run it prints the trainer's own `timing` (the numbers of
its final "badput" log line):

* `data_s`: seconds the loop waited for its next batch, over the whole run (the first batch
  included: its latency is the pipeline's start-up, which prefetching cannot hide);
* `data_s_per_step_after_first`: mean wait per step over the logging windows after the
  first one (`time/data_s` of metrics.jsonl), i.e. the steady state;
* `step_s`, `compile_s`, `wall_s`, `badput`; `loadavg` (1-minute) at its start and end;
* `final_loss`, and at the end whether all runs' losses were identical (prefetching must not
  change results), the medians per setting and the prefetch / no-prefetch ratios.

    CODET5P_TOKENIZER_DIR=../shared/reference/tokenizers/codet5 \\
      .venv/bin/python benchmarks/prefetch.py [--steps 60] [--log-every 10] [--repeats 2] \\
      [--buffer-size 2] [--gin_file=... --gin.KEY=VALUE ...] [--json out.json]
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import gin  # noqa: E402
from codet5p_jax.atomic_files import write_text  # noqa: E402
from codet5p_jax.cli import gin_flags  # noqa: E402
from codet5p_jax.train import trainer  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_GIN = str(REPO / "gin" / "experiments" / "tiny_stage1.gin")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60, help="TRAIN_STEPS of each run")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="runs per setting (ABBA order)")
    p.add_argument("--buffer-size", type=int, default=2, help="the prefetching side's buffer")
    p.add_argument("--warmup-steps", type=int, default=5, help="discarded first run; 0 = none")
    p.add_argument("--json", help="also write the rows and the summary here")
    args, gin_argv = p.parse_known_args(argv)
    if not any(a.startswith("--gin_file") for a in gin_argv):
        gin_argv = [f"--gin_file={DEFAULT_GIN}", *gin_argv]
    return args, gin_argv


def loadavg() -> float:
    return float(pathlib.Path("/proc/loadavg").read_text().split()[0])


def run_once(gin_argv, *, buffer_size: int, steps: int, log_every: int) -> dict:
    """One training run in a fresh MODEL_DIR; its timing, steady data wait and losses."""
    model_dir = tempfile.mkdtemp(prefix="codet5p_prefetch_bench_")
    argv = [
        *gin_argv,
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.TRAIN_STEPS={steps}",
        f"--gin.train.log_every={log_every}",
        f"--gin.train.save_every={steps}",  # one (final) checkpoint: not what is measured
        "--gin.train.plot=False",
        f"--gin.make_prefetcher.buffer_size={buffer_size}",
    ]
    start_load = loadavg()
    try:
        gin_flags.parse_gin(gin_flags.parse_args(argv, "benchmarks/prefetch.py", ""))
        try:
            result = trainer.train()
        finally:
            gin.clear_config()
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    timing = result["timing"]
    later = [row["time/data_s"] for row in result["history"][1:]]
    return {
        "buffer_size": buffer_size,
        "steps": steps,
        "data_s": timing["data"],
        "data_s_per_step_after_first": statistics.fmean(later) if later else None,
        "step_s": timing["step"],
        "compile_s": timing["compile"],
        "checkpoint_s": timing["checkpoint"],
        "wall_s": timing["wall"],
        "badput": timing["badput"],
        "loadavg_start": start_load,
        "loadavg_end": loadavg(),
        "final_loss": result["losses"][-1],
        "losses": result["losses"],
    }


def summarize(rows: list[dict], buffer_size: int) -> dict:
    def median(key, size):
        values = [r[key] for r in rows if r["buffer_size"] == size and r[key] is not None]
        return statistics.median(values) if values else None

    out = {"losses_identical": all(r["losses"] == rows[0]["losses"] for r in rows)}
    for key in ("data_s", "data_s_per_step_after_first", "step_s", "wall_s", "badput"):
        off, on = median(key, 0), median(key, buffer_size)
        out[f"{key}_no_prefetch"], out[f"{key}_prefetch"] = off, on
        out[f"{key}_ratio"] = on / off if off else None
    out["loadavg_max"] = max(max(r["loadavg_start"], r["loadavg_end"]) for r in rows)
    return out


def main(argv=None) -> int:
    args, gin_argv = parse_args(argv)
    if args.buffer_size < 1:
        print("benchmarks/prefetch.py: --buffer-size must be >= 1", file=sys.stderr)
        return 2
    common = dict(steps=args.steps, log_every=args.log_every)
    if args.warmup_steps:
        run_once(gin_argv, buffer_size=0, steps=args.warmup_steps, log_every=args.warmup_steps)
    rows = []
    for r in range(args.repeats):
        order = (0, args.buffer_size) if r % 2 == 0 else (args.buffer_size, 0)
        for size in order:
            row = run_once(gin_argv, buffer_size=size, **common)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
    summary = summarize(rows, args.buffer_size)
    print(json.dumps(summary), flush=True)
    if args.json:
        write_text(args.json, json.dumps({"rows": rows, "summary": summary}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
