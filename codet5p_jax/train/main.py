"""`codet5p train` / `python -m codet5p_jax.train`: run `train()` from gin files, as t5x.

    codet5p train --gin_file=gin/experiments/tiny_stage1.gin \
        --gin.MODEL_DIR="'/tmp/tiny_stage1'" --gin.TRAIN_STEPS=200
"""

import logging
import sys

import gin
from codet5p_jax import gin_cli

PROG = "codet5p train"


def main(argv: list[str] | None = None) -> int:
    """Parses flags and gin, trains, prints a summary; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = gin_cli.parse_args(argv, PROG, "Train a CodeT5+ model from gin configs (t5x-style).")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    gin_cli.init_distributed(args)
    from codet5p_jax.checkpointing import CheckpointError
    from codet5p_jax.metrics_writer import NonFiniteLossError
    from codet5p_jax.train import trainer

    try:
        gin_cli.parse_gin(args)
        result = trainer.train()
    except gin_cli.UsageError as e:
        return gin_cli.fail(PROG, str(e))
    except (CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        return gin_cli.fail(PROG, str(e))
    except (ValueError, TypeError, RuntimeError) as e:
        message = gin_cli.required_error(e) or f"{type(e).__name__}: {e}"
        return gin_cli.fail(PROG, message)
    finally:
        gin.clear_config()
    final = result["final_metrics"]
    shown = ", ".join(
        f"{k}={final[k]:.4g}" for k in ("loss", "accuracy", "tokens_per_second") if k in final
    )
    status = "stopped (checkpoint saved)" if result["preempted"] else "done"
    print(f"{PROG}: {status} at step {result['step']}: {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
