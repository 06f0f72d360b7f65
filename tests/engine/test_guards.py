"""What the Scheduler refuses up front, and how it behaves at the edges of what it is given.

Async and generator functions, a state whose engine-owned keys hold the wrong thing, a
callback that cannot take its arguments, a process out of threads, a subscriber that blocks,
typos in dependency names, and what ``setup_logging`` says about failures.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import signal
import threading
import warnings

import pytest

from thread_order import EventKind, Scheduler, TaskStatus, UnknownDependencyError
from thread_order.engine.capture import configure_logging

K = EventKind
WAIT = 10.0
PASSED, FAILED, CANCELLED = TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.CANCELLED


def statuses(summary):
    return {name: task["status"] for name, task in summary["tasks"].items()}


def lane_threads():
    return [t for t in threading.enumerate() if t.name.startswith("thread_")]


# ------------------------------------------------------------------ async and generator functions

async def fetch():
    return "fetched"


def pages():
    yield 1


async def stream():
    yield 1


class AsyncCallable:
    async def __call__(self):
        return "called"


@pytest.mark.parametrize("fn, kind", [
    (pages, "a generator function"),
    (stream, "an async generator function"),
    (functools.partial(pages), "a generator function"),
], ids=["generator", "async-generator", "partial"])
def test_register_refuses_a_function_whose_call_would_not_run_its_body(fn, kind):
    s = Scheduler()
    with pytest.raises(TypeError, match=rf"^task 'fetch_it': .* is {re.escape(kind)}; calling it would "
                                        r"not run its body, so the task would pass without doing "
                                        r"anything \(tasks must be plain or async functions\)$"):
        s.register(fn, "fetch_it")
    with pytest.raises(TypeError, match=rf"is {re.escape(kind)}"):
        s.register(fn, "fetch_it", retries=2)  # the path with options refuses it too
    assert s.tasks == ()


@pytest.mark.parametrize("fn, result", [
    (fetch, "fetched"),
    (functools.partial(fetch), "fetched"),
    (AsyncCallable(), "called"),
    (AsyncCallable().__call__, "called"),
], ids=["async-def", "partial", "async-call-object", "bound-method"])
def test_register_runs_an_async_function_on_the_event_loop(fn, result):
    s = Scheduler()
    s.register(fn, "fetch_it")
    s.register(fn, "fetch_again", retries=2)  # the path with options takes it too
    summary = s.start()
    assert summary["passed"] == ["fetch_it", "fetch_again"] or sorted(summary["passed"]) == [
        "fetch_again", "fetch_it"]
    assert s.state["results"] == {"fetch_it": result, "fetch_again": result}
    assert [r.is_async for r in s.last_records] == [True, True]
    assert {r.thread for r in s.last_records} == {"event_loop"}


def test_dregister_takes_an_async_function_and_returns_it():
    s = Scheduler()
    assert s.dregister()(fetch) is fetch
    assert s.tasks[0].is_async


def test_a_task_returning_an_unawaited_coroutine_fails_instead_of_passing():
    s = Scheduler()
    s.register(lambda: fetch(), "forgot_await")
    s.register(lambda: "ran", "next", after=["forgot_await"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited": the engine closed it
        summary = s.start()
    task = summary["tasks"]["forgot_await"]
    assert task["status"] is FAILED
    assert task["error_type"] == "TypeError"
    assert task["error"] == ("the task returned a coroutine, which would never run: "
                             "it called an async function without awaiting it")
    assert statuses(summary)["next"] is TaskStatus.SKIPPED


def test_a_function_that_runs_a_coroutine_itself_is_a_plain_task():
    s = Scheduler()
    s.register(lambda: asyncio.run(fetch()), "fetch")
    assert s.start()["passed"] == ["fetch"]
    assert s.state["results"]["fetch"] == "fetched"


def test_tdrun_reports_a_marked_generator_function_as_bad_input(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark()
        def pages(state):
            yield 1
    """)
    result = tdrun_main(str(module))
    assert result.code == 4, result.err
    assert result.err == (f"tdrun: error: {module}: task 'pages': 'pages' is a generator function; "
                          "calling it would not run its body, so the task would pass without doing "
                          "anything (tasks must be plain or async functions)\n")


# ------------------------------------------------------------------ the keys the engine owns

@pytest.mark.parametrize("state, message", [
    ({"results": "x"}, r"^state\['results'\] must be a dict \(the engine stores each task's return "
                       r"value there\), not str$"),
    ({"results": ["a"]}, r"^state\['results'\] must be a dict .* not list$"),
    ({"_state_lock": "nope"}, r"^state\['_state_lock'\] must be a lock \(such as "
                              r"threading.RLock\(\)\), not str$"),
    ({"_state_lock": None}, r"^state\['_state_lock'\] must be a lock .* not NoneType$"),
])
def test_a_state_whose_engine_keys_hold_the_wrong_thing_is_a_type_error_naming_the_key(state, message):
    with pytest.raises(TypeError, match=message):
        Scheduler(state=state)


def test_results_need_not_be_a_dict_when_results_are_not_stored():
    s = Scheduler(state={"results": "kept as given"}, store_results=False)
    s.register(lambda: 1, "a")
    assert s.start()["passed"] == ["a"]
    assert s.state["results"] == "kept as given"


def test_a_state_broken_after_construction_is_refused_by_start_before_anything_runs():
    s = Scheduler()
    ran = []
    s.register(lambda: ran.append("a"), "a")
    s.state["results"] = "x"
    with pytest.raises(TypeError, match=r"^state\['results'\] must be a dict"):
        s.start()
    s.state["results"] = {}
    s.state["_state_lock"] = 42
    with pytest.raises(TypeError, match=r"^state\['_state_lock'\] must be a lock"):
        s.start()
    assert ran == []


def test_any_context_manager_serves_as_the_state_lock():
    lock = threading.Lock()
    s = Scheduler(state={"_state_lock": lock})
    s.register(lambda: "v", "a")
    s.start()
    assert s.state_lock is lock and s.state["results"] == {"a": "v"}


# ------------------------------------------------------------------ callbacks

@pytest.mark.parametrize("method, fn, args, says", [
    ("on_task_done", lambda name, status: None, (),
     r"^on_task_done: callback '.*<lambda>' cannot be called as fn\(name, thread_name, status, "
     r"count\): too many positional arguments$"),
    ("on_task_start", lambda: None, (),
     r"^on_task_start: callback .* cannot be called as fn\(name\): too many positional arguments$"),
    ("on_scheduler_done", lambda summary, extra: None, (),
     r"^on_scheduler_done: callback .* as fn\(summary\): missing a required argument: 'extra'$"),
    ("on_task_run", lambda name, thread: None, ("extra",),
     r"^on_task_run: callback .* as fn\(name, thread_name, 'extra'\): too many positional"),
])
def test_a_callback_with_the_wrong_signature_is_refused_once_when_registered(method, fn, args, says):
    s = Scheduler()
    with pytest.raises(TypeError, match=says):
        getattr(s, method)(fn, *args)
    s.register(lambda: 1, "a")
    assert s.start()["passed"] == ["a"]  # nothing was subscribed


def test_callbacks_that_fit_are_accepted_whatever_their_shape():
    s = Scheduler()
    seen = []
    s.on_task_done(lambda *a: seen.append(a[0]))
    s.on_task_done(lambda name, thread, status, count, tag, *, who: seen.append((tag, who)), "t", who="me")
    s.on_scheduler_start(len)  # a builtin: len(meta) fits
    s.register(lambda: 1, "a")
    s.start()
    assert seen == ["a", ("t", "me")]


def test_setup_logging_logs_each_failure_and_each_retry_naming_task_thread_and_error(capfd):
    previous = logging.getLogger().level
    try:
        s = Scheduler(workers=1, setup_logging=True)
        attempts = []

        def flaky():
            attempts.append(1)
            raise ValueError("no subnet")

        s.register(flaky, "create_subnet", retries=1)
        s.register(lambda: "ok", "other")
        s.start()
        err = capfd.readouterr().err
    finally:
        root = logging.getLogger()
        for handler in list(root.handlers):
            if getattr(handler, "_thread_order_handler", False):
                root.removeHandler(handler)
        root.setLevel(previous)
    lines = [line.split(" ", 1)[1] for line in err.splitlines()]  # without the time
    assert lines == [
        "WARNING [thread_0] create_subnet: attempt 1 failed, retrying: ValueError: no subnet",
        "ERROR   [thread_0] create_subnet: FAILED: ValueError: no subnet",
    ]


def test_without_setup_logging_nothing_is_logged_about_failures(caplog):
    s = Scheduler()
    s.register(lambda: 1 / 0, "boom")
    with caplog.at_level(logging.DEBUG, logger="thread_order"):
        s.start()
    assert [r for r in caplog.records if r.name == "thread_order.tasks"] == []


def test_the_logging_handler_flag_name_is_what_the_test_above_removes():
    handler = configure_logging(stream=open("/dev/null", "w"))
    try:
        assert getattr(handler, "_thread_order_handler", False) is True
    finally:
        logging.getLogger().removeHandler(handler)
        handler.stream.close()


# ------------------------------------------------------------------ a process out of threads

@pytest.fixture
def thread_limit(monkeypatch):
    """Make the Nth worker thread (and every later one) fail to start, as near a thread limit."""
    real_start = threading.Thread.start
    box = {"allowed": None, "started": 0}

    def start(self):
        if self.name.startswith("thread_") and box["allowed"] is not None:
            if box["started"] >= box["allowed"]:
                raise RuntimeError("can't start new thread")
            box["started"] += 1
        return real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    return box


def test_start_failing_to_start_its_threads_stops_the_started_ones_and_runs_nothing(thread_limit):
    before_sigint, before_sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    s = Scheduler(workers=4, state={"results": {"earlier": 1}})
    ran, events = [], []
    for name in "abcd":
        s.register(lambda name=name: ran.append(name), name)
    s.subscribe(events.append)
    thread_limit["allowed"] = 2
    with pytest.raises(RuntimeError, match=r"^start: cannot start worker thread 3 of 4 \(can't start "
                                           r"new thread\); nothing ran: use fewer workers or raise "
                                           r"the thread limit$"):
        s.start()
    assert lane_threads() == []  # the two that did start were stopped and joined
    assert ran == [] and events == []  # nothing ran, nothing was announced
    assert s.state["results"] == {"earlier": 1}  # not even cleared
    assert not s.running
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (before_sigint, before_sigterm)
    thread_limit["allowed"] = None
    assert s.start()["passed"] == list("abcd")  # and the scheduler is usable once threads are there


def test_tdrun_out_of_threads_is_one_line_and_exit_4(thread_limit, tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark()
        def a(state):
            pass

        @mark()
        def b(state):
            pass
    """)
    thread_limit["allowed"] = 1
    result = tdrun_main(str(module), "--workers", "2", "--plain")
    assert result.code == 4, (result.out, result.err)
    assert result.err.splitlines()[-1] == (
        "tdrun: error: start: cannot start worker thread 2 of 2 (can't start new thread); "
        "nothing ran: use fewer workers or raise the thread limit")
    assert "Traceback" not in result.err


def test_a_timed_out_lane_that_cannot_be_replaced_narrows_the_pool_and_the_run_ends(thread_limit, caplog):
    release = threading.Event()
    s = Scheduler(workers=1)
    s.register(lambda: release.wait(WAIT), "stuck", timeout=0.05)
    s.register(lambda: "never", "later")
    s.register(lambda: "never", "teardown", after=["stuck"], always=True)
    thread_limit["allowed"] = 1  # the run's one lane starts; its replacement cannot
    try:
        with caplog.at_level(logging.ERROR, logger="thread_order"):
            summary = s.start()
    finally:
        release.set()
    assert summary["tasks"]["stuck"]["status"] is FAILED
    assert summary["tasks"]["stuck"]["error_type"] == "TimeoutError"
    # no worker left: nothing else can ever run, so the run stops as a forced stop does
    assert statuses(summary)["later"] is CANCELLED and statuses(summary)["teardown"] is CANCELLED
    assert summary["teardown_not_run"] == ["teardown"]
    assert "cannot start a thread to replace thread_0 (can't start new thread); 0 worker(s) left" in caplog.text


# ------------------------------------------------------------------ a subscriber that blocks

def test_a_forced_cancel_under_a_blocking_subscriber_starts_nothing_more_and_returns_when_it_does():
    """Subscribers run on start()'s thread: while one blocks, the run can only stop starting
    work; start() returns as soon as the subscriber returns (documented in the README)."""
    s = Scheduler(workers=2)
    in_callback, release = threading.Event(), threading.Event()
    ran = []
    s.register(lambda: ran.append("create"), "create")
    for i in range(5):
        s.register(lambda i=i: ran.append(f"work{i}"), f"work{i}", after=["create"])

    def slow_subscriber(event):
        if event.name == "create":
            in_callback.set()
            release.wait(WAIT)

    s.subscribe(slow_subscriber, K.TASK_FINISHED)
    result = {}
    runner = threading.Thread(target=lambda: result.update(summary=s.start()), daemon=True)
    runner.start()
    assert in_callback.wait(WAIT)
    assert s.cancel(force=True) is True  # returns at once, although the dispatcher is busy
    release.set()
    runner.join(WAIT)
    assert not runner.is_alive()
    assert ran == ["create"]
    assert result["summary"]["interrupted"] is True
    assert all(statuses(result["summary"])[f"work{i}"] is CANCELLED for i in range(5))


# ------------------------------------------------------------------ names that are almost right

def test_an_unknown_dependency_suggests_the_nearest_real_names():
    s = Scheduler()
    s.register(lambda: 1, "create_network")
    s.register(lambda: 1, "create_vm", after=["create_netwrok"])
    with pytest.raises(UnknownDependencyError, match=r"^task 'create_vm' depends on unknown task "
                                                     r"'create_netwrok'; did you mean 'create_network'\?$"):
        s.start()


def test_an_unknown_dependency_far_from_every_name_gets_no_suggestion():
    s = Scheduler()
    s.register(lambda: 1, "create_network")
    s.register(lambda: 1, "b", after=["zzz"])
    with pytest.raises(UnknownDependencyError, match=r"^task 'b' depends on unknown task 'zzz'$"):
        s.start()


def test_tdrun_unknown_task_target_suggests_the_nearest_names(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark()
        def create_subnet(state):
            pass

        @mark()
        def delete_subnet(state):
            pass
    """)
    result = tdrun_main(f"{module}::create_subnte")
    assert result.code == 4
    assert result.err == (f"tdrun: error: {module}: no marked task named 'create_subnte'; "
                          "did you mean 'create_subnet'?\n")


# ------------------------------------------------------------------ one worker, the same order

@pytest.mark.parametrize("seed", range(5))
def test_with_one_worker_and_immediate_retries_the_order_does_not_depend_on_durations(seed):
    """The README's claim, exactly: with workers=1 and no retry_delay or timeout, the start
    order is the same every time, however long the tasks take and whichever attempts fail."""
    rng = random.Random(seed)
    orders = []
    for _ in range(3):
        s = Scheduler(workers=1)
        started = []
        failures = {"a": 1, "c": 2}

        def task(name):
            def run():
                started.append(name)
                threading.Event().wait(rng.random() / 500)  # a duration that changes every run
                if failures.get(name):
                    failures[name] -= 1
                    raise RuntimeError(name)
            return run

        s.register(task("a"), "a", retries=1)
        s.register(task("b"), "b")
        s.register(task("c"), "c", retries=2)
        s.register(task("d"), "d", after=["a"])
        s.register(task("e"), "e", after=["c"], always=True)
        s.start()
        orders.append(started)
    assert orders[0] == orders[1] == orders[2] == ["a", "a", "b", "c", "c", "c", "d", "e"]
