"""One benchmark entry point: `bench.py train|generate|data`, the anchor's shapes and JSON keys.

`train` and `generate` measure our side of ../shared/bench/hf_torch_anchor.py (same shapes,
FLOP formula and JSON keys; see benchmarks/gpu_anchor.py) with the fast paths on by default:
fused attention (`--attention auto`: cuDNN on a GPU, plain elsewhere) and chunked
cross-entropy (`--loss-chunk`). A train measurement that fails (a kernel the device rejects,
out of memory) is retried with the next entry of `--fallbacks`, each printing its own line.
Before building anything each measurement compares an analytic memory estimate with the
device's memory and stops with one line naming both when it does not fit (exit 2).
`data` runs benchmarks/data_throughput.py with the remaining arguments.

    python benchmarks/bench.py train --models codet5p-220m            # GPU: anchor shapes
    python benchmarks/bench.py generate --models codet5p-220m
    python benchmarks/bench.py train --models tiny --batch 2 --src 32 --tgt 16 \\
        --steps 2 --warmup 1                                          # CPU smoke run
    python benchmarks/bench.py data --only stage1                     # input pipeline

Compile time is reported separately (`compile_s`) and excluded, as are warm-up steps.
"""

import argparse
import json
import os
import pathlib
import runpy
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import gpu_anchor as lib  # noqa: E402
import jax  # noqa: E402

# Train retries, in order, after a failed measurement: "attention/loss_chunk/remat"; "-" keeps
# the requested value.
DEFAULT_FALLBACKS = "plain/-/-,plain/-/dots"


def _common(p: argparse.ArgumentParser, new_tokens: bool):
    p.add_argument("--models", default="codet5p-220m,codet5p-770m")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--src", type=int, default=512)
    p.add_argument("--attention", default="auto", help="plain | auto | xla | cudnn | pallas")
    p.add_argument(
        "--mem-limit-gib",
        type=float,
        default=None,
        help="memory the estimate is checked against (default: the device's allocator limit)",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no further measurement once this many seconds have passed",
    )
    if new_tokens:
        p.add_argument("--new-tokens", type=int, default=128)
        p.add_argument("--repeats", type=int, default=2, help="timed calls (anchor: 2)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="bench", required=True)
    t = sub.add_parser("train", help="jitted train step tokens/s and MFU")
    _common(t, new_tokens=False)
    t.add_argument("--tgt", type=int, default=256)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument(
        "--loss-chunk", type=int, default=2048, help="positions per loss chunk; 0: whole logits"
    )
    t.add_argument("--remat", default="none", help="none | full | dots | dots_with_no_batch_dims")
    t.add_argument("--scan", action="store_true", help="scan the layers (faster compile)")
    t.add_argument("--fallbacks", default=DEFAULT_FALLBACKS, help="'' for none")
    g = sub.add_parser("generate", help="greedy decoding new tokens/s")
    _common(g, new_tokens=True)
    # No -h of its own: every argument, --help included, goes to data_throughput.py.
    sub.add_parser(
        "data", help="input pipeline tokens/s (benchmarks/data_throughput.py)", add_help=False
    )
    return p.parse_known_args(argv)


def emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def run_one(bench: str, name: str, fn, *args, **kwargs) -> str:
    """Runs one measurement and prints its line: "ok", "error" or "nofit"."""
    try:
        emit(fn(*args, **kwargs))
        return "ok"
    except lib.DoesNotFit as e:
        emit(dict(bench=bench, impl="codet5p-jax", model=name, error=f"does not fit: {e}"))
        print(f"bench {bench}: {name} does not fit: {e}", file=sys.stderr)
        return "nofit"
    except Exception as e:  # noqa: BLE001 - reported as a line; the next measurement goes on
        msg = f"{type(e).__name__}: {e}"[:500]
        emit(dict(bench=bench, impl="codet5p-jax", model=name, error=msg, **kwargs_of(kwargs)))
        return "error"


def kwargs_of(kwargs: dict) -> dict:
    keys = ("attention", "loss_chunk_tokens", "remat", "scan")
    return {k: kwargs[k] for k in keys if k in kwargs}


def train_variants(a) -> list[dict]:
    first = dict(attention=a.attention, loss_chunk_tokens=a.loss_chunk or None, remat=a.remat)
    variants = [first]
    for spec in filter(None, a.fallbacks.split(",")):
        try:
            attention, chunk, remat = (
                v if v != "-" else first_v
                for v, first_v in zip(
                    spec.split("/"), (a.attention, a.loss_chunk, a.remat), strict=True
                )
            )
            variant = dict(attention=attention, loss_chunk_tokens=int(chunk) or None, remat=remat)
        except ValueError:
            raise SystemExit(
                f"bench: bad --fallbacks entry {spec!r}; expected attention/loss_chunk/remat"
            ) from None
        if variant not in variants:
            variants.append(variant)
    return variants


def main(argv=None):
    a, rest = parse_args(argv)
    if a.bench == "data":
        script = pathlib.Path(__file__).resolve().parent / "data_throughput.py"
        sys.argv = [str(script), *rest]
        runpy.run_path(str(script), run_name="__main__")
        return
    if rest:
        raise SystemExit(f"bench {a.bench}: unknown arguments {' '.join(rest)}")
    start = time.monotonic()
    limit = a.mem_limit_gib if a.mem_limit_gib is not None else lib.device_memory_gib()
    emit(dict(jax=jax.__version__, device=lib.device_name(), pid=os.getpid(), mem_gib=limit))
    failed = nofit = 0
    for name in a.models.split(","):
        if a.deadline_s is not None and time.monotonic() - start > a.deadline_s:
            emit(dict(bench=a.bench, model=name, skipped=f"past --deadline-s {a.deadline_s}"))
            continue
        if a.bench == "train":
            shapes = (name, a.batch, a.src, a.tgt, a.steps, a.warmup)
            for variant in train_variants(a):
                status = run_one(
                    "train",
                    name,
                    lib.bench_train,
                    *shapes,
                    scan=a.scan,
                    mem_limit_gib=limit,
                    **variant,
                )
                if status != "error":
                    break
        else:
            shapes = (name, a.batch, a.src, a.new_tokens, a.repeats)
            status = run_one(
                "generate",
                name,
                lib.bench_generate,
                *shapes,
                attention=a.attention,
                mem_limit_gib=limit,
            )
            if status == "error" and a.attention != "plain":
                status = run_one(
                    "generate", name, lib.bench_generate, *shapes, attention="plain",
                    mem_limit_gib=limit,
                )  # fmt: skip
        failed += status == "error"
        nofit += status == "nofit"
    if nofit:
        raise SystemExit(2)
    if failed:
        raise SystemExit(f"bench {a.bench}: {failed} measurement(s) failed; see the error lines")


if __name__ == "__main__":
    main()
