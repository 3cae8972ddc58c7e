"""A FAISS vector index of unit embeddings on disk, with its id -> record table beside it.

Layout of an index directory (written by `codet5p index`, read by `codet5p search` and RAG):

    manifest.json            kind, search parameters, dim, count, the embedding checkpoint's
                             fingerprint, code length, and the sha256 of every indexed source;
                             names the current generation's files
    index-<g>.faiss          the FAISS index (`faiss.serialize_index`); row i is record i
    records-<g>.jsonl        one record per row: id, code, text, language, path, hash

An update writes generation g+1's index and records atomically, then the manifest atomically,
then removes generation g: a crash at any point leaves a manifest naming complete files.

Index kinds (all inner product; the vectors are unit norm, so the score is the cosine):

* `flat` (default, `IndexFlatIP`): exact; O(N d) per query; no training; 4 d bytes per row.
* `ivf` (`IndexIVFFlat`): visits `nprobe` of `nlist` k-means cells, so ~nprobe/nlist of flat's
  work; recall < 1, rising with `nprobe`; the centroids are trained on the first build (>= nlist
  rows, ideally 39 per cell); same memory as flat.
* `hnsw` (`IndexHNSWFlat`): a graph walk, ~log N per query; recall < 1, rising with
  `ef_search`; slow inserts and 8 M extra bytes (graph links) per row; no training.

`flat` is right up to a few hundred thousand functions (a 100k x 256 search is a few ms per query
on one core, see benchmarks/vector_index.py); `ivf` and `hnsw` trade recall for latency on
larger corpora. IVF centroids are trained once, on the first build's vectors: appending data of a
different distribution later degrades recall (rebuild with `--rebuild`).
"""

import dataclasses
import json
import pathlib

import numpy as np

from codet5p_jax import atomic_files

FORMAT_VERSION = 1
KINDS = ("flat", "ivf", "hnsw")
MANIFEST = "manifest.json"
DEFAULT_NPROBE = 16
DEFAULT_EF_SEARCH = 64
DEFAULT_HNSW_M = 32


class VectorIndexError(ValueError):
    """A missing, inconsistent or mismatched index directory (message names the file / field)."""


def default_nlist(num_vectors: int) -> int:
    """IVF cells: ~4 sqrt(N) (FAISS's guideline), at least 1 and at most N / 39 (so k-means
    has the 39 points per centroid FAISS asks for)."""
    return int(max(1, min(4 * np.sqrt(num_vectors), num_vectors // 39)))


def new_faiss_index(kind: str, dim: int, *, nlist: int = 0, hnsw_m: int = DEFAULT_HNSW_M):
    """An empty inner-product FAISS index of `kind` (`ivf` still needs `train`)."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        if nlist < 1:
            raise VectorIndexError(f"an ivf index needs nlist >= 1, got {nlist}")
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        return faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
    raise VectorIndexError(f"unknown index kind {kind!r}; expected one of {KINDS}")


def set_search_params(index, kind: str, *, nprobe: int | None = None, ef_search: int | None = None):
    """Applies the approximate kinds' search-time knobs (ignored by `flat`)."""
    if kind == "ivf":
        index.nprobe = int(nprobe or DEFAULT_NPROBE)
    elif kind == "hnsw":
        index.hnsw.efSearch = int(ef_search or DEFAULT_EF_SEARCH)


def add_vectors(index, kind: str, vectors: np.ndarray, *, train: bool) -> None:
    """Adds `[n, d]` float32 rows (trains an untrained IVF on them first)."""
    vectors = np.ascontiguousarray(vectors, np.float32)
    if kind == "ivf" and train and not index.is_trained:
        if vectors.shape[0] < index.nlist:
            raise VectorIndexError(
                f"an ivf index with nlist={index.nlist} needs at least that many vectors to "
                f"train, got {vectors.shape[0]}; use --nlist {max(1, vectors.shape[0] // 39)} "
                "or --kind flat"
            )
        index.train(vectors)
    index.add(vectors)


@dataclasses.dataclass
class VectorIndex:
    """A loaded index directory.

    Attributes:
      directory: The index directory.
      manifest: The parsed `manifest.json`.
      index: The FAISS index (row i = `records[i]`).
      records: The id -> record table.
    """

    directory: pathlib.Path
    manifest: dict
    index: object
    records: list[dict]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def hashes(self) -> set[str]:
        """Code hashes of every indexed record (re-indexing skips these)."""
        return {r["hash"] for r in self.records}

    def search(
        self, query_vecs, k: int, *, nprobe: int | None = None, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`([Q, k'] scores, [Q, k'] ids)`, best first, `k' = min(k, rows)`; an approximate index
        may still leave ids -1 (score -inf) where it found fewer candidates.

        Raises:
          VectorIndexError: `k` < 1 or the query dimension differs from the index's.
        """
        if k < 1:
            raise VectorIndexError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(np.atleast_2d(query_vecs), np.float32)
        if q.shape[1] != self.manifest["dim"]:
            raise VectorIndexError(
                f"query vectors have dimension {q.shape[1]}, the index at {self.directory} "
                f"has {self.manifest['dim']}"
            )
        params = self.manifest.get("search", {})
        set_search_params(
            self.index,
            self.kind,
            nprobe=nprobe or params.get("nprobe"),
            ef_search=ef_search or params.get("ef_search"),
        )
        scores, ids = self.index.search(q, min(k, max(self.index.ntotal, 1)))
        scores = np.where(ids < 0, -np.inf, scores)
        return scores, ids.astype(np.int64)


def read_manifest(directory) -> dict | None:
    """The manifest of `directory`, or None when no index was written there yet."""
    path = pathlib.Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise VectorIndexError(f"{path}: not valid JSON ({e.msg})") from e
    if manifest.get("format") != FORMAT_VERSION:
        raise VectorIndexError(
            f"{path}: format {manifest.get('format')!r}, expected {FORMAT_VERSION}"
        )
    return manifest


def load(directory) -> VectorIndex:
    """Loads an index directory written by `save`.

    Raises:
      FileNotFoundError: No index at `directory`.
      VectorIndexError: A manifest naming missing files, or counts that disagree.
    """
    import faiss

    directory = pathlib.Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise FileNotFoundError(f"no index at {directory} (no {MANIFEST}; build one with "
                                "`codet5p index`)")  # fmt: skip
    paths = {k: directory / manifest[k] for k in ("index_file", "records_file")}
    for key, path in paths.items():
        if not path.is_file():
            raise VectorIndexError(f"{directory / MANIFEST}: {key} {path.name} is missing")
    index = faiss.deserialize_index(np.fromfile(paths["index_file"], np.uint8))
    with open(paths["records_file"], encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not index.ntotal == len(records) == manifest["count"]:
        raise VectorIndexError(
            f"{directory}: the index holds {index.ntotal} vectors, the records file "
            f"{len(records)} and the manifest says {manifest['count']}"
        )
    return VectorIndex(directory, manifest, index, records)


def save(directory, index, records: list[dict], manifest: dict) -> dict:
    """Writes generation g+1 of `directory` (index, records, then manifest; see the module
    docstring) and removes generation g. Returns the manifest written."""
    import faiss

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    old = read_manifest(directory)
    generation = (old or {}).get("generation", 0) + 1
    manifest = dict(
        manifest,
        format=FORMAT_VERSION,
        generation=generation,
        index_file=f"index-{generation:05d}.faiss",
        records_file=f"records-{generation:05d}.jsonl",
        count=len(records),
    )
    with atomic_files.atomic_file(directory / manifest["index_file"], "wb") as f:
        f.write(faiss.serialize_index(index).tobytes())
    with atomic_files.atomic_file(directory / manifest["records_file"]) as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    atomic_files.write_text(directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    if old is not None:  # only once the new manifest is in place
        for key in ("index_file", "records_file"):
            (directory / old[key]).unlink(missing_ok=True)
    return manifest
