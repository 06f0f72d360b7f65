"""Scheduler.add_task_context: front-end code entered on the worker thread around each attempt."""

from __future__ import annotations

import contextvars
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
