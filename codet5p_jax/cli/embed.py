"""`codet5p embed`: write L2-normalised text/code embeddings to a .npy or .safetensors file.

    codet5p embed --model MODEL --input queries.txt --output vecs.npy --kind text
    codet5p embed --model MODEL --input corpus.jsonl --field code --output vecs.safetensors

MODEL is anything `codet5p_jax.from_pretrained` loads (an HF directory such as a download of
`Salesforce/codet5p-110m-embedding`, an orbax directory, or a training MODEL_DIR). Inputs are a
text file (one item per line; escape newlines as `\\n`) or JSONL with `--field`. Each item is
tokenised as `<s> ... </s>` and truncated to `--max-length` (default: 64 for `--kind text`, 360
for `--kind code`, the CodeT5+ retrieval scripts' lengths) and embedded from the first token's
state. The output is written to a temporary file and renamed, so a failed run leaves nothing.
"""

import argparse
import json
import sys

import numpy as np
from etils import epath

from codet5p_jax import atomic_files
from codet5p_jax.evaluation import retrieval
from codet5p_jax.evaluation.embeddings import embed_texts

DEFAULT_LENGTHS = {"text": retrieval.TEXT_LENGTH, "code": retrieval.CODE_LENGTH}
OUTPUT_KEY = "embeddings"  # tensor name in .safetensors outputs


def read_items(path, field: str | None = None) -> list[str]:
    """Items of a text file (one per line, `\\n` unescaped) or a JSONL file's `field`.

    Raises:
      FileNotFoundError: `path` does not exist.
      ValueError: Empty items, a JSONL record without `field`, or an empty file.
    """
    path = epath.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Input file not found: {path}")
    items = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if field is not None:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
            if field not in record:
                raise ValueError(f"{path}:{lineno}: no field {field!r} (keys: {sorted(record)})")
            item = str(record[field])
        else:
            item = line.replace("\\n", "\n")
        if not item.strip():
            raise ValueError(f"{path}:{lineno}: empty item (embeddings of nothing are undefined)")
        items.append(item)
    if not items:
        raise ValueError(f"{path}: no items to embed")
    return items


def write_vectors(path, vectors: np.ndarray) -> None:
    """Writes `vectors` to `.npy` or `.safetensors` (key `embeddings`) via temp file + rename."""
    path = epath.Path(path)
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
    p.add_argument("--field", default=None, help="JSONL field to embed (e.g. code, docstring)")
    p.add_argument("--kind", choices=sorted(DEFAULT_LENGTHS), default="text")
    p.add_argument("--max-length", type=int, default=None, help="default: 64 text / 360 code")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the model's)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p embed`; returns the exit status."""
    args = build_parser().parse_args(argv)
    from codet5p_jax import from_pretrained

    try:
        items = read_items(args.input, args.field)
        pretrained = from_pretrained(args.model)
        vocabulary = None
        if args.tokenizer:
            from tasks.vocabularies import CodeT5Vocabulary

            vocabulary = CodeT5Vocabulary(args.tokenizer)
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
