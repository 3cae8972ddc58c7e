"""`codet5p rag`: retrieval-augmented generation over a pairs file, scored (gin run).

See `codet5p_jax.evaluation.rag.run_rag` and `gin/runs/rag.gin`.
"""

import json

from codet5p_jax.cli import gin_flags
from codet5p_jax.evaluation.rag import run_rag

PROG = "codet5p rag"


def main(argv: list[str] | None = None) -> int:
    """`codet5p rag` entry point."""
    status, metrics = gin_flags.run_mode(
        argv, PROG, "Retrieve from an index, generate, and score EM / BLEU-4.", run_rag
    )
    if status:
        return status
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0
