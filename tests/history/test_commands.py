"""tdrun and history: every run recorded, and the history, show, report and compare commands.

Through ``main(argv)`` in this process, and as real tdrun processes (SIGKILLed
mid-run, four at once against one file, on a pseudo-terminal).
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import queue
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import MODULES, kill_hard_and_check_file, tdrun_env
from thread_order.history import SCHEMA_VERSION, HistoryStore

LIFECYCLE = MODULES / "history_lifecycle.py"
HOLD = MODULES / "history_hold.py"
WAIT = 30.0


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def tdrun_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "thread_order", *map(str, args)]


@pytest.fixture
def history(tmp_path, tdrun_main):
    """Two recorded runs of the lifecycle: 1 passes, 2 fails at update with create slowed down."""
    path = tmp_path / "h.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path, "--api_token=s3cret").code == 0
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path, "--fail=update", "--slow=create").code == 1
    return path


# --------------------------------------------------------------------------- read commands


def test_history_lists_runs_newest_first(history, tdrun_main):
    r = tdrun_main("history", "--history", history)
    assert r.code == 0 and r.err == ""
    lines = r.out.splitlines()
    assert lines[0].split() == ["id", "when", "module", "status", "passed", "failed", "skipped",
                                "cancelled", "duration", "differs"]
    first, second = lines[1].split(), lines[2].split()
    assert first[0] == "2" and first[3:7] == [str(LIFECYCLE), "failed", "3", "1"]
    assert first[7:9] == ["1", "0"]  # verify skipped, nothing cancelled
    assert second[0] == "1" and second[3:7] == [str(LIFECYCLE), "passed", "5", "0"]
    assert len(lines) == 3

    r = tdrun_main("history", "--history", history, "--json", "--limit", "1")
    runs = json.loads(r.out)
    assert [(run["id"], run["status"], run["module"]) for run in runs] == [(2, "failed", str(LIFECYCLE))]
    r = tdrun_main("history", "--history", history, "--status", "passed", "--json")
    assert [run["id"] for run in json.loads(r.out)] == [1]
    r = tdrun_main("history", "--history", history, "--module", "other.py")
    assert r.out == f"no runs recorded in {history} match\n"


def test_history_says_what_differed_between_runs_of_one_module(history, tdrun_main, tmp_path):
    """Ten runs of one module looked alike in the list: the state, tags and workers that vary show."""
    assert tdrun_main(LIFECYCLE, "--plain", "--history", history, "--workers=1", "--tags=smoke").code == 0
    lines = tdrun_main("history", "--history", history).out.splitlines()
    differs = [line.split("  ")[-1].strip() for line in lines[1:]]
    runs = json.loads(tdrun_main("history", "--history", history, "--json").out)
    default = runs[1]["workers"]
    assert default != 1
    assert differs == ["tags=smoke workers=1",
                       f"fail=update slow=create tags=- workers={default}",
                       f"api_token=***redacted*** tags=- workers={default}"]
    assert runs[0]["differs"] == {"tags": ["smoke"], "workers": 1}
    assert runs[2]["state"] == {"api_token": "***redacted***"} and runs[2]["tags"] == []
    # one run of a module alone has nothing to tell it apart from
    alone = tmp_path / "alone.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", alone, "--fail=update").code == 1
    assert json.loads(tdrun_main("history", "--history", alone, "--json").out)[0]["differs"] == {}


def test_show_prints_tasks_in_start_order_with_errors_and_skip_reasons(history, tdrun_main):
    r = tdrun_main("show", "2", "--history", history)
    assert r.code == 0, r.err
    out = r.out
    assert out.startswith(f"run 2  {LIFECYCLE}\n  status    failed\n")
    assert "3 passed, 1 failed, 1 skipped of 5" in out
    assert "--fail=update --slow=create" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s*\d+\s{2}\w", line)]
    assert [row[1] for row in rows] == ["login", "create", "update", "teardown", "verify"]
    update = next(line for line in out.splitlines() if " update " in line)
    assert "FAILED" in update and "RuntimeError: update failed on purpose" in update
    verify = next(line for line in out.splitlines() if " verify " in line)
    assert "SKIPPED" in verify and "dependency 'update' failed" in verify

    r = tdrun_main("show", "last", "--json", "--history", history)
    run = json.loads(r.out)
    assert run["id"] == 2
    tasks = {t["name"]: t for t in run["tasks"]}
    assert tasks["update"]["output"] == "update done\n"
    assert 'raise RuntimeError(f"{name} failed on purpose")' in tasks["update"]["traceback"]
    assert tasks["create"]["duration"] >= 0.2
    first = json.loads(tdrun_main("show", "1", "--json", "--history", history).out)
    assert "--api_token=***redacted***" in first["argv"] and first["state"]["api_token"] == "***redacted***"
    assert first["tags"] == [] and first["graph"]["nodes"][0] == "login"


def test_report_writes_one_self_contained_page(history, tdrun_main, tmp_path):
    out = tmp_path / "run.html"
    r = tdrun_main("report", "last", "-o", out, "--history", history)
    assert (r.code, r.out, r.err) == (0, f"report of run 2 written to {out}\n", "")
    html = out.read_text(encoding="utf-8")
    assert len(re.findall(r'<g class="node(?: critical)?" data-task=', html)) == 5 and "update failed on purpose" in html
    assert "<script src" not in html and "<link" not in html


def test_compare_shows_status_changes_and_the_largest_duration_changes(history, tdrun_main):
    r = tdrun_main("compare", "1", "2", "--history", history)
    assert r.code == 0 and r.err == ""
    out = r.out
    changes = out.split("status changed (2):\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in changes] == [["task", "A", "B"], ["update", "PASSED", "FAILED"],
                                                  ["verify", "PASSED", "SKIPPED"]]
    durations = out.split("largest duration changes", 1)[1].splitlines()
    assert durations[2].split()[0] == "create"  # slowed down by 0.2 s: the biggest change
    assert "tasks only in" not in out

    diff = json.loads(tdrun_main("compare", "1", "last", "--json", "--history", history).out)
    assert diff["status_changes"] == [{"name": "update", "a": "PASSED", "b": "FAILED"},
                                      {"name": "verify", "a": "PASSED", "b": "SKIPPED"}]
    assert diff["duration_changes"][0]["name"] == "create" and diff["duration_changes"][0]["delta"] >= 0.19
    assert diff["added"] == [] and diff["removed"] == [] and diff["same_module"] is True


def test_compare_lists_tasks_added_and_removed_between_versions(tmp_path, tdrun_main, write_module):
    path = tmp_path / "h.db"
    module = write_module("""
        from thread_order import mark
        @mark()
        def a(state): pass
        @mark(after=["a"])
        def old(state): pass
    """)
    assert tdrun_main(module, "--plain", "--history", path).code == 0
    write_module("""
        from thread_order import mark
        @mark()
        def a(state): pass
        @mark(after=["a"])
        def new(state): pass
    """)
    assert tdrun_main(module, "--plain", "--history", path).code == 0
    out = tdrun_main("compare", "1", "2", "--history", path).out
    assert "tasks only in B (1): new\n" in out and "tasks only in A (1): old\n" in out
    assert "no task changed status" in out


def test_bad_input_is_one_line_and_exit_4_and_leaves_the_file_alone(history, tdrun_main, tmp_path):
    before = fingerprint(history)
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"garbage" * 500)
    newer = tmp_path / "newer.db"
    HistoryStore(newer, readonly=False).close()
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    cases = [
        (("show", "42", "--history", history), f"history file {history}: no run 42"),
        (("show", "first", "--history", history), "run id must be a number or 'last', not 'first'"),
        (("compare", "1", "9", "--history", history), f"history file {history}: no run 9"),
        (("report", "7", "-o", tmp_path / "x.html", "--history", history), f"history file {history}: no run 7"),
        (("history", "--history", tmp_path / "missing.db"), f"history file {tmp_path / 'missing.db'}: no such file"),
        (("history", "--history", corrupt),
         f"history file {corrupt}: not a readable thread-order history file (file is not a database)"),
        (("show", "last", "--history", newer),
         f"history file {newer}: written by a newer thread-order (schema version {SCHEMA_VERSION + 5}, "
         f"this version reads up to {SCHEMA_VERSION})"),
        (("history", "--limit", "0", "--history", history),
         "argument --limit: expected a whole number of runs >= 1, got '0'"),
        (("history", "--bogus", "--history", history), "unrecognized arguments: --bogus"),
        (("show", "--history", history), "the following arguments are required: RUN"),
        (("report", "1", "-o", tmp_path, "--history", history), f"-o {tmp_path}: is a directory, expected a file path"),
        (("report", "1", "-o", tmp_path / "no" / "r.html", "--history", history),
         f"cannot write report {tmp_path / 'no' / 'r.html'}: No such file or directory"),
    ]
    for argv, message in cases:
        r = tdrun_main(*argv)
        assert (r.code, r.out, r.err) == (4, "", f"tdrun: error: {message}\n"), argv
    assert fingerprint(history) == before
    assert not (tmp_path / "missing.db").exists()


def test_read_commands_never_modify_the_file(history, tdrun_main, tmp_path):
    before = fingerprint(history)
    for argv in (("history",), ("history", "--json", "--status", "interrupted"), ("show", "last"),
                 ("show", "1", "--json"), ("compare", "1", "2"), ("report", "1", "-o", tmp_path / "r.html")):
        assert tdrun_main(*argv, "--history", history).code == 0
    assert fingerprint(history) == before


# --------------------------------------------------------------------------- runs record themselves


def test_every_run_is_recorded_in_the_current_folder_unless_turned_off(tmp_path):
    def run(*args, **env):
        env.setdefault("TDRUN_HISTORY", "on")  # the fixtures' default is off
        return subprocess.run(tdrun_cmd(LIFECYCLE, "--plain", *args), cwd=tmp_path, capture_output=True,
                              text=True, timeout=WAIT, env=tdrun_env(**env), stdin=subprocess.DEVNULL)

    off = run("--no-history")
    assert off.returncode == 0 and not (tmp_path / ".tdrun").exists()
    off = run(TDRUN_HISTORY="off")
    assert off.returncode == 0 and not (tmp_path / ".tdrun").exists()
    report = run("--no-history", "--html-report", "r.html")
    assert report.returncode == 0 and "html report written to r.html" in report.stdout
    assert len(re.findall(r'<g class="node(?: critical)?" data-task=',
                                (tmp_path / "r.html").read_text(encoding="utf-8"))) == 5
    assert not (tmp_path / ".tdrun").exists()

    on = run("--tags=smoke", "--password=hunter2")
    assert on.returncode == 0, on.stderr
    assert "run 1 recorded in .tdrun/history.db (tdrun show 1)" in on.stdout
    db = tmp_path / ".tdrun" / "history.db"
    with HistoryStore(db) as store:
        run_ = store.get_run("last")
    assert run_["module"] == str(LIFECYCLE) and run_["target"] == str(LIFECYCLE)
    assert run_["tags"] == ["smoke"] and [t["name"] for t in run_["tasks"]] == ["login"]
    assert run_["argv"][-1] == "--password=***redacted***" and run_["state"]["password"] == "***redacted***"
    assert b"hunter2" not in db.read_bytes()

    shown = subprocess.run(tdrun_cmd("show", "last"), cwd=tmp_path, capture_output=True, text=True,
                           timeout=WAIT, env=tdrun_env())
    assert shown.returncode == 0 and "login" in shown.stdout


def test_html_report_on_a_run_that_is_recorded(tmp_path, tdrun_main):
    path = tmp_path / "h.db"
    page = tmp_path / "run.html"
    r = tdrun_main(LIFECYCLE, "--plain", "--history", path, "--html-report", page, "--fail=create")
    assert r.code == 1
    assert f"run 1 recorded in {path} (tdrun show 1 --history {path})" in r.out
    assert f"html report written to {page}" in r.out
    html = page.read_text(encoding="utf-8")
    assert "create failed on purpose" in html and html.count('data-status="SKIPPED"') >= 2


def test_a_history_file_that_cannot_be_used_stops_the_run_before_it_starts(tmp_path, tdrun_main):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 500)
    r = tdrun_main(LIFECYCLE, "--plain", "--history", bad)
    assert r.code == 4
    assert r.err == (f"tdrun: error: history file {bad}: not a readable thread-order history file "
                     "(file is not a database) (--no-history runs without recording)\n")
    assert "PASSED" not in r.out
    r = tdrun_main(LIFECYCLE, "--plain", "--html-report", tmp_path / "no" / "r.html")
    assert r.code == 4
    assert r.err == f"tdrun: error: --html-report {tmp_path / 'no' / 'r.html'}: folder {tmp_path / 'no'} does not exist\n"


def read_lines(stream, into: queue.SimpleQueue) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


def wait_for_line(lines: queue.SimpleQueue, wanted: str) -> list[str]:
    seen = []
    while True:
        line = lines.get(timeout=WAIT)
        if line is None:
            raise AssertionError(f"output ended before {wanted!r}: {seen}")
        seen.append(line)
        if line == wanted:
            return seen


@pytest.mark.slow
def test_tdrun_killed_with_sigkill_keeps_finished_tasks_and_shows_as_interrupted(tmp_path):
    path = tmp_path / "h.db"
    proc = subprocess.Popen(tdrun_cmd(HOLD, "--plain", "--history", path, "--workers=2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tdrun_env(),
                            stdin=subprocess.DEVNULL)
    try:
        lines: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=read_lines, args=(proc.stdout, lines), daemon=True).start()
        wait_for_line(lines, "HOLDING")
        # the five quick tasks are final; their batch commits within the recorder's window. A file
        # written by another process has no change notification, so look until it is there.
        ready = threading.Event()
        for _ in range(int(WAIT / 0.05)):
            with HistoryStore(path) as store:
                if len(store.get_run("last")["tasks"]) == 5:
                    break
            ready.wait(0.05)
    finally:
        kill_hard_and_check_file(proc, path, WAIT)
    with HistoryStore(path) as store:
        run = store.get_run("last")
    assert run["status"] == "interrupted" and run["finished_at"] is None
    assert sorted((t["name"], t["status"], t["output"]) for t in run["tasks"]) == [
        (f"quick_{i}", "PASSED", f"quick {i} done\n") for i in range(5)]
    shown = subprocess.run(tdrun_cmd("show", "last", "--history", path), capture_output=True, text=True,
                           timeout=WAIT, env=tdrun_env())
    assert shown.returncode == 0
    assert "  status    interrupted" in shown.stdout
    assert "not recorded (2): hold, teardown" in shown.stdout
    listed = subprocess.run(tdrun_cmd("history", "--history", path), capture_output=True, text=True,
                            timeout=WAIT, env=tdrun_env())
    assert listed.stdout.splitlines()[1].split()[4] == "interrupted"


@pytest.mark.slow
def test_four_tdrun_processes_recording_into_one_file_lose_nothing(tmp_path, write_module):
    chains, length = 4, 40
    defs = ["import sys, time", "from thread_order import mark",
            # every process waits at its first task until all four are there
            '@mark()\ndef gate(state):\n    sys.__stdout__.write("WAITING\\n")\n    sys.__stdout__.flush()\n'
            "    sys.stdin.readline()"]
    for c in range(chains):
        for i in range(length):
            after = f'"c{c}_{i - 1}"' if i else '"gate"'
            defs.append(f"@mark(after=[{after}])\ndef c{c}_{i}(state):\n    time.sleep(0.004)")
    module = write_module("\n\n".join(defs) + "\n", name="many.py")
    total = chains * length + 1
    path = tmp_path / "h.db"
    procs = [subprocess.Popen(tdrun_cmd(module, "--plain", "--history", path, "--workers=4"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=tdrun_env()) for _ in range(4)]
    try:
        outputs = []
        for p in procs:
            lines: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=read_lines, args=(p.stdout, lines), daemon=True).start()
            outputs.append(lines)
        for lines in outputs:
            wait_for_line(lines, "WAITING")
        for p in procs:  # all four record from here on, at the same time
            p.stdin.write("go\n")
            p.stdin.close()
        codes = [p.wait(WAIT) for p in procs]
        texts = []
        for lines in outputs:
            collected = []
            while (line := lines.get(timeout=WAIT)) is not None:
                collected.append(line)
            texts.append("\n".join(collected))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(WAIT)
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with HistoryStore(path) as store:
        runs = store.list_runs()
        counts = [(r["id"], len(store.get_run(r["id"])["tasks"])) for r in runs]
    assert sorted(counts) == [(i, total) for i in range(1, 5)]
    assert sorted(r["id"] for r in runs) == [1, 2, 3, 4]
    assert all((r["status"], r["passed"], r["total"]) == ("passed", total, total) for r in runs)
    noted = sorted(re.search(r"run (\d) recorded", text).group(1) for text in texts)
    assert noted == ["1", "2", "3", "4"]


def test_tables_are_coloured_on_a_terminal(history):
    master, slave = pty.openpty()
    env = tdrun_env(TERM="xterm-256color", COLORTERM="truecolor", COLUMNS="120")
    proc = subprocess.Popen(tdrun_cmd("history", "--history", history), stdout=slave, stderr=slave,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        assert proc.wait(WAIT) == 0
    text = b"".join(chunks).decode()
    assert "\x1b[" in text
    assert "\x1b[1;38;2;214;69;69mfailed" in text and "\x1b[1;38;2;46;157;79mpassed" in text
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert re.search(r"id\s+when\s+module\s+status", plain)
