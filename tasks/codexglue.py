"""Readers of the CodeXGLUE understanding and completion formats, with each benchmark's
preprocessing (docs/understanding.md).

* Devign (defect detection): `function.json` (a list of {project, commit_id, target, func}) and
  `train.txt` / `valid.txt` / `test.txt` (one index into the list per line) -> {code, label}.
* BigCloneBench: `data.jsonl` ({func, idx}) and `train.txt` / `valid.txt` / `test.txt`
  (`idx1<TAB>idx2<TAB>label`) -> {code1, code2, label}.
* POJ-104: `ProgramData/<problem>/<program>.txt` -> {code, label, index}.
* PY150 / JavaCorpus line completion: token-level `train.txt` / `dev.txt` (one file per line,
  `<s> ... <EOL> ... </s>`) and line-level `dev.json` / `test.json` ({input, gt}) -> {input,
  target}.

Preprocessing follows the CodeXGLUE baselines (`Code-Code/*/code/run.py`, which CodeT5's
fine-tuning code repeats): source code is whitespace-normalised (`" ".join(code.split())`);
POJ-104 is split by problem id (1-64 train, 65-80 valid, 81-104 test, as its `preprocess.py`);
a completion example's input is the left context of token-level code ending at a line break
(`<EOL>`) and its target is the next line. A malformed file raises `FormatError`: one line naming
the file and the record (line or list index).
"""

import json
import pathlib
import zlib
from collections.abc import Iterator

SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
# POJ-104's split by problem id (CodeXGLUE Clone-detection-POJ-104/dataset/preprocess.py).
POJ104_SPLITS = {"train": range(1, 65), "validation": range(65, 81), "test": range(81, 105)}
EOL, BOS, EOS = "<EOL>", "<s>", "</s>"


class FormatError(ValueError):
    """A CodeXGLUE file that does not have its benchmark's format (one line: file and record)."""


def normalize_code(code: str) -> str:
    """CodeXGLUE's code preprocessing: whitespace runs (newlines included) -> one space."""
    return " ".join(code.split())


def _read_text(path: pathlib.Path) -> str:
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    return path.read_text(encoding="utf-8", errors="replace")


def _split_file(data_dir, split: str) -> pathlib.Path:
    if split not in SPLIT_FILES:
        raise FormatError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FILES)}")
    return pathlib.Path(data_dir) / SPLIT_FILES[split]


def _label(value, where: str) -> int:
    """0 or 1 (ints or the strings "0" / "1"), else a one-line error naming `where`."""
    if isinstance(value, bool) or str(value).strip() not in ("0", "1"):
        raise FormatError(f"{where}: label {value!r} is not 0 or 1")
    return int(str(value).strip())


# ------------------------------------------------------------------------------------- Devign
def read_devign_functions(path) -> list[dict]:
    """`function.json`: the list of {project, commit_id, target, func} records."""
    path = pathlib.Path(path)
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(records, list):
        raise FormatError(
            f"{path}: expected a JSON list of functions, got {type(records).__name__}"
        )
    out = []
    for i, rec in enumerate(records):
        where = f"{path}, record {i}"
        if not isinstance(rec, dict) or not isinstance(rec.get("func"), str):
            raise FormatError(f"{where}: needs a string field 'func'")
        if "target" not in rec:
            raise FormatError(f"{where}: needs a field 'target' (0 or 1)")
        out.append({"code": normalize_code(rec["func"]), "label": _label(rec["target"], where)})
    return out


def read_devign(data_dir, split: str) -> list[dict]:
    """Devign examples of `split`: {idx, code, label}, in index-file order.

    Raises:
      FormatError: A missing file, malformed JSON, a bad label, or an index line that is not an
        integer or points past the function list.
    """
    data_dir = pathlib.Path(data_dir)
    functions = read_devign_functions(data_dir / "function.json")
    index_path = _split_file(data_dir, split)
    out = []
    for line_no, line in enumerate(_read_text(index_path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{index_path}, line {line_no}"
        try:
            idx = int(line.strip())
        except ValueError:
            raise FormatError(f"{where}: {line.strip()!r} is not an index") from None
        if not 0 <= idx < len(functions):
            raise FormatError(
                f"{where}: index {idx} is outside the {len(functions)} functions of "
                f"{data_dir / 'function.json'}"
            )
        out.append({"idx": idx, **functions[idx]})
    if not out:
        raise FormatError(f"{index_path}: no examples")
    return out


# ------------------------------------------------------------------------------ BigCloneBench
def read_bcb_functions(path) -> dict[str, str]:
    """`data.jsonl`: idx (as a string) -> whitespace-normalised function."""
    path = pathlib.Path(path)
    out = {}
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("func"), str) or "idx" not in rec:
            raise FormatError(f"{where}: needs fields 'func' (string) and 'idx'")
        out[str(rec["idx"])] = normalize_code(rec["func"])
    return out


def read_bcb(data_dir, split: str) -> list[dict]:
    """BigCloneBench pairs of `split`: {idx1, idx2, code1, code2, label}.

    CodeXGLUE's reader skips pairs whose functions are missing and reads any label but "0" as 1;
    here both are errors, since either means the files do not belong together.

    Raises:
      FormatError: A missing file, a line without three tab-separated fields, an idx not in
        `data.jsonl`, or a label other than 0 / 1.
    """
    data_dir = pathlib.Path(data_dir)
    functions = read_bcb_functions(data_dir / "data.jsonl")
    pairs_path = _split_file(data_dir, split)
    out = []
    for line_no, line in enumerate(_read_text(pairs_path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{pairs_path}, line {line_no}"
        fields = line.strip().split("\t")
        if len(fields) != 3:
            raise FormatError(f"{where}: expected 'idx1<TAB>idx2<TAB>label', got {line.strip()!r}")
        idx1, idx2, label = fields
        for idx in (idx1, idx2):
            if idx not in functions:
                raise FormatError(f"{where}: idx {idx!r} is not in {data_dir / 'data.jsonl'}")
        out.append(
            {
                "idx1": idx1,
                "idx2": idx2,
                "code1": functions[idx1],
                "code2": functions[idx2],
                "label": _label(label, where),
            }
        )
    if not out:
        raise FormatError(f"{pairs_path}: no pairs")
    return out


# ------------------------------------------------------------------------------------ POJ-104
def read_poj104(data_dir, split: str | None = None) -> list[dict]:
    """POJ-104 programs: {index, code, label} (label = problem folder name), sorted by path.

    Args:
      data_dir: The directory holding `ProgramData/` (or `ProgramData/` itself).
      split: "train" / "validation" / "test" keeps the problems of CodeXGLUE's id ranges
        (`POJ104_SPLITS`); None keeps every problem.

    Raises:
      FormatError: No `ProgramData`, no programs in the split, a non-numeric problem folder, or
        a problem with a single program (its MAP@R is undefined: no other relevant program).
    """
    root = pathlib.Path(data_dir)
    root = root if root.name == "ProgramData" else root / "ProgramData"
    if not root.is_dir():
        raise FormatError(f"{root}: no such directory (expected ProgramData/<problem>/<program>)")
    if split is not None and split not in POJ104_SPLITS:
        raise FormatError(f"unknown split {split!r}; expected one of {sorted(POJ104_SPLITS)}")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not folder.name.isdigit():
            raise FormatError(f"{folder}: problem folders are numbers, got {folder.name!r}")
        if split is not None and int(folder.name) not in POJ104_SPLITS[split]:
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file())
        if len(files) < 2:
            raise FormatError(
                f"{folder}: problem {folder.name} has {len(files)} program(s); MAP@R needs at "
                "least 2 per problem"
            )
        for f in files:
            out.append(
                {
                    "index": f"{folder.name}/{f.stem}",
                    "code": normalize_code(_read_text(f)),
                    "label": folder.name,
                }
            )
    if not out:
        raise FormatError(f"{root}: no programs" + (f" in split {split!r}" if split else ""))
    return out


# ---------------------------------------------------------------------------- line completion
def _check_context(context: str, where: str) -> str:
    context = " ".join(context.split())
    if not context.replace(BOS, "").strip():
        raise FormatError(f"{where}: empty completion context")
    return context


def read_line_completion(path) -> list[dict]:
    """Line-level completion JSONL (`dev.json` / `test.json`): {input, target} per line.

    Raises:
      FormatError: Invalid JSON, missing string fields `input` / `gt`, or an empty context.
    """
    path = pathlib.Path(path)
    out = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_no}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise FormatError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict) or not all(
            isinstance(rec.get(k), str) for k in ("input", "gt")
        ):
            raise FormatError(f"{where}: needs string fields 'input' and 'gt'")
        # The reference stays as given: the CodeXGLUE evaluator compares it unstripped.
        out.append({"input": _check_context(rec["input"], where), "target": rec["gt"]})
    if not out:
        raise FormatError(f"{path}: no examples")
    return out


def line_completion_examples(
    stream: str,
    *,
    max_context_tokens: int = 1024,
    lines_per_file: int | None = None,
    seed: str = "",
) -> Iterator[dict]:
    """(context, next line) examples of one token-level file `<s> a b <EOL> c d <EOL> ... </s>`.

    The context is every token up to a line break (`<EOL>`; left-truncated to the last
    `max_context_tokens` tokens, which keeps the lines nearest the target); the target is the
    next line's tokens. Lines that are empty are skipped. `lines_per_file` keeps that many
    target lines per file, picked by a hash of (`seed`, line number) so the choice is fixed.
    """
    tokens = stream.split()
    if tokens and tokens[-1] == EOS:
        tokens = tokens[:-1]
    breaks = [i for i, t in enumerate(tokens) if t == EOL]
    candidates = []
    for n, b in enumerate(breaks):
        end = breaks[n + 1] if n + 1 < len(breaks) else len(tokens)
        target = tokens[b + 1 : end]
        if target:
            candidates.append((b, target))
    if lines_per_file is not None and len(candidates) > lines_per_file:
        candidates.sort(key=lambda c: zlib.crc32(f"{seed}:{c[0]}".encode()))
        candidates = sorted(candidates[:lines_per_file])
    for b, target in candidates:
        context = tokens[max(0, b + 1 - max_context_tokens) : b + 1]
        yield {"input": " ".join(context), "target": " ".join(target)}


def check_token_streams(path) -> None:
    """Raises `FormatError` (file and line) unless every line of `path` is a `<s> ...` stream
    and at least one has a line break followed by code."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: no such file")
    found = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if line.split()[0] != BOS:
                raise FormatError(f"{path}, line {line_no}: a token stream starts with '<s>'")
            found = found or next(line_completion_examples(line), None) is not None
    if not found:
        raise FormatError(f"{path}: no completion examples (no line follows an <EOL>)")


def read_token_streams(path, **kwargs) -> Iterator[dict]:
    """`line_completion_examples` of every line (file) of a token-level `train.txt` / `dev.txt`,
    read line by line (`check_token_streams` validates a file up front).

    Raises:
      FormatError: A line that is not a `<s> ... </s>` stream.
    """
    path = pathlib.Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:  # streamed: PY150 is large
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            if line.split()[0] != BOS:
                raise FormatError(f"{path}, line {line_no}: a token stream starts with '<s>'")
            yield from line_completion_examples(line, seed=f"{path.name}:{line_no}", **kwargs)
