"""`codet5p export-embedding SRC DST [hf|orbax]`: a stage-2 model as a 110m-embedding checkpoint.

SRC is any checkpoint the loader reads (HF / orbax directory, training MODEL_DIR: its newest
step); DST a new directory, written all-or-nothing.
"""

import sys

from codet5p_jax import loading
from codet5p_jax.convert.embedding_export import embedding_from_bimodal
from codet5p_jax.convert.mapping import ConversionError


def export_embedding(src, dst, fmt: str = "hf", tokenizer_dir=None):
    """Loads `src` and writes its embedding model (encoder + projection) to `dst`.

    Args:
      src: Source checkpoint; a MODEL_DIR gives its newest step.
      dst: New directory (must not exist; written atomically).
      fmt: "hf" (the released `CodeT5p_Embedding` layout) or "orbax".
      tokenizer_dir: Tokenizer files to copy along (default: the source's, if any).

    Returns:
      The exported model's config.
    """
    ckpt = loading.load(src)
    emb_cfg, params = embedding_from_bimodal(ckpt.config, ckpt.params)
    loading.save(dst, emb_cfg, params, fmt, tokenizer_dir or ckpt.tokenizer_dir)
    return emb_cfg


def main(argv: list[str] | None = None) -> int:
    """Entry point of `codet5p export-embedding`; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: codet5p export-embedding SRC DST [hf|orbax]", file=sys.stderr)
        return 2
    try:
        cfg = export_embedding(*argv)
    except ConversionError as e:
        print(f"codet5p export-embedding: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {cfg.name} ({cfg.kind}, embed_dim={cfg.embed_dim}) to {argv[1]}")
    return 0
