"""The engine's ordered event stream: order, sequence numbers, payloads, subscription."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from thread_order import Event, EventKind, Scheduler, TaskStatus

K = EventKind


def lifecycle(workers=2, fail=()):
    """create -> (update, attach) -> verify -> teardown(always); side is independent."""

    def task(name):
        def fn():
            if name in fail:
                raise RuntimeError(f"{name} broke")
            return name
        return fn

    s = Scheduler(workers=workers)
    s.register(task("create"), "create")
    s.register(task("update"), "update", after=["create"])
    s.register(task("attach"), "attach", after=["create"])
    s.register(task("verify"), "verify", after=["update", "attach"])
    s.register(task("teardown"), "teardown", after=["verify"], always=True)
    s.register(task("side"), "side")
    return s


def record_all(s):
    events: list[Event] = []
    s.subscribe(events.append)
    return events


def test_event_kind_values():
    assert [k.value for k in EventKind] == [
        "run_started", "task_ready", "task_started", "task_running",
        "task_retrying", "task_finished", "run_interrupted", "run_finished", "task_warning",
        "pool_waiting",
    ]
    assert str(K.TASK_FINISHED) == "task_finished"


def test_full_stream_is_ordered_with_contiguous_seq():
    s = lifecycle()
    events = record_all(s)
    summary = s.start()

    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    times = [e.time for e in events]
    assert times == sorted(times)
    assert events[0].kind is K.RUN_STARTED and events[-1].kind is K.RUN_FINISHED
    assert [e.kind for e in events].count(K.RUN_STARTED) == 1
    assert [e.kind for e in events].count(K.RUN_FINISHED) == 1
    assert events[-1].data is summary

    names = list(s.graph.nodes)
    for name in names:
        kinds = [e.kind for e in events if e.name == name]
        assert kinds == [K.TASK_READY, K.TASK_STARTED, K.TASK_RUNNING, K.TASK_FINISHED], name

    finished = [e for e in events if e.kind is K.TASK_FINISHED]
    assert [e.count for e in finished] == list(range(1, len(names) + 1))
    assert sorted(e.name for e in finished) == sorted(names)
    for e in finished:
        assert e.record.name == e.name and e.record.status is TaskStatus.PASSED

    running = [e for e in events if e.kind is K.TASK_RUNNING]
    assert {e.thread for e in running} <= {"thread_0", "thread_1"}
    assert all(e.attempt == 1 for e in running)


def test_dependencies_finish_before_dependents_are_ready():
    s = lifecycle(workers=4)
    events = record_all(s)
    s.start()
    seq_of = {(e.kind, e.name): e.seq for e in events if e.name}
    for task, parents in s.graph.parents.items():
        for p in parents:
            assert seq_of[(K.TASK_FINISHED, p)] < seq_of[(K.TASK_READY, task)], (p, task)


def test_run_started_carries_meta():
    s = lifecycle(workers=3)
    events = record_all(s)
    summary = s.start()
    meta = events[0].data
    assert set(meta) == {"run_id", "total_tasks", "workers", "start_time", "tasks", "threads"}
    assert meta["run_id"] == summary["run_id"]
    assert meta["total_tasks"] == 6
    assert meta["workers"] == 3
    assert meta["tasks"] == ["create", "update", "attach", "verify", "teardown", "side"]
    assert meta["start_time"] == pytest.approx(summary["started_at"], abs=1.0)


def test_skipped_task_only_has_a_finished_event_with_its_reason():
    s = lifecycle(fail={"update"})
    events = record_all(s)
    s.start()
    assert [e.kind for e in events if e.name == "verify"] == [K.TASK_FINISHED]
    (verify,) = [e for e in events if e.name == "verify"]
    assert verify.record.status is TaskStatus.SKIPPED
    assert verify.record.reason == "dependency 'update' failed"
    # the always-task still goes through the whole life
    assert [e.kind for e in events if e.name == "teardown"] == [
        K.TASK_READY, K.TASK_STARTED, K.TASK_RUNNING, K.TASK_FINISHED]


def test_subscribe_to_some_kinds_as_enum_or_string():
    s = lifecycle()
    finished: list[Event] = []
    boundaries: list[Event] = []
    s.subscribe(finished.append, "task_finished")
    s.subscribe(boundaries.append, K.RUN_STARTED, K.RUN_FINISHED)
    s.start()
    assert {e.kind for e in finished} == {K.TASK_FINISHED} and len(finished) == 6
    assert [e.kind for e in boundaries] == [K.RUN_STARTED, K.RUN_FINISHED]
    seqs = [e.seq for e in sorted(finished + boundaries, key=lambda e: e.seq)]
    assert seqs == sorted(set(seqs))
    assert boundaries[0].seq < finished[0].seq and finished[-1].seq < boundaries[1].seq


def test_unknown_kind_and_non_callable_subscriber_are_rejected():
    s = lifecycle()
    with pytest.raises(ValueError):
        s.subscribe(lambda e: None, "no_such_kind")
    with pytest.raises(TypeError, match=r"^subscribe: 5 is not callable$"):
        s.subscribe(5)


def test_unsubscribe_stops_delivery_and_seq_restarts_each_run():
    s = lifecycle()
    first: list[Event] = []
    second: list[Event] = []
    undo = s.subscribe(first.append)
    s.subscribe(second.append)
    s.start()
    n = len(first)
    undo()
    undo()  # idempotent
    s.start()
    assert len(first) == n
    assert len(second) == 2 * n
    assert second[n].kind is K.RUN_STARTED and second[n].seq == 1
    assert second[0].data["run_id"] != second[n].data["run_id"]


def test_subscribers_run_in_order_on_the_start_thread():
    s = lifecycle(workers=4)
    calls = []
    s.subscribe(lambda e: calls.append(("first", e.seq, threading.get_ident())))
    s.subscribe(lambda e: calls.append(("second", e.seq, threading.get_ident())))
    s.start()
    me = threading.get_ident()
    assert {ident for _, _, ident in calls} == {me}
    # for each event, the first subscriber before the second, and events never interleave
    assert [who for who, _, _ in calls] == ["first", "second"] * (len(calls) // 2)
    assert [seq for _, seq, _ in calls] == sorted(seq for _, seq, _ in calls)


def test_raising_subscriber_is_logged_and_the_run_goes_on(caplog):
    s = lifecycle()
    good: list[Event] = []

    def bad(event):
        raise RuntimeError("subscriber exploded")

    s.subscribe(bad, K.TASK_FINISHED)
    s.subscribe(good.append, K.TASK_FINISHED)
    with caplog.at_level(logging.ERROR, logger="thread_order"):
        summary = s.start()
    assert len(summary["passed"]) == 6
    assert len(good) == 6
    errors = [r for r in caplog.records if r.name == "thread_order" and r.levelno == logging.ERROR]
    assert len(errors) == 6
    assert "task_finished" in errors[0].getMessage()
    assert "subscriber exploded" in caplog.text


def test_to_dict_is_json_ready_for_every_kind():
    s = lifecycle(fail={"attach"})
    events = record_all(s)
    s.start()
    dicts = [e.to_dict() for e in events]
    json.dumps(dicts)
    started = dicts[0]
    assert started["kind"] == "run_started" and started["seq"] == 1 and "name" not in started
    assert set(started["data"]) == {"run_id", "total_tasks", "workers", "start_time", "tasks", "threads"}
    fin = next(d for d in dicts if d["kind"] == "task_finished" and d["name"] == "attach")
    assert fin["record"]["status"] == "FAILED"
    assert fin["record"]["error"] == "attach broke"
    assert fin["count"] >= 1
    running = next(d for d in dicts if d["kind"] == "task_running")
    assert running["thread"].startswith("thread_") and running["attempt"] == 1
    ready = next(d for d in dicts if d["kind"] == "task_ready")
    assert set(ready) == {"kind", "seq", "time", "name"}
    assert dicts[-1]["kind"] == "run_finished" and dicts[-1]["data"]["failed"] == ["attach"]


def test_event_is_frozen():
    s = lifecycle()
    events = record_all(s)
    s.start()
    with pytest.raises(AttributeError):
        events[0].seq = 99  # type: ignore[misc]
