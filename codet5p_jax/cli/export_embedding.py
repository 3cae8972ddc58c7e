"""`codet5p export-embedding SRC DST [hf|orbax]`: a stage-2 run as a 110m-embedding checkpoint."""

import sys

from codet5p_jax.convert.embedding_export import export_embedding


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3):
        print("usage: codet5p export-embedding SRC DST [hf|orbax]")
        return 2
    cfg = export_embedding(*argv)
    print(f"wrote {cfg.name} ({cfg.kind}, embed_dim={cfg.embed_dim}) to {argv[1]}")
    return 0
