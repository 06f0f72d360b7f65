"""tdrun with async tasks as a real process: Ctrl-C twice cancels running coroutines for real."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from conftest import Lines, MODULES, tdrun_env

WAIT = 30.0


def test_sigint_twice_cancels_running_coroutines_for_real(tmp_path):
    marker = tmp_path / "cleanup.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "thread_order", str(MODULES / "async_hold.py"), "--log", "--plain",
         f"--marker={marker}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=tdrun_env(),
    )
    try:
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        out.wait_for(r"\[event_loop hold\] hold is running$")
        proc.send_signal(signal.SIGINT)
        err.wait_for(r"^interrupted: running tasks may finish, teardown tasks still run")
        assert not marker.exists()  # the first Ctrl-C lets running coroutines go on
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 2
        text = out.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the coroutine was cancelled, and its finally ran (awaiting) before tdrun exited
    assert marker.read_text() == "cleanup ran\n"
    assert re.search(r"\[event_loop hold\] hold cleaned up$", text, re.M)
    assert re.search(r"\[event_loop beside\] beside cleaned up$", text, re.M)
    assert "teardown ran" not in text
    assert re.search(r"^CANCELLED\s+hold\s+cancelled: still running when the run was stopped; "
                     r"its coroutine was cancelled$", text, re.M)
    assert "teardown did not run: teardown — resources they clean up may remain" in text
    assert re.search(r"^=+ 0 passed, 0 failed, 0 skipped, 3 cancelled in \d+\.\d\ds =+$", text, re.M)
