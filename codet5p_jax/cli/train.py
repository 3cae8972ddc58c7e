"""`codet5p train` / `python -m codet5p_jax.cli train`: run `train()` from gin files, as t5x.

    codet5p train --gin_file=gin/experiments/tiny_stage1.gin \
        --gin.MODEL_DIR="'/tmp/tiny_stage1'" --gin.TRAIN_STEPS=200
"""

import sys

from codet5p_jax.cli import gin_flags

PROG = "codet5p train"


def main(argv: list[str] | None = None) -> int:
    """Parses flags and gin, trains, prints a summary; returns the exit status."""
    from codet5p_jax.checkpointing import CheckpointError
    from codet5p_jax.train import trainer
    from codet5p_jax.train.metrics import NonFiniteLossError
    from codet5p_jax.train.run_checks import RunConfigError

    status, result = gin_flags.run_mode(
        argv,
        PROG,
        "Train a CodeT5+ model from gin configs (t5x-style).",
        trainer.train,
        (CheckpointError, NonFiniteLossError, RunConfigError),
    )
    if status:
        return status
    final = result["final_metrics"]
    shown = ", ".join(
        f"{k}={final[k]:.4g}" for k in ("loss", "accuracy", "tokens_per_second") if k in final
    )
    status = "stopped (checkpoint saved)" if result["preempted"] else "done"
    print(f"{PROG}: {status} at step {result['step']}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
