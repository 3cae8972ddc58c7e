"""Train-step throughput: our jitted JAX step vs HF torch eager, same model, shapes and CPU.

Both sides start from the same random tiny-T5 weights (ours converted to HF with
`convert.hf_t5.params_to_hf`), take the same batch (encoder + teacher-forced decoder, the
stage-1 shapes of gin/experiments/tiny_stage1.gin by default) and apply AdamW (weight decay
0.1, no clipping on either side). The first step's losses are checked to agree, then each side
runs `--steps` timed steps (forward, backward, optimizer update; the JAX step donates its state
and is compiled beforehand - compile time is reported separately). Reports steps/s, tokens/s
(encoder + decoder positions) and the JAX / torch ratio, plus the machine's load average.

    .venv/bin/python benchmarks/train_step.py                   # tiny preset, batch 8, 128/64
    .venv/bin/python benchmarks/train_step.py --batch 16 --enc-len 256 --dec-len 128
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers

from codet5p_jax.config import get_preset, to_hf_config
from codet5p_jax.convert.hf_t5 import params_to_hf
from codet5p_jax.models import build_model, init_args
from codet5p_jax.objectives.seq2seq import Seq2SeqObjective
from codet5p_jax.train import step as step_lib
from codet5p_jax.train.state import TrainState


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--enc-len", type=int, default=128)
    p.add_argument("--dec-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--torch-threads", type=int, default=None, help="default: torch's choice")
    return p.parse_args(argv)


def make_batch(args, vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    enc = rng.integers(5, vocab, (args.batch, args.enc_len)).astype(np.int32)
    targets = rng.integers(5, vocab, (args.batch, args.dec_len)).astype(np.int32)
    dec_in = np.concatenate([np.zeros((args.batch, 1), np.int32), targets[:, :-1]], axis=1)
    return {
        "encoder_input_tokens": enc,
        "decoder_input_tokens": dec_in,
        "decoder_target_tokens": targets,
        "decoder_loss_weights": np.ones_like(targets),
    }


def jax_side(args, cfg, params, batch):
    model = build_model(cfg)
    objective = Seq2SeqObjective(model)
    tx = optax.adamw(args.lr, weight_decay=0.1)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), extra={}
    )

    def step(state, batch, rng):
        return step_lib.train_step(state, batch, rng, loss_fn=objective.loss_fn, tx=tx)

    jitted = jax.jit(step, donate_argnums=(0,))
    rng = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = jitted.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t0
    state, metrics = compiled(state, batch, rng)
    first_loss = float(metrics["loss"])
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics["loss"])
    return first_loss, (time.perf_counter() - t0) / args.steps, compile_s


def torch_side(args, cfg, params, batch):
    hf_cfg = transformers.T5Config(**to_hf_config(cfg))
    model = transformers.T5ForConditionalGeneration(hf_cfg)
    state = {
        k: torch.from_numpy(np.asarray(v).copy()) for k, v in params_to_hf(params, cfg).items()
    }
    model.load_state_dict(state, strict=False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    enc = torch.from_numpy(batch["encoder_input_tokens"]).long()
    dec = torch.from_numpy(batch["decoder_input_tokens"]).long()
    labels = torch.from_numpy(batch["decoder_target_tokens"]).long()

    def one_step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=enc, attention_mask=enc != 0, decoder_input_ids=dec, labels=labels)
        out.loss.backward()
        opt.step()
        return out.loss.item()

    first_loss = one_step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        one_step()
    return first_loss, (time.perf_counter() - t0) / args.steps


def main(argv=None):
    args = parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    cfg = get_preset(args.preset, dropout_rate=0.0)  # dropout off: identical math on both sides
    params = jax.tree.map(
        np.asarray, build_model(cfg).init(jax.random.key(0), *init_args(cfg))["params"]
    )
    params = jax.tree.map(
        lambda x: getattr(x, "value", x), params, is_leaf=lambda x: hasattr(x, "value")
    )
    params = jax.tree.map(np.asarray, params)
    batch = make_batch(args, cfg.vocab_size)
    tokens = args.batch * (args.enc_len + args.dec_len)
    jax_loss, jax_s, compile_s = jax_side(args, cfg, jax.tree.map(jnp.asarray, params), batch)
    torch_loss, torch_s = torch_side(args, cfg, params, batch)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads)")  # fmt: skip
    print(f"model: {args.preset}, batch {args.batch}, encoder {args.enc_len}, decoder "
          f"{args.dec_len} ({tokens} tokens/step), AdamW, fp32")  # fmt: skip
    print(f"first-step loss: jax {jax_loss:.6f}  torch {torch_loss:.6f}")
    if abs(jax_loss - torch_loss) > 1e-3 * abs(torch_loss):
        raise SystemExit("losses differ: the two sides are not computing the same step")
    print(f"jax   : {1 / jax_s:7.2f} steps/s  {tokens / jax_s:10.0f} tokens/s  "
          f"(compile {compile_s:.1f} s, excluded)")  # fmt: skip
    print(f"torch : {1 / torch_s:7.2f} steps/s  {tokens / torch_s:10.0f} tokens/s  (eager)")
    print(f"ratio jax/torch: {torch_s / jax_s:.2f}x")


if __name__ == "__main__":
    main()
