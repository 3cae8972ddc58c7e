"""Retrieval-augmented generation: the encoder-input format, the leakage guard (a planted exact
duplicate of the gold code is never retrieved), retrieval reaching the generator, offline
retrieval + the SeqIO task, and the `codet5p rag` gin run.

Models are tiny random ones saved as HF directories with the released CodeT5 tokenizer: what is
checked is plumbing with exact expectations (token ids built by hand, generation equal to a direct
`Pretrained.generate` on the same ids), not quality. The trained-model comparison of RAG with
no retrieval is `test_rag_tiny_trained_e2e` (slow).
"""

import json
import pathlib
import shutil

import flax.linen as nn
import jax
import numpy as np
import pytest

from codet5p_jax import from_pretrained, loading
from codet5p_jax.cli import rag as rag_cli
from codet5p_jax.cli import retrieve as retrieve_cli
from codet5p_jax.config import get_preset
from codet5p_jax.evaluation import index_records, indexing, rag
from codet5p_jax.models import init_params
from tasks import retrieval_augmented as ra

REPO = pathlib.Path(__file__).resolve().parents[2]
FUNCTIONS = [
    ("add two numbers", "def add(a, b):\n    return a + b"),
    ("multiply two numbers", "def mul(a, b):\n    return a * b"),
    ("reverse a string", "def rev(s):\n    return s[::-1]"),
    ("read a text file", "def read(p):\n    return open(p).read()"),
    ("square every item", "def squares(xs):\n    return [x * x for x in xs]"),
    ("join words with spaces", "def join(ws):\n    return ' '.join(ws)"),
    ("count the vowels", "def vowels(s):\n    return sum(c in 'aeiou' for c in s)"),
    ("largest of a list", "def largest(xs):\n    return max(xs)"),
    ("first item or none", "def first(xs):\n    return xs[0] if xs else None"),
    ("parse an integer", "def to_int(s):\n    return int(s.strip())"),
    ("upper case a name", "def shout(n):\n    return n.upper()"),
    ("drop empty strings", "def compact(xs):\n    return [x for x in xs if x]"),
]
GOLD = ("sum of squares of a list", "def sumsq(xs):\n    return sum(x * x for x in xs)")


def _save(tmp_path_factory, name, cfg, tokenizer_dir):
    params = jax.device_get(nn.unbox(init_params(cfg, jax.random.PRNGKey(0))))
    path = tmp_path_factory.mktemp(name) / "model"
    loading.save(path, cfg, params, "hf")
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, path / f.name)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, codet5_tokenizer_dir):
    embed_cfg = get_preset("tiny-bimodal").replace(kind="embedding", num_decoder_layers=0)
    embedder_dir = _save(tmp_path_factory, "emb", embed_cfg, codet5_tokenizer_dir)
    generator_dir = _save(tmp_path_factory, "gen", get_preset("tiny"), codet5_tokenizer_dir)
    root = tmp_path_factory.mktemp("data")
    corpus, planted = root / "corpus.jsonl", root / "planted.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "code": c}) + "\n" for t, c in FUNCTIONS))
    # The planted exact duplicate of the gold code: another file, another path, re-indented.
    copy = GOLD[1].replace("    ", "        ")
    planted.write_text(json.dumps({"text": "helper", "code": copy, "path": "vendored.py"}) + "\n")
    embedder = indexing.load_embedder(embedder_dir)
    indexing.index_corpus(root / "idx", [str(corpus), str(planted)], embedder_dir, progress=False,
                          embedder=embedder)  # fmt: skip
    retriever = rag.Retriever.open(root / "idx", embedder=embedder)
    planted_id = next(r["id"] for r in retriever.index.records if r["path"] == "vendored.py")
    return dict(root=root, idx=root / "idx", generator=generator_dir, retriever=retriever,
                planted_id=planted_id, embedder=embedder)  # fmt: skip


def test_rag_input_ids_format():
    q, n1, n2 = [10, 11, 12], [20, 21, 22, 23], [30, 31]
    # <s> q[:2] </s> | 8 left for 2 neighbours: 4 each, </s> included, best first
    assert ra.rag_input_ids(q, [n1, n2], max_length=12, query_length=2) == [
        1, 10, 11, 2, 20, 21, 22, 2, 30, 31, 2]  # fmt: skip
    assert ra.rag_input_ids(q, [], max_length=12, query_length=2) == [1, 10, 11, 2]
    # 2 left for 2 neighbours: a share of 1 cannot hold a token and </s>, so none is added
    assert ra.rag_input_ids(q, [n1, n2], max_length=6, query_length=2) == [1, 10, 11, 2]
    assert len(ra.rag_input_ids(q * 100, [n1 * 100] * 3, max_length=512)) <= 512
    with pytest.raises(ValueError, match="max_length >= 3"):
        ra.rag_input_ids(q, [], max_length=2)


def test_leakage_guard_excludes_the_planted_duplicate(setup):
    retriever, planted = setup["retriever"], setup["planted_id"]
    # Query = the gold code itself, so without the guard the planted copy is the top hit.
    (top,) = retriever.retrieve([GOLD[1]], 1)
    assert top[0][0]["id"] == planted
    assert index_records.code_hash(GOLD[1]) == retriever.index.records[planted]["hash"]
    banned = retriever.excluded(codes=[GOLD[1]])
    assert banned == {planted}
    (row,) = retriever.retrieve([GOLD[1]], len(FUNCTIONS), exclude=[banned])
    assert len(row) == len(FUNCTIONS) and planted not in {r["id"] for r, _ in row}
    # Excluding by the gold's id expands to its exact duplicates as well.
    assert retriever.excluded(ids=[planted]) == {planted}


def test_retrieved_code_feeds_the_generator(setup):
    from tasks.vocabularies import CodeT5Vocabulary

    gen = from_pretrained(setup["generator"])
    vocab = CodeT5Vocabulary(setup["generator"])
    queries = [GOLD[1], "reverse the text"]
    out = rag.rag_generate(
        queries, setup["idx"], gen, k=2, gold_codes=[GOLD[1], GOLD[1]], max_new_tokens=6,
        batch_size=2, retriever=setup["retriever"],
    )  # fmt: skip
    records = setup["retriever"].index.records
    for q, ids, inputs in zip(queries, out.retrieved_ids, out.input_ids, strict=True):
        assert len(ids) == 2 and setup["planted_id"] not in ids
        want = ra.rag_input_ids(vocab.encode(q), [vocab.encode(records[i]["code"]) for i in ids])
        assert inputs == want
        # The parts between </s> decode to the query and to each retrieved code, in rank order.
        parts, start = [], 1
        for j, t in enumerate(inputs):
            if t == 2:
                parts.append(vocab.decode(inputs[start:j]))
                start = j + 1
        assert parts == [q] + [records[i]["code"] for i in ids]
    # The generator saw exactly these ids: same tokens as a direct generate call.
    batch = np.zeros((2, max(map(len, out.input_ids))), np.int32)
    for i, row in enumerate(out.input_ids):
        batch[i, : len(row)] = row
    direct = gen.generate(batch, max_new_tokens=6)
    for i, text in enumerate(out.texts):
        tokens = [int(t) for t in direct.tokens[i, 0, : direct.lengths[i, 0]] if t != 2]
        assert text == vocab.decode(tokens)
    plain = rag.rag_generate(queries[:1], None, gen, k=0, max_new_tokens=4)
    assert plain.retrieved_ids == [[]] and plain.input_ids[0] == [1, *vocab.encode(GOLD[1]), 2]


def test_rag_generate_bad_inputs(setup):
    gen = setup["generator"]
    with pytest.raises(ValueError, match="non-empty queries"):
        rag.rag_generate([" "], setup["idx"], gen)
    with pytest.raises(ValueError, match="gold_codes has 2 entries for 1 queries"):
        rag.rag_generate(["q"], setup["idx"], gen, gold_codes=["a", "b"])
    with pytest.raises(ValueError, match="k must be >= 0"):
        rag.rag_generate(["q"], setup["idx"], gen, k=-1)


def test_offline_neighbours_and_the_seqio_task(setup, tmp_path):
    from tasks.vocabularies import CodeT5Vocabulary

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"text": t, "code": c} for t, c in [GOLD, *FUNCTIONS[:3]]]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "train.rag.jsonl"
    argv = ["--index", str(setup["idx"]), "--input", str(pairs), "--output", str(out), "-k", "2"]
    assert retrieve_cli.main(argv) == 0
    rows = ra.read_neighbours(out)
    assert len(rows) == 4 and all(len(r["neighbours"]) == 2 for r in rows)
    for row in rows:  # each pair's own code (and its planted copy) is never its neighbour
        own = index_records.code_hash(row["target"])
        assert all(index_records.code_hash(n["code"]) != own for n in row["neighbours"])
    assert setup["planted_id"] not in {n["id"] for n in rows[0]["neighbours"]}

    vocab = CodeT5Vocabulary(setup["generator"])
    name = ra.register_rag_task("test_rag_task", {"train": str(out)}, vocab, k=1)
    import seqio

    ds = seqio.get_mixture_or_task(name).get_dataset(
        {"inputs": 512, "targets": 64}, split="train", shuffle=False
    )
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 4
    for ex, row in zip(examples, rows, strict=True):
        want = ra.rag_input_ids(
            vocab.encode(row["query"]), [vocab.encode(row["neighbours"][0]["code"])]
        )
        assert ex["inputs"].tolist() == want
        assert ex["targets"].tolist() == vocab.encode(row["target"])[:63] + [2]


def test_rag_gin_run(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"text": t, "code": c}) + "\n" for t, c in FUNCTIONS[:3]))
    argv = ["--gin_file=gin/runs/rag.gin", f"--gin.INDEX_DIR='{setup['idx']}'",
            f"--gin.GENERATOR='{setup['generator']}'", f"--gin.DATA_PATH='{pairs}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'out'}'", "--gin.run_rag.max_new_tokens=4",
            "--gin.K=2"]  # fmt: skip
    assert rag_cli.main(argv) == 0
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert metrics["num_pairs"] == 3 and set(metrics) >= {"rag", "no_retrieval"}
    assert set(metrics["rag"]) == {"exact_match", "bleu"}
    rows = [json.loads(x) for x in (tmp_path / "out/predictions.jsonl").read_text().splitlines()]
    for row, (_, code) in zip(rows, FUNCTIONS, strict=False):
        ids = row["retrieved_ids"]
        assert len(ids) == 2
        codes = [setup["retriever"].index.records[i]["code"] for i in ids]
        assert code not in codes  # the gold is excluded
    capsys.readouterr()
    assert rag_cli.main(argv[:-1] + ["--gin.KK=2"]) == 2
    assert "unknown gin macro KK" in capsys.readouterr().err
