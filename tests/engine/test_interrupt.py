"""Rule 8: Ctrl-C and cancel() — running tasks finish, teardown runs, the rest is CANCELLED."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from thread_order import EventKind, Scheduler, TaskStatus

K = EventKind
WAIT = 10.0
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "engine_sigint.py"
PASSED, FAILED, SKIPPED, CANCELLED = (
    TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED,
)
INTERRUPTED = "cancelled: the run was interrupted"


def wait_for(event: threading.Event, what: str) -> None:
    assert event.wait(WAIT), f"timed out waiting for {what}"


def statuses(summary):
    return {name: task["status"] for name, task in summary["tasks"].items()}


class BackgroundRun:
    """start() on its own thread, so a run that does not return fails the test instead of hanging it."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.summary = None
        self.error = None
        self.returned_at = None
        self.thread = threading.Thread(target=self._run, args=(scheduler,), name="test-runner", daemon=True)
        self.thread.start()

    def _run(self, scheduler):
        try:
            self.summary = scheduler.start()
        except BaseException as exc:  # reported by join()
            self.error = exc
        self.returned_at = time.monotonic()

    def join(self, timeout: float = WAIT) -> dict:
        self.thread.join(timeout)
        if self.thread.is_alive():
            # don't leave a hung run behind for the next tests: stop waiting, twice to be sure
            self.scheduler.cancel(force=True)
            self.scheduler.cancel(force=True)
            self.thread.join(timeout)
            pytest.fail(f"start() did not return within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.summary


def lifecycle(release: threading.Event, running: threading.Barrier | None = None):
    """Two long tasks (a, b) on two workers; everything else is waiting or queued."""
    ran = []

    def long_task(name):
        def fn():
            if running is not None:
                running.wait()
            assert release.wait(WAIT), f"{name} was never released"
            return name
        return fn

    def record(name):
        def fn():
            ran.append(name)
            return name
        return fn

    s = Scheduler(workers=2)
    s.register(long_task("a"), "a")
    s.register(long_task("b"), "b")
    s.register(record("c"), "c", after=["a"])
    s.register(record("d"), "d")
    s.register(record("teardown"), "teardown", after=["a", "c"], always=True)
    s.register(record("post"), "post", after=["teardown"])
    return s, ran


# ------------------------------------------------------------------ cancel() in process


def test_cancel_from_another_thread_lets_running_tasks_finish_and_teardown_run():
    release = threading.Event()
    both_running = threading.Barrier(3, timeout=WAIT)
    s, ran = lifecycle(release, both_running)
    events = []
    s.subscribe(events.append)
    s.subscribe(lambda e: release.set(), K.RUN_INTERRUPTED)  # running tasks end once interrupted
    answers = []

    def canceller():
        both_running.wait()
        answers.append(s.cancel())

    t = threading.Thread(target=canceller)
    t.start()
    summary = s.start()
    t.join(WAIT)

    assert answers == [True]
    assert statuses(summary) == {
        "a": PASSED, "b": PASSED, "c": CANCELLED, "d": CANCELLED, "teardown": PASSED, "post": CANCELLED,
    }
    assert ran == ["teardown"]
    assert summary["interrupted"] is True
    assert sorted(summary["cancelled"]) == ["c", "d", "post"]
    for name in ("c", "d", "post"):
        assert summary["tasks"][name]["reason"] == INTERRUPTED
        assert summary["tasks"][name]["thread"] is None
    assert summary["text"].startswith("3 passed, 0 failed, 0 skipped, 3 cancelled in ")
    kinds = [e.kind for e in events]
    assert kinds.count(K.RUN_INTERRUPTED) == 1
    interrupted = next(e for e in events if e.kind is K.RUN_INTERRUPTED)
    assert interrupted.data == {"force": False}
    teardown_started = next(e for e in events if e.kind is K.TASK_STARTED and e.name == "teardown")
    assert teardown_started.seq > interrupted.seq
    assert kinds[-1] is K.RUN_FINISHED
    assert s.cancel() is False  # the run is over


def test_second_cancel_stops_waiting_for_running_tasks():
    release = threading.Event()
    both_running = threading.Barrier(3, timeout=WAIT)
    s, ran = lifecycle(release, both_running)
    first_seen = threading.Event()
    interrupts = []
    s.subscribe(lambda e: (interrupts.append(dict(e.data)), first_seen.set()), K.RUN_INTERRUPTED)
    run = BackgroundRun(s)
    try:
        both_running.wait()
        assert s.cancel() is True
        wait_for(first_seen, "the first interrupt")
        assert run.thread.is_alive()  # still waiting for a and b
        assert s.cancel() is True
        summary = run.join()
        assert not release.is_set()
    finally:
        release.set()
    assert interrupts == [{"force": False}, {"force": True}]
    assert summary["interrupted"] is True
    assert statuses(summary) == {
        "a": CANCELLED, "b": CANCELLED, "c": CANCELLED, "d": CANCELLED,
        "teardown": CANCELLED, "post": CANCELLED,
    }
    assert summary["tasks"]["a"]["reason"] == "abandoned: still running when the run was stopped"
    assert summary["tasks"]["teardown"]["reason"] == "cancelled: the run was stopped"
    # c was still waiting for a (its fate not yet decided) when the run was stopped
    assert summary["tasks"]["c"]["reason"] == "cancelled: the run was stopped"
    assert summary["tasks"]["d"]["reason"] == INTERRUPTED
    assert ran == []


def test_cancel_never_starts_a_teardown_while_something_upstream_still_runs():
    """hold -> step -> teardown(always): cancelling while hold runs must not release teardown
    through step; step's fate (CANCELLED) is decided only once hold is final."""
    started, gate, order = threading.Event(), threading.Event(), []

    def hold():
        started.set()
        assert gate.wait(WAIT)
        order.append("hold finished")

    s = Scheduler(workers=2)
    s.register(hold, "hold")
    s.register(lambda: order.append("step"), "step", after=["hold"])
    s.register(lambda: order.append("teardown"), "teardown", after=["step"], always=True)
    decided = []
    s.subscribe(lambda e: decided.append(e.name), K.TASK_FINISHED)
    run = BackgroundRun(s)
    try:
        wait_for(started, "hold to start")
        assert s.cancel() is True
    finally:
        gate.set()
    summary = run.join()
    assert order == ["hold finished", "teardown"]
    assert decided == ["hold", "step", "teardown"]
    assert statuses(summary) == {"hold": PASSED, "step": CANCELLED, "teardown": PASSED}


def test_a_run_after_an_interrupted_run_is_a_normal_run():
    s = Scheduler(workers=2)
    runs = []

    def first_task():
        runs.append(1)
        if len(runs) == 1:
            assert s.cancel() is True  # only the first run is cancelled

    s.register(first_task, "first")
    s.register(lambda: "b", "b", after=["first"])
    s.register(lambda: "t", "teardown", after=["b"], always=True)
    first = s.start()
    assert first["interrupted"] is True
    assert statuses(first) == {"first": PASSED, "b": CANCELLED, "teardown": PASSED}
    second = s.start()
    assert second["interrupted"] is False
    assert statuses(second) == {"first": PASSED, "b": PASSED, "teardown": PASSED}
    assert second["text"].startswith("3 passed, 0 failed, 0 skipped in ")


def test_cancel_force_returns_at_once_abandoning_running_tasks():
    release = threading.Event()
    both_running = threading.Barrier(3, timeout=WAIT)
    s, ran = lifecycle(release, both_running)
    interrupts = []
    s.subscribe(lambda e: interrupts.append(dict(e.data)), K.RUN_INTERRUPTED)
    run = BackgroundRun(s)
    try:
        both_running.wait()
        assert s.cancel(force=True) is True
        summary = run.join(timeout=3.0)
        assert not release.is_set()
    finally:
        release.set()
    assert summary["interrupted"] is True
    assert statuses(summary)["a"] == CANCELLED and statuses(summary)["b"] == CANCELLED
    assert summary["tasks"]["a"]["reason"] == "abandoned: still running when the run was stopped"
    assert {"force": True} in interrupts
    assert ran == []


def test_cancel_during_a_retry_delay_stops_the_retries():
    s = Scheduler(workers=1)
    s.register(lambda: 1 / 0, "flaky", retries=5, retry_delay=WAIT * 3)
    s.register(lambda: "ok", "teardown", after=["flaky"], always=True)
    s.subscribe(lambda e: s.cancel(), K.TASK_RETRYING)  # cancel() works from a subscriber too
    t0 = time.monotonic()
    summary = s.start()
    assert time.monotonic() - t0 < WAIT
    flaky = summary["tasks"]["flaky"]
    assert (flaky["status"], flaky["attempts"], flaky["error_type"]) == (FAILED, 1, "ZeroDivisionError")
    assert flaky["reason"] == "retries stopped: the run was interrupted"
    assert summary["tasks"]["teardown"]["status"] == PASSED
    assert summary["interrupted"] is True


def test_always_chain_still_runs_after_cancel():
    """Teardown in reverse order: each always-task waits for the one before it."""
    started = threading.Event()
    order = []

    def step(name):
        def fn():
            order.append(name)
        return fn

    def create():
        started.set()
        assert release.wait(WAIT)

    release = threading.Event()
    s = Scheduler(workers=3)
    s.register(create, "create")
    s.register(step("use"), "use", after=["create"])
    s.register(step("delete_child"), "delete_child", after=["use"], always=True)
    s.register(step("delete_parent"), "delete_parent", after=["delete_child"], always=True)
    s.subscribe(lambda e: release.set(), K.RUN_INTERRUPTED)
    threading.Thread(target=lambda: (started.wait(WAIT), s.cancel())).start()
    summary = s.start()
    assert order == ["delete_child", "delete_parent"]
    assert statuses(summary) == {
        "create": PASSED, "use": CANCELLED, "delete_child": PASSED, "delete_parent": PASSED,
    }


def test_ctrl_c_arriving_while_a_callback_runs_still_runs_teardown():
    """KeyboardInterrupt surfacing inside a subscriber (Ctrl-C under a custom SIGINT handler)."""
    s = Scheduler(workers=2)
    s.register(lambda: "created", "create")
    s.register(lambda: "deleted", "teardown", after=["create"], always=True)
    s.register(lambda: "later", "later", after=["teardown"])
    pressed = []

    def ctrl_c_during_callback(event):
        if event.name == "create" and not pressed:
            pressed.append(event.seq)
            raise KeyboardInterrupt

    s.subscribe(ctrl_c_during_callback, K.TASK_FINISHED)
    summary = BackgroundRun(s).join(timeout=5.0)
    assert pressed
    assert summary["interrupted"] is True
    assert statuses(summary) == {"create": PASSED, "teardown": PASSED, "later": CANCELLED}


# ------------------------------------------------------------------ Ctrl-C in process


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_sigint_in_process_interrupts_and_restores_the_handler():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    main_id = threading.main_thread().ident
    release = threading.Event()
    s, ran = lifecycle(release)
    s.subscribe(lambda e: release.set(), K.RUN_INTERRUPTED)
    s.subscribe(lambda e: e.name == "b" and signal.pthread_kill(main_id, signal.SIGINT), K.TASK_RUNNING)
    try:
        summary = s.start()
    except KeyboardInterrupt:  # pragma: no cover - only when the engine lets Ctrl-C escape
        pytest.fail("KeyboardInterrupt escaped start()")
    assert summary["interrupted"] is True
    assert statuses(summary) == {
        "a": PASSED, "b": PASSED, "c": CANCELLED, "d": CANCELLED, "teardown": PASSED, "post": CANCELLED,
    }
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_keyboard_interrupt_from_someone_elses_handler_is_handled_too():
    def handler(signum, frame):
        raise KeyboardInterrupt

    main_id = threading.main_thread().ident
    previous = signal.signal(signal.SIGINT, handler)
    try:
        release = threading.Event()
        s, ran = lifecycle(release)
        s.subscribe(lambda e: release.set(), K.RUN_INTERRUPTED)
        s.subscribe(lambda e: e.name == "b" and signal.pthread_kill(main_id, signal.SIGINT), K.TASK_RUNNING)
        try:
            summary = s.start()
        except KeyboardInterrupt:  # pragma: no cover - only when the engine lets Ctrl-C escape
            pytest.fail("KeyboardInterrupt escaped start()")
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert summary["interrupted"] is True
    assert statuses(summary)["teardown"] == PASSED
    assert statuses(summary)["d"] == CANCELLED


# ------------------------------------------------------------------ Ctrl-C through a real process


class Child:
    """The sigint script as a subprocess, read line by line with a timeout."""

    def __init__(self, mode: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), mode],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str) -> str:
        try:
            line = self.lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"no {prefix!r} line within {WAIT}s")
        assert line is not None, f"script ended before {prefix!r}: {self.proc.stderr.read()}"
        assert line.startswith(prefix), line
        return line[len(prefix):].strip()

    def finish(self) -> int:
        try:
            return self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(WAIT)


def test_ctrl_c_in_a_real_process_finishes_running_tasks_and_runs_teardown():
    child = Child("finish")
    try:
        child.expect("RUNNING")
        child.proc.send_signal(signal.SIGINT)
        assert json.loads(child.expect("INTERRUPTED")) == {"force": False}
        result = json.loads(child.expect("SUMMARY"))
    finally:
        code = child.finish()
    assert code == 0
    assert result["statuses"] == {
        "a": "PASSED", "b": "PASSED", "c": "CANCELLED", "d": "CANCELLED",
        "teardown": "PASSED", "post": "CANCELLED",
    }
    assert result["interrupted"] is True
    assert result["torn_down"] is True
    assert result["results"] == {"a": "a", "b": "b", "teardown": None}
    assert result["reasons"]["d"] == INTERRUPTED
    assert result["text"].startswith("3 passed, 0 failed, 0 skipped, 3 cancelled in ")


def test_second_ctrl_c_in_a_real_process_returns_at_once():
    child = Child("stuck")
    try:
        child.expect("RUNNING")
        child.proc.send_signal(signal.SIGINT)
        assert json.loads(child.expect("INTERRUPTED")) == {"force": False}
        child.proc.send_signal(signal.SIGINT)
        assert json.loads(child.expect("INTERRUPTED")) == {"force": True}
        result = json.loads(child.expect("SUMMARY"))
    finally:
        code = child.finish()
    assert code == 0
    assert result["interrupted"] is True
    assert set(result["statuses"].values()) == {"CANCELLED"}
    assert result["reasons"]["a"] == "abandoned: still running when the run was stopped"
    assert result["torn_down"] is False
    assert result["seconds_after_interrupt"] < WAIT


# ------------------------------------------------------------------ found in review


def test_after_a_forced_stop_nothing_queued_ahead_runs_later():
    """workers=1: teardown is queued ahead behind a; a forced stop must drop it for good."""
    release, in_a, ran = threading.Event(), threading.Event(), threading.Event()
    s = Scheduler(workers=1)
    s.register(lambda: (in_a.set(), release.wait(WAIT)), "a")
    s.register(ran.set, "teardown", always=True)
    stopper = threading.Thread(target=lambda: (wait_for(in_a, "a"), s.cancel(), s.cancel()))
    stopper.start()
    try:
        summary = BackgroundRun(s).join()
    finally:
        release.set()
        stopper.join(WAIT)
    assert summary["tasks"]["a"]["reason"] == "abandoned: still running when the run was stopped"
    assert summary["tasks"]["a"]["thread"] == "thread_0"
    assert summary["tasks"]["teardown"]["reason"] == "cancelled: the run was stopped"
    assert summary["ran"] == ["a"]
    # the worker that was running a is free now: it must drop teardown, not run it
    assert not ran.wait(0.5)


def test_a_retry_cut_short_by_cancel_keeps_the_failure_it_had():
    s = Scheduler(workers=1)

    def flaky():
        print("attempt ran")
        raise ConnectionError("server said 503")

    s.register(flaky, "create", retries=2)
    s.subscribe(lambda e: s.cancel(), K.TASK_RETRYING)  # "stop on first failure"
    summary = s.start()
    task = summary["tasks"]["create"]
    assert (task["status"], task["error_type"], task["error"]) == (FAILED, "ConnectionError", "server said 503")
    assert (task["thread"], task["output"], task["attempts"]) == ("thread_0", "attempt ran\n", 1)
    assert task["reason"] == "retries stopped: the run was interrupted"
    assert summary["failed"] == ["create"]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="needs the main thread")
def test_someone_elses_sigint_handler_is_replaced_for_the_run_and_restored():
    calls = []

    def handler(signum, frame):
        calls.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        seen = []
        s = Scheduler(workers=1)
        s.register(lambda: seen.append(signal.getsignal(signal.SIGINT)), "look")
        s.start()
        assert seen and seen[0] is not handler  # the engine's own, which cannot corrupt its bookkeeping
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)
    assert calls == []


def test_a_forced_stop_names_the_teardown_it_left_behind():
    """always tasks cut short or never started after a forced stop are listed, in registration order."""
    s = Scheduler(workers=2)
    running = threading.Event()
    release = threading.Event()

    def cleanup_in_progress():
        running.set()
        release.wait(WAIT)

    s.register(lambda: None, "create")
    s.register(cleanup_in_progress, "delete_subnet", after=["create"], always=True)
    s.register(lambda: None, "delete_network", after=["delete_subnet"], always=True)
    s.register(lambda: None, "unrelated_teardown", always=True)
    run = BackgroundRun(s)
    try:
        assert running.wait(WAIT)
        s.cancel(force=True)
        summary = run.join(timeout=WAIT)
    finally:
        release.set()
    assert summary["teardown_not_run"] == ["delete_subnet", "delete_network"]
    assert summary["tasks"]["delete_subnet"]["reason"] == "abandoned: still running when the run was stopped"
    assert summary["tasks"]["delete_network"]["reason"] == "cancelled: the run was stopped"


def test_teardown_not_run_is_empty_when_teardown_ran():
    s = Scheduler(workers=1)
    s.register(lambda: s.cancel(), "create")
    s.register(lambda: None, "use", after=["create"])
    s.register(lambda: None, "delete", after=["use"], always=True)
    summary = s.start()
    assert summary["interrupted"] is True and statuses(summary)["delete"] == PASSED
    assert summary["teardown_not_run"] == []
