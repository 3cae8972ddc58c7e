"""Learning tests with real code (slow tier): the fixtures are far too small to learn from, so
labelled sets are built offline from this interpreter's standard library, written in the
CodeXGLUE formats, trained with the tiny experiment gins and scored by `codet5p eval`.

* Defect detection (Devign format): short stdlib functions (label 0) and copies with one
  injected defect (label 1): a swapped comparison, an off-by-one `range(...)` bound, or a
  `return` turned into a bare expression.
* Clone detection (BigCloneBench format): (function, the same function with its local
  identifiers renamed) -> 1, (function, another function) -> 0.

Train and test functions come from disjoint files (a hash of the file name). Both sets are
balanced, so chance is 50 % accuracy (defect) and an F1 of 66.7 for the constant "clone"
answer (clone). The margins below are the tests' claims.
"""

import ast
import functools
import io
import json
import keyword
import pathlib
import re
import sysconfig
import textwrap
import tokenize
import zlib

import pytest

from codet5p_jax.cli.eval import main as eval_main
from codet5p_jax.cli.train import main as train_main

DEFECT_MARGIN = 20.0  # accuracy points above chance (50) on held-out files (measured: 82.8)
CLONE_MARGIN = 20.0  # F1 points above the constant "clone" answer (66.7); measured F1 98.9
MAX_FUNCTIONS = 1200


@pytest.fixture(autouse=True)
def _tokenizer(monkeypatch, codet5_tokenizer_dir):
    monkeypatch.setenv("CODET5P_TOKENIZER_DIR", str(codet5_tokenizer_dir))


def _is_test_file(name: str) -> bool:
    return zlib.crc32(name.encode()) % 5 == 0


@functools.cache
def stdlib_functions(min_chars=80, max_chars=500) -> tuple[tuple[str, str], ...]:
    """(file name, dedented source) of short functions of the top-level stdlib modules."""
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (UnicodeDecodeError, SyntaxError):
            continue
        lines = text.splitlines(keepends=True)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and not node.decorator_list:
                src = "".join(lines[node.lineno - 1 : node.end_lineno])
                if min_chars <= len(src) <= max_chars:
                    out.append((path.name, textwrap.dedent(src)))
    return tuple(out)


# ------------------------------------------------------------------------------------- defects
_SWAP = {" < ": " >= ", " > ": " <= ", " <= ": " > ", " >= ": " < ", " == ": " != ", " != ": " == "}
_RANGE = re.compile(r"range\(([^()]*(?:\([^()]*\))?[^()]*)\)")
_RETURN = re.compile(r"\breturn (\S.*)$", re.M)


def inject_defect(src: str, seed: int) -> str | None:
    """`src` with one defect of a kind picked by `seed` among those that apply, or None."""
    ops = []
    if any(op in src for op in _SWAP):
        op = next(op for op in _SWAP if op in src)
        ops.append(lambda s, op=op: s.replace(op, _SWAP[op], 1))
    if _RANGE.search(src):
        ops.append(lambda s: _RANGE.sub(lambda m: f"range({m.group(1)} + 1)", s, count=1))
    if _RETURN.search(src):
        ops.append(lambda s: _RETURN.sub(lambda m: m.group(1), s, count=1))
    if not ops:
        return None
    out = ops[seed % len(ops)](src)
    return out if out != src else None


def write_defect_set(root: pathlib.Path) -> dict[str, int]:
    records, splits = [], {"train": [], "valid": [], "test": []}
    for n, (name, src) in enumerate(stdlib_functions()[:MAX_FUNCTIONS]):
        bad = inject_defect(src, n)
        if bad is None:
            continue
        split = "test" if _is_test_file(name) else "train"
        for code, target in ((src, 0), (bad, 1)):
            splits[split].append(len(records))
            records.append({"project": name, "commit_id": str(n), "target": target, "func": code})
    splits["valid"] = splits["test"][:8]
    root.mkdir()
    (root / "function.json").write_text(json.dumps(records))
    for split, idx in splits.items():
        (root / f"{split}.txt").write_text("".join(f"{i}\n" for i in idx))
    return {k: len(v) for k, v in splits.items()}


# -------------------------------------------------------------------------------------- clones
def retokenize(src: str, rename: bool) -> str:
    """`src` through tokenize -> untokenize (every function, so spacing is no clue), with its
    parameters and assigned local names renamed to v0, v1, ... when `rename`."""
    names = {}
    if rename:
        fn = ast.parse(src).body[0]
        for node in ast.walk(fn):
            if isinstance(node, ast.arg):
                names.setdefault(node.arg, f"v{len(names)}")
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.setdefault(node.id, f"v{len(names)}")
    toks, prev = [], None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        string = tok.string
        after_dot = prev is not None and prev.string == "."
        if tok.type == tokenize.NAME and not keyword.iskeyword(string) and not after_dot:
            string = names.get(string, string)
        toks.append((tok.type, string))
        prev = tok
    return tokenize.untokenize(toks)


def write_clone_set(root: pathlib.Path) -> dict[str, int]:
    by_split = {"train": [], "test": []}
    for name, src in stdlib_functions()[:MAX_FUNCTIONS]:
        try:
            pair = (retokenize(src, False), retokenize(src, True))
        except (SyntaxError, tokenize.TokenError, IndentationError):
            continue
        by_split["test" if _is_test_file(name) else "train"].append(pair)
    funcs, lines = [], {"train": [], "valid": [], "test": []}
    for split, pairs in by_split.items():
        for n, (plain, renamed) in enumerate(pairs):
            other = pairs[(n * 7 + 3) % len(pairs)][0]
            if other == plain:
                continue
            i = len(funcs)
            funcs += [plain, renamed, other]
            lines[split] += [f"{i}\t{i + 1}\t1", f"{i}\t{i + 2}\t0"]
    lines["valid"] = lines["test"][:8]
    root.mkdir()
    (root / "data.jsonl").write_text(
        "".join(json.dumps({"func": f, "idx": str(i)}) + "\n" for i, f in enumerate(funcs))
    )
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return {k: len(v) for k, v in lines.items()}


def _train_and_eval(gin_name, benchmark, data, tmp_path, steps):
    run = tmp_path / "run"
    status = train_main(
        [
            f"--gin_file=gin/experiments/{gin_name}",
            f"--gin.MODEL_DIR='{run}'",
            f"--gin.DATA_DIR='{data}'",
            f"--gin.TRAIN_STEPS={steps}",
            "--gin.BATCH_SIZE=16",
            f"--gin.train.save_every={steps}",
            "--gin.train.log_every=50",
            "--gin.make_schedule.peak_value=1e-3",
            "--gin.make_schedule.warmup_steps=30",
        ]
    )
    assert status == 0
    status = eval_main(
        [
            "--gin_file=gin/runs/eval.gin",
            f"--gin.CHECKPOINT_PATH='{run}'",
            f"--gin.OUTPUT_DIR='{tmp_path / 'eval'}'",
            f"--gin.BENCHMARK='{benchmark}'",
            f"--gin.BENCHMARK_OPTIONS={dict(path=str(data), split='test', prompts_per_call=64)!r}",
            "--gin.evaluate.max_input_length=128",
        ]
    )
    assert status == 0
    return json.loads((tmp_path / "eval" / "metrics.json").read_text())[benchmark]


def test_defect_set_is_balanced_and_held_out(tmp_path):
    sizes = write_defect_set(tmp_path / "defect")
    records = json.loads((tmp_path / "defect" / "function.json").read_text())
    test = [int(x) for x in (tmp_path / "defect" / "test.txt").read_text().split()]
    train = [int(x) for x in (tmp_path / "defect" / "train.txt").read_text().split()]
    assert sizes["test"] >= 100 and sizes["train"] >= 4 * sizes["test"] // 2
    assert sum(records[i]["target"] for i in test) * 2 == len(test)
    assert not {records[i]["project"] for i in test} & {records[i]["project"] for i in train}
    assert (
        inject_defect("def f(a, b):\n    return a < b\n", 0) == "def f(a, b):\n    return a >= b\n"
    )
    assert inject_defect("def f(x):\n    for i in range(len(x)):\n        pass\n", 0) == (
        "def f(x):\n    for i in range(len(x) + 1):\n        pass\n"
    )


def test_renamed_copy_keeps_structure():
    src = "def area(width, height):\n    size = width * height\n    return size.real\n"
    renamed = retokenize(src, True)
    assert "v0" in renamed and "width" not in renamed and ".real" in renamed
    assert [t.type for t in tokenize.generate_tokens(io.StringIO(renamed).readline)] == [
        t.type for t in tokenize.generate_tokens(io.StringIO(retokenize(src, False)).readline)
    ]


@pytest.mark.slow
def test_tiny_classifier_learns_defect_detection(tmp_path):
    data = tmp_path / "defect"
    write_defect_set(data)
    metrics = _train_and_eval("tiny_defect.gin", "defect", data, tmp_path, steps=400)
    print(f"defect detection, held-out files: accuracy {metrics['accuracy']:.2f} (chance 50)")
    assert metrics["accuracy"] >= 50.0 + DEFECT_MARGIN, metrics


@pytest.mark.slow
def test_tiny_pair_classifier_learns_clone_detection(tmp_path):
    data = tmp_path / "bcb"
    write_clone_set(data)
    metrics = _train_and_eval("tiny_clone_bcb.gin", "clone-bcb", data, tmp_path, steps=300)
    print(f"clone detection, held-out files: {metrics} (constant 'clone': F1 66.67)")
    assert metrics["f1"] >= 200 / 3 + CLONE_MARGIN, metrics
    assert metrics["accuracy"] >= 50.0 + CLONE_MARGIN, metrics
