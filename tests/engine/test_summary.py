"""The run summary's task table: built from the records when read, a plain dict to every reader."""

from __future__ import annotations

import copy
import json
import pickle

from thread_order import Scheduler, TaskStatus


def summary_of_three() -> dict:
    s = Scheduler(workers=2)
    s.register(lambda: print("hello"), "a")
    s.register(lambda: 1 / 0, "b", after="a")
    s.register(lambda: None, "c", after="b")
    return s.start()


def plain(tasks) -> dict:
    return {name: dict(tasks[name]) for name in list(tasks.keys())}


def test_every_way_of_reading_the_task_table_sees_plain_dicts():
    tasks = summary_of_three()["tasks"]
    expected = plain(tasks)
    assert set(expected) == {"a", "b", "c"}
    assert expected["a"]["output"] == "hello\n" and expected["a"]["status"] is TaskStatus.PASSED
    assert expected["b"]["error_type"] == "ZeroDivisionError"
    assert expected["c"]["reason"] == "dependency 'b' failed"
    assert sorted(expected["a"]) == sorted([
        "status", "thread", "started_at", "finished_at", "duration", "attempts", "error_type",
        "error", "traceback", "output", "reason", "is_async", "warning", "waited", "waited_for"])
    fresh = summary_of_three()["tasks"]  # nothing read yet: every reader must build the rows
    assert dict(fresh)["a"]["output"] == "hello\n"
    fresh = summary_of_three()["tasks"]
    assert {**fresh}["b"]["status"] is TaskStatus.FAILED
    fresh = summary_of_three()["tasks"]
    assert all(type(v) is dict for v in fresh.values())
    fresh = summary_of_three()["tasks"]
    assert all(type(v) is dict for _, v in fresh.items())
    fresh = summary_of_three()["tasks"]
    assert type(fresh.get("a")) is dict and fresh.get("nope") is None and fresh.get("nope", 1) == 1
    fresh = summary_of_three()["tasks"]
    assert json.loads(json.dumps(fresh))["c"]["reason"] == "dependency 'b' failed"
    fresh = summary_of_three()["tasks"]
    assert json.loads(json.dumps(fresh, indent=2, sort_keys=True))["b"]["error_type"] == "ZeroDivisionError"
    fresh = summary_of_three()["tasks"]
    assert pickle.loads(pickle.dumps(fresh))["a"]["output"] == "hello\n"
    fresh = summary_of_three()["tasks"]
    assert copy.deepcopy(fresh)["a"]["output"] == "hello\n"
    fresh = summary_of_three()["tasks"]
    assert type(fresh.copy()["a"]) is dict and type((fresh | {})["a"]) is dict
    fresh = summary_of_three()["tasks"]
    assert "hello" in repr(fresh)


def test_the_task_table_equals_the_plain_dict_and_keeps_changes():
    summary = summary_of_three()
    tasks = summary["tasks"]
    other = summary_of_three()["tasks"]
    assert plain(tasks).keys() == tasks.keys()
    snapshot = {name: dict(row) for name, row in plain(tasks).items()}
    assert tasks == snapshot and snapshot == tasks and not (tasks != snapshot)
    assert tasks != other  # different runs, different times
    tasks["a"]["note"] = "mine"
    assert tasks["a"]["note"] == "mine" and dict(tasks)["a"]["note"] == "mine"
    assert tasks.pop("c")["reason"] == "dependency 'b' failed" and "c" not in tasks
    assert tasks.pop("c", None) is None
    assert json.loads(json.dumps(summary))["tasks"]["a"]["note"] == "mine"
