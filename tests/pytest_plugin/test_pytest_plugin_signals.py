"""Ctrl-C under the pytest plugin, in a real pytest process: as under tdrun, the first stops
starting tasks (running ones finish, teardown runs), the second stops waiting."""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and FIFOs")

TASKS = '''
import os
from pathlib import Path
from thread_order import mark

@mark()
def create(state):
    return 1

@mark(after=["create"])
def slow(state):
    os.write(1, b"READY\\n")
    with open(os.environ["GO_FIFO"]) as fh:   # returns when the test writes to the FIFO
        fh.read()

@mark(after=["slow"])
def after_slow(state):
    pass

@mark(after=["after_slow"], always=True)
def teardown(state):
    Path(os.environ["TEARDOWN_FILE"]).write_text("ran")
'''


def _read_until(proc: subprocess.Popen, needle: bytes, timeout: float = 30.0) -> bytes:
    """Read ``proc``'s stdout until ``needle`` appears (or fail after ``timeout`` seconds)."""
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while needle not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no {needle!r} within {timeout}s; got {seen.decode(errors='replace')!r}")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"pytest ended before {needle!r}; got {seen.decode(errors='replace')!r}")
            seen += chunk
    return seen


@pytest.fixture
def session(tmp_path):
    (tmp_path / "tasks_int.py").write_text(textwrap.dedent(TASKS))
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "PYTEST_ADDOPTS")}
    env.update(GO_FIFO=str(fifo), TEARDOWN_FILE=str(tmp_path / "teardown.txt"), TDRUN_HISTORY="off",
               PYTHONUNBUFFERED="1")
    procs = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--tdrun", "tasks_int.py", *args],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start, fifo, tmp_path / "teardown.txt"
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


def _release(fifo) -> None:
    # opening for writing blocks until the task opens it for reading: it is waiting there
    with open(fifo, "w") as fh:
        fh.write("go")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_first_ctrl_c_lets_running_tasks_finish_and_teardown_run(session, signum):
    start, fifo, teardown = session
    proc = start("-rs", "-o", "log_cli=true", "-o", "log_cli_level=WARNING", "--tdrun-history", "h.db")
    out = _read_until(proc, b"READY\n")
    proc.send_signal(signum)  # SIGTERM (CI cancelling the job) is the first Ctrl-C, as under tdrun
    out += _read_until(proc, b"interrupt again to stop waiting")  # the run heard it
    _release(fifo)
    rest, _ = proc.communicate(timeout=60)
    out = (out + rest).decode()
    assert proc.returncode == 2, out  # pytest's "interrupted", as tdrun's
    assert teardown.read_text() == "ran"
    assert re.search(r"^tasks_int\.py::slow PASSED", out, re.M)  # the running task finished
    assert re.search(r"^tasks_int\.py::after_slow SKIPPED \(cancelled: the run was interrupted\)", out, re.M)
    assert re.search(r"^tasks_int\.py::teardown PASSED", out, re.M)
    assert "Interrupted: tdrun run interrupted: running tasks finished, teardown ran" in out
    assert "3 passed, 1 skipped" in out
    from thread_order.history import HistoryStore

    with HistoryStore(teardown.parent / "h.db", readonly=True) as store:
        recorded = store.get_run("last")
    assert recorded["status"] == "interrupted"
    assert {t["name"]: t["status"] for t in recorded["tasks"]}["after_slow"] == "CANCELLED"


def test_second_ctrl_c_stops_waiting_and_says_teardown_did_not_run(session):
    start, fifo, teardown = session
    proc = start("-o", "log_cli=true", "-o", "log_cli_level=WARNING")
    out = _read_until(proc, b"READY\n")
    proc.send_signal(signal.SIGINT)
    out += _read_until(proc, b"interrupt again to stop waiting")
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    out = (out + rest).decode()
    assert proc.returncode == 2, out
    assert not teardown.exists()
    assert "teardown did not run: teardown" in out
