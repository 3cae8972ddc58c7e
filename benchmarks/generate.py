"""Greedy decoding throughput: our jitted `generate` vs HF `generate`, same model, same process.

Both sides decode the same random T5 weights (converted with `convert.hf_t5.hf_to_params`) from
the same prompts, greedily, with a KV cache; the script checks that they emit the same tokens,
then reports new tokens per second (whole `generate` call: encoder, prefill and the loop) and
the ratio. Compile time of our jitted loop is reported separately and excluded.

    .venv/bin/python benchmarks/generate.py                    # small config, quick
    .venv/bin/python benchmarks/generate.py --preset codet5p-220m --batch 8 \
        --prompt-len 128 --new-tokens 32                       # codet5p-220m shapes
    .venv/bin/python benchmarks/generate.py --single-thread    # 1 thread each side
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


def main(argv=None):
    args = parse_args(argv)
    if args.torch_threads or args.single_thread:
        torch.set_num_threads(1 if args.single_thread else args.torch_threads)
    cfg, hf, params = build(args.preset, args.seed)
    params = jax.device_put(params)
    model = build_model(cfg)
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


if __name__ == "__main__":
    main()
