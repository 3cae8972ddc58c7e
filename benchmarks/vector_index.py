"""Vector-index throughput and latency: exact and approximate FAISS indexes vs NumPy brute force.

On `--n` synthetic unit vectors (dimension `--dim`, default 100,000 x 256, the 110m-embedding
model's size; low intrinsic dimension as learned embeddings, see `synthetic`) and `--queries`
held-out query vectors, measured in one process:

* **indexing throughput** (vectors/s): `flat` add, `ivf` k-means training + add, `hnsw` add;
* **query latency** (ms per query at k = 10, one query at a time, one thread as a CLI search
  runs; and batched, all threads) for each kind, and for the baseline: a NumPy `q @ X.T` +
  `argpartition` top-10 (what an exact score matrix does);
* **recall@10** of each approximate kind against the exact `flat` result, at the default
  search knob (`--nprobe` 16, `--ef-search` 64) and at 4x it.

With `--model` (an embedding checkpoint) it also reports embedding throughput (functions/s) of
`indexing.embed_sharded` over all local devices, against `retrieval.embed_in_batches` on one
device, on `--embed-n` synthetic functions.

Usage:
  .venv/bin/python benchmarks/vector_index.py [--n 100000] [--dim 256] [--queries 200]
"""

import argparse
import json
import os
import pathlib
import time

import numpy as np


def synthetic(n: int, dim: int, seed: int, latent: int = 32) -> np.ndarray:
    """Unit vectors with a low intrinsic dimension, as learned embeddings have: a fixed random
    projection (seeded once) of `latent`-d Gaussian points plus 10 % isotropic noise. (Pure
    isotropic noise would make every neighbour nearly equidistant, which no real index sees.)"""
    proj = np.random.default_rng(1234).standard_normal((latent, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, latent), np.float32) @ proj
    x = z + 0.1 * np.sqrt(latent) * rng.standard_normal((n, dim), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latency_ms(search, queries: np.ndarray) -> float:
    start = time.perf_counter()
    for q in queries:
        search(q[None])
    return 1e3 * (time.perf_counter() - start) / len(queries)


def numpy_top10(base: np.ndarray):
    def search(q):
        scores = q @ base.T
        top = np.argpartition(-scores, 10, axis=1)[:, :10]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        return np.take_along_axis(top, order, 1)

    return search


def recall(ids: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact, strict=True)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--model", default=None, help="embedding checkpoint (embedding throughput)")
    p.add_argument("--embed-n", type=int, default=512)
    args = p.parse_args()
    import faiss

    from codet5p_jax.evaluation import vector_index as V

    base = synthetic(args.n, args.dim, 0)
    queries = synthetic(args.queries, args.dim, 1)
    result = {
        "n": args.n,
        "dim": args.dim,
        "loadavg": pathlib.Path("/proc/loadavg").read_text().split()[:3],
    }
    np_search = numpy_top10(base)
    result["numpy_ms_per_query"] = latency_ms(np_search, queries)
    exact = None
    for kind in V.KINDS:
        index = V.new_faiss_index(kind, args.dim, nlist=V.default_nlist(args.n))
        start = time.perf_counter()
        V.add_vectors(index, kind, base, train=True)
        build = time.perf_counter() - start
        V.set_search_params(index, kind, nprobe=args.nprobe, ef_search=args.ef_search)
        faiss.omp_set_num_threads(1)
        ms = latency_ms(lambda q, index=index: index.search(q, 10), queries)
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        start = time.perf_counter()
        _, ids = index.search(queries, 10)
        batched = 1e3 * (time.perf_counter() - start) / len(queries)
        row = {"index_vectors_per_s": args.n / build, "ms_per_query_1thread": ms,
               "ms_per_query_batched": batched,
               "speedup_vs_numpy": result["numpy_ms_per_query"] / ms}  # fmt: skip
        if kind == "flat":
            exact = ids
            row["top10_equals_numpy"] = bool(
                np.array_equal(np.sort(ids, 1), np.sort(np_search(queries), 1))
            )
        else:
            row["recall@10"] = recall(ids, exact)
            V.set_search_params(index, kind, nprobe=4 * args.nprobe, ef_search=4 * args.ef_search)
            faiss.omp_set_num_threads(1)
            row["ms_per_query_1thread_4x_knob"] = latency_ms(
                lambda q, index=index: index.search(q, 10), queries
            )
            faiss.omp_set_num_threads(os.cpu_count() or 1)
            row["recall@10_4x_knob"] = recall(index.search(queries, 10)[1], exact)
        result[kind] = row
    if args.model:
        result["embedding"] = embedding_throughput(args.model, args.embed_n)
    result["loadavg_after"] = pathlib.Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=1))


def embedding_throughput(model: str, n: int) -> dict:
    import jax

    from codet5p_jax.evaluation import indexing, retrieval

    pretrained, _ = indexing.load_embedder(model)
    ids = np.random.default_rng(0).integers(5, 32000, (n, retrieval.CODE_LENGTH)).astype(np.int32)
    out = {"devices": jax.local_device_count(), "functions": n}
    for name, fn in (
        ("one_device", lambda: retrieval.embed_in_batches(pretrained.embed, ids, 64)),
        (
            "all_devices",
            lambda: indexing.embed_sharded(pretrained, ids, batch_size=64, progress=False),
        ),
    ):
        fn()  # compile
        start = time.perf_counter()
        fn()
        out[f"{name}_functions_per_s"] = n / (time.perf_counter() - start)
    out["ratio"] = out["all_devices_functions_per_s"] / out["one_device_functions_per_s"]
    return out


if __name__ == "__main__":
    main()
