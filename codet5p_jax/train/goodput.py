"""Where a run's wall time goes (goodput vs badput), and the profiler window.

`Timer` accumulates wall time per phase: `step` (dispatching and running train steps, which
is the goodput), `data` (waiting for the next batch on the devices; with prefetching,
`train/prefetch.py`, only what its thread did not read and copy ahead), `checkpoint`
(starting async saves and waiting for them), `compile`, and the rest of `train()` as `setup`.
JAX dispatches steps asynchronously, so a step's device time is paid where the host next
blocks on it: the metrics fetch every `log_every` steps, which is counted as `step`. `window()`
gives per-step means of the last logging window for the metrics; `summary()` the whole run for
the final log line.

`Profile` writes a JAX profiler trace of steps `[first, last)` into
`MODEL_DIR/plugins/profile/<run>/` (TensorBoard's profile plugin reads that layout). A `gs://`
MODEL_DIR gets the trace through a local directory and a copy (the profiler writes local files).
"""

import logging
import shutil
import tempfile
import time

import jax

from codet5p_jax import storage

log = logging.getLogger(__name__)
PHASES = ("step", "data", "checkpoint", "compile")


class Timer:
    """Accumulates wall time per phase, in total and since the last `window()`."""

    def __init__(self):
        self.start = time.perf_counter()
        self.total = dict.fromkeys(PHASES, 0.0)
        self._window = dict.fromkeys(PHASES, 0.0)
        self._window_steps = 0

    def add(self, phase: str, seconds: float) -> None:
        self.total[phase] += seconds
        self._window[phase] += seconds

    def measure(self, phase: str):
        """Context manager adding the wall time of its block to `phase`."""
        timer = self

        class _Block:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.add(phase, time.perf_counter() - self.t)

        return _Block()

    def count_step(self) -> None:
        self._window_steps += 1

    def window(self) -> dict[str, float]:
        """Mean seconds per step of step / data wait / checkpoint since the last call."""
        n = max(self._window_steps, 1)
        out = {f"time/{p}_s": self._window[p] / n for p in ("step", "data", "checkpoint")}
        self._window = dict.fromkeys(PHASES, 0.0)
        self._window_steps = 0
        return out

    def summary(self) -> dict[str, float]:
        """Seconds per phase for the whole run, `setup` (the rest), `wall` and `badput`."""
        wall = time.perf_counter() - self.start
        out = dict(self.total)
        out["setup"] = max(wall - sum(self.total.values()), 0.0)
        out["wall"] = wall
        out["badput"] = 1.0 - self.total["step"] / wall if wall > 0 else 0.0
        return out


def describe(summary: dict[str, float]) -> str:
    """`"badput 42.0% of 100.0 s: setup 20.0 s, compile ..."` for the final log line."""
    parts = ", ".join(
        f"{name} {summary[name]:.1f} s" for name in ("setup", "compile", "data", "checkpoint")
    )
    return (
        f"badput {100 * summary['badput']:.1f}% of {summary['wall']:.1f} s (train steps "
        f"{summary['step']:.1f} s; not stepping: {parts})"
    )


class Profile:
    """Starts / stops a JAX profiler trace around steps `[first, last)` (1-based step numbers
    of the steps traced: (20, 25) traces steps 20 to 24)."""

    def __init__(self, model_dir, steps: tuple[int, int] | None):
        if steps is not None:
            first, last = (int(s) for s in steps)
            if not 1 <= first < last:
                raise ValueError(f"train.profile_steps must be (first, last) with 1 <= first < "
                                 f"last, got {steps!r}")  # fmt: skip
            steps = (first, last)
        self.steps = steps
        self.target = storage.path(model_dir)
        self._local = None
        self.active = False

    def before_step(self, step: int) -> None:
        """Call before running step `step` (1-based)."""
        if self.steps is None or jax.process_index() != 0:
            return
        if step == self.steps[0] and not self.active:
            remote = storage.is_remote(self.target)
            self._local = tempfile.mkdtemp(prefix="codet5p_trace_") if remote else None
            jax.profiler.start_trace(self._local or str(self.target))
            self.active = True
        elif step == self.steps[1]:
            self.stop()

    def stop(self) -> None:
        """Ends the trace (also at the end of a run shorter than the window)."""
        if not self.active:
            return
        jax.profiler.stop_trace()
        self.active = False
        if self._local is not None:
            storage.copy_tree(self._local, self.target)
            shutil.rmtree(self._local, ignore_errors=True)
        log.info(
            "profiler trace of steps %s written to %s/plugins/profile", self.steps, self.target
        )
