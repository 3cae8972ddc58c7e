"""`codet5p index`'s library: embed code corpora over all local devices into a vector index.

`index_corpus(index_dir, sources, model)`:

1. loads the embedding-capable checkpoint (110m-embedding, 220m-bimodal, a stage-2 run, ...)
   and fingerprints it (sha256 of its config, every parameter and the tokenizer files);
2. reads each source (`index_records.read_source`); a source whose content hash the manifest
   already holds is skipped unread-again, and any record whose code hash is already indexed is
   not embedded again, so appending a new file embeds only its new functions;
3. tokenises the code as `<s> code </s>` (360 tokens, the CodeT5+ retrieval scripts' length),
   embeds it in batches split over every local device (`jax.local_devices()`, one `data` mesh
   axis, params replicated) with a progress bar, adds the rows and writes the next generation.

An index built with one checkpoint cannot be extended with another (the vectors would live in
different spaces): that is an error naming both fingerprints, unless `rebuild=True`.
"""

import dataclasses
import hashlib
import json
import logging
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from codet5p_jax.evaluation import index_records, retrieval, vector_index

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "codet5-vocab.json",
                   "codet5-merges.txt", "added_tokens.json", "special_tokens_map.json")  # fmt: skip
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class IndexReport:
    """What one `index_corpus` call did.

    Attributes:
      added: Records embedded and added.
      duplicates: Records not added because their code hash was already indexed.
      skipped_sources: Sources whose content hash was already indexed (not read again).
      total: Rows in the index afterwards.
      rebuilt: The index was built from scratch.
    """

    added: int
    duplicates: int
    skipped_sources: tuple[str, ...]
    total: int
    rebuilt: bool


def model_fingerprint(config, params, tokenizer_dir, code_length: int) -> str:
    """sha256 over the config, every parameter (sorted paths), the tokenizer files and the code
    length: what makes two indexes' vectors comparable."""
    import jax

    from codet5p_jax import families

    digest = hashlib.sha256(json.dumps(families.config_to_dict(config), sort_keys=True).encode())
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda x: str(x[0])):
        digest.update(str(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            path = pathlib.Path(tokenizer_dir) / name
            if path.is_file():
                digest.update(name.encode() + path.read_bytes())
    digest.update(f"code_length={code_length}".encode())
    return digest.hexdigest()


def embed_sharded(
    pretrained, token_ids: np.ndarray, *, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """`[N, L]` ids -> `[N, E]` unit vectors, each batch split over all local devices.

    The batch is rounded up to a multiple of the device count; the last batch is padded with
    pad rows (one compilation) that are dropped from the result.
    """
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from tqdm import tqdm

    devices = jax.local_devices()
    mesh = Mesh(np.asarray(devices, dtype=object), ("data",))
    rows, replicated = (
        NamedSharding(mesh, PartitionSpec("data")),
        NamedSharding(mesh, PartitionSpec()),
    )
    batch = math.ceil(batch_size / len(devices)) * len(devices)
    model = pretrained.model
    params = jax.device_put(pretrained.params, replicated)
    embed = jax.jit(
        lambda p, ids: model.apply({"params": p}, ids, method=model.embed), out_shardings=rows
    )
    out = []
    n = token_ids.shape[0]
    with tqdm(total=n, unit="fn", desc="embedding", disable=not progress) as bar:
        for start in range(0, n, batch):
            chunk = token_ids[start : start + batch]
            real = chunk.shape[0]
            if real < batch:
                pad = np.zeros((batch - real, chunk.shape[1]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            vecs = embed(params, jax.device_put(chunk, rows))
            out.append(np.asarray(jax.device_get(vecs))[:real])
            bar.update(real)
    if not out:
        return np.zeros((0, pretrained.config.embed_dim), np.float32)
    return np.concatenate(out).astype(np.float32)


def load_embedder(model, tokenizer=None):
    """`(Pretrained, vocabulary)` of an embedding-capable checkpoint.

    Raises:
      ValueError: The checkpoint has no embedding head (a plain 220m / 770m generator).
    """
    from codet5p_jax import from_pretrained
    from tasks.vocabularies import CodeT5Vocabulary

    pretrained = from_pretrained(model)
    if not pretrained.config.embed_dim:
        raise ValueError(
            f"{model}: a {pretrained.config.kind!r} checkpoint has no embedding head; index "
            "with an embedding or bimodal model (codet5p-110m-embedding, codet5p-220m-bimodal, "
            "a stage-2 run)"
        )
    return pretrained, CodeT5Vocabulary(tokenizer or pretrained.tokenizer_dir)


def embed_queries(pretrained, vocabulary, queries: Sequence[str], *, batch_size: int = 64):
    """`[Q, E]` unit vectors of natural-language queries (`<s> text </s>`, 64 tokens)."""
    ids = retrieval.to_token_ids(list(queries), vocabulary.encode, retrieval.TEXT_LENGTH)
    return embed_sharded(pretrained, ids, batch_size=batch_size, progress=False)


def index_corpus(
    index_dir,
    sources: Sequence[str],
    model,
    *,
    kind: str = "flat",
    tokenizer=None,
    code_length: int = retrieval.CODE_LENGTH,
    batch_size: int = 64,
    nlist: int | None = None,
    hnsw_m: int = vector_index.DEFAULT_HNSW_M,
    nprobe: int = vector_index.DEFAULT_NPROBE,
    ef_search: int = vector_index.DEFAULT_EF_SEARCH,
    rebuild: bool = False,
    progress: bool = True,
    embedder=None,
) -> IndexReport:
    """Builds or extends the index at `index_dir` (see the module docstring).

    Args:
      index_dir: Index directory (created if missing).
      sources: JSONL/JSON files and/or registered corpora `NAME[:SPLIT]`.
      model: Embedding-capable checkpoint path (HF dir, orbax dir, MODEL_DIR).
      kind: `flat`, `ivf` or `hnsw` (`vector_index`); fixed once the index exists.
      tokenizer: Tokenizer directory (default: the checkpoint's).
      code_length: Code tokens per function, `<s>` and `</s>` included.
      batch_size: Rows per step over all devices.
      nlist: IVF cells (default `vector_index.default_nlist(N)` of the first build).
      hnsw_m: HNSW graph degree.
      nprobe / ef_search: Default search-time knobs stored in the manifest.
      rebuild: Discard an existing index instead of extending it.
      progress: Show a progress bar.
      embedder: A `(Pretrained, vocabulary)` already loaded from `model` (tests, RAG).

    Raises:
      VectorIndexError: A different checkpoint, kind or code length than the existing index's.
      FileNotFoundError / RecordError: An unreadable source.
    """
    if kind not in vector_index.KINDS:
        raise vector_index.VectorIndexError(f"unknown index kind {kind!r}; expected one of "
                                            f"{vector_index.KINDS}")  # fmt: skip
    if not sources:
        raise ValueError("no corpus to index (pass --corpus FILE_OR_NAME)")
    index_dir = pathlib.Path(index_dir)
    pretrained, vocabulary = embedder or load_embedder(model, tokenizer)
    fingerprint = model_fingerprint(
        pretrained.config, pretrained.params, tokenizer or pretrained.tokenizer_dir, code_length
    )
    existing = None if rebuild else vector_index.read_manifest(index_dir)
    if existing is not None:
        if existing["model"]["fingerprint"] != fingerprint:
            raise vector_index.VectorIndexError(
                f"{index_dir} was built with checkpoint {existing['model']['path']} "
                f"(fingerprint {existing['model']['fingerprint'][:12]}), not {model} "
                f"({fingerprint[:12]}); pass --rebuild to re-embed everything with it"
            )
        if existing["kind"] != kind:
            raise vector_index.VectorIndexError(
                f"{index_dir} is a {existing['kind']!r} index, not {kind!r}; pass --rebuild"
            )
        loaded = vector_index.load(index_dir)
        index, records, seen = loaded.index, list(loaded.records), loaded.hashes()
        indexed_sources = dict(existing["sources"])
    else:
        index, records, seen, indexed_sources = None, [], set(), {}

    new, skipped, duplicates = [], [], 0
    for source in sources:
        key, source_records, digest = index_records.read_source(source)
        if indexed_sources.get(key) == digest:
            skipped.append(source)
            continue
        for record in source_records:
            h = index_records.code_hash(record["code"])
            if h in seen:
                duplicates += 1
                continue
            seen.add(h)
            new.append(dict(record, hash=h, source=key))
        indexed_sources[key] = digest
    if existing is not None and not new:
        log.info("index %s is up to date (%d rows)", index_dir, len(records))
        if indexed_sources != existing["sources"]:  # a source whose records were all known
            vector_index.save(index_dir, index, records, dict(existing, sources=indexed_sources))
        return IndexReport(0, duplicates, tuple(skipped), len(records), False)
    if existing is None and not new:
        raise ValueError(f"nothing to index in {list(sources)}")

    ids = retrieval.to_token_ids([r["code"] for r in new], vocabulary.encode, code_length)
    vectors = embed_sharded(pretrained, ids, batch_size=batch_size, progress=progress)
    if index is None:
        nlist = nlist or vector_index.default_nlist(len(new))
        index = vector_index.new_faiss_index(kind, vectors.shape[1], nlist=nlist, hnsw_m=hnsw_m)
    vector_index.add_vectors(index, kind, vectors, train=existing is None)
    for i, record in enumerate(new, start=len(records)):
        records.append({"id": i, **record})
    manifest = {
        "kind": kind,
        "dim": int(vectors.shape[1]),
        "params": {"nlist": nlist, "hnsw_m": hnsw_m} if existing is None else existing["params"],
        "search": {"nprobe": nprobe, "ef_search": ef_search},
        "model": {"path": str(model), "fingerprint": fingerprint},
        "code_length": code_length,
        "sources": indexed_sources,
    }
    vector_index.save(index_dir, index, records, manifest)
    return IndexReport(len(new), duplicates, tuple(skipped), len(records), existing is None)
