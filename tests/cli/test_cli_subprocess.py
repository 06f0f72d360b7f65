"""tdrun as a real process: exit codes, stdout/stderr, Ctrl-C mid-run, and a real HTTP server."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Lines, MODULES, REPO, tdrun_env
from thread_order import __version__

WAIT = 30.0


def test_a_run_as_a_module_process(tdrun_proc):
    result = tdrun_proc(MODULES / "cli_basic.py", "--workers", "2")
    assert result.code == 1
    assert result.err == ""
    assert re.search(r"^\[thread_[01]\] update \.+ FAILED \[ *\d+%\]$", result.out, re.M)
    assert re.search(r"^ +verify \.+ SKIPPED \[ *\d+%\]$", result.out, re.M)
    assert result.out.splitlines()[-1].strip("= ").startswith("3 passed, 1 failed, 1 skipped in ")


def test_the_console_script_is_installed():
    tdrun = shutil.which("tdrun", path=str(Path(sys.executable).parent))
    assert tdrun is not None
    proc = subprocess.run([tdrun, "--version"], capture_output=True, text=True, timeout=WAIT, env=tdrun_env())
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"tdrun {__version__}\n", "")
    proc = subprocess.run([tdrun, str(MODULES / "cli_ok.py")], capture_output=True, text=True,
                          timeout=WAIT, env=tdrun_env())
    assert proc.returncode == 0
    assert "4 passed, 0 failed, 0 skipped" in proc.stdout


@pytest.mark.parametrize("argv, code, message", [
    (["nope.py"], 4, "tdrun: error: nope.py: no such file"),
    ([f"{MODULES / 'cli_ok.py'}::nope"], 4, f"tdrun: error: {MODULES / 'cli_ok.py'}: no marked task named 'nope'"),
    ([MODULES / "cli_ok.py", "--workers=0"], 4, "tdrun: error: argument --workers: must be at least 1, got '0'"),
    ([MODULES / "cli_ok.py", "--bogus"], 4,
     "tdrun: error: unrecognized option '--bogus' (state values take the form --key=value)"),
    ([MODULES / "cli_ok.py", "--state-file", "missing.json"], 4, "tdrun: error: state file missing.json: no such file"),
    ([], 4, "tdrun: error: missing PATH: give a task module, module.py::task or a directory"),
    ([MODULES / "cli_basic.py", "--tags", "zzz"], 5,
     f"tdrun: no tasks collected: no task in {MODULES / 'cli_basic.py'} has the tags 'zzz'"),
])
def test_bad_input_exit_codes_and_one_line(tdrun_proc, tmp_path, argv, code, message):
    result = tdrun_proc(*argv, cwd=tmp_path)
    assert (result.code, result.out, result.err) == (code, "", message + "\n")


def test_collection_errors_in_a_process(tdrun_proc, write_module):
    cycle = write_module("""
        from thread_order import mark

        @mark(after=["c"])
        def a(state): pass

        @mark(after=["a"])
        def b(state): pass

        @mark(after=["b"])
        def c(state): pass
    """, name="cycle.py")
    result = tdrun_proc(cycle)
    assert (result.code, result.err) == (4, "tdrun: error: dependency cycle: a -> b -> c -> a\n")

    broken = write_module("import os\nvalue = os.environ['TDRUN_TEST_NEVER_SET']\n", name="broken.py")
    result = tdrun_proc(broken)
    assert result.code == 4
    assert f'File "{broken}", line 2, in <module>' in result.err
    assert "thread_order" not in result.err.replace(str(broken), "")  # only the user's frames
    assert result.err.splitlines()[-1] == (
        f"tdrun: error: {broken}: cannot import module: KeyError: 'TDRUN_TEST_NEVER_SET'")

    empty = write_module("x = 1\n", name="empty.py")
    result = tdrun_proc(empty)
    assert (result.code, result.err) == (5, f"tdrun: no tasks collected: {empty} has no @mark functions\n")


def test_sigint_mid_run_runs_teardown_prints_the_summary_and_exits_2():
    proc = subprocess.Popen(
        [sys.executable, "-m", "thread_order", str(MODULES / "cli_hold.py"), "--log", "--workers", "2"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tdrun_env(),
    )
    try:
        out, err = Lines(proc.stdout), Lines(proc.stderr)
        out.wait_for(r"\[thread_\d hold\] hold is running$")
        proc.send_signal(signal.SIGINT)
        err.wait_for(r"^interrupted: running tasks may finish, teardown tasks still run")
        proc.stdin.write("done\n")  # lets the running task finish
        proc.stdin.flush()
        assert proc.wait(WAIT) == 2
        text = out.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert re.search(r"^\[thread_\d\] hold \.+ PASSED", text, re.M)
    assert re.search(r"^ +after_hold \.+ CANCELLED", text, re.M)
    assert re.search(r"\[thread_\d teardown\] teardown ran$", text, re.M)  # the always task ran after Ctrl-C
    assert re.search(r"^\[thread_\d\] teardown \.+ PASSED", text, re.M)
    assert re.search(r"^CANCELLED\s+after_hold\s+cancelled: the run was interrupted$", text, re.M)
    assert "!!! interrupted: teardown tasks ran, 1 cancelled !!!" in text
    assert re.search(r"^=+ 3 passed, 0 failed, 0 skipped, 1 cancelled in \d+\.\d\ds =+$", text, re.M)


def test_a_module_talking_to_a_real_http_server(tdrun_proc, tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from demo_api import DemoAPI
    finally:
        sys.path.remove(str(REPO / "examples"))
    with DemoAPI(latency=(0.01, 0.03)) as api:
        report = tmp_path / "r.json"
        result = tdrun_proc(MODULES / "cli_http.py", f"--api_url={api.url}", "--json-report", report)
        assert result.code == 0, result.out + result.err
        # the tasks created two resources and their teardown deleted them again
        assert api.store.counts() == {"networks": 0, "subnets": 0, "gateways": 0, "routes": 0}
        assert api.store.requests == 5
    tasks = {t["name"]: t for t in json.loads(report.read_text())["tasks"]}
    assert [tasks[n]["status"] for n in tasks] == ["PASSED"] * 5


@pytest.mark.parametrize("fail, code", [(False, 0), (True, 1)])
def test_a_reader_that_stops_early_does_not_change_the_exit_code(write_module, fail, code):
    # 2,000 lines are far more than a pipe holds, so tdrun writes into a closed pipe
    body = "".join(f"@dmark()\ndef t{i}():\n    pass\n\n" for i in range(2000))
    body += "@dmark()\ndef last():\n    raise RuntimeError('no')\n" if fail else ""
    module = write_module("from thread_order import dmark\n\n" + body)
    proc = subprocess.Popen([sys.executable, "-m", "thread_order", str(module)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=tdrun_env())
    try:
        assert proc.stdout.read(200).startswith(b"[thread_")
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(WAIT) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert err == b""
