"""`codet5p infer`: decode a task's split with a checkpoint and write predictions as JSONL.

See `codet5p_jax.evaluation.infer.infer` and `gin/runs/infer.gin`.
"""

from codet5p_jax.cli import gin_flags
from codet5p_jax.evaluation.infer import infer

PROG = "codet5p infer"


def main(argv: list[str] | None = None) -> int:
    """`codet5p infer` entry point."""
    status, n = gin_flags.run_mode(
        argv, PROG, "Write a checkpoint's predictions for a task as JSONL.", infer
    )
    if status:
        return status
    print(f"{PROG}: wrote {n} predictions")
    return 0
