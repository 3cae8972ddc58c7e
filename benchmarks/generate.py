"""Greedy decoding throughput: our jitted `generate` vs HF `generate`, same model, same process.

Both sides decode the same random T5 weights (converted with `convert.hf_t5.hf_to_params`) from
the same prompts, greedily, with a KV cache; the script checks that they emit the same tokens,
then reports new tokens per second (whole `generate` call: encoder, prefill and the loop) and
the ratio. Compile time of our jitted loop is reported separately and excluded.

    .venv/bin/python benchmarks/generate.py                    # small config, quick
    .venv/bin/python benchmarks/generate.py --preset codet5p-220m --batch 8 \
        --prompt-len 128 --new-tokens 32                       # codet5p-220m shapes
    .venv/bin/python benchmarks/generate.py --single-thread    # 1 thread each side
    .venv/bin/python benchmarks/generate.py --preset codet5p-220m --batch 8 \
        --prompt-len 128 --new-tokens 32 --parts              # encoder and per-step times

`--parts` splits the call: the encoder alone (ours jitted, HF `model.encoder`), and one decoding
step as (call with `--new-tokens` + 1 tokens - call with 1 token) / `--new-tokens`, each side
timed alternately in the same process.

`--sweep N` measures shape buckets instead (ours only, no HF): N calls with batch sizes drawn in
[1, --batch] and prompt lengths in [3, --prompt-len], run once with exact shapes and once with
the default `decoding.Buckets`, each from empty jit caches, in the same process; it reports the
wall time of each whole sweep (compilations included), the number of compiled programs, and
whether the two sweeps emitted identical tokens.

    .venv/bin/python benchmarks/generate.py --sweep 24 --batch 6 --prompt-len 100
"""

import argparse
import os
import statistics
import sys
import time

if "--single-thread" in sys.argv:
    # Must precede the jax import: XLA reads its CPU threading flags once.
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from codet5p_jax.config import get_preset, to_hf_config  # noqa: E402
from codet5p_jax.convert.hf_t5 import hf_to_params  # noqa: E402
from codet5p_jax.decoding import generate as generation  # noqa: E402
from codet5p_jax.decoding.buckets import DEFAULT_BUCKETS  # noqa: E402
from codet5p_jax.decoding.generate import generate  # noqa: E402
from codet5p_jax.models import build_model  # noqa: E402

SMALL = dict(emb_dim=256, num_heads=4, head_dim=64, mlp_dim=1024)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default=None, help="full-size preset (default: a small config)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=None, help="default: torch's choice")
    p.add_argument(
        "--sweep",
        type=int,
        default=0,
        help="N calls of varied batch / prompt length: exact shapes vs shape buckets (ours only)",
    )
    p.add_argument(
        "--parts",
        action="store_true",
        help="also time the encoder alone and one decoding step, each side",
    )
    p.add_argument(
        "--single-thread",
        action="store_true",
        help="one thread each for XLA and torch (steadier on a loaded machine)",
    )
    return p.parse_args(argv)


def build(preset: str | None, seed: int):
    """Random HF T5 and the same weights as JAX params."""
    if preset is None:
        cfg = get_preset("codet5p-220m", **SMALL, dropout_rate=0.0)
        cfg = cfg.replace(name="small", num_encoder_layers=4, num_decoder_layers=4)
    else:
        cfg = get_preset(preset, dropout_rate=0.0)
    torch.manual_seed(seed)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**to_hf_config(cfg)))
    hf = hf.eval()
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    return cfg, hf, hf_to_params(state, cfg)


def new_token_count(tokens: np.ndarray, eos_id: int) -> int:
    """Generated tokens per row up to and including the first EOS, summed."""
    is_eos = tokens == eos_id
    return int(np.where(is_eos.any(1), is_eos.argmax(1) + 1, tokens.shape[1]).sum())


def timed_pair(first, second, repeats: int):
    """Median seconds and last results of `first` and `second`, called alternately."""
    times, outs = ([], []), [None, None]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1]), outs


def run_sweep(model, params, shapes, vocab_size: int, new_tokens: int, buckets):
    """Seconds, compiled programs and tokens of one sweep over `shapes`, from empty caches."""
    jax.clear_caches()
    traces = generation.trace_count()
    rng = np.random.default_rng(0)
    outs = []
    start = time.perf_counter()
    for batch, length in shapes:
        ids = rng.integers(5, vocab_size, (batch, length)).astype(np.int32)
        out = generate(model, params, ids, max_new_tokens=new_tokens, buckets=buckets)
        outs.append(out.tokens)
    return time.perf_counter() - start, generation.trace_count() - traces, outs


def sweep(args, cfg, model, params):
    """`--sweep`: exact shapes vs buckets, same calls, same process (see the module docstring)."""
    rng = np.random.default_rng(args.seed)
    shapes = [
        (int(rng.integers(1, args.batch + 1)), int(rng.integers(3, args.prompt_len + 1)))
        for _ in range(args.sweep)
    ]
    n = args.new_tokens
    exact_s, exact_c, exact_t = run_sweep(model, params, shapes, cfg.vocab_size, n, None)
    bucket_s, bucket_c, bucket_t = run_sweep(
        model, params, shapes, cfg.vocab_size, n, DEFAULT_BUCKETS
    )
    same = all(np.array_equal(a, b) for a, b in zip(exact_t, bucket_t, strict=True))
    print(f"machine: {os.cpu_count()} CPU cores, jax {jax.__version__} ({jax.default_backend()})")
    print(
        f"model: {args.preset or 'small'} (emb {cfg.emb_dim}, layers "
        f"{cfg.num_encoder_layers}+{cfg.num_decoder_layers}), fp32, greedy, {n} new tokens"
    )
    print(
        f"sweep: {len(shapes)} calls, batch 1..{args.batch}, prompt 3..{args.prompt_len}, "
        f"{len(set(shapes))} distinct shapes"
    )
    print(f"identical tokens with and without buckets: {same}")
    print(f"exact shapes: {exact_s:7.1f} s, {exact_c} compiled programs")
    print(f"buckets:      {bucket_s:7.1f} s, {bucket_c} compiled programs")
    print(f"speed-up of the sweep (exact / buckets): {exact_s / bucket_s:.2f}x")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {load}")


def main(argv=None):
    args = parse_args(argv)
    if args.torch_threads or args.single_thread:
        torch.set_num_threads(1 if args.single_thread else args.torch_threads)
    cfg, hf, params = build(args.preset, args.seed)
    params = jax.device_put(params)
    model = build_model(cfg)
    if args.sweep:
        sweep(args, cfg, model, params)
        return
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(5, cfg.vocab_size, (args.batch, args.prompt_len)).astype(np.int32)
    mask = np.ones_like(ids)
    n = args.new_tokens

    def ours():
        return generate(model, params, ids, mask, max_new_tokens=n).tokens[:, 0]

    def theirs():
        with torch.no_grad():
            out = hf.generate(
                torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask),
                max_new_tokens=n,
                do_sample=False,
            )
        return out[:, 1:].numpy()

    start = time.perf_counter()
    ours()
    compile_s = time.perf_counter() - start
    theirs()  # warm-up
    # Alternating calls, so background load on the shared machine hits both sides alike.
    ours_s, hf_s, (ours_tokens, hf_tokens) = timed_pair(ours, theirs, args.repeats)
    same = np.array_equal(ours_tokens[:, : hf_tokens.shape[1]], hf_tokens)
    count = new_token_count(hf_tokens, cfg.eos_token_id)

    print(
        f"machine: {os.cpu_count()} CPU cores, jax {jax.__version__} "
        f"({jax.default_backend()}), torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    # Other jobs on a shared machine distort both sides; the 1-minute load average says how much.
    print(
        f"XLA single-threaded: {args.single_thread}; "
        f"load average at the end: {os.getloadavg()[0]:.1f}"
    )
    print(
        f"model: {args.preset or 'small'} (emb {cfg.emb_dim}, layers "
        f"{cfg.num_encoder_layers}+{cfg.num_decoder_layers}, vocab {cfg.vocab_size}), fp32"
    )
    print(
        f"shapes: batch {args.batch}, prompt {args.prompt_len}, new tokens {n}; "
        f"median of {args.repeats}"
    )
    print(f"identical greedy tokens: {same} ({count} new tokens per call)")
    print(
        f"codet5p_jax: {count / ours_s:9.1f} new tokens/s  ({ours_s:.3f} s/call, "
        f"compile {compile_s:.1f} s, excluded)"
    )
    print(f"HF generate: {count / hf_s:9.1f} new tokens/s  ({hf_s:.3f} s/call)")
    print(f"ratio (ours / HF): {hf_s / ours_s:.2f}x")
    if args.parts:
        parts(args, model, params, hf, ids, mask)


def parts(args, model, params, hf, ids, mask):
    """`--parts`: encoder time and per-step time of each side (see the module docstring)."""
    n = args.new_tokens
    encode = jax.jit(lambda p, i, m: model.apply({"params": p}, i, m, method=model.encode))
    t_ids, t_mask = torch.tensor(ids, dtype=torch.long), torch.tensor(mask)

    def ours_call(tokens):
        return lambda: generate(model, params, ids, mask, max_new_tokens=tokens).tokens

    def hf_call(tokens):
        def call():
            with torch.no_grad():
                return hf.generate(t_ids, attention_mask=t_mask, max_new_tokens=tokens,
                                   do_sample=False)  # fmt: skip

        return call

    def hf_encoder():
        with torch.no_grad():
            return hf.encoder(input_ids=t_ids, attention_mask=t_mask).last_hidden_state

    encode(params, ids, mask).block_until_ready()  # compile
    ours_call(1)()  # compile
    hf_encoder()
    enc_ours, enc_hf, _ = timed_pair(
        lambda: encode(params, ids, mask).block_until_ready(), hf_encoder, args.repeats
    )
    one_ours, one_hf, _ = timed_pair(ours_call(1), hf_call(1), args.repeats)
    all_ours, all_hf, _ = timed_pair(ours_call(n + 1), hf_call(n + 1), args.repeats)
    step_ours, step_hf = (all_ours - one_ours) / n, (all_hf - one_hf) / n
    print(f"encoder:        ours {enc_ours * 1e3:8.1f} ms, HF {enc_hf * 1e3:8.1f} ms "
          f"(ours / HF time {enc_ours / enc_hf:.2f}x)")  # fmt: skip
    print(f"decoding step:  ours {step_ours * 1e3:8.1f} ms, HF {step_hf * 1e3:8.1f} ms "
          f"(ours / HF time {step_ours / step_hf:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
