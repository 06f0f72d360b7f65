"""The history's record of a run's start order (schema 6): seeds, replays, lower bounds, durations."""

from __future__ import annotations

import sqlite3

import pytest

from test_history import make_v1, record
from thread_order import Scheduler
from thread_order.engine.order import ReplayOrder
from thread_order.history import SCHEMA_VERSION, HistoryStore, recent_durations


def test_a_shuffled_run_records_its_seed_and_lower_bound(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler(workers=2, shuffle=42)
    for i in range(4):
        sched.register(lambda: None, f"t{i}")
    summary, run_id = record(sched, path, module="m.py")
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
        listed = store.list_runs()[0]
    assert run["ordering"] == {"order": "shuffle", "seed": 42} == summary["order"]
    # worked out from the tasks when read (the engine computes it for critical-path order only)
    assert run["lower_bound"]["workers"] == 2 and "lower_bound" not in summary
    assert run["replay_of"] is None and run["replays"] == []
    assert listed["ordering"]["seed"] == 42 and listed["replay_of"] is None


def test_a_critical_path_run_records_the_bound_its_summary_gives(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler(workers=2, order="critical-path", durations={"a": 1.0})
    sched.register(lambda: None, "a")
    sched.register(lambda: None, "b", after=["a"])
    summary, run_id = record(sched, path)
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    assert run["ordering"]["order"] == "critical-path"
    assert run["ordering"]["lower_bound"] == summary["lower_bound"] == run["lower_bound"]


def test_a_declared_run_gets_its_bound_worked_out_when_read(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler(workers=2)
    sched.register(lambda: None, "a")
    sched.register(lambda: None, "b", after=["a"])
    _, run_id = record(sched, path)
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    assert run["ordering"] == {"order": "declared"}
    durations = {t["name"]: t["duration"] for t in run["tasks"]}
    assert run["lower_bound"]["critical_path"] == pytest.approx(durations["a"] + durations["b"])
    assert run["lower_bound"]["workers"] == 2


def test_replay_links_go_both_ways(tmp_path):
    path = tmp_path / "h.db"
    first = Scheduler(workers=1)
    first.register(lambda: None, "a")
    _, original = record(first, path)
    with HistoryStore(path) as store:
        task = store.get_run(original)["tasks"][0]
    again = Scheduler(workers=1, order=ReplayOrder(original, {"a": (task["started_at"], task["finished_at"])}))
    again.register(lambda: None, "a")
    _, replay = record(again, path, replay_of=original)
    with HistoryStore(path) as store:
        assert store.get_run(original)["replays"] == [replay]
        assert store.get_run(replay)["replay_of"] == original
        assert store.get_run(replay)["ordering"]["order"] == "replay"


def test_old_files_migrate_to_schema_6_and_their_runs_read_as_declared(tmp_path):
    path = tmp_path / "old.db"
    make_v1(path)
    with HistoryStore(path) as store:  # read as it is, before any migration
        old = store.get_run(1)
    assert old["ordering"] == {"order": "declared"} and old["replay_of"] is None and old["replays"] == []
    sched = Scheduler(shuffle=3)
    sched.register(lambda: None, "a")
    record(sched, path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 6
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    conn.close()
    assert {"ordering", "replay_of"} <= columns
    with HistoryStore(path) as store:
        assert store.get_run(1)["ordering"] == {"order": "declared"}
        assert store.get_run(3)["ordering"]["seed"] == 3


def test_a_damaged_ordering_reads_as_declared(tmp_path):
    path = tmp_path / "h.db"
    sched = Scheduler(workers=1)
    sched.register(lambda: None, "a")
    _, run_id = record(sched, path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET ordering = 'not json', replay_of = 'x' WHERE id = ?", (run_id,))
    conn.commit()
    conn.close()
    with HistoryStore(path) as store:
        run = store.get_run(run_id)
    assert run["ordering"] == {"order": "declared"} and run["replay_of"] is None


def test_recent_durations_are_the_median_of_the_last_five_passed(tmp_path):
    path = tmp_path / "h.db"
    for i, fail in enumerate([False] * 7 + [True]):
        sched = Scheduler(workers=1)
        sched.register(lambda: None, "quick")

        def slow(fail=fail):
            if fail:
                raise RuntimeError("no duration of a failure counts")
        sched.register(slow, "slow")
        record(sched, path, module="m.py")
    other = Scheduler(workers=1)
    other.register(lambda: None, "elsewhere")
    record(other, path, module="other.py")
    durations = recent_durations(path, "m.py")
    assert set(durations) == {"quick", "slow"}
    with HistoryStore(path) as store:
        runs = [store.get_run(r["id"]) for r in store.list_runs(module="m.py", limit=None)]
    quick = sorted(next(t["duration"] for t in r["tasks"] if t["name"] == "quick") for r in runs[:5])
    assert durations["quick"] == quick[2]
    assert recent_durations(tmp_path / "missing.db", "m.py") == {}
    assert recent_durations(None, "m.py") == {}
