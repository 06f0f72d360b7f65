"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
MODULES = TESTS / "modules"
REPO = TESTS.parent


# ---------------------------------------------------------------------------- tdrun


@dataclass
class TdrunResult:
    code: int
    out: str
    err: str


@pytest.fixture
def tdrun_main(capsys, monkeypatch):
    """Call ``thread_order.cli.main.main(argv)`` in this process; returns code, stdout and stderr.

    Runs are not recorded in a history file (``TDRUN_HISTORY=off``).
    """
    from thread_order.cli.main import main

    for name in ("CI", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TDRUN_HISTORY", "off")

    def run(*argv: str) -> TdrunResult:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return TdrunResult(code, out, err)

    return run


def tdrun_env(**extra: str) -> dict[str, str]:
    """The environment for a tdrun subprocess: ours, minus what changes tdrun's output.

    History recording is off unless ``extra`` says otherwise (``TDRUN_HISTORY="on"``).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NO_COLOR", "COLUMNS", "LINES")}
    env["PYTHONUNBUFFERED"] = "1"
    env["TDRUN_HISTORY"] = "off"
    env.update(extra)
    return env


@pytest.fixture
def tdrun_proc():
    """Run ``python -m thread_order.cli.main ARGS`` as a real process; returns code, stdout and stderr."""

    def run(*argv: str, timeout: float = 60, cwd: Path | None = None, **env: str) -> TdrunResult:
        proc = subprocess.run(
            [sys.executable, "-m", "thread_order", *map(str, argv)],
            capture_output=True, text=True, timeout=timeout, env=tdrun_env(**env),
            cwd=cwd, stdin=subprocess.DEVNULL,
        )
        return TdrunResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def write_module(tmp_path):
    """Write a task module into a temporary folder and return its path."""

    def write(text: str, name: str = "tasks.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def chromium() -> str:
    """The system Chromium for browser tests: skipped on a developer machine without it,
    a failure in CI, where .ci/run installs it."""
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is not installed (apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    return CHROMIUM


def kill_hard_and_check_file(proc: subprocess.Popen, history: Path, timeout: float = 10.0) -> None:
    """SIGKILL ``proc`` (no cleanup of any kind runs), then check its history file is intact."""
    import signal
    import sqlite3

    try:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout)
    conn = sqlite3.connect(f"file:{history}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


class Lines:
    """Reads a pipe line by line on a thread, so a test can wait for a line with a timeout."""

    def __init__(self, pipe, wait: float = 30.0) -> None:
        self.wait = wait
        self.queue: queue.Queue = queue.Queue()
        self.seen: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.queue.put(line)
        self.queue.put(None)

    def wait_for(self, pattern: str, timeout: float | None = None) -> str:
        timeout = self.wait if timeout is None else timeout
        regex = re.compile(pattern)
        while True:
            try:
                line = self.queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"output ended without a line matching {pattern!r}; got {self.seen}")
            self.seen.append(line)
            if regex.search(line):
                return line

    def rest(self) -> str:
        self.thread.join(self.wait)
        while True:
            try:
                line = self.queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.seen.append(line)
        return "".join(self.seen)
