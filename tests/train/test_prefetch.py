"""`train/prefetch.py` alone: order, the bound on read-ahead, errors at their item, the thread's
lifetime, and global batches sharded over a mesh of the 8 fake CPU devices."""

import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from codet5p_jax import partitioning
from codet5p_jax.train.prefetch import DevicePrefetcher, make_prefetcher

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.005)


class Source:
    """An instrumented host iterator: counts reads, notes how far ahead of the consumer each read
    was, raises at item `fail_at`, and records being closed."""

    def __init__(self, n: int | None = None, fail_at: int | None = None, delay: float = 0.0):
        self.n, self.fail_at, self.delay = n, fail_at, delay
        self.read = 0
        self.consumed = 0  # set by the test's consumer
        self.ahead: list[int] = []  # read - consumed at each read
        self.closed = threading.Event()

    def __iter__(self):
        try:
            i = 0
            while self.n is None or i < self.n:
                if self.delay:
                    time.sleep(self.delay)
                if i == self.fail_at:
                    raise ValueError(f"toy corpus: malformed record {i} (field 'inputs')")
                self.read += 1
                self.ahead.append(self.read - self.consumed)
                yield {"x": np.full((4, 3), i, np.int32)}
                i += 1
        finally:
            self.closed.set()


def _ids(batches) -> list[int]:
    return [int(np.asarray(b["x"])[0, 0]) for b in batches]


@pytest.mark.parametrize("buffer_size", [0, 1, 2, 5])
def test_order_and_values_are_those_of_the_source(buffer_size):
    """Every item once, in order, converted, whatever the producer's and consumer's speeds."""
    src = Source(n=30)
    rng = np.random.default_rng(0)

    def convert(b):
        time.sleep(float(rng.uniform(0, 0.002)))  # jitter the producer
        return {"x": b["x"] * 10}

    out = []
    with DevicePrefetcher(iter(src), convert, buffer_size=buffer_size) as it:
        for batch in it:
            time.sleep(float(rng.uniform(0, 0.002)))  # and the consumer
            out.append(batch)
    assert _ids(out) == [10 * i for i in range(30)]


@pytest.mark.parametrize("buffer_size", [1, 3])
def test_read_ahead_is_bounded_by_buffer_size(buffer_size):
    """The thread reads up to `buffer_size` items ahead of the consumer and never more."""
    src = Source(n=20)
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=buffer_size)
    try:
        _wait_until(lambda: src.read == buffer_size)  # fills the buffer while nobody consumes
        time.sleep(0.3)
        assert src.read == buffer_size  # and then waits
        for _ in range(20):
            src.consumed += 1  # counted when asked for: the thread may read as soon as it is
            next(it)
            time.sleep(0.005)
        assert max(src.ahead) == buffer_size, src.ahead
    finally:
        it.close()


def test_no_thread_when_buffer_size_is_zero():
    src = Source(n=5)
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=0)
    time.sleep(0.1)
    assert src.read == 0 and not it.running  # nothing read before it is asked for
    assert _ids([next(it), next(it)]) == [0, 1] and src.read == 2


@pytest.mark.parametrize("buffer_size", [0, 2])
def test_source_error_is_raised_at_its_item(buffer_size):
    """Items before the bad one are delivered; the consumer's next() for the bad one raises the
    source's own exception (type and message), once; then the iterator is finished."""
    src = Source(fail_at=4)
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=buffer_size)
    got = [next(it) for _ in range(4)]
    assert _ids(got) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r"^toy corpus: malformed record 4 \(field 'inputs'\)$"):
        next(it)
    with pytest.raises(StopIteration):
        next(it)
    it.close()
    assert not it.running and src.closed.is_set()


def test_convert_error_is_raised_at_its_item():
    src = Source(n=10)

    def convert(b):
        if int(b["x"][0, 0]) == 2:
            raise TypeError("batch 2: field 'x' has dtype object")
        return b

    it = DevicePrefetcher(iter(src), convert, buffer_size=3)
    assert _ids([next(it), next(it)]) == [0, 1]
    with pytest.raises(TypeError, match="batch 2: field 'x'"):
        next(it)
    _wait_until(lambda: not it.running)


@pytest.mark.parametrize("buffer_size", [0, 2])
def test_limit_stops_reading(buffer_size):
    """`limit` batches are read, not one more (the run's last step), then StopIteration."""
    src = Source()  # endless
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=buffer_size, limit=3)
    assert _ids([next(it) for _ in range(3)]) == [0, 1, 2]
    with pytest.raises(StopIteration):
        next(it)
    _wait_until(lambda: not it.running)
    assert src.read == 3
    if buffer_size:  # the thread ended by itself and closed the source
        assert src.closed.is_set()
    it.close()
    assert src.closed.is_set()


def test_thread_ends_at_the_end_of_the_data():
    src = Source(n=3)
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=2)
    assert _ids(list(it)) == [0, 1, 2]
    _wait_until(lambda: not it.running)
    assert src.closed.is_set()


def test_close_stops_a_waiting_thread_and_drops_its_batches():
    """close() in the middle (preemption, stop_after): the thread waiting for room stops, the
    source is closed by the thread, buffered batches are released, next() is over."""
    src = Source()  # endless
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=2)
    assert _ids([next(it)]) == [0]
    _wait_until(lambda: src.read == 3)  # one taken + two buffered: the thread now waits
    t0 = time.monotonic()
    it.close()
    assert time.monotonic() - t0 < 2.0
    assert not it.running and src.closed.is_set()
    assert it._queue.empty()
    with pytest.raises(StopIteration):
        next(it)
    it.close()  # twice is fine


def test_close_does_not_wait_forever_for_a_stuck_source(caplog):
    """A source stuck in a read: close() gives up after its timeout and says so; the daemon
    thread sees the stop flag after the read and reads nothing more."""
    src = Source(delay=0.5)
    it = DevicePrefetcher(iter(src), lambda b: b, buffer_size=2)
    time.sleep(0.1)  # inside the first (slow) read
    it.close(timeout=0.05)
    assert "did not stop within" in caplog.text
    _wait_until(lambda: not it.running)
    assert src.read <= 1


def test_thread_never_keeps_the_process_alive():
    """A prefetcher left open over an endless, slow source: the interpreter still exits."""
    code = (
        "import itertools, time\n"
        "from codet5p_jax.train.prefetch import DevicePrefetcher\n"
        "def slow():\n"
        "    for i in itertools.count():\n"
        "        time.sleep(0.01)\n"
        "        yield i\n"
        "it = DevicePrefetcher(slow(), lambda b: b, buffer_size=2)\n"
        "assert next(it) == 0\n"
        "print('left open')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "left open"


def test_global_batches_on_a_mesh_of_8_devices():
    """The trainer's factory: each item is the global batch of `host_local_to_global` (values,
    shape and the batch sharding over all 8 devices), built on the thread."""
    assert jax.device_count() == 8
    mesh = partitioning.make_mesh()
    host = [
        {
            "encoder_input_tokens": np.arange(16 * 5, dtype=np.int32).reshape(16, 5) + 1000 * i,
            "decoder_loss_weights": np.full((16, 3), i, np.float32),
        }
        for i in range(4)
    ]
    threads = set()

    def spy(batches):
        for b in batches:
            threads.add(threading.current_thread().name)
            yield b

    with make_prefetcher(buffer_size=2)(spy(host), mesh, limit=4) as it:
        got = list(it)
    assert threads == {"codet5p-prefetch"}
    assert len(got) == 4
    want_sharding = partitioning.batch_sharding(mesh)
    for g, h in zip(got, host, strict=True):
        assert g.keys() == h.keys()
        for k in h:
            assert isinstance(g[k], jax.Array)
            assert g[k].sharding == want_sharding
            assert len(g[k].addressable_shards) == 8
            assert g[k].addressable_shards[0].data.shape == (2, *h[k].shape[1:])
            np.testing.assert_array_equal(np.asarray(g[k]), h[k])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_bad_buffer_size_names_the_setting(bad):
    with pytest.raises(ValueError, match=r"make_prefetcher\.buffer_size must be a non-negative"):
        make_prefetcher(buffer_size=bad)
