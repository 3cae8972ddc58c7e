"""`codet5p eval`: SeqIO task metrics of a checkpoint, or a code benchmark (HumanEval, ...).

See `codet5p_jax.evaluation.task_eval.evaluate` for what is run and `gin/runs/eval.gin`.
"""

import json

from codet5p_jax.cli import gin_flags
from codet5p_jax.evaluation.task_eval import evaluate

PROG = "codet5p eval"


def main(argv: list[str] | None = None) -> int:
    """`codet5p eval` entry point."""
    status, metrics = gin_flags.run_mode(
        argv, PROG, "Evaluate a checkpoint on a SeqIO task or benchmark.", evaluate
    )
    if status:
        return status
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0
