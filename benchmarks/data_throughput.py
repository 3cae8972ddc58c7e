"""Data-pipeline throughput per CodeT5+ stage: tokens/s of the SeqIO batches on this machine.

For each mixture / task over the bundled stdlib corpus, builds `seqio.get_dataset` with the
default lengths and feature converter (as the trainer does: shuffled, repeated, batched), skips
`--warmup` batches (shuffle buffer fill, tracing), then times `--batches` batches. Reported:

* `tokens/s`: non-padding tokens the model consumes per second (encoder inputs + decoder
  targets; stage 2: text + code + both generation targets);
* `examples/s`.

Usage (the corpus is prepared into $CODET5P_CACHE_DIR on first use):
  CODET5P_TOKENIZER_DIR=../shared/reference/tokenizers/codet5 \\
    .venv/bin/python benchmarks/data_throughput.py [--batches 20] [--batch-size 32]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import seqio  # noqa: E402

import tasks  # noqa: E402

STAGES = (
    ("stage1 span denoising", "stage1_denoise"),
    ("stage1 seq2seq causal LM", "seq2seq_clm"),
    ("stage1 decoder-only causal LM", "decoder_clm"),
    ("stage1 joint mixture", "stage1"),
    ("stage2 bimodal", "stage2"),
)
_COUNTED = (
    "encoder_input_tokens",
    "decoder_target_tokens",
    "text_tokens",
    "code_tokens",
    "text_to_code_decoder_target_tokens",
    "code_to_text_decoder_target_tokens",
)


def measure(key: str, batch_size: int, batches: int, warmup: int, seed: int) -> dict:
    """Times `batches` batches of the stdlib dataset named by `tasks.corpus_names()[key]`."""
    name = tasks.corpus_names("stdlib")[key]
    ds = seqio.get_dataset(
        name,
        tasks.DEFAULT_LENGTHS[key],
        feature_converter=tasks.feature_converter_for(key)(pack=False),
        shuffle=True,
        seed=seed,
        num_epochs=None,
        batch_size=batch_size,
    )
    it = ds.as_numpy_iterator()
    t0 = time.perf_counter()
    for _ in range(warmup):
        next(it)
    t1 = time.perf_counter()
    tokens = 0
    for _ in range(batches):
        b = next(it)
        tokens += sum(int(np.count_nonzero(b[k])) for k in _COUNTED if k in b)
    dt = time.perf_counter() - t1
    return {
        "name": name,
        "lengths": tasks.DEFAULT_LENGTHS[key],
        "batch_size": batch_size,
        "batches": batches,
        "warmup_s": round(t1 - t0, 2),
        "seconds": round(dt, 2),
        "tokens_per_s": round(tokens / dt),
        "examples_per_s": round(batches * batch_size / dt, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated stage keys")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    print(f"{'stage':32} {'tokens/s':>10} {'examples/s':>11} {'warmup s':>9}")
    for label, key in STAGES:
        if args.only and key not in args.only.split(","):
            continue
        r = measure(key, args.batch_size, args.batches, args.warmup, args.seed)
        r["stage"] = label
        results.append(r)
        print(f"{label:32} {r['tokens_per_s']:>10,} {r['examples_per_s']:>11} {r['warmup_s']:>9}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": os.cpu_count(), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
