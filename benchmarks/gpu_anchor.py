"""Our JAX twin of ../shared/bench/hf_torch_anchor.py: same shapes, FLOP formula and JSON keys.

Each JSON line this prints lines up with the anchor's line of the same `bench` and `model`:

  train: one jitted `train.step.train_step` (Seq2SeqObjective, `make_optimizer` AdamW,
    lr 1e-4, weight decay 0.01, no clipping - torch's AdamW defaults), float32 params, bfloat16
    compute (`T5Config.dtype`), state donated; tokens/s counts source + target tokens, MFU uses
    the anchor's `train_flops_per_step` and its 989 TFLOP/s bf16 peak for H100/H200.
  generate: greedy decoding through `generation.generate`, bfloat16 params, exactly
    `--new-tokens` per row (EOS never stops a row, as the anchor's `min_new_tokens`).

Compile time is reported separately (`compile_s`) and excluded; warm-up steps are excluded.
`peak_mem_gib` is the process-wide peak of the JAX allocator so far (JAX cannot reset it), so
run the smaller model first, as the default order does.

    python benchmarks/gpu_anchor.py                                  # GPU: 220m and 770m
    python benchmarks/gpu_anchor.py --models tiny --batch 2 --src 32 --tgt 16 \
        --new-tokens 8 --gen-batch 2 --steps 2 --warmup 1            # CPU smoke run
"""

import argparse
import functools
import json
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from codet5p_jax.config import T5Config, get_preset
from codet5p_jax.decoding.generate import generate
from codet5p_jax.models import build_model, init_args
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective
from codet5p_jax.train import step as step_lib
from codet5p_jax.train.optimizers import make_optimizer
from codet5p_jax.train.state import TrainState

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # the anchor's dense bf16 spec, SXM
FIRST_ID = 3  # the anchor draws ids in [3, vocab): no pad, BOS or EOS in the inputs


def model_config(name: str) -> T5Config:
    """Our config for an anchor model name (dropout off, as the anchor)."""
    if name == "tiny":  # the anchor's "tiny" shape (our "tiny" preset has 32103 ids, d_ff 256)
        return get_preset("tiny", vocab_size=32100, mlp_dim=128, dropout_rate=0.0)
    return get_preset(name, dropout_rate=0.0)


def train_flops_per_step(cfg: T5Config, batch: int, src: int, tgt: int) -> int:
    """The anchor's formula: 6 * params-per-token * tokens, plus attention (x3 fwd+bwd)."""
    d, f, v, inner = cfg.emb_dim, cfg.mlp_dim, cfg.vocab_size, cfg.num_heads * cfg.head_dim
    enc = cfg.num_encoder_layers * (4 * d * inner + 2 * d * f)
    dec = cfg.num_decoder_layers * (8 * d * inner + 2 * d * f) + d * v  # + LM head
    dense = 6 * batch * (enc * src + dec * tgt)
    attn = (
        3
        * 4
        * batch
        * inner
        * (cfg.num_encoder_layers * src * src + cfg.num_decoder_layers * (tgt * tgt + tgt * src))
    )
    return dense + attn


def device_name() -> str:
    dev = jax.devices()[0]
    return "cpu" if dev.platform == "cpu" else dev.device_kind


def peak_tflops() -> float | None:
    name = device_name()
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def peak_mem_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**30, 2)


@functools.cache
def host_params(name: str, seed: int = 0):
    """Unboxed float32 random params of `name` (the model's own initializers), on the host CPU.

    Jitted on the CPU, once per model for both measurements: on an H200 (jax 0.11.2) compiling
    this init for the GPU took over 85 s for codet5p-220m, longer than the train step's compile.
    """
    cfg = model_config(name).replace(param_dtype="float32")
    model = build_model(cfg)
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, *init_args(cfg))["params"]))
    with jax.default_device(jax.devices("cpu")[0]):
        return init(jax.random.key(seed))


def device_params(name: str, dtype: str):
    """A copy of `host_params(name)` in `dtype` on the default device (train donates it)."""
    cast = jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), host_params(name))
    return jax.device_put(cast, jax.devices()[0])


def random_ids(rng, cfg: T5Config, shape) -> np.ndarray:
    return rng.integers(FIRST_ID, cfg.vocab_size, shape).astype(np.int32)


def bench_train(name, batch, src, tgt, steps, warmup, remat="none") -> dict:
    cfg = model_config(name).replace(dtype="bfloat16", param_dtype="float32", remat_policy=remat)
    model, params = build_model(cfg), device_params(name, cfg.param_dtype)
    objective = Seq2SeqObjective(model)
    tx = make_optimizer(
        params, name="adamw", learning_rate=1e-4, weight_decay=0.01, clip_grad_norm=None
    )
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), extra={}
    )
    rng = np.random.default_rng(0)
    labels = random_ids(rng, cfg, (batch, tgt))
    start = np.full((batch, 1), cfg.decoder_start_token_id, np.int32)
    batch_arrays = {  # HF shifts `labels` right behind the anchor's back; we do it here
        "encoder_input_tokens": random_ids(rng, cfg, (batch, src)),
        "decoder_input_tokens": np.concatenate([start, labels[:, :-1]], axis=1),
        "decoder_target_tokens": labels,
        "decoder_loss_weights": np.ones_like(labels),
    }
    batch_arrays = jax.device_put(batch_arrays)
    key = jax.random.key(0)

    def step(state, batch, rng):
        return step_lib.train_step(state, batch, rng, loss_fn=objective.loss_fn, tx=tx)

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0,)).lower(state, batch_arrays, key).compile()
    compile_s = time.perf_counter() - t0
    for _ in range(warmup):
        state, metrics = compiled(state, batch_arrays, key)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch_arrays, key)
    jax.block_until_ready((state, metrics))
    dt = (time.perf_counter() - t0) / steps
    flops = train_flops_per_step(cfg, batch, src, tgt)
    out = dict(
        bench="train",
        impl="codet5p-jax" + ("" if remat == "none" else f"-remat-{remat}"),
        model=name,
        device=device_name(),
        batch=batch,
        src=src,
        tgt=tgt,
        step_s=round(dt, 4),
        tokens_per_s=round(batch * (src + tgt) / dt, 1),
        model_tflops=round(flops / dt / 1e12, 2),
        loss=round(float(metrics["loss"]), 4),
        compile_s=round(compile_s, 1),
    )
    peak = peak_tflops()
    if peak:
        out["mfu"] = round(flops / dt / 1e12 / peak, 4)
    mem = peak_mem_gib()
    if mem is not None:
        out["peak_mem_gib"] = mem
    return out


def bench_generate(name, batch, src, new_tokens, repeats) -> dict:
    # eos_token_id=None: no row stops early, so every call produces exactly `new_tokens`.
    cfg = model_config(name).replace(dtype="bfloat16", param_dtype="bfloat16", eos_token_id=None)
    model, params = build_model(cfg), device_params(name, cfg.param_dtype)
    ids = random_ids(np.random.default_rng(0), cfg, (batch, src))
    mask = np.ones_like(ids)

    def call():
        return generate(model, params, ids, mask, max_new_tokens=new_tokens)

    t0 = time.perf_counter()
    call()  # compiles
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = call()  # returns numpy arrays: the device work is finished
    dt = (time.perf_counter() - t0) / repeats
    if not (out.lengths == new_tokens).all():
        raise RuntimeError(f"expected {new_tokens} new tokens per row, got {out.lengths}")
    produced = out.tokens.shape[-1]
    return dict(
        bench="generate",
        impl="codet5p-jax",
        model=name,
        device=device_name(),
        batch=batch,
        src=src,
        new_tokens=produced,
        call_s=round(dt, 4),
        new_tokens_per_s=round(batch * produced / dt, 1),
        compile_s=round(compile_s, 1),
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="codet5p-220m,codet5p-770m")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--src", type=int, default=512)
    p.add_argument("--tgt", type=int, default=256)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--gen-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2, help="timed generate calls (anchor: 2)")
    p.add_argument(
        "--remat-fallback",
        default="dots",
        help="remat_policy to retry a train measurement with when it fails (e.g. out of memory)",
    )
    p.add_argument("--skip-generate", action="store_true")
    return p.parse_args(argv)


def measure(bench: str, name: str, fn, *args, **kwargs) -> bool:
    """Prints `fn`'s JSON line, or an error line (one failure must not lose the other lines)."""
    try:
        line = fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reported, and the session goes on
        line = dict(bench=bench, impl="codet5p-jax", model=name, error=f"{type(e).__name__}: {e}")
        line["error"] = line["error"][:500]
    print(json.dumps(line), flush=True)
    return "error" not in line


def main(argv=None):
    a = parse_args(argv)
    print(json.dumps(dict(jax=jax.__version__, device=device_name())), flush=True)
    failed = 0
    for name in a.models.split(","):
        shapes = (name, a.batch, a.src, a.tgt, a.steps, a.warmup)
        ok = measure("train", name, bench_train, *shapes)
        if not ok and a.remat_fallback != "none":
            ok = measure("train", name, bench_train, *shapes, remat=a.remat_fallback)
        failed += not ok
        if not a.skip_generate:
            gen = (name, a.gen_batch, a.src, a.new_tokens, a.repeats)
            failed += not measure("generate", name, bench_generate, *gen)
    if failed:
        raise SystemExit(f"{failed} measurement(s) failed; see the error lines above")


if __name__ == "__main__":
    main()
