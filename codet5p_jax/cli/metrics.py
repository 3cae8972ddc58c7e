"""`codet5p metrics MODEL_DIR...`: print run summaries from `metrics.jsonl` and re-plot the loss."""

import sys

from codet5p_jax.train.metrics import plot_loss_curve, summarize


def main(argv: list[str] | None = None) -> int:
    """`codet5p metrics MODEL_DIR...`: print run summaries (re-plots)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: codet5p metrics MODEL_DIR [MODEL_DIR...]")
        return 2
    for model_dir in argv:
        plot_loss_curve(model_dir)
        print(summarize(model_dir))
    return 0
