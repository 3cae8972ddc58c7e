"""Training metrics: window averages, clu writers (TensorBoard + JSONL), console, loss plot.

Per log window the trainer hands `MetricsLogger.log` the device metrics of every step; they are
fetched once per window (so the device is not synchronised every step), checked for NaN (the
first bad step is named in the error), averaged and written to

* `MODEL_DIR/events.out.tfevents.*` (clu `SummaryWriter`, TensorBoard),
* `MODEL_DIR/metrics.jsonl` (one JSON object per logged step),
* the console: a tqdm progress bar on a terminal, plain `step N: ...` lines otherwise.

`plot_loss_curve` turns `metrics.jsonl` into `MODEL_DIR/loss_curve.png` at the end of a run.

Averaging: a metric `stat/<group>` (e.g. `loss/span_denoising`) is weighted by
`tokens/<group>` when the batch reports it, so per-objective numbers are token means over the
window; every other metric is a plain mean over steps.
"""

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from clu import metric_writers
from etils import epath

from codet5p_jax import atomic_files

log = logging.getLogger(__name__)

# Peak dense bf16 FLOP/s per chip, for the MFU estimate (vendor datasheets).
PEAK_FLOPS = {
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "NVIDIA H100 80GB HBM3": 989e12,
    "NVIDIA A100-SXM4-80GB": 312e12,
}


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite."""


class JsonlWriter(metric_writers.MetricWriter):
    """clu writer appending `{"step": s, **scalars}` lines to a JSONL file.

    Args:
      path: The JSONL file.
      keep_through: Drop existing rows of later steps first: a run resuming from the checkpoint
        of this step recomputes them, and the file must match the checkpoint (no step twice).
    """

    def __init__(self, path: str | epath.Path, keep_through: int | None = None):
        self.path = epath.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_through is not None and self.path.is_file():
            _truncate_after(self.path, keep_through)
        # On gs:// (tf.io.gfile) "a" re-uploads the whole object at each flush: GCS objects
        # cannot be appended to, and an upload is atomic, so the file is never half a row.
        self._files = contextlib.ExitStack()  # epath's gs:// open() is a context manager
        self._file = self._files.enter_context(self.path.open("a"))

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def write_summaries(self, step, values, metadata=None):
        pass  # only scalars go to JSONL

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        self._file.flush()

    def close(self):
        self._files.close()


def _truncate_after(path: epath.Path, step: int) -> None:
    """Rewrites the JSONL file `path` without its rows of steps after `step`."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [x for x in lines if x.strip() and _row_step(x) <= step]
    if len(kept) == len(lines):
        return
    log.info(
        "%s: dropped %d rows after step %d (not in the checkpoint this run starts from)",
        path,
        len(lines) - len(kept),
        step,
    )
    atomic_files.write_text(path, "".join(kept))


def _row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # a damaged row (a run killed mid-write) goes too


def average_window(rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Averages per-step metric dicts (token-weighted for `stat/<group>` with `tokens/<group>`)."""
    out = {}
    keys = {k for r in rows for k in r}
    for k in sorted(keys):
        vals = np.array([r[k] for r in rows if k in r], np.float64)
        stat, _, group = k.partition("/")
        weight_key = f"tokens/{group}"
        if group and stat != "tokens" and weight_key in keys:
            w = np.array([r.get(weight_key, 0.0) for r in rows if k in r], np.float64)
            out[k] = float((vals * w).sum() / w.sum()) if w.sum() > 0 else float("nan")
        elif k.startswith("tokens"):
            out[k] = float(vals.sum())  # tokens are a total over the window
        else:
            out[k] = float(vals.mean())
    return out


def peak_flops_per_device(override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: `override`, else the datasheet table, else None (unknown)."""
    if override:
        return float(override)
    return PEAK_FLOPS.get(jax.devices()[0].device_kind)


class MetricsLogger:
    """Collects step metrics and writes window averages, throughput and MFU.

    Args:
      model_dir: Run directory (events and metrics.jsonl go there); None = console only.
      total_steps: Last step of the run (for the progress bar).
      tokens_per_step: Tokens per global batch (encoder + decoder positions), for tokens/s.
      flops_per_step: FLOPs of one step's per-device program (XLA cost analysis), for MFU.
      peak_flops: Peak FLOP/s per device for MFU (None = datasheet table / skip).
      start_step: First step of this process (for the bar on resume).
    """

    def __init__(
        self,
        model_dir: str | epath.Path | None,
        *,
        total_steps: int,
        tokens_per_step: int,
        flops_per_step: float | None = None,
        peak_flops: float | None = None,
        start_step: int = 0,
    ):
        self.is_lead = jax.process_index() == 0
        writers = []
        if model_dir is not None and self.is_lead:
            writers.append(metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(model_dir))))
            writers.append(
                JsonlWriter(epath.Path(model_dir) / "metrics.jsonl", keep_through=start_step)
            )
        self.writer = metric_writers.MultiWriter(writers)
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        # XLA's cost analysis counts the FLOPs of the per-device SPMD program, so MFU compares
        # them with one device's peak.
        self.peak = peak_flops_per_device(peak_flops)
        self.bar = None
        if self.is_lead and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
        self._last_time = time.perf_counter()
        self._last_step = start_step
        self.history: list[dict[str, float]] = []

    def log(
        self,
        step: int,
        step_metrics: Sequence[tuple[int, Mapping[str, jax.Array]]],
        extra: Mapping[str, float] | None = None,
    ) -> dict:
        """Fetches, NaN-checks, averages and writes the metrics of steps up to `step`.

        Args:
          step: The number of completed steps (the x value written).
          step_metrics: `(step_index, metrics)` for each step since the last call; step_index is
            the 1-based step that produced them.
          extra: Scalars written as they are (the trainer's `time/*_s`: step, data-wait and
            checkpoint seconds per step).

        Returns:
          The averaged scalars written.

        Raises:
          NonFiniteLossError: naming the first step whose loss is NaN/inf.
        """
        host = jax.device_get([m for _, m in step_metrics])
        for (idx, _), m in zip(step_metrics, host, strict=True):
            if not math.isfinite(float(m["loss"])):
                raise NonFiniteLossError(
                    f"Loss is {float(m['loss'])} at step {idx}: stopping (no checkpoint of this "
                    "state is written). Lower the learning rate, enable clipping or check the data."
                )
        scalars = average_window([{k: float(v) for k, v in m.items()} for m in host])
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        seconds = max(now - self._last_time, 1e-9)
        scalars["steps_per_second"] = steps / seconds
        scalars["tokens_per_second"] = steps * self.tokens_per_step / seconds
        if self.flops_per_step and self.peak:
            scalars["mfu"] = steps * self.flops_per_step / seconds / self.peak
        self._last_time, self._last_step = now, step
        scalars.update(extra or {})
        self.writer.write_scalars(step, scalars)
        self.history.append({"step": step, **scalars})
        self._print(step, scalars, steps)
        return scalars

    def _print(self, step: int, scalars: Mapping[str, float], steps: int) -> None:
        if not self.is_lead:
            return
        shown = {k: scalars[k] for k in ("loss", "accuracy", "learning_rate") if k in scalars}
        shown["tok/s"] = scalars["tokens_per_second"]
        if self.bar is not None:
            self.bar.update(steps)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
        else:
            text = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
            print(f"step {step}: {text}", flush=True)

    def reset_timer(self) -> None:
        """Excludes a pause (compilation, checkpoint restore, eval) from the next throughput."""
        self._last_time = time.perf_counter()

    def close(self) -> None:
        """Flushes and closes the writers and the progress bar."""
        if self.bar is not None:
            self.bar.close()
        self.writer.flush()
        self.writer.close()


def read_metrics(model_dir: str | epath.Path) -> list[dict[str, float]]:
    """Rows of `MODEL_DIR/metrics.jsonl` (later rows win when a resumed run rewrote a step)."""
    path = epath.Path(model_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    by_step = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            by_step[row["step"]] = row
    return [by_step[s] for s in sorted(by_step)]


def plot_loss_curve(model_dir: str | epath.Path, out: str | epath.Path | None = None):
    """Writes the training loss (and per-objective losses) against step to a PNG.

    Returns:
      The PNG path, or None when there are no metrics yet.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display: write files only
    import matplotlib.pyplot as plt

    rows = read_metrics(model_dir)
    if not rows:
        return None
    out = epath.Path(out) if out else epath.Path(model_dir) / "loss_curve.png"
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    # Component losses: "loss/<objective>" (stage 1) or "loss_<name>" (stage 2).
    keys = ["loss"] + sorted({k for r in rows for k in r if k.startswith(("loss/", "loss_"))})
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if k in r and math.isfinite(r[k])]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=k, linewidth=2 if k == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy" if len(keys) > 0 else "loss")
    ax.set_title(epath.Path(model_dir).name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_files.atomic_file(out, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)
    return out


def summarize(model_dir: str | epath.Path) -> str:
    """A few lines on a finished run: steps, first/last loss (per objective), throughput, plot."""
    rows = read_metrics(model_dir)
    if not rows:
        return f"{model_dir}: no metrics.jsonl"
    first, last = rows[0], rows[-1]
    lines = [f"{model_dir}: {last['step']} steps"]
    for key in ["loss"] + sorted(k for k in last if k.startswith(("loss/", "loss_"))):
        if key in first and key in last:
            lines.append(
                f"  {key:<28} {first[key]:8.4f} (step {first['step']}) -> {last[key]:8.4f}"
            )
    for key in sorted(k for k in last if "accuracy" in k and "/" not in k) + [
        "tokens_per_second",
        "mfu",
    ]:
        if key in last:
            lines.append(f"  {key:<28} {last[key]:.4g}")
    plot = epath.Path(model_dir) / "loss_curve.png"
    if plot.is_file():
        lines.append(f"  plot: {plot}")
    return "\n".join(lines)
