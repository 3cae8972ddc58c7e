"""Readers that turn raw corpora into code records and (text, code) pair records.

Every reader is a generator that skips bad input and counts why in a `collections.Counter`
(`unreadable`, `undecodable`, `empty`, `unknown_language`, `bad_json`, `missing_field`, ...);
`corpus_cache.prepare_corpus` logs the counts and fails with a clear error only when nothing
usable remains. Nothing here imports TensorFlow.

Languages are the nine of the CodeT5+ pretraining data (paper §4.1): Python, Java, Ruby,
JavaScript, Go, PHP, C, C++ and C#, recognised by file extension.
"""

import ast
import contextlib
import json
import os
import textwrap
from collections import Counter
from collections.abc import Iterator

from etils import epath

LANGUAGE_BY_EXTENSION = {
    ".py": "python",
    ".java": "java",
    ".rb": "ruby",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".go": "go",
    ".php": "php",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hh": "cpp",
    ".hpp": "cpp",
    ".hxx": "cpp",
    ".cs": "c_sharp",
}
LANGUAGES = tuple(sorted(set(LANGUAGE_BY_EXTENSION.values())))
# Directories never holding corpus source (VCS metadata, bytecode caches, installed packages).
_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", "site-packages"}
_MAX_FILE_BYTES = 1 << 20  # far above the 2,000-token size filter; guards against data dumps


def read_text_file(path: epath.Path, counts: Counter) -> str | None:
    """Reads a UTF-8 source file, or counts why it is unusable and returns None."""
    try:
        raw = path.read_bytes()
    except OSError:
        counts["unreadable"] += 1
        return None
    if len(raw) > _MAX_FILE_BYTES:
        counts["too_large"] += 1
        return None
    if b"\x00" in raw:
        counts["binary"] += 1
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        counts["undecodable"] += 1
        return None
    if not text.strip():
        counts["empty"] += 1
        return None
    return text


def iter_source_tree(
    root: str | os.PathLike, counts: Counter, max_files: int | None = None
) -> Iterator[dict[str, str]]:
    """Yields `{"path", "language", "code"}` for source files under `root`, in sorted order.

    Args:
      root: Directory to walk (symlinked directories are not followed).
      counts: Receives skip reasons.
      max_files: Stop after this many usable files (for quick runs and tests).
    """
    root = epath.Path(root)  # a local directory or gs://
    used = 0
    for dirpath, dirnames, filenames in root.walk():
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            path = epath.Path(dirpath) / name
            language = LANGUAGE_BY_EXTENSION.get(path.suffix.lower())
            if language is None:
                counts["unknown_language"] += 1
                continue
            text = read_text_file(path, counts)
            if text is None:
                continue
            yield {"path": path.relative_to(root).as_posix(), "language": language, "code": text}
            used += 1
            if max_files is not None and used >= max_files:
                return


def iter_jsonl(path: str | os.PathLike, counts: Counter) -> Iterator[tuple[int, dict]]:
    """Yields `(line_number, object)` for each JSON object line; counts bad lines.

    Lines are decoded one by one, so a line with invalid UTF-8 is skipped (`undecodable`)
    without losing the rest of the file.
    """
    stack = contextlib.ExitStack()  # epath's gs:// open() is a context manager, not a file
    try:
        f = stack.enter_context(epath.Path(path).open("rb"))
    except OSError as e:
        raise FileNotFoundError(f"cannot open JSONL corpus {path}: {e}") from e
    with stack:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                counts["undecodable"] += 1
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                counts["bad_json"] += 1
                continue
            if not isinstance(obj, dict):
                counts["bad_json"] += 1
                continue
            yield lineno, obj


def _jsonl_files(path: epath.Path) -> list[epath.Path]:
    if path.is_dir():
        # walk(), not rglob: epath refuses `**` patterns (one listing RPC per match on GCS).
        return sorted(
            root / name
            for root, _, names in path.walk()
            for name in names
            if name.endswith((".jsonl", ".json"))
        )
    if not path.exists():
        raise FileNotFoundError(f"corpus path {path} does not exist")
    return [path]


def _text_field(obj: dict, key: str, tokens_key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, str) and value.strip():
        return value
    tokens = obj.get(tokens_key)
    if isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens):
        return " ".join(tokens)
    return None


def iter_code_jsonl(path: str | os.PathLike, counts: Counter) -> Iterator[dict[str, str]]:
    """Yields code records from JSONL lines with a `code` field (`language` optional)."""
    for file in _jsonl_files(epath.Path(path)):
        for lineno, obj in iter_jsonl(file, counts):
            code = _text_field(obj, "code", "code_tokens")
            if code is None:
                counts["missing_field"] += 1
                continue
            language = obj.get("language") if isinstance(obj.get("language"), str) else ""
            yield {"path": f"{file.name}:{lineno}", "language": language, "code": code}


def iter_pairs_jsonl(path: str | os.PathLike, counts: Counter) -> Iterator[dict[str, str]]:
    """Yields `{"path", "language", "code", "docstring"}` from CodeSearchNet-style JSONL.

    Uses `code`/`docstring` when present and non-empty, else the space-joined
    `code_tokens`/`docstring_tokens` (CodeXGLUE convention).
    """
    for file in _jsonl_files(epath.Path(path)):
        for lineno, obj in iter_jsonl(file, counts):
            code = _text_field(obj, "code", "code_tokens")
            doc = _text_field(obj, "docstring", "docstring_tokens")
            if code is None or doc is None:
                counts["missing_field"] += 1
                continue
            language = obj.get("language") if isinstance(obj.get("language"), str) else ""
            yield {
                "path": f"{file.name}:{lineno}",
                "language": language,
                "code": code,
                "docstring": doc,
            }


def first_paragraph(docstring: str) -> str:
    """The summary part of a docstring (up to the first blank line), whitespace-normalised."""
    para = docstring.strip().split("\n\n", 1)[0]
    return " ".join(para.split())


def python_function_pairs(source: str, path: str, counts: Counter) -> Iterator[dict[str, str]]:
    """Yields (function, docstring) pairs from Python source via `ast`.

    The code is the function's source with its docstring statement removed and dedented (so the
    pair is not trivially matched); the text is the docstring's first paragraph. Functions whose
    body is only the docstring, or whose docstring shares a line with code, are skipped.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        counts["unparsable_python"] += 1
        return
    lines = source.splitlines(keepends=True)
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        doc = ast.get_docstring(node, clean=True)
        if not doc or len(node.body) < 2:
            continue
        doc_node = node.body[0]
        if doc_node.lineno <= node.lineno or node.body[1].lineno <= doc_node.end_lineno:
            continue
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        kept = lines[first - 1 : doc_node.lineno - 1] + lines[doc_node.end_lineno : node.end_lineno]
        text = first_paragraph(doc)
        if len(text.split()) < 3:
            continue
        yield {
            "path": f"{path}:{node.lineno}",
            "language": "python",
            "code": textwrap.dedent("".join(kept)),
            "docstring": text,
        }
