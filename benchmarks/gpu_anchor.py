"""Our JAX twin of ../shared/bench/hf_torch_anchor.py: same shapes, FLOP formula and JSON keys.

The measurements behind `benchmarks/bench.py train|generate` (the command line). Each JSON line
lines up with the anchor's line of the same `bench` and `model`:

  train: one jitted `train.step.train_step` (Seq2SeqObjective, `make_optimizer` AdamW,
    lr 1e-4, weight decay 0.01, no clipping - torch's AdamW defaults), float32 params, bfloat16
    compute (`T5Config.dtype`), state donated; tokens/s counts source + target tokens, MFU uses
    the anchor's `train_flops_per_step` and its 989 TFLOP/s bf16 peak for H100/H200.
  generate: greedy decoding through `generation.generate`, bfloat16 params, exactly
    `--new-tokens` per row (EOS never stops a row, as the anchor's `min_new_tokens`).

Compile time is reported separately (`compile_s`) and excluded; warm-up steps are excluded.
`peak_mem_gib` is the process-wide peak of the JAX allocator so far (JAX cannot reset it), so
run one model per process (`gpu_session.sh` does).

Extra keys beside the anchor's: `compile_s`, the fast paths measured (`attention`,
`loss_chunk_tokens`, `remat`, `scan`) and `est_mem_gib`, the analytic memory estimate that
`check_fits` compares with the device's memory before anything is built.
"""

import functools
import math
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


def train_memory_gib(
    cfg: T5Config,
    batch: int,
    src: int,
    tgt: int,
    *,
    fused_attention: bool,
    loss_chunk_tokens: int | None,
    remat: str = "none",
) -> float:
    """Analytic peak memory of one training step (float32 params + AdamW, bf16 activations).

    Deliberately simple and on the high side: the activations each block keeps for the
    backward pass (its input, norms, q/k/v, attention output, both MLP tensors; plus float32
    scores and bf16 probabilities per head unless attention is fused), the float32 logits
    (three `[B, T, V]` tensors: logits, soft labels, their gradient) unless chunked, and 16
    bytes per parameter (params, grads, two Adam moments). With `remat` other than "none"
    only each block's input is kept. Calibration: codet5p-220m, batch 32, 512/256, plain
    attention, whole logits: 26.5 GiB estimated, 23.0 GiB measured on an H200.
    """
    d, f, n = cfg.emb_dim, cfg.mlp_dim, cfg.num_heads
    inner, act = n * cfg.head_dim, jnp.dtype(cfg.dtype).itemsize
    scores = 0 if fused_attention else 6  # float32 scores + bf16 probabilities, per key
    if remat != "none":
        enc_tok = dec_tok = d * act
    else:
        enc_tok = (6 * d + 4 * inner + 2 * f) * act + n * src * scores
        dec_tok = (9 * d + 7 * inner + 2 * f) * act + n * (tgt + src) * scores
    acts = cfg.num_encoder_layers * batch * src * enc_tok
    acts += cfg.num_decoder_layers * batch * tgt * dec_tok
    rows = batch * tgt if loss_chunk_tokens is None else min(loss_chunk_tokens, batch * tgt)
    logits = 3 * rows * cfg.vocab_size * 4
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(cfg)))
    return (acts + logits + 16 * params) / 2**30


def generate_memory_gib(cfg: T5Config, batch: int, src: int, new_tokens: int) -> float:
    """Analytic peak memory of greedy decoding: bf16 params, caches, encoder activations."""
    inner, act = cfg.num_heads * cfg.head_dim, 2
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(cfg)))
    caches = 2 * cfg.num_decoder_layers * batch * (src + new_tokens) * inner * act
    encoder = batch * src * (4 * cfg.emb_dim + cfg.mlp_dim + cfg.num_heads * src * 3) * 4
    logits = 2 * batch * cfg.vocab_size * 4
    return (2 * params + caches + encoder + logits) / 2**30


@functools.cache
def param_shapes(cfg: T5Config):
    """Shapes of the params of `cfg` (no memory allocated)."""
    model = build_model(cfg)
    return jax.eval_shape(lambda k: model.init(k, *init_args(cfg))["params"], jax.random.key(0))


def device_memory_gib() -> float | None:
    """Memory the JAX allocator may use on the default device (None when it does not say)."""
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return None if limit is None else limit / 2**30


class DoesNotFit(Exception):
    """A measurement whose memory estimate exceeds the device's memory."""


def check_fits(what: str, estimate_gib: float, limit_gib: float | None) -> None:
    """Raises `DoesNotFit` naming the estimate and the limit when the estimate is larger."""
    if limit_gib is not None and estimate_gib > limit_gib:
        raise DoesNotFit(
            f"{what} needs about {estimate_gib:.1f} GiB (analytic estimate), more than the "
            f"{limit_gib:.1f} GiB the device allows; use a smaller batch or lengths, or "
            "remat / loss chunking"
        )


@functools.cache
def host_params(name: str, seed: int = 0, scan: bool = False):
    """Unboxed float32 random params of `name` (the model's own initializers), on the host CPU.

    Jitted on the CPU, once per model for both measurements: on an H200 (jax 0.11.2) compiling
    this init for the GPU took over 85 s for codet5p-220m, longer than the train step's compile.
    """
    cfg = model_config(name).replace(param_dtype="float32", scan_layers=scan)
    model = build_model(cfg)
    init = jax.jit(lambda key: nn.meta.unbox(model.init(key, *init_args(cfg))["params"]))
    with jax.default_device(jax.devices("cpu")[0]):
        return init(jax.random.key(seed))


def device_params(name: str, dtype: str, scan: bool = False):
    """A copy of `host_params(name)` in `dtype` on the default device (train donates it)."""
    cast = jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), host_params(name, 0, scan))
    return jax.device_put(cast, jax.devices()[0])


def random_ids(rng, cfg: T5Config, shape) -> np.ndarray:
    return rng.integers(FIRST_ID, cfg.vocab_size, shape).astype(np.int32)


def bench_train(
    name,
    batch,
    src,
    tgt,
    steps,
    warmup,
    *,
    remat="none",
    attention="plain",
    loss_chunk_tokens=None,
    scan=False,
    mem_limit_gib=None,
) -> dict:
    cfg = model_config(name).replace(
        dtype="bfloat16",
        param_dtype="float32",
        remat_policy=remat,
        attention_impl=attention,
        scan_layers=scan,
    )
    fused = attention != "plain" and jax.default_backend() == "gpu"
    est = train_memory_gib(
        cfg,
        batch,
        src,
        tgt,
        fused_attention=fused,
        loss_chunk_tokens=loss_chunk_tokens,
        remat=remat,
    )
    check_fits(f"train {name} batch {batch} src {src} tgt {tgt}", est, mem_limit_gib)
    model, params = build_model(cfg), device_params(name, cfg.param_dtype, scan)
    objective = Seq2SeqObjective(model, loss_chunk_tokens=loss_chunk_tokens)
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
        impl="codet5p-jax",
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
        attention=attention,
        loss_chunk_tokens=loss_chunk_tokens,
        remat=remat,
        scan=scan,
        est_mem_gib=round(est, 1),
    )
    peak = peak_tflops()
    if peak:
        out["mfu"] = round(flops / dt / 1e12 / peak, 4)
    mem = peak_mem_gib()
    if mem is not None:
        out["peak_mem_gib"] = mem
    return out


def bench_generate(
    name, batch, src, new_tokens, repeats, *, attention="plain", mem_limit_gib=None
) -> dict:
    # eos_token_id=None: no row stops early, so every call produces exactly `new_tokens`.
    cfg = model_config(name).replace(
        dtype="bfloat16", param_dtype="bfloat16", eos_token_id=None, attention_impl=attention
    )
    est = generate_memory_gib(cfg, batch, src, new_tokens)
    check_fits(f"generate {name} batch {batch} src {src}", est, mem_limit_gib)
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
        attention=attention,
        est_mem_gib=round(est, 1),
    )
