"""Scheduler.add_task_context: front-end code entered on the worker thread around each attempt."""

from __future__ import annotations

import contextvars
import re
import logging
import threading

import pytest

from thread_order import Scheduler

WHO = contextvars.ContextVar("who", default=None)


def test_context_runs_on_the_worker_thread_around_each_attempt():
    seen = []
    calls = {"n": 0}

    class Around:
        def __init__(self, name, attempt):
            self.name, self.attempt = name, attempt

        def __enter__(self):
            self.token = WHO.set((self.name, self.attempt))
            seen.append(("enter", self.name, self.attempt, threading.current_thread().name))

        def __exit__(self, kind, value, tb):
            WHO.reset(self.token)
            seen.append(("exit", self.name, self.attempt, kind.__name__ if kind else None))
            return True  # a context cannot swallow the task's exception

    def flaky():
        calls["n"] += 1
        assert WHO.get() == ("flaky", calls["n"])
        if calls["n"] == 1:
            raise ValueError("first try")

    s = Scheduler(workers=1)
    s.register(flaky, "flaky", retries=1)
    undo = s.add_task_context(Around)
    summary = s.start()
    assert summary["passed"] == ["flaky"]
    assert seen == [("enter", "flaky", 1, "thread_0"), ("exit", "flaky", 1, "ValueError"),
                    ("enter", "flaky", 2, "thread_0"), ("exit", "flaky", 2, None)]
    assert s.last_records[0].attempts == 2
    undo()
    seen.clear()
    s.start()
    assert seen == []


def test_a_failing_context_is_logged_and_the_task_runs_without_it(caplog):
    def broken(name, attempt):
        raise RuntimeError("tracing backend down")

    class BadExit:
        def __init__(self, name, attempt):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            raise RuntimeError("exit failed")

    s = Scheduler(workers=2)
    s.register(lambda: 42, "answer")
    s.register(lambda: 1 / 0, "divide")
    s.add_task_context(broken)
    s.add_task_context(BadExit)
    s.add_task_context(lambda name, attempt: None)  # None: nothing to enter for this task
    with caplog.at_level(logging.ERROR, logger="thread_order"):
        summary = s.start()
    assert summary["passed"] == ["answer"] and summary["failed"] == ["divide"]
    assert summary["failures"]["divide"]["error_type"] == "ZeroDivisionError"
    tb = summary["tasks"]["divide"]["traceback"]
    assert tb.splitlines()[1].strip().startswith('File "') and "<lambda>" in tb  # user's frame first
    assert s.state["results"]["answer"] == 42
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed to enter" in m for m in messages) == 2
    assert sum("failed to exit" in m for m in messages) == 2


def test_add_task_context_refuses_what_it_cannot_call():
    with pytest.raises(TypeError, match=r"^add_task_context: 42 is not callable$"):
        Scheduler().add_task_context(42)


def test_no_context_costs_nothing_in_the_run_options():
    from thread_order.engine.context import TaskContexts

    contexts = TaskContexts()
    assert contexts.combined() is None
    undo = contexts.add(lambda name, attempt: None)
    assert callable(contexts.combined())
    undo()
    undo()
    assert contexts.combined() is None


# ---------------------------------------------------------------------------- properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def dags(draw):
    n = draw(st.integers(1, 12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    fails = [draw(st.integers(0, 3)) for _ in range(n)]  # attempts that fail before one passes
    retries = [draw(st.integers(0, 2)) for _ in range(n)]
    return deps, fails, retries, draw(st.integers(1, 4))


@settings(max_examples=60, deadline=None)
@given(dags())
def test_a_context_surrounds_every_attempt_once_on_its_worker(case):
    deps, fails, retries, workers = case
    lock = threading.Lock()  # guards log and count, written by the workers
    log: list[tuple] = []
    count = [0] * len(deps)
    here = threading.local()  # the attempt whose context is entered on this thread
    inside: list[tuple] = []  # what each task call saw

    class Around:
        def __init__(self, name, attempt):
            self.key = (name, attempt)

        def __enter__(self):
            here.key = self.key
            with lock:
                log.append(("enter", self.key, threading.current_thread().name))

        def __exit__(self, *exc):
            here.key = None
            with lock:
                log.append(("exit", self.key, threading.current_thread().name))

    def task(i):
        def run():
            with lock:
                count[i] += 1
                n = count[i]
                inside.append((getattr(here, "key", None), (f"t{i}", n)))
            if n <= fails[i]:
                raise RuntimeError(f"t{i} try {n}")
        return run

    s = Scheduler(workers=workers)
    for i, ds in enumerate(deps):
        s.register(task(i), f"t{i}", after=[f"t{d}" for d in ds], retries=retries[i])
    s.add_task_context(Around)
    s.start()
    records = {r.name: r for r in s.last_records}
    enters = [e for e in log if e[0] == "enter"]
    exits = [e for e in log if e[0] == "exit"]
    # one enter and one exit per attempt that ran, on the same worker thread, attempts counted from 1
    assert sorted(e[1:] for e in enters) == sorted(e[1:] for e in exits)
    assert sorted(e[1] for e in enters) == sorted(
        (name, a) for name, r in records.items() for a in range(1, r.attempts + 1))
    assert all(re.fullmatch(r"thread_\d+", e[2]) for e in enters)
    assert sum(count) == len(enters)
    assert all(seen == expected for seen, expected in inside)  # each call ran inside its own context
