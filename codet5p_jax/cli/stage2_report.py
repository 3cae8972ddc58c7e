"""`codet5p stage2-report --stage1 DIR --stage2 DIR`: held-out retrieval before/after stage 2.

See `codet5p_jax.evaluation.stage2_report.report`.
"""

import argparse
import json

from codet5p_jax import atomic_files
from codet5p_jax.evaluation.stage2_report import report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="codet5p stage2-report", description=__doc__)
    p.add_argument("--stage1", required=True, help="stage-1 MODEL_DIR (INITIAL_CHECKPOINT_PATH)")
    p.add_argument("--stage2", required=True, help="stage-2 MODEL_DIR")
    p.add_argument("--data", default="stdlib:validation")
    p.add_argument("--seed", type=int, default=0, help="train.seed of the stage-2 run")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    result = report(args.stage1, args.stage2, args.data, seed=args.seed)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        atomic_files.write_text(args.out, text + "\n")
    return 0
