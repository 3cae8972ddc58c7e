"""Data-pipeline throughput per CodeT5+ stage, beside the tokenizer's own speed in the same run.

For each mixture / task over the bundled stdlib corpus, builds `seqio.get_dataset` with the
default lengths and feature converter (as the trainer does: shuffled, repeated, batched), skips
`--warmup` batches (shuffle buffer fill, tracing), then times `--batches` batches. Just before and
just after each stage, the tokenizer ceiling is measured on the same corpus text: HF `tokenizers`
`encode_batch` (all cores) and `encode` (one thread), nothing else. Reported per stage:

* `tokens_per_s`: non-padding tokens the model consumes per second (encoder inputs + decoder
  targets; stage 2: text + code + both generation targets), and `tokens_per_s_per_core`;
* `tokenizer_tokens_per_s` (`encode_batch`, the ceiling: mean of the measurements just before and
  just after the pipeline, both listed), `tokenizer_serial_tokens_per_s`, and
  `ratio_to_tokenizer` = `tokens_per_s / tokenizer_tokens_per_s`;
* the same per second of this process's CPU time (`tokens_per_cpu_s`,
  `tokenizer_tokens_per_cpu_s`, `ratio_to_tokenizer_cpu`): on a machine shared with other jobs
  wall-clock rates swing with their load, CPU-time rates much less;
* `first_batch_s`: from the `seqio.get_dataset` call to the first batch (the build, seqio's
  shuffle-buffer fill, and with `--cold` the one-time tokenization of the stage-1 corpus), and
  `first_batch_cpu_s`, the CPU seconds of this process in that time;
  `warmup_s`: the `--warmup` batches alone (as before);
* `examples_per_s`; `loadavg` (1-minute load at the start and end of the stage);
* with `--baseline`: the same stage with stage 1 tokenized inside tf.data every epoch
  (`register_corpus(pretokenize=False)`, the pipeline before the token cache), same seed.

`--profile` instead times each stage-1 step alone (wall and CPU seconds) on the stdlib train
split: reading the text records, tokenize + filter inside tf.data, reading the tokenized corpus,
concatenate + chunk, span corruption.

Usage (the corpus is prepared into $CODET5P_CACHE_DIR on first use):
  CODET5P_TOKENIZER_DIR=../shared/reference/tokenizers/codet5 \\
    .venv/bin/python benchmarks/data_throughput.py [--batches 20] [--batch-size 32] \\
    [--only stage1] [--cold] [--baseline] [--profile] [--json out.json]
"""

import argparse
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import seqio  # noqa: E402

import tasks  # noqa: E402
from codet5p_jax.atomic_files import write_text  # noqa: E402
from tasks import corpus_cache, token_cache  # noqa: E402

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
CEILING_CHARS = 3_000_000  # corpus text per ceiling measurement (~1 M tokens, ~1 s idle)


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def corpus_texts(max_chars: int | None = None) -> list[str]:
    """The first train files of the stdlib code corpus, up to `max_chars` characters."""
    max_chars = max_chars or CEILING_CHARS
    spec = corpus_cache.CorpusSpec(name="stdlib", kind="stdlib")
    texts, total = [], 0
    for batch in token_cache.read_code(token_cache.code_shards(spec)["train"][0], spec.name):
        for t in batch:
            texts.append(t)
            total += len(t)
            if total >= max_chars:
                return texts
    return texts


def tokenizer_ceiling(vocabulary, texts: list[str]) -> dict:
    """Tokens/s of the bare HF tokenizer on `texts`: `encode_batch` (all cores) and `encode`.

    Also per second of this process's CPU time (all threads), which other jobs on a shared
    machine disturb much less than wall time.
    """
    tok = vocabulary.tokenizer
    tok.encode_batch(texts[:8], add_special_tokens=False)  # thread pool up, caches warm
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    batch_s, batch_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    m = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts[: len(texts) // 4])
    serial_s = time.perf_counter() - t0
    return {
        "tokens_per_s": n / batch_s,
        "tokens_per_cpu_s": n / batch_cpu,
        "serial_tokens_per_s": m / serial_s,
    }


def _drop_token_cache() -> None:
    """Removes the stdlib's tokenized corpus (all tokenizers), so the next build pays for it."""
    root = corpus_cache.cache_root() / "tokenized"
    spec = corpus_cache.CorpusSpec(name="stdlib", kind="stdlib")
    for d in root.glob(f"{spec.directory().name}-*") if root.is_dir() else ():
        shutil.rmtree(d)


def measure(key: str, batch_size: int, batches: int, warmup: int, seed: int) -> dict:
    """Times `batches` batches of the stdlib dataset named by `tasks.corpus_names()[key]`."""
    name = tasks.corpus_names("stdlib")[key]
    t_start, c_start = time.perf_counter(), time.process_time()
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
    first = None
    for _ in range(warmup):
        next(it)
        first = first or (time.perf_counter(), time.process_time())
    t1, c1 = time.perf_counter(), time.process_time()
    tokens = 0
    for _ in range(batches):
        b = next(it)
        first = first or (time.perf_counter(), time.process_time())
        tokens += sum(int(np.count_nonzero(b[k])) for k in _COUNTED if k in b)
    dt, cpu = time.perf_counter() - t1, time.process_time() - c1
    return {
        "name": name,
        "lengths": tasks.DEFAULT_LENGTHS[key],
        "batch_size": batch_size,
        "batches": batches,
        "first_batch_s": round(first[0] - t_start, 2),
        "first_batch_cpu_s": round(first[1] - c_start, 2),
        "warmup_s": round(t1 - t0, 2),
        "seconds": round(dt, 2),
        "cpu_seconds": round(cpu, 2),
        "tokens_per_s": round(tokens / dt),
        "tokens_per_cpu_s": round(tokens / cpu),
        "examples_per_s": round(batches * batch_size / dt, 1),
    }


def _drain(ds, key: str = "tokens") -> tuple[float, float, int, int]:
    """(wall s, CPU s, elements, tokens in `key`) of iterating `ds` to its end."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = tokens = 0
    for ex in ds.as_numpy_iterator():
        n += 1
        tokens += int(np.size(ex[key])) if isinstance(ex.get(key), np.ndarray) else 0
    return time.perf_counter() - t0, time.process_time() - c0, n, tokens


def profile_stages(epochs: int = 3) -> list[dict]:
    """Where one stage-1 epoch's time goes: each step alone, on the stdlib train split.

    Steps: reading the text records; tokenize + size filter inside tf.data (the previous path);
    reading the tokenized corpus; concatenate + chunk (568 tokens, span denoising); span
    corruption. Inputs of the last two are held in memory, so each row times its step alone.
    """
    import tensorflow as tf

    from tasks import chunking, span_corruption
    from tasks.data_sources import PreparedCorpusSource, TokenizedCorpusSource

    spec = corpus_cache.CorpusSpec(name="stdlib", kind="stdlib")
    vocab = tasks.CodeT5Vocabulary()
    text = PreparedCorpusSource(spec, "code").get_dataset("train", shuffle=False)
    tokenized = TokenizedCorpusSource(spec, vocab, 50, 2000).get_dataset("train", shuffle=False)
    rows = [("read text records", _drain(text, "code"))]
    rows.append(("tokenize + filter in tf.data", _drain(chunking.tokenize_and_filter(text, vocab))))
    rows.append(("read tokenized corpus", _drain(chunking.select_tokenized(tokenized))))
    files = [x["tokens"] for x in chunking.select_tokenized(tokenized).as_numpy_iterator()]
    mem = tf.data.Dataset.from_generator(
        lambda: ({"tokens": f} for f in files),
        output_signature={"tokens": tf.TensorSpec([None], tf.int32)},
    ).cache()
    _drain(mem)
    rows.append((f"concatenate + chunk 568, {epochs} epochs", _drain(
        chunking.concat_and_chunk(mem.repeat(epochs), 568, 2))))  # fmt: skip
    chunks = np.stack(
        [x["tokens"] for x in chunking.concat_and_chunk(mem, 568, 2).as_numpy_iterator()]
    )
    chunk_ds = tf.data.Dataset.from_tensor_slices({"tokens": chunks}).repeat(epochs)
    with seqio.utils.map_seed_manager(0):
        corrupted = span_corruption.span_corruption(chunk_ds, eos_id=2)
    rows.append((f"span corruption, {epochs} epochs", _drain(corrupted, "inputs")))
    out = []
    for label, (wall, cpu, n, tokens) in rows:
        out.append({"step": label, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                    "elements": n, "tokens": tokens})  # fmt: skip
    return out


def _register_stdlib(pretokenize: bool) -> None:
    tasks.register_corpus(
        "stdlib", kind="stdlib", vocabulary=tasks.CodeT5Vocabulary(), pretokenize=pretokenize,
        overwrite=True,
    )  # fmt: skip


def run_stage(label: str, key: str, args, texts: list[str]) -> dict:
    """One stage: the pipeline between two tokenizer-ceiling measurements (and the baseline)."""
    vocab = tasks.CodeT5Vocabulary()
    load0 = _loadavg()
    before = tokenizer_ceiling(vocab, texts)
    if args.cold:
        _drop_token_cache()
    r = {"stage": label, "cores": cores()}
    r.update(measure(key, args.batch_size, args.batches, args.warmup, args.seed))
    after = tokenizer_ceiling(vocab, texts)
    # The ceiling is the mean of the measurements just before and just after the pipeline.
    ceiling = {k: (before[k] + after[k]) / 2 for k in before}
    r["tokenizer_tokens_per_s"] = round(ceiling["tokens_per_s"])
    r["tokenizer_tokens_per_s_before_after"] = [
        round(before["tokens_per_s"]),
        round(after["tokens_per_s"]),
    ]
    r["tokenizer_serial_tokens_per_s"] = round(ceiling["serial_tokens_per_s"])
    r["tokenizer_tokens_per_cpu_s"] = round(ceiling["tokens_per_cpu_s"])
    r["tokens_per_s_per_core"] = round(r["tokens_per_s"] / r["cores"])
    r["ratio_to_tokenizer"] = round(r["tokens_per_s"] / ceiling["tokens_per_s"], 4)
    r["ratio_to_tokenizer_cpu"] = round(r["tokens_per_cpu_s"] / ceiling["tokens_per_cpu_s"], 4)
    if args.baseline and key != "stage2":
        _register_stdlib(pretokenize=False)
        try:
            b = measure(key, args.batch_size, args.batches, args.warmup, args.seed)
        finally:
            _register_stdlib(pretokenize=True)
        keep = ("first_batch_s", "first_batch_cpu_s", "tokens_per_s", "tokens_per_cpu_s")
        r["baseline"] = {k: b[k] for k in keep}
        r["baseline"]["ratio_to_tokenizer"] = round(b["tokens_per_s"] / ceiling["tokens_per_s"], 4)
        r["baseline"]["ratio_to_tokenizer_cpu"] = round(
            b["tokens_per_cpu_s"] / ceiling["tokens_per_cpu_s"], 4
        )
        r["speedup_vs_baseline"] = round(r["tokens_per_s"] / b["tokens_per_s"], 2)
    r["loadavg"] = [load0, _loadavg()]
    return r


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated stage keys")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--cold", action="store_true", help="rebuild the tokenized stdlib corpus before each stage"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="also time stage 1 tokenized inside tf.data"
    )
    parser.add_argument(
        "--profile", action="store_true", help="time each stage-1 step alone on one epoch"
    )
    args = parser.parse_args(argv)
    keys = [k for _, k in STAGES]
    unknown = sorted(set((args.only or "").split(",")) - set(keys) - {""})
    if unknown:
        print(f"data_throughput: unknown stage key(s) {unknown}; known: {keys}", file=sys.stderr)
        return 2
    if min(args.batches, args.batch_size) < 1 or args.warmup < 0:
        print("data_throughput: --batches and --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        texts = corpus_texts()
    except (ValueError, FileNotFoundError) as e:
        print(f"data_throughput: {e}", file=sys.stderr)
        return 2
    if args.profile:
        print(f"loadavg at start: {' '.join(map(str, os.getloadavg()))}; cores: {cores()}")
        steps = profile_stages()
        print(f"{'step':40} {'wall s':>7} {'cpu s':>7} {'elements':>9} {'tokens':>10}")
        for r in steps:
            print(f"{r['step']:40} {r['wall_s']:>7} {r['cpu_s']:>7} {r['elements']:>9,} "
                  f"{r['tokens']:>10,}")  # fmt: skip
        print(f"loadavg at end: {' '.join(map(str, os.getloadavg()))}")
        if args.json:
            write_text(args.json, json.dumps({"cores": cores(), "profile": steps}, indent=1))
        return 0
    results = []
    print(f"loadavg at start: {' '.join(map(str, os.getloadavg()))}; cores: {cores()}")
    print(
        f"{'stage':30} {'tokens/s':>9} {'/core':>8} {'tokenizer':>10} {'ratio':>6} "
        f"{'cpu ratio':>9} {'first s':>8} {'first cpu s':>11}"
    )
    for label, key in STAGES:
        if args.only and key not in args.only.split(","):
            continue
        try:
            r = run_stage(label, key, args, texts)
        except (ValueError, FileNotFoundError) as e:
            print(f"data_throughput: {label}: {e}", file=sys.stderr)
            return 2
        results.append(r)
        print(
            f"{label:30} {r['tokens_per_s']:>9,} {r['tokens_per_s_per_core']:>8,} "
            f"{r['tokenizer_tokens_per_s']:>10,} {r['ratio_to_tokenizer']:>6.1%} "
            f"{r['ratio_to_tokenizer_cpu']:>9.1%} {r['first_batch_s']:>8} "
            f"{r['first_batch_cpu_s']:>11}"
        )
        if "baseline" in r:
            b = r["baseline"]
            print(
                f"{'  baseline (tf.data tokenize)':30} {b['tokens_per_s']:>9,} {'':>8} {'':>10} "
                f"{b['ratio_to_tokenizer']:>6.1%} {b['ratio_to_tokenizer_cpu']:>9.1%} "
                f"{b['first_batch_s']:>8} {b['first_batch_cpu_s']:>11}"
            )
    print(f"loadavg at end: {' '.join(map(str, os.getloadavg()))}")
    if args.json:
        doc = {"cpus": os.cpu_count(), "cores": cores(), "results": results}
        write_text(args.json, json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
