"""Every attempt of a retried task in the history: recorded, read back, shown, reported, traced."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import pytest

from thread_order import Scheduler
from thread_order.history import SCHEMA_VERSION, HistoryRecorder, HistoryStore
from thread_order.report import render_report
from thread_order.trace import chrome_trace


def flaky_run(path: Path) -> tuple[dict, int]:
    """create fails twice then passes (retries=2); probe fails both its attempts (retries=1)."""
    tries = {"create": 0, "probe": 0}
    lock = threading.Lock()

    def attempt(name, fails):
        def run():
            with lock:
                tries[name] += 1
                n = tries[name]
            print(f"{name} try {n}")
            if n <= fails:
                raise ConnectionError(f"{name} refused on try {n}")
        return run

    s = Scheduler(workers=2)
    s.register(attempt("create", 2), "create", retries=2)
    s.register(attempt("probe", 5), "probe", retries=1)
    s.register(lambda: None, "verify", after=["create"])
    recorder = HistoryRecorder(path)
    recorder.attach(s, {"module": "flaky.py"})
    summary = s.start()
    return summary, recorder.finish()


def test_each_failed_attempt_is_kept_and_read_back_in_order(tmp_path):
    path = tmp_path / "h.db"
    summary, run_id = flaky_run(path)
    assert summary["passed"] == ["create", "verify"] or sorted(summary["passed"]) == ["create", "verify"]
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    tasks = {t["name"]: t for t in run["tasks"]}
    create = tasks["create"]
    assert create["attempts"] == 3 and create["status"] == "PASSED"
    assert [a["attempt"] for a in create["earlier_attempts"]] == [1, 2]
    for n, a in enumerate(create["earlier_attempts"], 1):
        assert a["status"] == "FAILED" and a["error_type"] == "ConnectionError"
        assert a["error"] == f"create refused on try {n}"
        assert f"ConnectionError: create refused on try {n}" in a["traceback"]
        assert a["output"] == f"create try {n}\n"
        assert re.fullmatch(r"thread_\d", a["thread"])
        assert a["started_at"] <= a["finished_at"] <= create["started_at"]
    probe = tasks["probe"]
    assert probe["status"] == "FAILED" and probe["error"] == "probe refused on try 2"
    assert [a["error"] for a in probe["earlier_attempts"]] == ["probe refused on try 1"]
    assert tasks["verify"]["earlier_attempts"] == []


def test_show_lists_the_earlier_attempts_under_their_task(tmp_path, tdrun_main):
    path = tmp_path / "h.db"
    _, run_id = flaky_run(path)
    result = tdrun_main("show", str(run_id), "--history", path)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    row = next(i for i, line in enumerate(lines) if re.match(r"^\d+\s+create\s+PASSED", line))
    assert re.match(r"^\s+attempt 1\s+FAILED\s+thread_\d\s+\+\S+\s+\S+\s+ConnectionError: create refused on try 1$",
                    lines[row + 1]), lines[row + 1]
    assert re.match(r"^\s+attempt 2\s+FAILED\s+.*create refused on try 2$", lines[row + 2])
    json_out = tdrun_main("show", str(run_id), "--history", path, "--json")
    assert '"earlier_attempts"' in json_out.out


def test_the_report_shows_a_bar_and_the_error_of_each_attempt(tmp_path):
    path = tmp_path / "h.db"
    _, run_id = flaky_run(path)
    with HistoryStore(path) as store:
        page = render_report(store.get_run(run_id))
    assert 'data-task="create (attempt 1)"' in page and 'data-task="create (attempt 2)"' in page
    assert 'data-task="probe (attempt 1)"' in page
    assert page.count("<details class=attempt>") == 3
    assert "create refused on try 2" in page


def test_trace_has_a_slice_per_attempt(tmp_path):
    path = tmp_path / "h.db"
    _, run_id = flaky_run(path)
    with HistoryStore(path) as store:
        trace = chrome_trace(store.get_run(run_id))
    create = sorted((e for e in trace["traceEvents"] if e["ph"] == "X" and e["name"] == "create"),
                    key=lambda e: e["ts"])
    assert [(e["args"]["attempt"], e["args"]["status"], e["cat"]) for e in create] == [
        (1, "FAILED", "task,retried"), (2, "FAILED", "task,retried"), (3, "PASSED", "task")]
    assert [e["args"].get("error") for e in create] == ["create refused on try 1",
                                                          "create refused on try 2", None]
    retry_waits = [e for e in trace["traceEvents"] if e["ph"] == "b" and e["name"] == "retry: create"]
    assert len(retry_waits) == 2


def test_a_file_from_schema_4_reads_without_attempts_and_migrates_forward(tmp_path):
    path = tmp_path / "h.db"
    _, first = flaky_run(path)
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE task_attempts")  # what a file written before schema 5 lacks
    # and what migration 5 -> 6 (the start order) added
    conn.execute("DROP INDEX runs_by_replay_of")
    conn.execute("ALTER TABLE runs DROP COLUMN replay_of")
    conn.execute("ALTER TABLE runs DROP COLUMN ordering")
    conn.execute("ALTER TABLE tasks DROP COLUMN is_async")  # and what migration 6 -> 7 (async tasks) added
    conn.execute("ALTER TABLE tasks DROP COLUMN warning")
    for table, column in (("tasks", "waited"), ("tasks", "waited_for"), ("runs", "pools")):
        conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")  # and what 7 -> 8 (pools) added
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    with HistoryStore(path) as store:
        old = store.get_run(first)
    create = next(t for t in old["tasks"] if t["name"] == "create")
    assert create["attempts"] == 3 and create["earlier_attempts"] == []
    wait = next(e for e in chrome_trace(old)["traceEvents"] if e["ph"] == "b" and e["name"] == "wait: create")
    assert "earlier attempts" in wait["args"]["note"]  # only the last attempt is known
    _, second = flaky_run(path)  # recording migrates the file
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 5  # the attempts table is migration 4 -> 5
    conn.close()
    with HistoryStore(path) as store:
        assert len(next(t for t in store.get_run(second)["tasks"] if t["name"] == "create")
                   ["earlier_attempts"]) == 2
        assert next(t for t in store.get_run(first)["tasks"] if t["name"] == "create")["earlier_attempts"] == []


@pytest.mark.parametrize("bad", ["'x'", "2.5"])
def test_a_damaged_attempt_row_is_left_out(tmp_path, bad):
    path = tmp_path / "h.db"
    _, run_id = flaky_run(path)
    conn = sqlite3.connect(path)
    conn.execute(f"UPDATE task_attempts SET attempt = {bad} WHERE name = 'probe'")
    conn.commit()
    conn.close()
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    tasks = {t["name"]: t for t in run["tasks"]}
    assert tasks["probe"]["earlier_attempts"] == [] and len(tasks["create"]["earlier_attempts"]) == 2
