"""`codet5p index` / `codet5p search`: FAISS search equals the NumPy score matrix, re-indexing is
skipped by content hash, appending embeds only new functions, and writes are all-or-nothing.

The reference is independent of the indexing path: code vectors recomputed with one unsharded
`model.apply(..., method=model.embed)` call per corpus, scored as a `[Q, N]` NumPy matrix. The
embedding model is a tiny random one (retrieval quality is irrelevant to the equality checked);
the corpora are the bundled stdlib pairs (held-out split) and every CodeSearchNet sample language.
"""

import json
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import loading
from codet5p_jax.cli import index as index_cli
from codet5p_jax.cli import search as search_cli
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation import index_records, indexing, retrieval, vector_index
from codet5p_jax.models import build_model, init_params

CSN_LANGUAGES = ("go", "java", "javascript", "php", "python", "ruby")
CODE_LENGTH = 128  # shorter than the default 360 to keep the tiny CPU runs fast


@pytest.fixture(scope="module")
def embedder_dir(tmp_path_factory, codet5_tokenizer_dir):
    cfg = get_preset("tiny-bimodal").replace(kind="embedding", num_decoder_layers=0)
    params = jax.device_get(nn.unbox(init_params(cfg, jax.random.PRNGKey(0))))
    path = tmp_path_factory.mktemp("embedder") / "model"
    loading.save(path, cfg, params, "hf")
    for f in codet5_tokenizer_dir.iterdir():  # the checkpoint carries its tokenizer
        shutil.copy(f, path / f.name)
    return path, cfg, params


@pytest.fixture(scope="module")
def embedder(embedder_dir):
    return indexing.load_embedder(embedder_dir[0])


def _reference_vectors(embedder_dir, texts, length):
    from tasks.vocabularies import CodeT5Vocabulary

    path, cfg, params = embedder_dir
    model = build_model(cfg)
    ids = retrieval.to_token_ids(texts, CodeT5Vocabulary(path).encode, length)
    return np.asarray(model.apply({"params": params}, ids, method=model.embed))


def _csn_file(shared_dir, language):
    root = shared_dir / "reference/datasets/codesearchnet" / language
    name = "csn_codexglue_hf_dummy.jsonl" if language == "python" else (
        "gencodesearchnet_mrr_test_sample_cbt.jsonl")  # fmt: skip
    return root / name


def _check_exact_search(embedder_dir, embedder, tmp_path, source):
    report = indexing.index_corpus(
        tmp_path / "idx", [source], embedder_dir[0], code_length=CODE_LENGTH, progress=False,
        embedder=embedder,
    )  # fmt: skip
    idx = vector_index.load(tmp_path / "idx")
    assert report.added == idx.index.ntotal == len(idx.records) >= 9
    queries = [r["text"] for r in idx.records if r["text"]]
    code_vecs = _reference_vectors(embedder_dir, [r["code"] for r in idx.records], CODE_LENGTH)
    query_vecs = _reference_vectors(embedder_dir, queries, retrieval.TEXT_LENGTH)
    scores = query_vecs @ code_vecs.T  # the NumPy score matrix
    got_scores, got_ids = idx.search(query_vecs, 10)
    np.testing.assert_array_equal(got_ids[:, 0], scores.argmax(axis=1))
    assert got_ids.shape == (len(queries), min(10, len(idx.records)))
    np.testing.assert_allclose(got_scores, -np.sort(-scores, axis=1)[:, :10], atol=1e-5)
    return idx, query_vecs, scores


@pytest.mark.parametrize("language", CSN_LANGUAGES)
def test_exact_search_top1_equals_numpy_argmax_csn(
    embedder_dir, embedder, tmp_path, shared_dir, language
):
    _check_exact_search(embedder_dir, embedder, tmp_path, str(_csn_file(shared_dir, language)))


def test_exact_search_top1_equals_numpy_argmax_stdlib(embedder_dir, embedder, tmp_path):
    idx, _, _ = _check_exact_search(embedder_dir, embedder, tmp_path, "stdlib:validation")
    assert all(r["path"].startswith("stdlib:validation:") for r in idx.records)


def test_sharded_embedding_equals_unsharded(embedder_dir, embedder, shared_dir):
    assert jax.local_device_count() == 8  # tests/conftest.py's fake devices: a real split
    records = index_records.read_file_records(_csn_file(shared_dir, "go"))[:13]
    codes = [r["code"] for r in records]
    pretrained, vocab = embedder
    ids = retrieval.to_token_ids(codes, vocab.encode, CODE_LENGTH)
    got = indexing.embed_sharded(pretrained, ids, batch_size=4, progress=False)  # pads 13 -> 16
    np.testing.assert_allclose(got, _reference_vectors(embedder_dir, codes, CODE_LENGTH),
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_approximate_indexes_recall(embedder_dir, embedder, tmp_path, shared_dir):
    sources = [str(_csn_file(shared_dir, lang)) for lang in ("go", "java", "php", "ruby")]
    exact = {}
    recalls = {}
    for kind, extra in (("flat", {}), ("ivf", {"nlist": 4}), ("hnsw", {"hnsw_m": 8})):
        indexing.index_corpus(tmp_path / kind, sources, embedder_dir[0], kind=kind,
                              code_length=CODE_LENGTH, progress=False, embedder=embedder,
                              **extra)  # fmt: skip
        idx = vector_index.load(tmp_path / kind)
        queries = _reference_vectors(embedder_dir, [r["text"] for r in idx.records][:200], 64)
        exact.setdefault("q", queries)
        _, ids = idx.search(exact["q"], 10, nprobe=1)  # ivf: one of 4 cells
        if kind == "flat":
            exact["ids"] = ids
            continue
        recalls[kind] = np.mean(
            [len(set(a) & set(b)) / 10 for a, b in zip(ids, exact["ids"], strict=True)]
        )
        if kind == "ivf":  # visiting every cell is an exhaustive search
            _, all_cells = idx.search(exact["q"], 10, nprobe=4)
            np.testing.assert_array_equal(np.sort(all_cells, 1), np.sort(exact["ids"], 1))
    print("recall@10 vs exact:", recalls)
    assert recalls["hnsw"] >= 0.9 and 0.2 < recalls["ivf"] < 1.0


def test_reindex_is_skipped_and_append_adds_only_new(
    embedder_dir, embedder, tmp_path, shared_dir, monkeypatch
):
    go, ruby = str(_csn_file(shared_dir, "go")), str(_csn_file(shared_dir, "ruby"))
    embedded = []
    real = indexing.embed_sharded

    def counting(pretrained, ids, **kw):
        embedded.append(ids.shape[0])
        return real(pretrained, ids, **kw)

    monkeypatch.setattr(indexing, "embed_sharded", counting)
    kw = dict(code_length=CODE_LENGTH, progress=False, embedder=embedder)
    first = indexing.index_corpus(tmp_path / "idx", [go], embedder_dir[0], **kw)
    manifest = json.loads((tmp_path / "idx/manifest.json").read_text())
    again = indexing.index_corpus(tmp_path / "idx", [go], embedder_dir[0], **kw)
    assert (again.added, again.skipped_sources) == (0, (go,))
    assert json.loads((tmp_path / "idx/manifest.json").read_text()) == manifest  # untouched
    # A copy of the file with three new records appended: only those are embedded.
    extra = tmp_path / "go_more.jsonl"
    lines = _csn_file(shared_dir, "go").read_text().splitlines()
    new_rows = [json.loads(x) for x in _csn_file(shared_dir, "ruby").read_text().splitlines()[:3]]
    extra.write_text("\n".join(lines + [json.dumps(r) for r in new_rows]) + "\n")
    more = indexing.index_corpus(tmp_path / "idx", [go, extra], embedder_dir[0], **kw)
    assert (more.added, more.duplicates) == (3, first.added)
    assert embedded == [first.added, 3]
    idx = vector_index.load(tmp_path / "idx")
    assert idx.index.ntotal == first.added + 3 and [r["id"] for r in idx.records] == list(
        range(first.added + 3)
    )
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "index-00002.faiss", "manifest.json", "records-00002.jsonl"]  # fmt: skip
    # The appended rows' vectors are the model's vectors of their code.
    want = _reference_vectors(embedder_dir, [r["code"] for r in idx.records[-3:]], CODE_LENGTH)
    np.testing.assert_allclose(idx.index.reconstruct_n(first.added, 3), want, atol=1e-5)
    del ruby


def test_other_checkpoint_or_kind_is_refused(embedder_dir, embedder, tmp_path, shared_dir):
    go = str(_csn_file(shared_dir, "go"))
    kw = dict(code_length=CODE_LENGTH, progress=False)
    indexing.index_corpus(tmp_path / "idx", [go], embedder_dir[0], embedder=embedder, **kw)
    pretrained, vocab = embedder
    other = type(pretrained)(
        pretrained.config, jax.tree.map(lambda x: x * 1.01, pretrained.params),
        pretrained.tokenizer_dir,
    )  # fmt: skip
    with pytest.raises(vector_index.VectorIndexError, match="pass --rebuild"):
        indexing.index_corpus(tmp_path / "idx", [go], "other", embedder=(other, vocab), **kw)
    with pytest.raises(vector_index.VectorIndexError, match="is a 'flat' index, not 'hnsw'"):
        indexing.index_corpus(tmp_path / "idx", [go], "m", kind="hnsw", embedder=embedder, **kw)
    rebuilt = indexing.index_corpus(
        tmp_path / "idx", [go], "other", embedder=(other, vocab), rebuild=True, **kw
    )
    assert rebuilt.rebuilt and rebuilt.added == 100


def test_failed_update_keeps_the_previous_index(
    embedder_dir, embedder, tmp_path, shared_dir, monkeypatch
):
    go, ruby = str(_csn_file(shared_dir, "go")), str(_csn_file(shared_dir, "ruby"))
    kw = dict(code_length=CODE_LENGTH, progress=False, embedder=embedder)
    indexing.index_corpus(tmp_path / "idx", [go], embedder_dir[0], **kw)
    before = sorted(p.name for p in (tmp_path / "idx").iterdir())

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(vector_index.atomic_files, "write_text", broken)  # the manifest write
    with pytest.raises(OSError, match="disk full"):
        indexing.index_corpus(tmp_path / "idx", [ruby], embedder_dir[0], **kw)
    monkeypatch.undo()
    idx = vector_index.load(tmp_path / "idx")  # still generation 1, complete
    assert idx.manifest["generation"] == 1 and idx.index.ntotal == 100
    leftovers = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert set(before) <= set(leftovers)  # generation-2 files may remain, never a torn manifest


def test_index_and_search_commands(embedder_dir, tmp_path, shared_dir, capsys):
    model, idx = str(embedder_dir[0]), str(tmp_path / "idx")
    go = str(_csn_file(shared_dir, "go"))
    argv = ["--model", model, "--corpus", go, "--index", idx, "--code-length", "128",
            "--no-progress"]  # fmt: skip
    assert index_cli.main(argv) == 0
    assert "added 100" in capsys.readouterr().out
    assert index_cli.main(argv) == 0
    assert "added 0" in capsys.readouterr().out and "1 unchanged source(s) skipped"
    query = index_records.read_file_records(go)[7]["text"]
    assert search_cli.main(["--index", idx, "--query", query, "-k", "3", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["score"] >= rows[1]["score"] >= rows[2]["score"]
    qv = _reference_vectors(embedder_dir, [query], 64)
    codes = [r["code"] for r in vector_index.load(idx).records]
    best = int((qv @ _reference_vectors(embedder_dir, codes, 128).T).argmax())
    assert rows[0]["id"] == best
    assert search_cli.main(["--index", idx, "--query", query, "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("query: ") and "  1  " in out and "id " in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--corpus", "missing/file.jsonl"], "corpus file not found: missing/file.jsonl"),
        (["--corpus", "nosuchcorpus"], "unknown corpus 'nosuchcorpus'"),
        (["--corpus", "stdlib:test"], "has splits ('train', 'validation'), not 'test'"),
        (["--kind", "hnsw", "--hnsw-m", "0", "--corpus", "x.jsonl"], "--hnsw-m must be >= 1"),
    ],
)
def test_index_command_bad_inputs(embedder_dir, tmp_path, capsys, argv, message):
    rc = index_cli.main(["--model", str(embedder_dir[0]), "--index", str(tmp_path / "i"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "i" / "manifest.json").exists()


def test_index_bad_record_and_search_bad_inputs(embedder_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"code": "x = 1"}\n{"text": "no code here"}\n')
    rc = index_cli.main(["--model", str(embedder_dir[0]), "--index", str(tmp_path / "i"),
                         "--corpus", str(bad)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "bad.jsonl:2: no code" in err
    assert search_cli.main(["--index", str(tmp_path / "none"), "--query", "x"]) == 2
    assert "no index at" in capsys.readouterr().err
    assert search_cli.main(["--index", str(tmp_path / "none"), "--query", "x", "-k", "0"]) == 2
    assert "-k must be >= 1" in capsys.readouterr().err


def test_index_a_source_directory_in_nine_languages(embedder_dir, embedder, tmp_path):
    import pathlib

    fixtures = pathlib.Path(__file__).parents[1] / "tasks/fixtures/function_pairs"
    kw = dict(code_length=CODE_LENGTH, progress=False, embedder=embedder)
    report = indexing.index_corpus(tmp_path / "idx", [str(fixtures)], embedder_dir[0], **kw)
    records = vector_index.load(tmp_path / "idx").records
    # 25 documented functions: the hand counts of tests/tasks/test_function_pairs.py
    assert report.added == len(records) == 25
    assert {r["language"] for r in records} == {
        "python", "java", "javascript", "go", "php", "ruby", "c", "cpp", "c_sharp"}  # fmt: skip
    again = indexing.index_corpus(tmp_path / "idx", [str(fixtures)], embedder_dir[0], **kw)
    assert again.added == 0 and again.skipped_sources == (str(fixtures),)
