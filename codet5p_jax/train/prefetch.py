"""Training batches made into device arrays ahead of the step, on a background thread.

JAX dispatches a train step asynchronously: `compiled(state, batch, rng)` returns as soon as the
step is queued. The trainer's next `next(batches)` then runs while the device computes, but it
runs on the trainer's thread, so the host still reads the next batch (tf.data) and copies it to
the devices (`jax.make_array_from_process_local_data`) in series with its own dispatch work. A
`DevicePrefetcher` does that reading and copying on a daemon thread, up to `buffer_size`
batches ahead, so the trainer's `next()` usually finds a global, sharded batch already on the
devices.

What it keeps exact:

* **Order**: batches come out in the order the host iterator yields them (one FIFO queue).
* **Errors**: an exception raised while reading or converting batch `k` is raised again, the
  same object, by the trainer's `next()` for batch `k`, after batches `0..k-1` were delivered:
  a malformed-data error reaches the command's one-line report exactly as without prefetch.
* **Data position**: the checkpointed position is the trainer's step (one batch per step), not
  anything counted here, so batches read ahead but never trained are not "consumed": a resumed
  run skips exactly the trained batches (`tests/train/test_prefetch.py` checks it).
* **Bounded**: at most `buffer_size` batches are read ahead of the trainer (a semaphore counts
  them, so device memory holds at most `buffer_size` waiting batches); `limit` stops reading
  after the run's last step.
* **Lifetime**: the thread is a daemon (it never keeps the process alive), ends by itself after
  `limit` batches, the end of the data or an error, and `close()` (end of training, preemption,
  a failed step) stops it and releases what it holds.

`buffer_size = 0` turns the thread off: each `next()` reads and converts in the caller, exactly
the loop before prefetching (the baseline of `benchmarks/prefetch.py`).
"""

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gin
from codet5p_jax import partitioning

log = logging.getLogger(__name__)
# How often a waiting producer looks at the stop flag (seconds): the longest `close()` waits for
# a thread that is waiting for room in the buffer.
_POLL_S = 0.05
_BATCH, _END, _ERROR = "batch", "end", "error"


class DevicePrefetcher:
    """Iterator over `convert(b)` for the host batches `b`, produced ahead on a daemon thread.

    Args:
      batches: Host batches (e.g. `data.host_batches(...)`); read only by this object afterwards.
      convert: `host batch -> device batch` (the trainer's `host_local_to_global`).
      buffer_size: Batches read and converted ahead of the consumer; 0 = no thread, each
        `next()` reads and converts in the calling thread.
      limit: Batches to produce at most (the run's remaining steps); None = until the data ends.
    """

    def __init__(
        self,
        batches: Iterator,
        convert: Callable[[Any], Any],
        *,
        buffer_size: int,
        limit: int | None = None,
    ):
        check_buffer_size(buffer_size)
        self._batches = iter(batches)
        self._convert = convert
        self._limit = limit
        self.buffer_size = buffer_size
        self.produced = 0  # batches read from `batches` so far (read ahead included)
        self._finished = False
        self._thread = None
        if buffer_size == 0:
            return
        # The semaphore bounds what is read ahead (one permit per batch not yet handed out); the
        # queue (one spare place for the end / error marker) then never blocks a put.
        self._room = threading.Semaphore(buffer_size)
        self._queue: queue.Queue = queue.Queue(maxsize=buffer_size + 1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="codet5p-prefetch", daemon=True)
        self._thread.start()

    # -- the producer thread --------------------------------------------------------------------
    def _produce(self) -> None:
        try:
            while self._limit is None or self.produced < self._limit:
                if not self._wait_for_room():
                    return  # closed
                try:
                    host = next(self._batches)
                except StopIteration:
                    break
                self.produced += 1
                batch = self._convert(host)
                if self._stop.is_set():
                    return  # closed while reading: nobody will take it
                self._queue.put((_BATCH, batch))
            self._queue.put((_END, None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._queue.put((_ERROR, e))
        finally:
            # Only this thread ever runs the iterator, so only it may close it (a generator
            # being closed from another thread while it runs raises). Nothing may escape this
            # thread: threading would print a traceback the trainer's one-line errors never show.
            try:
                _close_iterator(self._batches)
            except Exception as e:  # noqa: BLE001 - the data's end; logged, not raised
                log.warning("closing the host batch iterator failed: %s", e)

    def _wait_for_room(self) -> bool:
        while not self._stop.is_set():
            if self._room.acquire(timeout=_POLL_S):
                return not self._stop.is_set()
        return False

    # -- the consumer ---------------------------------------------------------------------------
    def __iter__(self) -> "DevicePrefetcher":
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        if self._thread is None:
            if self._limit is not None and self.produced >= self._limit:
                self._finished = True
                raise StopIteration
            host = next(self._batches)
            self.produced += 1
            return self._convert(host)
        kind, value = self._queue.get()
        if kind == _BATCH:
            self._room.release()
            return value
        self._finished = True
        if kind == _ERROR:
            raise value
        raise StopIteration

    def close(self, timeout: float = 5.0) -> None:
        """Stops the thread and drops the batches it holds; safe to call more than once.

        A thread stuck inside the host iterator (a slow read) is left to finish on its own: it
        is a daemon and sees the stop flag before reading again.
        """
        self._finished = True
        if self._thread is None:
            _close_iterator(self._batches)
            return
        self._stop.set()
        while True:  # drop the waiting device batches now rather than when the thread ends
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("the batch prefetch thread did not stop within %g s (inside a read of "
                        "the host iterator); left behind as a daemon", timeout)  # fmt: skip

    @property
    def running(self) -> bool:
        """Whether the producer thread is still alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "DevicePrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _close_iterator(batches) -> None:
    """Closes a generator (its tf.data iterators with it); plain iterators have nothing to close."""
    close = getattr(batches, "close", None)
    if close is not None:
        close()


def check_buffer_size(buffer_size) -> None:
    """Raises ValueError unless `buffer_size` is a non-negative int (naming the gin setting)."""
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 0:
        raise ValueError(
            f"make_prefetcher.buffer_size must be a non-negative integer (0 = no prefetch), got "
            f"{buffer_size!r}"
        )


@gin.configurable
def make_prefetcher(*, buffer_size: int = 2) -> Callable[..., DevicePrefetcher]:
    """The trainer's prefetcher factory, checked before a run writes anything (gin).

    Args:
      buffer_size: Batches made into device arrays ahead of the running step (gin:
        `make_prefetcher.buffer_size = 0` turns prefetching off).

    Returns:
      `(host_batches, mesh, *, limit) -> DevicePrefetcher` of global batches sharded over the
      mesh's batch axes (`partitioning.host_local_to_global`, as the loop did itself before).

    Raises:
      ValueError: `buffer_size` is not a non-negative integer.
    """
    check_buffer_size(buffer_size)

    def start(host_batches: Iterator, mesh, *, limit: int | None = None) -> DevicePrefetcher:
        to_device = functools.partial(partitioning.host_local_to_global, mesh=mesh)
        return DevicePrefetcher(host_batches, to_device, buffer_size=buffer_size, limit=limit)

    return start
