"""The run history store: recording through the event stream, reading back, migrations, safety."""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import kill_hard_and_check_file
from thread_order import HistoryError, Scheduler
from thread_order.history import (
    DEFAULT_HISTORY,
    SCHEMA_VERSION,
    HistoryRecorder,
    HistoryStore,
    compare_runs,
    resolve_history_path,
    snapshot_state,
)
from thread_order.history.db import OUTPUT_CAP, cap_text, effective_status, json_strings, redact_argv

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "history_run.py"
WAIT = 30.0


def record(sched: Scheduler, path: Path, **info) -> tuple[dict, int]:
    recorder = HistoryRecorder(path)
    recorder.attach(sched, info)
    summary = sched.start()
    return summary, recorder.finish()


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def mixed_scheduler(**kwargs) -> Scheduler:
    """login -> create -> (update fails, with output) -> verify skipped; teardown always runs."""
    sched = Scheduler(workers=2, **kwargs)
    flaky = {"left": 1}

    def create():
        print("created thing 42")

    def flaky_read():
        if flaky["left"]:
            flaky["left"] -= 1
            raise ConnectionError("reset by peer")

    def update():
        print("PATCH /things/42")
        raise ValueError("expected 200, got 409")

    sched.register(lambda: None, "login", tags="smoke")
    sched.register(create, "create", after=["login"])
    sched.register(flaky_read, "read", after=["create"], retries=1)
    sched.register(update, "update", after=["create"])
    sched.register(lambda: None, "verify", after=["update", "read"])
    sched.register(lambda: None, "teardown", after=["verify"], always=True)
    return sched


# --------------------------------------------------------------------------- recording


def test_a_recorded_run_reads_back_like_its_summary(tmp_path):
    path = tmp_path / "h.db"
    sched = mixed_scheduler(state={"region": "eu-1"})
    summary, run_id = record(sched, path, module="api.py", target="api.py", argv=["api.py", "--x=1"],
                             tags="smoke, slow", workers=2)
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
        assert store.get_run("last")["id"] == run_id
    assert run["status"] == "failed"
    assert (run["passed"], run["failed"], run["skipped"], run["cancelled"], run["total"]) == (4, 1, 1, 0, 6)
    assert run["module"] == "api.py" and run["target"] == "api.py"
    assert run["argv"] == ["api.py", "--x=1"]
    assert run["tags"] == ["smoke", "slow"]
    assert run["workers"] == 2 and run["host"] == socket.gethostname()
    assert run["run_uuid"] == summary["run_id"]
    assert run["started_at"] == summary["started_at"] and run["finished_at"] == summary["finished_at"]
    assert run["duration"] == summary["duration"]
    assert run["graph"]["nodes"] == ["login", "create", "read", "update", "verify", "teardown"]
    assert sorted(map(tuple, run["graph"]["edges"])) == sorted(sched.graph.edges)
    assert run["state"] == {"region": "eu-1"}

    tasks = {t["name"]: t for t in run["tasks"]}
    for name, expected in summary["tasks"].items():
        got = tasks[name]
        for key in ("thread", "started_at", "finished_at", "duration", "attempts", "error_type",
                    "error", "traceback", "output", "reason"):
            assert got[key] == expected[key], (name, key)
        assert got["status"] == expected["status"].value
    assert tasks["read"]["attempts"] == 2 and tasks["read"]["status"] == "PASSED"
    assert tasks["update"]["error"] == "expected 200, got 409"
    assert "raise ValueError" in tasks["update"]["traceback"]
    assert tasks["update"]["output"] == "PATCH /things/42\n"
    assert tasks["verify"]["reason"] == "dependency 'update' failed"
    assert tasks["login"]["tags"] == ["smoke"]
    # start order: tasks that ran by start time, then those decided without running
    ran = [t for t in run["tasks"] if t["started_at"] is not None]
    assert [t["name"] for t in ran] == sorted(tasks.keys() - {"verify"}, key=lambda n: tasks[n]["started_at"])
    assert run["tasks"][-1]["name"] == "verify"


def test_a_run_with_no_failure_is_passed_and_one_cancelled_is_interrupted(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler(workers=2)
    sched.register(lambda: None, "a")
    _, first = record(sched, path)

    running = threading.Event()
    release = threading.Event()

    def slow():
        running.set()
        release.wait(WAIT)

    sched2 = Scheduler(workers=2)
    sched2.register(slow, "slow")
    sched2.register(lambda: None, "next", after=["slow"])
    sched2.register(lambda: None, "cleanup", after=["next"], always=True)

    def cancel_when_running():
        assert running.wait(WAIT)
        sched2.cancel()
        release.set()

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    _, second = record(sched2, path)
    canceller.join(WAIT)
    with HistoryStore(path) as store:
        assert store.get_run(first)["status"] == "passed"
        run = store.get_run(second)
    assert run["status"] == "interrupted"
    assert {t["name"]: t["status"] for t in run["tasks"]} == {
        "slow": "PASSED", "next": "CANCELLED", "cleanup": "PASSED"}
    assert run["cancelled"] == 1


def test_the_run_id_is_known_at_attach_and_the_row_says_running_until_the_end(tmp_path):
    path = tmp_path / "h.db"
    seen = {}
    sched = Scheduler(workers=1)
    recorder = HistoryRecorder(path)

    def look():
        # the run is live: this very process is writing it
        assert recorder.flush(timeout=WAIT)
        with HistoryStore(path) as store:
            seen["run"] = store.get_run(recorder.run_id)

    sched.register(lambda: None, "first")
    sched.register(look, "look", after=["first"])
    recorder.attach(sched, {})
    assert isinstance(recorder.run_id, int)
    sched.start()
    assert recorder.finish() == recorder.run_id
    assert seen["run"]["status"] == "running"
    assert [t["name"] for t in seen["run"]["tasks"]] == ["first"]
    assert seen["run"]["passed"] == 1


def test_a_run_that_never_starts_leaves_no_row(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler()
    sched.register(lambda: None, "a", after=["missing"])
    recorder = HistoryRecorder(path)
    recorder.attach(sched, {})
    with pytest.raises(Exception, match=r"^task 'a' depends on unknown task 'missing'$"):
        sched.start()
    assert recorder.finish() is None
    with HistoryStore(path) as store:
        assert store.list_runs() == []


def test_attach_twice_and_finish_before_attach_are_errors(tmp_path):
    recorder = HistoryRecorder(tmp_path / "h.db")
    with pytest.raises(RuntimeError, match=r"^finish: the recorder was never attached$"):
        recorder.finish()
    sched = Scheduler()
    sched.register(lambda: None, "a")
    recorder.attach(sched, {})
    with pytest.raises(RuntimeError, match=r"^attach: this recorder is already attached to a run$"):
        recorder.attach(sched, {})
    sched.start()
    assert recorder.finish() == recorder.finish()


def test_recording_creates_the_folder_and_keeps_it_out_of_git(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sched = Scheduler()
    sched.register(lambda: None, "a")
    record(sched, DEFAULT_HISTORY)
    assert (tmp_path / ".tdrun" / "history.db").is_file()
    assert (tmp_path / ".tdrun" / ".gitignore").read_text().splitlines()[-1] == "*"


def test_a_history_path_that_cannot_be_created_is_a_history_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    sched = Scheduler()
    sched.register(lambda: None, "a")
    with pytest.raises(HistoryError, match=r"^history file .*file/h\.db: cannot create its folder: "):
        HistoryRecorder(blocker / "h.db").attach(sched, {})
    with pytest.raises(HistoryError, match=r"^history file .*: is a directory$"):
        HistoryRecorder(tmp_path).attach(sched, {})


# --------------------------------------------------------------------------- redaction and caps


def test_secret_looking_keys_are_redacted_at_any_depth():
    lock = threading.RLock()
    state = {
        "_state_lock": lock,
        "results": {"a": 1},
        "user": "alice",
        "Password": "hunter2",
        "api_token": "abc",
        "nested": {"client_secret": "x", "keep": [1, 2.5, None, True], "deeper": {"AUTH": {"a": 1}}},
        "servers": [{"host": "h1", "private_key": "k"}],
        "credentials_file": "/etc/creds",
        "count": 3,
        "session": object(),
        "ratio": math.nan,
        7: "int key",
    }
    snap = snapshot_state(state)
    assert snap == {
        "user": "alice",
        "Password": "***redacted***",
        "api_token": "***redacted***",
        "nested": {"client_secret": "***redacted***", "keep": [1, 2.5, None, True],
                   "deeper": {"AUTH": "***redacted***"}},
        "servers": [{"host": "h1", "private_key": "***redacted***"}],
        "credentials_file": "***redacted***",
        "count": 3,
        "session": {"__not_json__": "object"},
        "ratio": {"__not_json__": "float"},
        "7": "int key",
    }
    json.dumps(snap, allow_nan=False)  # storable as strict JSON
    assert state["Password"] == "hunter2"  # the run's own state is untouched


def test_a_self_referencing_state_is_cut_not_recursed_forever():
    loop: dict = {"name": "x"}
    loop["self"] = loop
    snap = snapshot_state({"loop": loop})
    depth, node = 0, snap["loop"]
    while "self" in node:
        node, depth = node["self"], depth + 1
    assert node == {"__not_json__": "dict"} and depth < 40


def test_secret_looking_options_are_redacted_in_argv():
    argv = ["tasks.py", "--api-token=abc", "--password", "hunter2", "--user=alice", "--auth-header=",
            "--secret", "--workers", "2", "--Key=x"]
    assert redact_argv(argv) == ["tasks.py", "--api-token=***redacted***", "--password", "***redacted***",
                                 "--user=alice", "--auth-header=***redacted***", "--secret", "--workers",
                                 "2", "--Key=***redacted***"]


def test_the_state_snapshot_is_taken_at_attach_and_stored_redacted(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler(state={"db_password": "pw", "env": "dev"})

    def mutate(state):
        state["env"] = "changed by a task"

    sched.register(mutate, "mutate", with_state=True)
    _, run_id = record(sched, path, argv=["t.py", "--db_password=pw"])
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    assert run["state"] == {"db_password": "***redacted***", "env": "dev"}
    assert run["argv"] == ["t.py", "--db_password=***redacted***"]
    assert b"pw" not in path.read_bytes().replace(b"db_password", b"")


def test_output_is_capped_with_a_visible_note_keeping_head_and_tail(tmp_path):
    path = tmp_path / "h.db"
    body = "".join(f"line {i} \u00e9\u00e8\n" for i in range(20_000))  # multi-byte characters
    size = len(body.encode())
    assert size > 4 * OUTPUT_CAP
    sched = Scheduler()
    sched.register(lambda: print(body, end=""), "chatty")
    sched.register(lambda: print("short"), "quiet")
    _, run_id = record(sched, path)
    with HistoryStore(path) as store:
        tasks = {t["name"]: t for t in store.get_run(run_id)["tasks"]}
    out = tasks["chatty"]["output"]
    assert len(out.encode()) <= OUTPUT_CAP
    assert out.startswith("line 0 \u00e9\u00e8\nline 1 ")
    assert out.endswith("line 19999 \u00e9\u00e8\n")
    head, note, tail = out.partition("\n[... truncated ")
    dropped = int(tail.split(" bytes ...]\n", 1)[0])
    kept = len(head.encode()) + len(tail.split(" bytes ...]\n", 1)[1].encode())
    assert kept + dropped == size
    assert tasks["chatty"]["output_bytes"] == size
    assert tasks["quiet"]["output"] == "short\n" and tasks["quiet"]["output_bytes"] == 6


def test_cap_text_leaves_short_text_alone_and_survives_lone_surrogates():
    assert cap_text("hi") == ("hi", 2)
    assert cap_text("") == ("", 0)
    text, size = cap_text("bad \udcff byte", limit=100)
    text.encode("utf-8")  # storable
    assert size == len(text.encode())


# --------------------------------------------------------------------------- reading


def test_list_runs_is_newest_first_and_filters_by_module_and_status(tmp_path):
    path = tmp_path / "h.db"
    ids = []
    for module, fail in (("a.py", False), ("b.py", True), ("a.py", True), ("a.py", False)):
        sched = Scheduler()

        def task(fail=fail):
            if fail:
                raise RuntimeError("no")

        sched.register(task, "t")
        ids.append(record(sched, path, module=module)[1])
    with HistoryStore(path) as store:
        assert [r["id"] for r in store.list_runs()] == ids[::-1]
        assert [r["id"] for r in store.list_runs(limit=2)] == ids[:1:-1]
        assert [r["id"] for r in store.list_runs(module="a.py")] == [ids[3], ids[2], ids[0]]
        assert [r["id"] for r in store.list_runs(status="failed")] == [ids[2], ids[1]]
        assert [r["id"] for r in store.list_runs(module="a.py", status="passed", limit=1)] == [ids[3]]
        assert store.list_runs(status="interrupted") == []
        first = store.list_runs()[-1]
        assert set(first) == {"id", "started_at", "finished_at", "module", "target", "status", "passed",
                              "failed", "skipped", "cancelled", "total", "duration", "workers", "host",
                              "tags", "state", "differs", "ordering", "replay_of"}
        with pytest.raises(HistoryError, match=r"^unknown run status 'bogus' \(expected one of "
                                               r"passed, failed, interrupted, running\)$"):
            store.list_runs(status="bogus")


def test_unknown_and_malformed_run_ids_are_history_errors(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler()
    sched.register(lambda: None, "a")
    _, run_id = record(sched, path)
    with HistoryStore(path) as store:
        assert store.get_run(str(run_id))["id"] == run_id
        assert store.get_run(" LAST ")["id"] == run_id
        with pytest.raises(HistoryError, match=rf"^history file {path}: no run 99$"):
            store.get_run(99)
        for bad in ("abc", "-1", "1.5", ""):
            with pytest.raises(HistoryError, match=rf"^run id must be a number or 'last', not {bad!r}$"):
                store.get_run(bad)


def test_last_in_an_empty_history_says_so(tmp_path):
    path = tmp_path / "h.db"
    HistoryStore(path, readonly=False).close()
    with HistoryStore(path) as store, pytest.raises(HistoryError, match=r"^history file .*: no runs recorded yet$"):
        store.get_run("last")


def test_a_missing_file_is_an_error_and_is_not_created(tmp_path):
    path = tmp_path / "nope" / "h.db"
    with pytest.raises(HistoryError, match=rf"^history file {path}: no such file$"):
        HistoryStore(path)
    assert not path.parent.exists()


def test_a_corrupt_file_is_an_error_and_is_left_alone(tmp_path):
    path = tmp_path / "h.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    before = fingerprint(path)
    with pytest.raises(HistoryError, match=rf"^history file {path}: not a readable thread-order history "
                                           r"file \(file is not a database\)$"):
        HistoryStore(path)
    sched = Scheduler()
    sched.register(lambda: None, "a")
    with pytest.raises(HistoryError, match=r"file is not a database"):
        HistoryRecorder(path).attach(sched, {})
    assert fingerprint(path) == before


def test_another_sqlite_database_is_not_taken_for_a_history(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (x)")
    before = fingerprint(path)
    with pytest.raises(HistoryError, match=rf"^history file {path}: not a thread-order history file "
                                           r"\(no schema version\)$"):
        HistoryStore(path)
    sched = Scheduler()
    sched.register(lambda: None, "a")
    with pytest.raises(HistoryError, match=r"\(no schema version\)$"):
        HistoryRecorder(path).attach(sched, {})
    assert fingerprint(path) == before


def test_a_file_from_a_newer_schema_is_refused_by_readers_and_writers(tmp_path):
    path = tmp_path / "h.db"
    HistoryStore(path, readonly=False).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = fingerprint(path)
    message = (rf"^history file {path}: written by a newer thread-order \(schema version "
               rf"{SCHEMA_VERSION + 1}, this version reads up to {SCHEMA_VERSION}\)$")
    with pytest.raises(HistoryError, match=message):
        HistoryStore(path)
    sched = Scheduler()
    sched.register(lambda: None, "a")
    with pytest.raises(HistoryError, match=message):
        HistoryRecorder(path).attach(sched, {})
    assert fingerprint(path) == before


def test_reading_never_modifies_the_file(tmp_path):
    path = tmp_path / "h.db"
    sched = mixed_scheduler()
    _, run_id = record(sched, path)
    before = fingerprint(path)
    with HistoryStore(path) as store:
        store.list_runs(status="interrupted")
        store.get_run(run_id)
        store.get_run("last")
    assert fingerprint(path) == before


# --------------------------------------------------------------------------- migration

# schema version 1, typed out here rather than taken from the module's MIGRATIONS, so a later
# edit to the migrations cannot quietly change what a "version 1 file" is
V1_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL, finished_at REAL, module TEXT, target TEXT,
    argv TEXT NOT NULL DEFAULT '[]', tags TEXT NOT NULL DEFAULT '[]', workers INTEGER, host TEXT,
    status TEXT NOT NULL, passed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0, duration REAL,
    graph TEXT NOT NULL DEFAULT '{}', state TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE tasks (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, thread TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL,
    duration REAL NOT NULL DEFAULT 0, error_type TEXT, error TEXT, traceback TEXT, reason TEXT,
    output TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);
INSERT INTO runs VALUES (1, 1000.0, 1002.5, 'old.py', 'old.py', '["old.py"]', '["smoke"]', 2, 'box',
    'failed', 1, 1, 0, 0, 2, 2.5, '{"nodes": ["a", "b"], "edges": [["a", "b"]]}', '{"env": "dev"}');
INSERT INTO runs (id, started_at, module, status, total) VALUES (2, 2000.0, 'old.py', 'running', 2);
INSERT INTO tasks VALUES (1, 2, 'b', 'FAILED', 'thread_0', 1, 1001.0, 1002.0, 1.0, 'KeyError', "'id'",
    'Traceback...', NULL, 'out b');
INSERT INTO tasks VALUES (1, 1, 'a', 'PASSED', 'thread_1', 1, 1000.0, 1001.0, 1.0, NULL, NULL, NULL,
    NULL, 'out a');
PRAGMA user_version = 1;
"""


def make_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.commit()
    conn.close()


def test_a_version_1_file_is_read_as_it_is_without_being_touched(tmp_path):
    path = tmp_path / "old.db"
    make_v1(path)
    before = fingerprint(path)
    with HistoryStore(path) as store:
        runs = store.list_runs()
        old = store.get_run(1)
    assert [(r["id"], r["status"]) for r in runs] == [(2, "interrupted"), (1, "failed")]
    assert old["tags"] == ["smoke"] and old["state"] == {"env": "dev"} and old["run_uuid"] is None
    assert [(t["name"], t["output"], t["output_bytes"], t["tags"]) for t in old["tasks"]] == [
        ("a", "out a", 5, []), ("b", "out b", 5, [])]
    assert fingerprint(path) == before


def test_recording_into_a_version_1_file_migrates_it_forward_keeping_old_runs(tmp_path):
    path = tmp_path / "old.db"
    make_v1(path)
    sched = Scheduler()
    sched.register(lambda: print("new"), "a")
    _, run_id = record(sched, path, module="old.py")
    assert run_id == 3
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    with HistoryStore(path) as store:
        old = store.get_run(1)
        assert [t["name"] for t in old["tasks"]] == ["a", "b"]
        assert old["tasks"][1]["error_type"] == "KeyError"
        assert store.get_run(2)["status"] == "interrupted"
        new = store.get_run(run_id)
        assert new["status"] == "passed" and new["tasks"][0]["output"] == "new\n"
        assert [r["id"] for r in store.list_runs(module="old.py")] == [3, 2, 1]


def test_a_fresh_file_is_built_by_running_every_migration(tmp_path):
    path = tmp_path / "new.db"
    HistoryStore(path, readonly=False).close()
    old = tmp_path / "old.db"
    make_v1(old)
    HistoryStore(old, readonly=False).close()

    def shape(p):
        conn = sqlite3.connect(p)
        out = {t: [r[1:3] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("runs", "tasks")}
        out["indexes"] = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"))
        conn.close()
        return out

    assert shape(path) == shape(old)


# --------------------------------------------------------------------------- interrupted runs


def test_a_running_row_reads_as_interrupted_once_its_writer_is_gone():
    here = socket.gethostname()
    now = 10_000.0
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(WAIT)
    assert effective_status("running", here, os.getpid(), now, now=now + 1) == "running"
    assert effective_status("running", here, dead.pid, now, now=now + 1) == "interrupted"
    assert effective_status("running", here, os.getpid(), now, now=now + 3600) == "interrupted"
    assert effective_status("running", "elsewhere", 1, now, now=now + 1) == "running"
    assert effective_status("running", "elsewhere", 1, now, now=now + 3600) == "interrupted"
    assert effective_status("running", here, os.getpid(), None) == "interrupted"
    assert effective_status("passed", here, dead.pid, None) == "passed"


class Lines:
    """A subprocess's stdout lines, read on a thread, waited for with a timeout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def next(self, timeout: float = WAIT) -> str | None:
        return self.q.get(timeout=timeout)


def spawn(*args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_run_killed_with_sigkill_keeps_its_finished_tasks_and_reads_as_interrupted(tmp_path):
    path = tmp_path / "h.db"
    proc = spawn("kill", str(path))
    try:
        line = Lines(proc).next()
        assert line is not None and line.startswith("READY "), proc.stderr.read() if line is None else line
        run_id = int(line.split()[1])
    finally:
        kill_hard_and_check_file(proc, path, WAIT)
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
        assert store.list_runs(status="interrupted")[0]["id"] == run_id
    assert run["status"] == "interrupted"
    assert run["finished_at"] is None
    assert sorted(t["name"] for t in run["tasks"]) == [f"quick_{i}" for i in range(5)]
    assert all(t["status"] == "PASSED" for t in run["tasks"])
    assert {t["output"] for t in run["tasks"]} == {f"quick {i} says hello\n" for i in range(5)}
    assert run["passed"] == 5 and run["total"] == 8
    assert run["graph"]["nodes"][-3:] == ["hold", "stuck", "after_hold"]
    assert run["state"] == {"user": "alice", "api_token": "***redacted***"}


@pytest.mark.slow
def test_four_processes_recording_into_one_file_at_once_lose_nothing(tmp_path):
    path = tmp_path / "h.db"
    tasks = 400
    procs = [spawn("many", str(path), str(tasks), stdin=subprocess.PIPE) for _ in range(4)]
    try:
        readers = [Lines(p) for p in procs]
        attached = [r.next() for r in readers]
        assert all(a and a.startswith("ATTACHED ") for a in attached), attached
        for p in procs:  # all four go at once
            p.stdin.write("go\n")
            p.stdin.flush()
        done = [r.next() for r in readers]
        codes = [p.wait(WAIT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(WAIT)
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs]
    ids = sorted(int(d.split()[1]) for d in done)
    assert all(int(d.split()[2]) == tasks for d in done)
    assert ids == sorted(int(a.split()[1]) for a in attached) and len(set(ids)) == 4
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with HistoryStore(path) as store:
        for run_id in ids:
            run = store.get_run(run_id)
            assert (run["status"], run["passed"], len(run["tasks"])) == ("passed", tasks, tasks)
            assert sorted(t["seq"] for t in run["tasks"]) == list(range(1, tasks + 1))


# --------------------------------------------------------------------------- paths and compare


def test_resolve_history_path(monkeypatch):
    monkeypatch.delenv("TDRUN_HISTORY", raising=False)
    assert resolve_history_path(None, False) == DEFAULT_HISTORY
    assert resolve_history_path("x/h.db", False) == Path("x/h.db")
    assert resolve_history_path("x/h.db", True) is None
    monkeypatch.setenv("TDRUN_HISTORY", "off")
    assert resolve_history_path(None, False) is None
    assert resolve_history_path("x/h.db", False) == Path("x/h.db")  # an explicit path wins
    monkeypatch.setenv("TDRUN_HISTORY", "OFF")
    assert resolve_history_path(None, False) is None
    monkeypatch.setenv("TDRUN_HISTORY", "on")
    assert resolve_history_path(None, False) == DEFAULT_HISTORY


def test_compare_finds_status_changes_added_removed_and_slower_tasks():
    def run(rid, tasks, nodes=None):
        return {"id": rid, "module": "m.py", "status": "passed", "graph": {"nodes": nodes or [t[0] for t in tasks]},
                "tasks": [{"name": n, "status": s, "started_at": 0.0 if d is not None else None,
                           "duration": d} for n, s, d in tasks]}

    a = run(1, [("login", "PASSED", 0.1), ("create", "PASSED", 1.0), ("old", "PASSED", 0.2),
                ("verify", "SKIPPED", None)])
    b = run(2, [("login", "PASSED", 0.1), ("create", "FAILED", 3.5), ("new", "PASSED", 0.3),
                ("verify", "SKIPPED", None)], nodes=["login", "create", "new", "verify", "late"])
    diff = compare_runs(a, b)
    assert diff["same_module"] is True
    assert diff["status_changes"] == [{"name": "create", "a": "PASSED", "b": "FAILED"}]
    assert diff["added"] == ["new", "late"] and diff["removed"] == ["old"]
    assert diff["duration_changes"][0] == {"name": "create", "a": 1.0, "b": 3.5, "delta": 2.5, "ratio": 3.5}
    assert [d["name"] for d in diff["duration_changes"]] == ["create", "login"]
    assert diff["a"]["id"] == 1 and diff["b"]["id"] == 2


def test_no_sql_runs_on_the_dispatcher_thread(tmp_path):
    # the subscriber only queues: statements run on the recorder's own writer thread
    sched = Scheduler(workers=2)
    for i in range(50):
        sched.register(lambda: None, f"t{i}")
    recorder = HistoryRecorder(tmp_path / "h.db")
    recorder.attach(sched, {})  # attach writes the run row; that is before the run starts
    threads: set[int] = set()
    recorder._conn.set_trace_callback(lambda sql: threads.add(threading.get_ident()))
    sched.start()
    recorder.finish()
    assert threads and threading.get_ident() not in threads


def _open_at_once(path: str, barrier, results) -> None:
    from thread_order.history.db import open_writable

    barrier.wait(10)
    try:
        open_writable(Path(path)).close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_creating_one_fresh_file_at_once_all_succeed(tmp_path):
    """Found under CI load: a second process saw the first one's half-made schema ("no schema
    version") or lost the race to switch the file to WAL ("database is locked")."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for attempt in range(8):
        path = tmp_path / f"fresh-{attempt}.db"
        barrier, results = ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(str(path), barrier, results)) for _ in range(6)]
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(30)
        assert outcomes == ["ok"] * 6, f"attempt {attempt}: {outcomes}"
    with HistoryStore(path) as store:
        assert store.list_runs() == []


@given(st.lists(st.text(max_size=12), max_size=8))
def test_a_batch_of_names_is_the_json_text_json_dumps_would_write(names):
    assert json_strings(names) == json.dumps(names)
    assert json.loads(json_strings(names)) == names


def test_passed_tasks_with_names_that_need_escaping_read_back_as_they_were_named(tmp_path):
    names = ['say "hi"', "back\\slash", "tab\there", "déjà vu", "line\u2028sep", "plain", "new\nline"]
    sched = Scheduler(workers=2)
    for name in names:
        sched.register(lambda: None, name)
    _, run_id = record(sched, tmp_path / "h.db")
    with HistoryStore(tmp_path / "h.db") as store:
        run = store.get_run(run_id)
    assert sorted(t["name"] for t in run["tasks"]) == sorted(names)
    assert {t["status"] for t in run["tasks"]} == {"PASSED"}


def test_a_big_batch_is_stored_in_rows_of_at_most_1024_tasks_and_reads_back_whole(tmp_path):
    sched = Scheduler(workers=4)
    for i in range(2500):
        sched.register((lambda: 1 / 0) if i % 500 == 7 else (lambda: None), f"t{i}")
    path = tmp_path / "h.db"
    summary, run_id = record(sched, path)
    with sqlite3.connect(path) as conn:
        sizes = [n for (n,) in conn.execute("SELECT tasks FROM task_batches WHERE run_id = ?", (run_id,))]
    assert sum(sizes) == 2495 and max(sizes) <= 1024 and len(sizes) >= 3
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    assert sorted(t["name"] for t in run["tasks"]) == sorted(f"t{i}" for i in range(2500))
    assert sorted(t["seq"] for t in run["tasks"]) == list(range(1, 2501))
    assert {t["name"] for t in run["tasks"] if t["status"] == "FAILED"} == set(summary["failed"])
