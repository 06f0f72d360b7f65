"""tdrun --check-state (every front-end that shows its findings), --last-failed and --failed-first."""

from __future__ import annotations

import json
import sqlite3
from xml.etree import ElementTree as ET

import pytest

MISSING_AFTER = """
    import threading
    from thread_order import mark

    written = threading.Event()

    def setup_state(state):
        state.setdefault("region", "eu")

    @mark()
    def verify_subnet(state):
        # no after=["create_subnet"]: it passes only because create_subnet writes first
        assert written.wait(10)
        assert state["region"] == "eu"
        assert state["subnet_id"] == "subnet-1"

    @mark()
    def create_subnet(state):
        state["subnet_id"] = "subnet-1"
        written.set()
"""

MESSAGE = ("verify_subnet reads state['subnet_id'] written by create_subnet, but does not run after it: "
           "add after=['create_subnet']")

LIFECYCLE = """
    from thread_order import mark

    def _step(state, name):
        if state.get("fail_at") == name:
            raise RuntimeError(f"injected failure in {name}")

    @mark()
    def create_network(state): _step(state, "create_network")

    @mark(after=["create_network"])
    def create_subnet(state): _step(state, "create_subnet")

    @mark(after=["create_subnet"])
    def verify_subnet(state): _step(state, "verify_subnet")

    @mark(after=["create_network"])
    def create_gateway(state): _step(state, "create_gateway")

    @mark(after=["create_gateway"])
    def verify_gateway(state): _step(state, "verify_gateway")

    @mark(after=["verify_subnet"], always=True)
    def delete_subnet(state): _step(state, "delete_subnet")

    @mark(after=["verify_gateway"], always=True)
    def delete_gateway(state): _step(state, "delete_gateway")

    @mark(after=["delete_subnet", "delete_gateway"], always=True)
    def delete_network(state): _step(state, "delete_network")
"""


def test_a_missing_after_that_passes_by_timing_is_caught(tdrun_main, write_module):
    path = write_module(MISSING_AFTER)
    assert tdrun_main(path, "--plain").code == 0  # unnoticed without the checker
    r = tdrun_main(path, "--plain", "--check-state")
    assert r.code == 1
    assert "2 passed, 0 failed, 0 skipped, 1 state finding in" in r.out
    assert f"UNDECLARED DEPENDENCY: {MESSAGE}" in r.out
    assert "region" not in r.out  # set by setup_state, only read: not a finding


def test_a_checked_run_without_findings_exits_0(tdrun_main, write_module):
    path = write_module(MISSING_AFTER.replace('@mark()\n    def verify', '@mark(after=["create_subnet"])\n    def verify'))
    r = tdrun_main(path, "--plain", "--check-state")
    assert r.code == 0, r.out
    assert "state finding" not in r.out


def test_findings_in_every_report(tdrun_main, write_module, tmp_path):
    path = write_module(MISSING_AFTER)
    history = tmp_path / "h.db"
    r = tdrun_main(path, "--plain", "--check-state", "--history", history, "--json-report", tmp_path / "r.json",
                   "--junit-xml", tmp_path / "r.xml", "--html-report", tmp_path / "r.html")
    assert r.code == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["exit_code"] == 1
    assert [f["message"] for f in data["state_findings"]] == [MESSAGE]
    assert data["state_findings"][0]["tasks"] == ["create_subnet", "verify_subnet"]
    suite = ET.parse(tmp_path / "r.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    case = [c for c in suite.iter("testcase") if c.get("name") == "state check"][0]
    failure = case.find("failure")
    assert failure.get("message") == "1 state finding" and MESSAGE in failure.text
    html = (tmp_path / "r.html").read_text()
    assert "<section id=state-check class=alarm><h2>State check: 1 finding</h2>" in html
    assert "add after=[&#x27;create_subnet&#x27;]" in html
    show = tdrun_main("show", "last", "--history", history)
    assert "state     1 finding (--check-state)" in show.out
    assert f"undeclared dependency: {MESSAGE}" in show.out
    run = json.loads(tdrun_main("show", "last", "--history", history, "--json").out)
    assert run["state_findings"][0]["message"] == MESSAGE
    conn = sqlite3.connect(history)
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 4  # the findings column exists from schema 4 on
    conn.close()
    # a run without the option: not checked (null), and show says nothing about it
    tdrun_main(path, "--plain", "--history", history, "--json-report", tmp_path / "r2.json")
    assert json.loads((tmp_path / "r2.json").read_text())["state_findings"] is None
    assert json.loads(tdrun_main("show", "last", "--history", history, "--json").out)["state_findings"] is None
    assert "state " not in tdrun_main("show", "last", "--history", history).out


def test_a_history_file_of_schema_3_is_migrated(tdrun_main, write_module, tmp_path):
    from thread_order.history.db import MIGRATIONS

    history = tmp_path / "old.db"
    conn = sqlite3.connect(history)
    for step in MIGRATIONS[:3]:
        for statement in step:
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    assert tdrun_main(write_module(MISSING_AFTER), "--plain", "--check-state", "--history", history).code == 1
    assert json.loads(tdrun_main("show", "last", "--history", history, "--json").out)["state_findings"]


def test_list_and_graph_show_static_findings(tdrun_main, write_module):
    path = write_module("""
        from thread_order import mark

        @mark()
        def create_network(state):
            return {"id": "net-1"}

        @mark()
        def create_subnet(state):
            return state["results"]["create_network"]["id"] + "/24"
    """)
    expected = ("create_subnet's source reads state['results']['create_network'], the result of "
                "create_network, but does not run after it: add after=['create_network']")
    r = tdrun_main(path, "--list")
    assert r.code == 0
    assert "state check: 1 finding in the tasks' source" in r.out and expected in r.out
    assert f"// state check" in tdrun_main(path, "--graph-format", "dot").out
    assert f"%%   undeclared dependency: {expected}" in tdrun_main(path, "--graph-format", "mermaid").out
    assert expected in tdrun_main(path, "--graph").out
    # and with the checker, before or without its run reading the result
    r = tdrun_main(path, "--plain", "--check-state", "--workers=1")
    assert r.code == 1 and "create_network" in r.out


def test_check_state_as_a_subprocess(tdrun_proc, write_module):
    r = tdrun_proc(write_module(MISSING_AFTER), "--check-state")
    assert r.code == 1
    assert MESSAGE in r.out and "1 state finding" in r.out


# ---------------------------------------------------------------------------- --last-failed


def _ran(tdrun_main, history):
    run = json.loads(tdrun_main("show", "last", "--history", history, "--json").out)
    return sorted(t["name"] for t in run["tasks"]), run


def test_last_failed_reruns_the_failed_step_what_it_needs_and_its_teardown(tdrun_main, write_module, tmp_path):
    path = write_module(LIFECYCLE)
    history = tmp_path / "h.db"
    assert tdrun_main(path, "--plain", "--history", history, "--fail_at=create_subnet").code == 1
    r = tdrun_main(path, "--plain", "--history", history, "--last-failed")  # the step is fixed
    assert r.code == 0, r.out
    assert ("tdrun: --last-failed: rerunning 2 tasks that did not pass (create_subnet, verify_subnet), "
            "1 upstream, 2 teardown: 5 of 8") in r.err
    names, run = _ran(tdrun_main, history)
    assert names == ["create_network", "create_subnet", "delete_network", "delete_subnet", "verify_subnet"]
    assert {t["status"] for t in run["tasks"]} == {"PASSED"}
    # everything passed last time: say so, run everything
    r = tdrun_main(path, "--plain", "--history", history, "--last-failed")
    assert r.code == 0
    assert f"every task of run {run['id']} passed: running every task" in r.err
    assert len(_ran(tdrun_main, history)[0]) == 8


def test_last_failed_with_nothing_recorded_runs_everything(tdrun_main, write_module, tmp_path):
    path = write_module(LIFECYCLE)
    r = tdrun_main(path, "--plain", "--history", tmp_path / "none.db", "--last-failed")
    assert r.code == 0 and "8 passed" in r.out
    assert f"tdrun: --last-failed: no history at {tmp_path / 'none.db'}: running every task" in r.err
    other = write_module("from thread_order import mark\n@mark()\ndef a(state): pass\n", "other.py")
    assert tdrun_main(other, "--plain", "--history", tmp_path / "h.db").code == 0
    r = tdrun_main(path, "--plain", "--history", tmp_path / "h.db", "--last-failed")
    assert r.code == 0 and "8 passed" in r.out
    assert f"no run of {path} recorded in {tmp_path / 'h.db'}: running every task" in r.err


def test_last_failed_as_a_subprocess_with_the_default_history(tdrun_proc, write_module, tmp_path):
    path = write_module(LIFECYCLE)
    first = tdrun_proc(path, "--fail_at=create_gateway", cwd=tmp_path, TDRUN_HISTORY="on")
    assert first.code == 1
    r = tdrun_proc(path, "--last-failed", cwd=tmp_path, TDRUN_HISTORY="on")
    assert r.code == 0, r.out + r.err
    assert "5 passed, 0 failed, 0 skipped" in r.out
    assert "rerunning 2 tasks that did not pass (create_gateway, verify_gateway)" in r.err
    shown = tdrun_proc("show", "last", "--json", cwd=tmp_path, TDRUN_HISTORY="on")
    names = sorted(t["name"] for t in json.loads(shown.out)["tasks"])
    assert names == ["create_gateway", "create_network", "delete_gateway", "delete_network", "verify_gateway"]


def test_failed_first_starts_them_first(tdrun_main, write_module, tmp_path):
    path = write_module(LIFECYCLE)
    history = tmp_path / "h.db"
    assert tdrun_main(path, "--plain", "--history", history, "--workers=1", "--fail_at=create_gateway").code == 1
    r = tdrun_main(path, "--plain", "--history", history, "--workers=1", "--failed-first")
    assert r.code == 0 and "8 passed" in r.out
    assert "starting first 2 tasks that did not pass last time" in r.err
    _, run = _ran(tdrun_main, history)
    order = [t["name"] for t in run["tasks"]]
    assert order[:3] == ["create_network", "create_gateway", "verify_gateway"]


def test_last_failed_and_failed_first_together_are_refused(tdrun_main, write_module):
    r = tdrun_main(write_module(LIFECYCLE), "--last-failed", "--failed-first")
    assert r.code == 4
    assert "not allowed with argument" in r.err


def test_state_keys_that_start_like_the_new_flags_stay_state_keys(tdrun_main, write_module):
    path = write_module("""
        from thread_order import mark

        @mark()
        def show(state):
            print("fail", state["fail"], "check", state["check"])
    """)
    r = tdrun_main(path, "--plain", "--fail=update", "--check=1")
    assert r.code == 0, r.err
    r = tdrun_main(path, "--plain", "--check-stat=1")
    assert r.code == 4 and "did you mean --check-state?" in r.err


def test_the_live_view_ends_with_the_findings_too(tdrun_main, write_module):
    r = tdrun_main(write_module(MISSING_AFTER), "--viewer", "--check-state", "--no-color")
    assert r.code == 1
    assert "state check (1)" in r.out and "add after=['create_subnet']" in r.out
    assert "1 state finding in" in r.out


def test_last_failed_with_a_corrupt_history_is_one_line_and_exit_4(tdrun_main, write_module, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    r = tdrun_main(write_module(LIFECYCLE), "--plain", "--history", bad, "--last-failed")
    assert r.code == 4 and r.out == ""
    assert r.err.startswith(f"tdrun: error: --last-failed: history file {bad}: ")
    assert len(r.err.strip().splitlines()) == 1


def test_last_failed_with_list_shows_what_would_run(tdrun_main, write_module, tmp_path):
    path = write_module(LIFECYCLE)
    history = tmp_path / "h.db"
    assert tdrun_main(path, "--plain", "--history", history, "--fail_at=verify_gateway").code == 1
    r = tdrun_main(path, "--history", history, "--last-failed", "--list")
    assert r.code == 0
    assert "rerunning 1 task that did not pass (verify_gateway), 2 upstream, 2 teardown: 5 of 8" in r.err
    listed = [line.split()[1] for line in r.out.splitlines()[1:]]
    assert listed == ["create_network", "create_gateway", "verify_gateway", "delete_gateway", "delete_network"]
    # nothing ran: the history still holds the one run
    assert json.loads(tdrun_main("history", "--history", history, "--json").out)[0]["id"] == 1


def test_a_suite_names_tasks_with_their_module(tdrun_main, tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "net.py").write_text(
        "from thread_order import mark\n\n@mark()\ndef make(state):\n    state['net'] = 'n-1'\n    return 'n-1'\n")
    (suite / "vm.py").write_text(
        "from thread_order import mark\n\n@mark()\ndef boot(state):\n"
        "    state.get('net')\n    return state['results'].get('net::make')\n")
    r = tdrun_main(suite, "--plain", "--check-state", "--workers=1")
    assert r.code == 1
    assert ("vm::boot reads state['net'] written by net::make, but does not run after it: "
            "add after=['net::make']") in r.out
    assert "vm::boot's source reads state['results']['net::make']" in tdrun_main(suite, "--list").out
