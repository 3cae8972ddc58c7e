"""`codet5p embed`: write L2-normalised text/code embeddings to a .npy or .safetensors file.

    codet5p embed --model MODEL --input queries.txt --output vecs.npy --kind text
    codet5p embed --model MODEL --input corpus.jsonl --field code --output vecs.safetensors

MODEL is anything `codet5p_jax.from_pretrained` loads (an HF directory such as a download of
`Salesforce/codet5p-110m-embedding`, an orbax directory, or a training MODEL_DIR). Inputs are a
text file (one item per line; escape newlines as `\\n`), or JSONL / a JSON list with `--field`
(list fields such as `code_tokens` are joined with spaces). Each item is
tokenised as `<s> ... </s>` and truncated to `--max-length` (default: 64 for `--kind text`, 360
for `--kind code`, the CodeT5+ retrieval scripts' lengths) and embedded from the first token's
state. The output is written to a temporary file and renamed, so a failed run leaves nothing.
"""

import argparse
import json
import pathlib
import sys

import numpy as np

from codet5p_jax import atomic_files
from codet5p_jax.cli.retrieval import positive_int
from codet5p_jax.evaluation import retrieval
from codet5p_jax.evaluation.embeddings import embed_texts

DEFAULT_LENGTHS = {"text": retrieval.TEXT_LENGTH, "code": retrieval.CODE_LENGTH}
OUTPUT_KEY = "embeddings"  # tensor name in .safetensors outputs


def _json_records(path: pathlib.Path) -> list[tuple[str, object]]:
    """`(where, record)` of a JSON list (`.json`) or of each JSONL line."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from e
        if not isinstance(items, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        return [(f"{path}[{i}]", r) for i, r in enumerate(items)]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    return records


def _looks_like_json(path: pathlib.Path) -> bool:
    if path.suffix in (".json", ".jsonl"):
        return True
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                return isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                return False
    return False


def read_items(path, field: str | None = None, raw_lines: bool = False) -> list[str]:
    """Items of a text file (one per line, `\\n` unescaped) or a JSONL / JSON-list `field`.

    A list-valued field (`code_tokens`) is joined with spaces, as the retrieval data loader
    and the CodeSearchNet recipes join tokens. A JSON(L) file needs `field`: embedding each raw
    record line would embed the JSON syntax, so it is refused unless `raw_lines`.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: Empty items, a record without `field`, JSON without `field`, or no items.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file not found: {path}")
    items = []
    if field is not None:
        for where, record in _json_records(path):
            if not isinstance(record, dict) or field not in record:
                keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(f"{where}: no field {field!r} (keys: {keys})")
            value = record[field]
            item = " ".join(map(str, value)) if isinstance(value, list) else str(value)
            if not item.strip():
                raise ValueError(f"{where}: empty item (embeddings of nothing are undefined)")
            items.append(item)
    else:
        if not raw_lines and _looks_like_json(path):
            raise ValueError(
                f"{path} holds JSON records: pass --field NAME to embed one field "
                "(or --raw-lines to embed each line as text)"
            )
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            item = line.replace("\\n", "\n")
            if not item.strip():
                raise ValueError(
                    f"{path}:{lineno}: empty item (embeddings of nothing are undefined)"
                )
            items.append(item)
    if not items:
        raise ValueError(f"{path}: no items to embed")
    return items


def write_vectors(path, vectors: np.ndarray) -> None:
    """Writes `vectors` to `.npy` or `.safetensors` (key `embeddings`) via temp file + rename."""
    path = pathlib.Path(path)
    if path.suffix not in (".npy", ".safetensors"):
        raise ValueError(f"Output must end in .npy or .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = np.ascontiguousarray(vectors, np.float32)
    with atomic_files.atomic_file(path, "wb") as f:
        if path.suffix == ".npy":
            np.save(f, vectors)
        else:
            from safetensors.numpy import save

            f.write(save({OUTPUT_KEY: vectors}))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codet5p embed", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="HF dir, orbax dir or training MODEL_DIR")
    p.add_argument("--input", required=True, help="text file (one per line) or JSONL")
    p.add_argument("--output", required=True, help="destination .npy or .safetensors")
    p.add_argument(
        "--field", default=None, help="JSONL / JSON-list field to embed (e.g. code, code_tokens)"
    )
    p.add_argument(
        "--raw-lines", action="store_true", help="embed the lines of a JSON file as plain text"
    )
    p.add_argument("--kind", choices=sorted(DEFAULT_LENGTHS), default="text")
    p.add_argument("--max-length", type=int, default=None, help="default: 64 text / 360 code")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p embed`; returns the exit status."""
    args = build_parser().parse_args(argv)
    from codet5p_jax import from_pretrained
    from codet5p_jax.pretrained import load_vocabulary

    try:
        items = read_items(args.input, args.field, args.raw_lines)
        pretrained = from_pretrained(args.model)
        vocabulary = load_vocabulary(args.tokenizer or pretrained.tokenizer_dir, args.model)
        length = args.max_length or DEFAULT_LENGTHS[args.kind]
        vectors = embed_texts(
            pretrained, items, max_length=length, batch_size=args.batch_size, vocabulary=vocabulary
        )
        write_vectors(args.output, vectors)
    except (FileNotFoundError, ValueError) as e:
        print(f"codet5p embed: {e}", file=sys.stderr)
        return 2
    print(f"wrote {vectors.shape[0]} x {vectors.shape[1]} embeddings to {args.output}")
    return 0
