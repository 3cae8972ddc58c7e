"""CodeXGLUE readers and SeqIO tasks on the format fixtures (../shared/reference/datasets/
codexglue-understanding), and one-line errors on malformed copies of them."""

import json
import shutil

import numpy as np
import pytest
import seqio

from tasks import codexglue, understanding

FIXTURES = "reference/datasets/codexglue-understanding"


@pytest.fixture(scope="module")
def fixtures(shared_dir):
    return shared_dir / FIXTURES


def _copy(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the shared fixtures are read-only
    return dst


def _one_line_error(fn, *match):
    with pytest.raises(codexglue.FormatError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for m in match:
        assert m in message, message
    return message


# ---------------------------------------------------------------------------------- fixtures
def test_devign_fixture(fixtures):
    data = json.loads((fixtures / "defect-detection" / "function.json").read_text())
    rows = codexglue.read_devign(fixtures / "defect-detection", "train")
    # train.txt holds 4, 3, 1: the records at those positions, whitespace collapsed.
    assert [r["idx"] for r in rows] == [4, 3, 1]
    assert rows[1]["code"] == " ".join(data[3]["func"].split())
    assert "\n" not in rows[0]["code"] and "  " not in rows[0]["code"]
    assert {r["label"] for r in rows} == {0}
    assert [r["idx"] for r in codexglue.read_devign(fixtures / "defect-detection", "test")] == [
        3,
        2,
    ]


def test_bcb_fixture(fixtures):
    rows = codexglue.read_bcb(fixtures / "clone-detection-bigclonebench", "train")
    assert [(r["idx1"], r["idx2"], r["label"]) for r in rows] == [
        ("1", "3", 0),
        ("3", "1", 1),
        ("2", "2", 1),
    ]
    funcs = [
        json.loads(line)
        for line in (fixtures / "clone-detection-bigclonebench" / "data.jsonl").open()
    ]
    assert rows[0]["code1"] == " ".join(funcs[1]["func"].split())


def test_poj104_fixture_and_splits(fixtures):
    rows = codexglue.read_poj104(fixtures / "clone-detection-poj104")
    assert [r["index"] for r in rows] == ["1/1001", "1/1002", "70/1006", "70/1007", "90/1027",
                                          "90/1036"]  # fmt: skip
    assert [r["label"] for r in rows] == ["1", "1", "70", "70", "90", "90"]
    # CodeXGLUE's split by problem id: 1-64 train, 65-80 valid, 81-104 test.
    assert {
        r["label"] for r in codexglue.read_poj104(fixtures / "clone-detection-poj104", "train")
    } == {"1"}
    assert {
        r["label"] for r in codexglue.read_poj104(fixtures / "clone-detection-poj104", "validation")
    } == {"70"}
    assert {
        r["label"] for r in codexglue.read_poj104(fixtures / "clone-detection-poj104", "test")
    } == {"90"}


def test_line_completion_fixture(fixtures):
    rows = codexglue.read_line_completion(fixtures / "code-completion-line-python" / "test.json")
    assert len(rows) == 5
    assert rows[0]["input"].startswith("<s> from __future__ import absolute_import <EOL>")
    assert rows[0]["input"].endswith("<EOL>")
    assert all(r["target"] == "" for r in rows)  # the dummy records' gt is empty


def test_token_stream_examples():
    stream = "<s> import os <EOL> def f ( ) : <EOL> return 1 <EOL> </s>"
    examples = list(codexglue.line_completion_examples(stream))
    assert examples == [
        {"input": "<s> import os <EOL>", "target": "def f ( ) :"},
        {"input": "<s> import os <EOL> def f ( ) : <EOL>", "target": "return 1"},
    ]
    # Left truncation keeps the tokens nearest the target.
    short = list(codexglue.line_completion_examples(stream, max_context_tokens=3))
    assert short[1]["input"] == ") : <EOL>"
    picked = list(codexglue.line_completion_examples(stream, lines_per_file=1, seed="x"))
    assert len(picked) == 1 and picked[0] in examples


# -------------------------------------------------------------------------------- bad inputs
def test_devign_index_past_the_function_list(fixtures, tmp_path):
    d = _copy(fixtures / "defect-detection", tmp_path)
    (d / "valid.txt").write_text("1\n7\n")
    _one_line_error(
        lambda: codexglue.read_devign(d, "validation"),
        "valid.txt, line 2",
        "index 7 is outside the 5 functions",
    )
    (d / "valid.txt").write_text("x1\n")
    _one_line_error(lambda: codexglue.read_devign(d, "validation"), "line 1", "not an index")


def test_devign_malformed_function_json(fixtures, tmp_path):
    d = _copy(fixtures / "defect-detection", tmp_path)
    data = json.loads((d / "function.json").read_text())
    data[3]["target"] = 2
    (d / "function.json").write_text(json.dumps(data))
    _one_line_error(lambda: codexglue.read_devign(d, "train"), "function.json, record 3", "label 2")
    del data[3]["func"]
    (d / "function.json").write_text(json.dumps(data))
    _one_line_error(lambda: codexglue.read_devign(d, "train"), "record 3", "'func'")
    (d / "function.json").write_text("[{")
    _one_line_error(lambda: codexglue.read_devign(d, "train"), "function.json", "not valid JSON")


def test_bcb_bad_label_and_unknown_idx(fixtures, tmp_path):
    d = _copy(fixtures / "clone-detection-bigclonebench", tmp_path)
    (d / "test.txt").write_text("1\t2\t0\n1\t4\t2\n")
    _one_line_error(
        lambda: codexglue.read_bcb(d, "test"), "test.txt, line 2", "label '2' is not 0 or 1"
    )
    (d / "test.txt").write_text("1\t9\t0\n")
    _one_line_error(lambda: codexglue.read_bcb(d, "test"), "line 1", "idx '9' is not in")
    (d / "test.txt").write_text("1 2 0\n")
    _one_line_error(lambda: codexglue.read_bcb(d, "test"), "line 1", "idx1<TAB>idx2<TAB>label")
    (d / "data.jsonl").write_text('{"func": "a", "idx": "1"}\n{"func": 3}\n')
    _one_line_error(lambda: codexglue.read_bcb(d, "test"), "data.jsonl, line 2", "'func'")


def test_poj104_problem_with_one_program(fixtures, tmp_path):
    d = _copy(fixtures / "clone-detection-poj104", tmp_path)
    (d / "ProgramData" / "70" / "1007.txt").unlink()
    _one_line_error(
        lambda: codexglue.read_poj104(d), "ProgramData/70", "has 1 program(s); MAP@R needs"
    )
    _one_line_error(lambda: codexglue.read_poj104(tmp_path / "nowhere"), "no such directory")


def test_empty_completion_context(fixtures, tmp_path):
    src = (fixtures / "code-completion-line-python" / "test.json").read_text().splitlines()
    path = tmp_path / "test.json"
    path.write_text("\n".join([src[0], json.dumps({"input": " <s> ", "gt": "x = 1"})]) + "\n")
    _one_line_error(
        lambda: codexglue.read_line_completion(path),
        "test.json, line 2",
        "empty completion context",
    )
    path.write_text('{"input": "<s> a <EOL>"}\n')
    _one_line_error(lambda: codexglue.read_line_completion(path), "line 1", "'gt'")


def test_bad_token_streams(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("<s> a <EOL> b </s>\nimport os <EOL> x </s>\n")
    _one_line_error(
        lambda: codexglue.check_token_streams(path), "train.txt, line 2", "starts with '<s>'"
    )
    path.write_text("<s> only one line </s>\n")
    _one_line_error(lambda: codexglue.check_token_streams(path), "no completion examples")
    _one_line_error(lambda: codexglue.check_token_streams(tmp_path / "no.txt"), "no such file")


# ------------------------------------------------------------------------------ SeqIO tasks
def _batch(name, converter, lengths, split="train", rows=2):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(lengths, split=split, shuffle=False)
    return next(converter()(ds, lengths).batch(rows).as_numpy_iterator())


def test_defect_task_batches(fixtures, codet5_vocab):
    name = understanding.register_defect(
        "fixture", fixtures / "defect-detection", vocabulary=codet5_vocab
    )
    batch = _batch(name, understanding.ClassificationFeatureConverter, {"inputs": 32})
    assert batch["encoder_input_tokens"].shape == (2, 32)
    assert batch["encoder_input_tokens"][:, -1].tolist() == [2, 2]  # trimmed, then </s>
    assert batch["labels"].tolist() == [0, 0]
    code = codexglue.read_devign(fixtures / "defect-detection", "train")[0]["code"]
    np.testing.assert_array_equal(
        batch["encoder_input_tokens"][0, :31], codet5_vocab.encode(code)[:31]
    )


def test_clone_task_batches(fixtures, codet5_vocab):
    name = understanding.register_clone_pairs(
        "fixture", fixtures / "clone-detection-bigclonebench", vocabulary=codet5_vocab
    )
    batch = _batch(name, understanding.PairFeatureConverter, {"inputs": 16}, rows=3)
    assert batch["encoder_input_tokens"].shape == (3, 2, 16)
    assert batch["labels"].tolist() == [0, 1, 1]
    # Pair 3 is (2, 2): both halves are the same function.
    np.testing.assert_array_equal(
        batch["encoder_input_tokens"][2, 0], batch["encoder_input_tokens"][2, 1]
    )


def test_completion_task_keeps_the_end_of_the_context(fixtures, codet5_vocab, tmp_path):
    d = tmp_path / "py150"
    d.mkdir()
    (d / "train.txt").write_text("<s> import os <EOL> x = os . sep <EOL> print ( x ) <EOL> </s>\n")
    shutil.copy(fixtures / "code-completion-line-python" / "test.json", d / "test.json")
    name = understanding.register_line_completion("fixture", d, vocabulary=codet5_vocab)
    lengths = {"inputs": 6, "targets": 16}
    ds = seqio.get_mixture_or_task(name).get_dataset(lengths, split="train", shuffle=False)
    examples = list(ds.as_numpy_iterator())
    assert len(examples) == 2
    # The stream is read again for every epoch (a generator read once would run dry).
    again = seqio.get_mixture_or_task(name).get_dataset(
        lengths, split="train", shuffle=False, num_epochs=3
    )
    assert len(list(again.as_numpy_iterator())) == 6
    context = codet5_vocab.encode("<s> import os <EOL> x = os . sep <EOL>")
    assert examples[1]["inputs"].tolist() == [*context[-5:], 2]
    assert codet5_vocab.decode(examples[1]["targets"][:-1].tolist()) == "print ( x )"
    test = list(
        seqio.get_mixture_or_task(name).get_dataset(lengths, split="test").as_numpy_iterator()
    )
    assert len(test) == 5 and test[0]["targets"].tolist() == [2]  # empty gt: just </s>
