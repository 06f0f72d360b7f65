"""The Scheduler through its public interface: one or more tests per numbered rule of the spec."""

from __future__ import annotations

import logging
import os
import sys
import re
import threading
import time

import pytest

from thread_order import (
    DuplicateTaskError,
    EventKind,
    Scheduler,
    TaskSpec,
    TaskStatus,
    UnknownDependencyError,
    default_workers,
)

K = EventKind
WAIT = 10.0  # upper bound for every wait on another thread; tests never take that long when green

PASSED, FAILED, SKIPPED, CANCELLED = (
    TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED,
)


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"timed out waiting for {what}"


def returns(value):
    def fn():
        return value
    return fn


def raises(exc):
    def fn():
        raise exc
    return fn


def statuses(summary):
    return {name: task["status"] for name, task in summary["tasks"].items()}


def start_or_fail(s: Scheduler, timeout: float = WAIT) -> dict:
    """start() on another thread: a run that hangs or raises fails the test instead of hanging it."""
    result = {}

    def run():
        try:
            result["summary"] = s.start()
        except BaseException as exc:  # reported below
            result["error"] = exc

    runner = threading.Thread(target=run, name="test-runner", daemon=True)
    runner.start()
    runner.join(timeout)
    if runner.is_alive():
        s.cancel(force=True)  # don't leave a hung run behind for the next tests
        s.cancel(force=True)
        runner.join(timeout)
        pytest.fail(f"start() did not return within {timeout}s")
    assert "error" not in result, f"start() raised {result['error']!r}"
    return result["summary"]


# ------------------------------------------------------------------ construction


def test_default_workers_follow_the_io_bound_rule():
    assert default_workers == min(32, (os.cpu_count() or 1) + 4)
    assert Scheduler().workers == default_workers
    assert Scheduler(workers=3).workers == 3


def test_workers_below_one_are_rejected():
    with pytest.raises(ValueError, match=r"^workers must be at least 1, not 0$"):
        Scheduler(workers=0)
    with pytest.raises(ValueError, match=r"^workers must be at least 1, not -4$"):
        Scheduler(workers=-4)
    with pytest.raises(TypeError, match=r"^workers must be an integer, not 2\.5$"):
        Scheduler(workers=2.5)
    with pytest.raises(TypeError, match=r"^workers must be an integer, not True$"):
        Scheduler(workers=True)


def test_state_must_be_a_dict_and_is_shared_as_given():
    with pytest.raises(TypeError, match=r"^state must be a dict, not list$"):
        Scheduler(state=[])
    mine = {"token": "abc"}
    s = Scheduler(workers=2, state=mine)
    assert s.state is mine
    assert set(mine) == {"token", "results", "_state_lock"}
    lock = mine["_state_lock"]
    # re-entrant: the same thread may take it twice
    assert lock.acquire(timeout=1) and lock.acquire(timeout=1)
    lock.release()
    lock.release()


def test_store_results_false_keeps_no_results():
    s = Scheduler(workers=1, store_results=False)
    s.register(returns(1), "a")
    assert s.start()["passed"] == ["a"]
    assert "results" not in s.state


# ------------------------------------------------------------------ registration


def test_register_validates_at_once():
    s = Scheduler(workers=1)
    s.register(returns(1), "a")
    with pytest.raises(DuplicateTaskError, match=r"^task 'a' is already registered$") as info:
        s.register(returns(2), "a")
    assert info.value.name == "a" and isinstance(info.value, ValueError)
    with pytest.raises(TypeError, match=r"^task 'b': 'nope' is not callable$"):
        s.register("nope", "b")
    with pytest.raises(TypeError, match=r"^task name must be a non-empty string, not None$"):
        s.register(returns(1), None)
    with pytest.raises(ValueError, match=r"^task 'c': retries must be an integer >= 0, not -1$"):
        s.register(returns(1), "c", retries=-1)
    assert [t.name for t in s.tasks] == ["a"]


@pytest.mark.parametrize("fn, name, after", [
    ("nope", "t", None), (returns(1), None, None), (returns(1), "", None), (returns(1), 3, None),
    (returns(1), "t", 5), (returns(1), "t", ""), (returns(1), "t", ["a", 1]), (returns(1), "t", ("a", "")),
    (returns(1), "t", [None]), ("nope", 3, ["a", 1]), (returns(1), "t", {"a": 1, 2: 1}),
])
def test_register_refuses_what_task_spec_build_refuses_with_the_same_message(fn, name, after):
    with pytest.raises((TypeError, ValueError)) as built:
        TaskSpec.build(fn, name, after)
    s = Scheduler(workers=1)
    with pytest.raises(type(built.value), match=f"^{re.escape(str(built.value))}$"):
        s.register(fn, name, after)
    with pytest.raises(type(built.value), match=f"^{re.escape(str(built.value))}$"):
        s.register(fn, name, (d for d in after) if isinstance(after, (list, tuple)) else after)
    assert s.tasks == ()


def test_register_keeps_dependencies_as_distinct_names_whatever_their_container():
    s = Scheduler(workers=1)
    s.register(returns(0), "a")
    s.register(returns(0), "b")
    s.register(returns(1), "t1", after="a")
    s.register(returns(1), "t2", after=["a", "b", "a"])
    s.register(returns(1), "t3", after=("b", "b"))
    s.register(returns(1), "t4", after=(n for n in ["b", "a"]))
    s.register(returns(1), "t5", after=[])
    afters = [t.after for t in s.tasks]
    assert afters == [(), (), ("a",), ("a", "b"), ("b",), ("b", "a"), ()]
    assert s.graph.parents["t3"] == ("b",) and s.graph.children["b"] == ("t2", "t3", "t4")
    assert s.start()["passed"] == ["a", "b", "t1", "t2", "t3", "t4", "t5"]


def test_repeated_dependencies_registered_after_the_graph_was_read_are_one_edge_too():
    s = Scheduler(workers=2)
    s.register(returns(0), "a")
    assert s.graph.edge_count == 0
    s.register(returns(1), "b", after=("a", "a"))
    s.register(returns(1), "c", after=["b", "a", "b"])
    assert s.graph.parents["b"] == ("a",) and s.graph.parents["c"] == ("b", "a")
    assert s.graph.edge_count == 3
    assert [t.after for t in s.tasks] == [(), ("a",), ("b", "a")]
    assert s.start()["passed"] == ["a", "b", "c"]


def test_a_graph_read_before_more_tasks_are_registered_stays_as_it_was():
    s = Scheduler(workers=1)
    s.register(returns(0), "a")
    graph = s.graph
    s.register(returns(0), "b", after="a")
    assert graph.nodes == ("a",) and "b" not in graph
    assert s.graph.nodes == ("a", "b") and s.graph.parents["b"] == ("a",)
    assert [t.name for t in s.tasks] == ["a", "b"]


def test_unknown_dependency_is_reported_by_start_before_anything_runs():
    ran = []
    s = Scheduler(workers=2)
    s.register(lambda: ran.append("a"), "a")
    s.register(lambda: ran.append("b"), "b", after=["a", "x"])
    with pytest.raises(UnknownDependencyError, match=r"^task 'b' depends on unknown task 'x'$"):
        s.start()
    assert ran == []
    assert not s.running


def test_register_keeps_options_in_task_specs():
    s = Scheduler(workers=1)

    def teardown(state):
        return None

    s.register(teardown, "teardown", after="create", with_state=True, tags="api,slow",
               always=True, retries=2, retry_delay=0.5, timeout=3)
    s.register(returns(1), "create")
    (spec, create) = s.tasks
    assert spec == TaskSpec("teardown", teardown, ("create",), True, ("api", "slow"), True, 2, 0.5, 3.0)
    assert create.after == () and not create.always and create.with_state is False


def test_dregister_registers_under_the_function_name_and_returns_a_callable():
    s = Scheduler(workers=2)

    @s.dregister()
    def create():
        return "created"

    @s.dregister(after=["create"], with_state=True, always=True, tags=["cleanup"])
    def teardown(state):
        return ("deleted", state["results"]["create"])

    assert create() == "created"
    assert teardown({"results": {"create": "x"}}) == ("deleted", "x")
    assert [t.name for t in s.tasks] == ["create", "teardown"]
    assert s.tasks[1].always and s.tasks[1].with_state and s.tasks[1].tags == ("cleanup",)
    summary = s.start()
    assert summary["passed"] == ["create", "teardown"]
    assert s.state["results"]["teardown"] == ("deleted", "created")

    with pytest.raises(DuplicateTaskError, match=r"^task 'create' is already registered$"):
        @s.dregister()
        def create():  # noqa: F811 - the duplicate is the point
            return None


def test_with_state_tasks_get_the_shared_dict():
    state = {"base": 40}
    s = Scheduler(workers=2, state=state)

    def create(st):
        with st["_state_lock"]:
            st["created"] = st["base"] + 1
        return "id-1"

    def verify(st):
        return (st["created"] + 1, st["results"]["create"])

    s.register(create, "create", with_state=True)
    s.register(verify, "verify", after=["create"], with_state=True)
    s.register(returns("plain"), "plain")
    s.start()
    assert state["created"] == 41
    assert state["results"] == {"create": "id-1", "verify": (42, "id-1"), "plain": "plain"}


# ------------------------------------------------------------------ rule 1: always waits for final deps


def test_always_task_waits_until_every_dependency_is_final():
    """A teardown must not start while an upstream task is still running, even if another failed."""
    b_failed = threading.Event()
    log: list[str] = []
    s = Scheduler(workers=4)

    def slow():
        wait_for(b_failed, "the failing sibling to be final")
        log.append("slow done")

    def teardown():
        log.append("teardown")

    s.register(returns("x"), "create")
    s.register(slow, "slow", after=["create"])
    s.register(raises(ValueError("boom")), "fast", after=["create"])
    s.register(teardown, "teardown", after=["slow", "fast"], always=True)
    s.subscribe(lambda e: e.name == "fast" and b_failed.set(), K.TASK_FINISHED)
    summary = s.start()
    assert log == ["slow done", "teardown"]
    assert statuses(summary) == {"create": PASSED, "slow": PASSED, "fast": FAILED, "teardown": PASSED}


def test_always_task_runs_after_skipped_and_failed_dependencies_and_unblocks_others():
    s = Scheduler(workers=3)
    s.register(raises(RuntimeError("no")), "create")
    s.register(returns(1), "update", after=["create"])
    s.register(returns(2), "teardown", after=["update"], always=True)
    s.register(returns(3), "report", after=["teardown"])
    s.register(returns(4), "report_update", after=["teardown", "update"])
    summary = s.start()
    assert statuses(summary) == {
        "create": FAILED, "update": SKIPPED, "teardown": PASSED,
        "report": PASSED, "report_update": SKIPPED,
    }
    assert summary["tasks"]["report_update"]["reason"] == "dependency 'update' skipped: upstream 'create' failed"


# ------------------------------------------------------------------ rule 2: skipping


def test_failure_skips_transitive_dependents_with_reasons_and_independent_work_continues():
    executed = []
    lock = threading.Lock()

    def task(name, fail=False):
        def fn():
            with lock:
                executed.append(name)
            if fail:
                raise ValueError(f"{name} is broken")
            return name
        return fn

    s = Scheduler(workers=3)
    s.register(task("a", fail=True), "a")
    s.register(task("b"), "b", after=["a"])
    s.register(task("c"), "c", after=["b"])
    s.register(task("d"), "d", after=["c", "x"])
    s.register(task("x"), "x")
    s.register(task("y"), "y", after=["x"])
    summary = s.start()
    assert sorted(executed) == ["a", "x", "y"]
    assert statuses(summary) == {
        "a": FAILED, "b": SKIPPED, "c": SKIPPED, "d": SKIPPED, "x": PASSED, "y": PASSED,
    }
    reasons = {n: t["reason"] for n, t in summary["tasks"].items()}
    assert reasons["b"] == "dependency 'a' failed"
    assert reasons["c"] == "dependency 'b' skipped: upstream 'a' failed"
    assert reasons["d"] == "dependency 'c' skipped: upstream 'a' failed"
    assert reasons["a"] is None and reasons["x"] is None
    for name in "bcd":
        task_ = summary["tasks"][name]
        assert task_["thread"] is None and task_["attempts"] == 0 and task_["started_at"] is None
    assert summary["failures"] == {"a": {"error_type": "ValueError", "error": "a is broken"}}


def test_skip_dependents_false_runs_them_anyway():
    s = Scheduler(workers=2, skip_dependents=False)
    s.register(raises(ValueError("no")), "a")
    s.register(returns("b"), "b", after=["a"])
    s.register(returns("c"), "c", after=["b"])
    summary = s.start()
    assert statuses(summary) == {"a": FAILED, "b": PASSED, "c": PASSED}
    assert s.state["results"] == {"b": "b", "c": "c"}


# ------------------------------------------------------------------ rule 3: any registration order


def test_dependencies_may_be_registered_in_any_order():
    order = []
    s = Scheduler(workers=1)
    s.register(lambda: order.append("verify"), "verify", after=["update"])
    s.register(lambda: order.append("update"), "update", after=["create"])
    s.register(lambda: order.append("create"), "create")
    summary = s.start()
    assert order == ["create", "update", "verify"]
    assert summary["passed"] == ["create", "update", "verify"]


# ------------------------------------------------------------------ rule 4: deterministic dispatch


def test_workers_1_runs_ready_tasks_in_registration_order_every_time():
    s = Scheduler(workers=1)
    executed: list[str] = []
    s.register(lambda: executed.append("b"), "b", after=["a"])
    s.register(lambda: executed.append("a"), "a")
    s.register(lambda: executed.append("c"), "c")
    s.register(lambda: executed.append("d"), "d", after=["c"])
    s.register(lambda: executed.append("e"), "e")
    runs = []
    for _ in range(5):
        executed.clear()
        summary = s.start()
        runs.append((list(executed), summary["ran"]))
    # ready at start: a, c, e; a releases b, which was registered first of all
    assert runs == [(["a", "b", "c", "d", "e"], ["a", "b", "c", "d", "e"])] * 5


def test_ready_tasks_are_handed_out_in_registration_order():
    s = Scheduler(workers=2)
    started: list[str] = []
    s.subscribe(lambda e: started.append(e.name), K.TASK_STARTED)
    for name in ["t4", "t1", "t3", "t0", "t2"]:
        s.register(returns(name), name)
    s.start()
    assert started[:2] == ["t4", "t1"]
    assert sorted(started) == ["t0", "t1", "t2", "t3", "t4"]


# ------------------------------------------------------------------ rule 5: anything a task raises


class CustomBase(BaseException):
    pass


def exit_three():
    raise SystemExit(3)


def ctrl_c_inside():
    raise KeyboardInterrupt("pressed inside the task")


def custom_base():
    raise CustomBase("odd")


def test_base_exceptions_in_tasks_are_failures_not_crashes():
    s = Scheduler(workers=3)
    s.register(exit_three, "exits")
    s.register(ctrl_c_inside, "ctrl_c")
    s.register(custom_base, "custom")
    s.register(returns(1), "after_exit", after=["exits"])
    s.register(returns(2), "after_ctrl_c", after=["ctrl_c"])
    s.register(returns(3), "independent")
    summary = s.start()
    assert statuses(summary) == {
        "exits": FAILED, "ctrl_c": FAILED, "custom": FAILED,
        "after_exit": SKIPPED, "after_ctrl_c": SKIPPED, "independent": PASSED,
    }
    assert summary["interrupted"] is False
    assert summary["cancelled"] == []
    tasks = summary["tasks"]
    assert (tasks["exits"]["error_type"], tasks["exits"]["error"]) == ("SystemExit", "3")
    assert (tasks["ctrl_c"]["error_type"], tasks["ctrl_c"]["error"]) == (
        "KeyboardInterrupt", "pressed inside the task")
    assert (tasks["custom"]["error_type"], tasks["custom"]["error"]) == ("CustomBase", "odd")
    tb = tasks["exits"]["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "in exit_three" in tb and "raise SystemExit(3)" in tb and tb.rstrip().endswith("SystemExit: 3")
    assert summary["failure_counts"] == {"SystemExit": 1, "KeyboardInterrupt": 1, "CustomBase": 1}


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("str() of this exception fails too")


def raise_unprintable():
    raise UnprintableError()


def test_an_exception_that_cannot_be_printed_is_still_a_failure():
    s = Scheduler(workers=1)
    s.register(raise_unprintable, "bad")
    s.register(returns("dep"), "dep", after=["bad"])
    s.register(returns("other"), "other")
    summary = start_or_fail(s, timeout=5.0)
    assert statuses(summary) == {"bad": FAILED, "dep": SKIPPED, "other": PASSED}
    bad = summary["tasks"]["bad"]
    assert bad["error_type"] == "UnprintableError"
    assert isinstance(bad["error"], str) and "raise_unprintable" in bad["traceback"]


def test_scheduler_is_usable_after_tasks_raised_base_exceptions():
    s = Scheduler(workers=1)
    s.register(exit_three, "exits")
    s.register(returns("fine"), "fine")
    s.start()
    summary = s.start()
    assert statuses(summary) == {"exits": FAILED, "fine": PASSED}


def test_a_task_registering_a_task_mid_run_cannot_break_the_run():
    s = Scheduler(workers=1)

    def adder():
        try:
            s.register(returns("late"), "late")
        except Exception:  # refusing is as good as deferring to the next run
            pass
        assert s.cancel() is True

    s.register(adder, "adder")
    s.register(returns("other"), "other")
    summary = start_or_fail(s)
    assert summary["interrupted"] is True
    assert summary["tasks"]["adder"]["status"] == PASSED
    assert summary["tasks"]["other"]["status"] == CANCELLED


# ------------------------------------------------------------------ rule 6: retries


def test_retries_rerun_a_failing_task_and_report_attempts():
    calls = {"flaky": 0, "hopeless": 0}

    def flaky():
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise ConnectionError(f"attempt {calls['flaky']} refused")
        return "finally"

    def hopeless():
        calls["hopeless"] += 1
        raise ConnectionError("never")

    s = Scheduler(workers=2)
    s.register(flaky, "flaky", retries=2)
    s.register(hopeless, "hopeless", retries=1)
    s.register(returns("dep"), "dep", after=["hopeless"])
    events = []
    s.subscribe(events.append, K.TASK_READY, K.TASK_STARTED, K.TASK_RETRYING, K.TASK_FINISHED)
    summary = s.start()

    assert calls == {"flaky": 3, "hopeless": 2}
    tasks = summary["tasks"]
    assert (tasks["flaky"]["status"], tasks["flaky"]["attempts"]) == (PASSED, 3)
    assert (tasks["hopeless"]["status"], tasks["hopeless"]["attempts"]) == (FAILED, 2)
    assert tasks["hopeless"]["error"] == "never"
    assert tasks["dep"]["status"] == SKIPPED
    assert s.state["results"]["flaky"] == "finally"

    flaky_events = [(e.kind, e.attempt) for e in events if e.name == "flaky"]
    assert flaky_events == [
        (K.TASK_READY, 0), (K.TASK_STARTED, 1), (K.TASK_RETRYING, 1),
        (K.TASK_STARTED, 2), (K.TASK_RETRYING, 2), (K.TASK_STARTED, 3), (K.TASK_FINISHED, 0),
    ]
    retrying = [e for e in events if e.kind is K.TASK_RETRYING and e.name == "flaky"]
    assert [e.record.error for e in retrying] == ["attempt 1 refused", "attempt 2 refused"]
    assert all(e.record.status is FAILED and e.data == {"delay": 0.0} for e in retrying)


def test_waiting_retry_does_not_hold_the_only_worker():
    delay = 0.4
    seq: list[tuple[str, float]] = []
    attempts = {"n": 0}

    def flaky():
        attempts["n"] += 1
        seq.append((f"flaky{attempts['n']}", time.monotonic()))
        if attempts["n"] == 1:
            raise TimeoutError("gateway timeout")

    def other():
        seq.append(("other", time.monotonic()))

    s = Scheduler(workers=1)
    s.register(flaky, "flaky", retries=1, retry_delay=delay)
    s.register(other, "other")
    retry_events = []
    s.subscribe(retry_events.append, K.TASK_RETRYING)
    summary = s.start()
    assert [name for name, _ in seq] == ["flaky1", "other", "flaky2"]
    assert seq[2][1] - seq[0][1] >= delay
    assert statuses(summary) == {"flaky": PASSED, "other": PASSED}
    assert summary["tasks"]["flaky"]["attempts"] == 2
    assert retry_events[0].data == {"delay": delay}


# ------------------------------------------------------------------ rule 7: timeouts


def test_timeout_fails_the_task_skips_dependents_and_keeps_the_pool_width():
    release = threading.Event()
    stuck_thread: list[threading.Thread] = []

    def stuck():
        stuck_thread.append(threading.current_thread())
        release.wait(WAIT)
        return "too late"

    s = Scheduler(workers=1)
    s.register(stuck, "stuck", timeout=0.2)
    s.register(returns("never"), "dep", after=["stuck"])
    s.register(returns("later"), "later")
    s.register(returns("cleanup"), "teardown", after=["stuck"], always=True)
    try:
        summary = s.start()
        assert not release.is_set()
        assert stuck_thread[0].is_alive()  # abandoned, not joined
        tasks = summary["tasks"]
        assert statuses(summary) == {"stuck": FAILED, "dep": SKIPPED, "later": PASSED, "teardown": PASSED}
        assert tasks["stuck"]["error_type"] == "TimeoutError"
        assert tasks["stuck"]["error"] == "task 'stuck' still running after 0.2s"
        assert tasks["stuck"]["thread"] == "thread_0" and tasks["stuck"]["attempts"] == 1
        assert tasks["stuck"]["duration"] == pytest.approx(0.2)
        assert tasks["dep"]["reason"] == "dependency 'stuck' failed"
        # the lane came back under its own name on a fresh thread
        assert tasks["later"]["thread"] == "thread_0"
        assert tasks["teardown"]["thread"] == "thread_0"
        assert summary["failure_counts"] == {"TimeoutError": 1}
    finally:
        release.set()
        for t in stuck_thread:
            t.join(WAIT)
    # the late return of the abandoned attempt changes nothing
    assert "stuck" not in s.state["results"]
    assert s.last_records[0].status is FAILED


def test_timed_out_attempt_is_retried():
    release = threading.Event()
    attempts = {"n": 0}

    def slow_then_fast():
        attempts["n"] += 1
        if attempts["n"] == 1:
            release.wait(WAIT)
            return "first"
        return "second"

    s = Scheduler(workers=1)
    s.register(slow_then_fast, "t", timeout=0.2, retries=1)
    try:
        summary = s.start()
        assert summary["tasks"]["t"]["status"] == PASSED
        assert summary["tasks"]["t"]["attempts"] == 2
        assert s.state["results"]["t"] == "second"
    finally:
        release.set()


def test_slow_subscriber_does_not_turn_a_task_that_finished_in_time_into_a_timeout():
    """The dispatcher may be late to look at a finished task; the task was not late."""
    go = threading.Event()
    threads_before = set(threading.enumerate())

    def quick():
        assert go.wait(WAIT)
        return "quick"

    def slow_subscriber(event):
        if event.name == "u":
            go.set()  # quick returns at once, well inside its 0.2s
            time.sleep(0.4)  # this subscriber's own work outlasts quick's timeout

    s = Scheduler(workers=2)
    s.register(quick, "quick", timeout=0.2)
    s.register(returns("v"), "v")
    s.register(returns("u"), "u", after=["v"])
    s.subscribe(slow_subscriber, K.TASK_STARTED)
    summary = start_or_fail(s, timeout=5.0)
    assert statuses(summary) == {"quick": PASSED, "v": PASSED, "u": PASSED}
    assert s.state["results"]["quick"] == "quick"
    # no worker thread is left behind once the run is over
    leftover = [t.name for t in set(threading.enumerate()) - threads_before if t.name.startswith("thread_")]
    assert leftover == []


def test_tasks_finishing_right_at_their_deadline_never_break_the_pool(caplog):
    """Either outcome is fine for a task that ends as its timeout fires; crashing or hanging is not.

    On a loaded machine a 5 ms timer may fire before a worker thread even picked the task up:
    the task has not begun, so it waits for its worker (it runs on a thread, like every other).
    """
    caplog.set_level(logging.ERROR, logger="thread_order")  # one timeout warning per task otherwise
    threads_before = set(threading.enumerate())
    for _ in range(3):
        s = Scheduler(workers=4)
        for i in range(100):
            s.register(lambda: time.sleep(0.005), f"t{i}", timeout=0.005)
        summary = start_or_fail(s)
        assert len(summary["passed"]) + len(summary["failed"]) == 100
        assert set(summary["failure_counts"]) <= {"TimeoutError"}
        lanes = {t["thread"] for t in summary["tasks"].values()}
        assert lanes <= {"thread_0", "thread_1", "thread_2", "thread_3"}
    # every worker of these runs ends: abandoned ones once their sleep is over
    for t in set(threading.enumerate()) - threads_before:
        t.join(WAIT)
        assert not t.is_alive(), f"thread {t.name!r} outlived its run"


def _worker_late_by_one_timeout(monkeypatch) -> list:
    """Hand every job to the worker threads only once a timeout timer has fired: a worker that
    a loaded machine does not schedule in time, made certain. Returns the timers' firings.

    Reaches into the run (dispatch.Run): the public interface has no way to delay a worker's
    pickup but sleeping, and a sleep would prove nothing on a fast machine.
    """
    from thread_order.engine.dispatch import Run

    firings: list = []
    fired = threading.Event()
    timeout, init = Run._timeout, Run.__init__

    def counted_timeout(self, job):
        timeout(self, job)
        firings.append(job.idx)
        fired.set()

    def late_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        put = self.submit

        def late_put(job):
            def later():
                fired.wait(WAIT)
                put(job)
            threading.Thread(target=later, name="late-put", daemon=True).start()

        self.submit = late_put

    monkeypatch.setattr(Run, "_timeout", counted_timeout)
    monkeypatch.setattr(Run, "__init__", late_init)
    return firings


def test_a_timeout_counts_from_when_a_worker_begins_the_task_not_from_its_hand_out(monkeypatch):
    # README: timeout=S fails a task *still running* after S seconds; one no worker has begun
    # is not running, so it waits for its worker rather than fail with no thread
    firings = _worker_late_by_one_timeout(monkeypatch)
    s = Scheduler(workers=1)
    s.register(returns("ok"), "quick", timeout=0.05)
    summary = start_or_fail(s)
    assert firings, "the timeout never fired before the worker got the task"
    assert summary["passed"] == ["quick"], summary["failures"]
    assert summary["tasks"]["quick"]["thread"] == "thread_0"


def test_a_task_begun_late_still_times_out_once_it_has_run_its_time(monkeypatch, caplog):
    caplog.set_level(logging.ERROR, logger="thread_order")
    firings = _worker_late_by_one_timeout(monkeypatch)
    began, release = threading.Event(), threading.Event()

    def stuck():
        began.set()
        release.wait(WAIT)

    s = Scheduler(workers=1)
    s.register(stuck, "stuck", timeout=0.05)
    try:
        summary = start_or_fail(s)
    finally:
        release.set()
    assert began.is_set() and len(firings) >= 2  # fired before it began, and again after
    rec = summary["tasks"]["stuck"]
    assert rec["status"] == TaskStatus.FAILED and rec["error_type"] == "TimeoutError"
    assert rec["error"] == "task 'stuck' still running after 0.05s" and rec["thread"] == "thread_0"


def test_task_finishing_in_time_is_not_timed_out():
    s = Scheduler(workers=2)
    s.register(returns(1), "quick", timeout=5)
    summary = s.start()
    assert summary["passed"] == ["quick"]


# ------------------------------------------------------------------ rules 10 and 13: callbacks


def test_callbacks_get_standard_args_then_extra_args_on_the_start_thread():
    calls = []
    me = threading.get_ident()

    def cb(kind):
        def fn(*args, **kwargs):
            calls.append((kind, args, kwargs, threading.get_ident(), threading.current_thread().name))
        return fn

    s = Scheduler(workers=2)
    s.register(returns(1), "a")
    s.register(raises(ValueError("x")), "b", after=["a"])
    s.register(returns(3), "c", after=["b"])
    s.on_scheduler_start(cb("start"), "extra", flag=1)
    s.on_task_start(cb("task_start"), "extra")
    s.on_task_run(cb("task_run"), "extra")
    s.on_task_done(cb("task_done"), "extra", flag=2)
    s.on_scheduler_done(cb("done"), flag=3)
    summary = s.start()

    assert {ident for *_, ident, _ in calls} == {me}
    assert not any(name.startswith("thread_") for *_, name in calls)
    by_kind = {}
    for kind, args, kwargs, _, _ in calls:
        by_kind.setdefault(kind, []).append((args, kwargs))

    ((meta_args, meta_kwargs),) = by_kind["start"]
    assert meta_args[1:] == ("extra",) and meta_kwargs == {"flag": 1}
    assert meta_args[0]["tasks"] == ["a", "b", "c"] and meta_args[0]["workers"] == 2
    assert by_kind["task_start"] == [(("a", "extra"), {}), (("b", "extra"), {})]
    assert [(a[0], a[2]) for a, _ in by_kind["task_run"]] == [("a", "extra"), ("b", "extra")]
    assert all(a[1] in ("thread_0", "thread_1") for a, _ in by_kind["task_run"])
    assert [(a[0], a[2], a[3], a[4], k) for a, k in by_kind["task_done"]] == [
        ("a", PASSED, 1, "extra", {"flag": 2}),
        ("b", FAILED, 2, "extra", {"flag": 2}),
        ("c", SKIPPED, 3, "extra", {"flag": 2}),
    ]
    assert by_kind["task_done"][2][0][1] is None  # a skipped task ran on no thread
    assert by_kind["done"] == [((summary,), {"flag": 3})]
    assert [kind for kind, *_ in calls][0] == "start" and [kind for kind, *_ in calls][-1] == "done"


def test_callbacks_and_subscribers_share_one_ordered_stream():
    seen = []
    s = Scheduler(workers=2)
    s.register(returns(1), "a")
    s.register(returns(2), "b", after=["a"])
    s.subscribe(lambda e: seen.append(("event", e.kind.value, e.name)))
    s.on_task_done(lambda name, thread, status, count: seen.append(("done", name)))
    s.on_task_start(lambda name: seen.append(("start", name)))
    s.start()
    # each callback fires right after the event it is built on, in stream order
    for i, item in enumerate(seen):
        if item[0] == "done":
            assert seen[i - 1] == ("event", "task_finished", item[1])
        if item[0] == "start":
            assert seen[i - 1] == ("event", "task_started", item[1])
    assert [x[1] for x in seen if x[0] == "done"] == ["a", "b"]


def test_raising_callback_is_logged_and_the_run_goes_on(caplog):
    done = []
    s = Scheduler(workers=2)
    s.register(returns(1), "a")
    s.register(returns(2), "b", after=["a"])

    def broken(name):
        raise RuntimeError(f"callback broke on {name}")

    s.on_task_start(broken)
    s.on_task_done(lambda name, *rest: done.append(name))
    with caplog.at_level(logging.ERROR, logger="thread_order"):
        summary = s.start()
    assert summary["passed"] == ["a", "b"] and done == ["a", "b"]
    assert "callback broke on a" in caplog.text and "callback broke on b" in caplog.text


def test_callback_registration_rejects_non_callables_and_can_be_undone():
    s = Scheduler(workers=1)
    s.register(returns(1), "a")
    with pytest.raises(TypeError, match=r"^callback 5 is not callable$"):
        s.on_task_done(5)
    calls = []
    undo = s.on_task_done(lambda *args: calls.append(args))
    s.start()
    undo()
    s.start()
    assert len(calls) == 1


# ------------------------------------------------------------------ rule 11: lanes


def test_worker_threads_are_named_lanes():
    barrier = threading.Barrier(3, timeout=WAIT)
    names = []
    lock = threading.Lock()

    def meet():
        barrier.wait()
        with lock:
            names.append(threading.current_thread().name)

    s = Scheduler(workers=3)
    for i in range(6):
        s.register(meet if i < 3 else returns(i), f"t{i}")
    summary = s.start()
    assert sorted(names) == ["thread_0", "thread_1", "thread_2"]
    threads = {t["thread"] for t in summary["tasks"].values()}
    assert threads <= {"thread_0", "thread_1", "thread_2"}
    assert {summary["tasks"][f"t{i}"]["thread"] for i in range(3)} == {"thread_0", "thread_1", "thread_2"}


def test_running_tasks_never_exceed_workers_and_fill_the_pool():
    workers = 3
    barrier = threading.Barrier(workers, timeout=WAIT)  # progress needs exactly 3 at once
    lock = threading.Lock()
    counts = {"active": 0, "peak": 0}

    def task():
        with lock:
            counts["active"] += 1
            counts["peak"] = max(counts["peak"], counts["active"])
        barrier.wait()
        time.sleep(0.01)  # bounded workload: give a 4th task the chance to overlap if allowed
        with lock:
            counts["active"] -= 1

    s = Scheduler(workers=workers)
    for i in range(4 * workers):
        s.register(task, f"t{i}")
    summary = s.start()
    assert len(summary["passed"]) == 4 * workers
    assert counts["peak"] == workers


def test_a_run_uses_no_more_lanes_than_tasks():
    before = set(threading.enumerate())
    barrier = threading.Barrier(2, timeout=WAIT)
    lanes_seen = []

    def meet():
        barrier.wait()
        lanes_seen.append(sorted(t.name for t in set(threading.enumerate()) - before
                                 if t.name.startswith("thread_")))  # worker lanes only

    s = Scheduler(workers=8)
    s.register(meet, "a")
    s.register(meet, "b")
    running = []
    s.subscribe(lambda e: running.append(e.thread), K.TASK_RUNNING)
    s.start()
    assert sorted(running) == ["thread_0", "thread_1"]
    assert lanes_seen == [["thread_0", "thread_1"]] * 2


# ------------------------------------------------------------------ rule 12: results and restarts


class OwnerLock:
    """A re-entrant lock that knows which thread holds it."""

    def __init__(self):
        self._lock = threading.RLock()
        self.owner = None
        self.depth = 0

    def acquire(self, blocking=True, timeout=-1):
        ok = self._lock.acquire(blocking, timeout)
        if ok:
            self.owner = threading.get_ident()
            self.depth += 1
        return ok

    def release(self):
        self.depth -= 1
        if not self.depth:
            self.owner = None
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()

    def held_here(self):
        return self.owner == threading.get_ident()


class GuardedResults(dict):
    """Records, for each write, whether the state lock was held by the writing thread."""

    def __init__(self, lock):
        super().__init__()
        self.lock = lock
        self.writes = []

    def __setitem__(self, key, value):
        self.writes.append((key, self.lock.held_here()))
        super().__setitem__(key, value)

    def clear(self):
        self.writes.append(("<clear>", self.lock.held_here()))
        super().clear()


def test_results_are_written_under_the_state_lock():
    lock = OwnerLock()
    results = GuardedResults(lock)
    s = Scheduler(workers=4, state={"_state_lock": lock, "results": results})
    for i in range(8):
        s.register(returns(i * i), f"t{i}", after=[f"t{i - 1}"] if i % 2 else None)
    s.start()
    assert dict(results) == {f"t{i}": i * i for i in range(8)}
    assert s.state["results"] is results and s.state["_state_lock"] is lock
    assert len(results.writes) == 9 and all(held for _, held in results.writes), results.writes


def test_start_may_be_called_again():
    calls = []
    s = Scheduler(workers=2)
    s.register(lambda: calls.append("a") or len(calls), "a")
    first = s.start()
    s.state["results"]["stale"] = True
    second = s.start()
    assert first["run_id"] != second["run_id"]
    assert first["passed"] == second["passed"] == ["a"]
    assert calls == ["a", "a"]
    assert s.state["results"] == {"a": 2}  # cleared on start
    assert [r.name for r in s.last_records] == ["a"]
    assert s.last_summary is second


def test_clear_results_on_start_false_keeps_earlier_results():
    s = Scheduler(workers=1, clear_results_on_start=False)
    s.register(returns("v"), "a")
    s.state["results"]["kept"] = 1
    s.start()
    assert s.state["results"] == {"kept": 1, "a": "v"}


def test_start_while_running_is_refused():
    s = Scheduler(workers=2)

    def nested():
        s.start()

    s.register(nested, "nested")
    summary = s.start()
    task = summary["tasks"]["nested"]
    assert task["status"] == FAILED
    assert (task["error_type"], task["error"]) == ("RuntimeError", "start: this scheduler is already running")
    assert not s.running


def test_running_flag_and_cancel_outside_a_run():
    seen = []
    s = Scheduler(workers=1)
    s.register(lambda: seen.append(s.running), "a")
    assert s.running is False
    assert s.cancel() is False
    s.start()
    assert seen == [True]
    assert s.running is False and s.cancel() is False


# ------------------------------------------------------------------ summary


SUMMARY_KEYS = {
    "run_id", "ran", "passed", "failed", "skipped", "cancelled", "failures", "failure_counts",
    "started_at", "finished_at", "duration", "interrupted", "workers", "text", "tasks",
    "teardown_not_run",
    "order",  # {"order": "declared"}; lower_bound too under another order (test_order.py)
    "warnings", "pools",
}
TASK_KEYS = {
    "status", "thread", "started_at", "finished_at", "duration", "attempts",
    "error_type", "error", "traceback", "output", "reason", "is_async", "warning", "waited", "waited_for",
}


def test_summary_keys_and_values():
    s = Scheduler(workers=2)
    s.register(lambda: time.sleep(0.02), "slow")
    s.register(raises(ValueError("bad value")), "bad")
    s.register(raises(ValueError("worse value")), "worse")
    s.register(raises(KeyError("k")), "key")
    s.register(returns(1), "after_bad", after=["bad"])
    before = time.time()
    summary = s.start()
    after = time.time()

    assert set(summary) == SUMMARY_KEYS
    assert summary["teardown_not_run"] == []  # always present, empty without a forced stop
    assert all(set(t) == TASK_KEYS for t in summary["tasks"].values())
    assert list(summary["tasks"]) == ["slow", "bad", "worse", "key", "after_bad"]
    assert summary["passed"] == ["slow"]
    assert sorted(summary["failed"]) == ["bad", "key", "worse"]
    assert summary["skipped"] == ["after_bad"] and summary["cancelled"] == []
    assert summary["teardown_not_run"] == []
    assert sorted(summary["ran"]) == ["bad", "key", "slow", "worse"]
    assert summary["failures"] == {
        "bad": {"error_type": "ValueError", "error": "bad value"},
        "worse": {"error_type": "ValueError", "error": "worse value"},
        "key": {"error_type": "KeyError", "error": "'k'"},
    }
    assert summary["failure_counts"] == {"ValueError": 2, "KeyError": 1}
    assert before <= summary["started_at"] <= summary["finished_at"] <= after
    assert 0.02 <= summary["duration"] <= after - before
    assert summary["interrupted"] is False and summary["workers"] == 2
    assert re.fullmatch(r"1 passed, 3 failed, 1 skipped in \d+\.\d\ds", summary["text"]), summary["text"]
    assert summary["text"].endswith(f" in {summary['duration']:.2f}s")

    slow = summary["tasks"]["slow"]
    assert slow["status"] == "PASSED" and slow["thread"] in ("thread_0", "thread_1")
    assert slow["duration"] >= 0.02 and slow["attempts"] == 1
    assert slow["finished_at"] - slow["started_at"] == pytest.approx(slow["duration"], abs=1e-6)
    assert slow["error_type"] is slow["error"] is slow["traceback"] is slow["reason"] is None
    assert slow["output"] == ""
    assert "ValueError: bad value" in summary["tasks"]["bad"]["traceback"]


def test_summary_of_an_empty_run():
    summary = Scheduler(workers=3).start()
    assert summary["tasks"] == {} and summary["ran"] == [] and summary["passed"] == []
    assert re.fullmatch(r"0 passed, 0 failed, 0 skipped in \d+\.\d\ds", summary["text"])


def test_last_records_are_task_records_in_registration_order():
    s = Scheduler(workers=2)
    s.register(returns(1), "b", after=["a"], tags="x")
    s.register(raises(OSError("disk")), "a")
    s.start()
    b, a = s.last_records
    assert (a.name, a.status, a.error_type, a.attempts) == ("a", FAILED, "OSError", 1)
    assert (b.name, b.status, b.tags, b.reason) == ("b", SKIPPED, ("x",), "dependency 'a' failed")


def test_sanitized_state_is_a_copy_without_the_lock():
    s = Scheduler(workers=1, state={"env": "dev"})
    s.register(lambda state: state.update(created=True), "create", with_state=True)
    s.start()
    clean = s.sanitized_state
    assert clean == {"env": "dev", "created": True, "results": {"create": None}}
    clean["env"] = "prod"
    assert s.state["env"] == "dev" and "_state_lock" in s.state


def test_a_task_writing_bytes_to_stdout_fails_instead_of_killing_its_worker():
    s = Scheduler(workers=1)
    s.register(lambda: sys.stdout.write(b"raw bytes\n"), "a")
    s.register(returns("b"), "b")
    summary = start_or_fail(s)
    assert summary["tasks"]["a"]["status"] == FAILED
    assert summary["tasks"]["a"]["error"] == "write() argument must be str, not bytes"
    assert summary["tasks"]["b"]["status"] == PASSED


@pytest.mark.parametrize("option", ["timeout", "retry_delay"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_infinite_or_nan_durations_are_refused_at_register(option, value):
    s = Scheduler(workers=1)
    with pytest.raises(ValueError, match=rf"^task 'a': {option} must be a finite number"):
        s.register(returns("a"), "a", **{option: value})


def test_a_timed_out_attempt_keeps_what_it_printed():
    gate = threading.Event()
    attempts = []

    def slow():
        attempts.append(1)
        print(f"attempt {len(attempts)}: connecting to db...")
        if len(attempts) == 1:
            gate.wait(WAIT)

    s = Scheduler(workers=1)
    s.register(slow, "slow", timeout=0.2, retries=1)
    retried = []
    s.subscribe(lambda e: retried.append(e.record), EventKind.TASK_RETRYING)
    try:
        summary = start_or_fail(s)
    finally:
        gate.set()
    assert retried[0].error_type == "TimeoutError"
    assert retried[0].output == "attempt 1: connecting to db...\n"
    assert summary["tasks"]["slow"]["output"] == "attempt 2: connecting to db...\n"


def test_a_callback_raising_system_exit_is_logged_and_the_run_goes_on(caplog):
    s = Scheduler(workers=1)
    s.register(returns("a"), "a")
    s.register(returns("b"), "b", after=["a"])
    s.on_task_start(lambda name: name == "a" and sys.exit(3))
    with caplog.at_level(logging.ERROR, logger="thread_order"):
        summary = start_or_fail(s)
    assert statuses(summary) == {"a": PASSED, "b": PASSED}
    assert any("SystemExit" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_dependencies_map_each_task_to_its_distinct_names_without_validating():
    s = Scheduler(workers=1)
    s.register(returns(0), "b", after=["a", "a"])
    s.register(returns(0), "a")
    deps = s.dependencies
    assert deps == {"b": ("a",), "a": ()} and list(deps) == ["b", "a"]
    deps["c"] = ()
    assert "c" not in s.dependencies
    s.register(returns(0), "d", after="missing")
    assert s.dependencies["d"] == ("missing",)  # not a graph: unknown names are start()'s to report
