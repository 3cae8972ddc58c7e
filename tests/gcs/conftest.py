"""The local Cloud Storage (tests/gcs_testbed.py) as a session fixture."""

import json
import os
import pathlib
import subprocess
import sys
import time

import gcs_testbed
import pytest

TESTS = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
    """Starts the emulator + proxy process; yields `(info, env)`: testbed.json's contents and
    an environment (os.environ plus `gcs_testbed.client_env`) for subprocesses. Bucket `bucket`
    exists."""
    directory = tmp_path_factory.mktemp("gcs")
    log = open(directory / "testbed.log", "wb")  # noqa: SIM115 (closed at teardown)
    proc = subprocess.Popen(
        [sys.executable, str(TESTS / "gcs_testbed.py"), str(directory)], stdout=log, stderr=log
    )
    try:
        deadline = time.time() + 60
        while not (directory / "testbed.json").is_file():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"GCS testbed did not start: {(directory / 'testbed.log').read_text()}")
            time.sleep(0.1)
        info = json.loads((directory / "testbed.json").read_text())
        gcs_testbed.create_bucket(info, "bucket")
        yield info, {**os.environ, **gcs_testbed.client_env(info)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
