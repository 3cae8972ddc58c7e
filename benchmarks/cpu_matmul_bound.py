"""What bounds greedy decoding on a CPU: float32 matmul and weight-streaming rates, JAX vs torch.

Three measurements, each side in the same process on the same arrays:

1. one `[1024, 768] x [768, 3072]` product (an encoder MLP matmul at batch 8 x 128 tokens):
   GFLOP/s of jitted JAX and of torch;
2. a loop of 32 "decoding steps" made of just the matmuls of codet5p-220m's decoder at batch 8
   (12 layers of six `[8, 768] x [768, 768]`, one `x [768, 3072]`, one `x [3072, 768]`, then the
   `[8, 768] x [768, 32100]` output embedding and an argmax): ms per step and the weight bytes
   streamed per second, JAX inside one `fori_loop`, torch eager;
3. the machine's streaming rate: sum of a 512 MB float32 array (NumPy, JAX, torch).

    .venv/bin/python benchmarks/cpu_matmul_bound.py
    XLA_FLAGS=--xla_cpu_multi_thread_eigen=false .venv/bin/python benchmarks/cpu_matmul_bound.py
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from jax import lax

B, D, F, LAYERS, V, STEPS = 8, 768, 3072, 12, 32100, 32


def best_of(fn, repeats: int = 10) -> float:
    """Fastest wall time of `fn()` over `repeats` calls, after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1024, D), np.float32)
    b = rng.standard_normal((D, F), np.float32)
    flops = 2 * 1024 * D * F
    dot = jax.jit(jnp.dot)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    jax_s = best_of(lambda: dot(ja, jb).block_until_ready())
    torch_s = best_of(lambda: ta @ tb)
    print(
        f"[1024, 768] x [768, 3072]: JAX {flops / jax_s / 1e9:6.1f} GFLOP/s, "
        f"torch {flops / torch_s / 1e9:6.1f} GFLOP/s (JAX / torch {torch_s / jax_s:.2f}x)"
    )


def decoder_weights():
    rng = np.random.default_rng(1)
    shapes = [(D, D)] * 6 + [(D, F), (F, D)]
    layers = [[rng.standard_normal(s, np.float32) * 0.02 for s in shapes] for _ in range(LAYERS)]
    embedding = rng.standard_normal((V, D), np.float32) * 0.02
    return layers, embedding


def _layer(x, w, relu, matmul):
    for j in range(6):
        x = x + matmul(x, w[j]) * 0.01
    return x + matmul(relu(matmul(x, w[6])), w[7]) * 0.01


def matmul_steps():
    layers, embedding = decoder_weights()
    weight_bytes = sum(w.nbytes for ws in layers for w in ws) + embedding.nbytes

    @jax.jit
    def run(x, layers, embedding):
        def step(_, carry):
            x, total = carry
            h = x
            for w in layers:
                h = _layer(h, w, jax.nn.relu, jnp.dot)
            token = jnp.argmax(h @ embedding.T, -1)
            return x + token[:, None].astype(jnp.float32) * 1e-6, total + token

        return lax.fori_loop(0, STEPS, step, (x, jnp.zeros(B, jnp.int32)))

    jl, je = jax.tree.map(jnp.asarray, layers), jnp.asarray(embedding)
    x = jnp.ones((B, D), jnp.float32)
    jax_s = best_of(lambda: run(x, jl, je)[1].block_until_ready(), 5) / STEPS

    tl = [[torch.from_numpy(w) for w in ws] for ws in layers]
    te = torch.from_numpy(embedding)

    def torch_run():
        x = torch.ones(B, D)
        with torch.no_grad():
            for _ in range(STEPS):
                h = x
                for w in tl:
                    h = _layer(h, w, torch.relu, torch.matmul)
                token = torch.argmax(h @ te.T, -1)
                x = x + token[:, None] * 1e-6

    torch_s = best_of(torch_run, 5) / STEPS
    for name, s in (("JAX", jax_s), ("torch", torch_s)):
        print(
            f"decoder matmuls only, batch {B}: {name:5s} {s * 1e3:6.1f} ms/step, "
            f"{weight_bytes / s / 1e9:5.1f} GB/s of weights ({weight_bytes / 1e6:.0f} MB/step)"
        )


def streaming():
    a = np.ones(128 * 1024 * 1024, np.float32)
    ja, ta = jnp.asarray(a), torch.from_numpy(a)
    total = jax.jit(jnp.sum)
    for name, fn in (
        ("NumPy", a.sum),
        ("JAX", lambda: total(ja).block_until_ready()),
        ("torch", ta.sum),
    ):
        rate = a.nbytes / best_of(fn, 5) / 1e9
        print(f"sum of {a.nbytes / 1e6:.0f} MB: {name:5s} {rate:5.1f} GB/s")


def main():
    print(
        f"{os.cpu_count()} CPU cores, jax {jax.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    gemm()
    matmul_steps()
    streaming()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
