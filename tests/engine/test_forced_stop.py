"""A forced stop (cancel(force=True), a second Ctrl-C) keeps what a failed teardown said."""

from __future__ import annotations

import threading

import pytest

from thread_order import EventKind, Scheduler, TaskStatus

WAIT = 10.0
FAILED, CANCELLED, PASSED = TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.PASSED


def failing_teardown(s: Scheduler, retry_delay: float) -> None:
    def delete():
        raise ConnectionError("server said 503")

    s.register(lambda: "created", "create")
    s.register(delete, "delete", after=["create"], always=True, retries=3, retry_delay=retry_delay)


@pytest.mark.parametrize("how", ["force", "twice"])
def test_a_forced_stop_keeps_a_failed_teardown_waiting_for_its_retry_failed(how):
    s = Scheduler(workers=1)
    failing_teardown(s, retry_delay=WAIT * 6)  # the retry never comes within the test

    def stop(event):
        if how == "force":
            s.cancel(force=True)
        else:
            s.cancel()
            s.cancel()

    s.subscribe(stop, EventKind.TASK_RETRYING)
    summary = s.start()
    delete = summary["tasks"]["delete"]
    assert (delete["status"], delete["error_type"], delete["error"], delete["attempts"]) == (
        FAILED, "ConnectionError", "server said 503", 1)
    assert delete["reason"] == "retries stopped: the run was stopped"
    assert delete["thread"] == "thread_0"
    assert summary["failed"] == ["delete"]
    assert summary["teardown_not_run"] == []  # it ran, and failed: that is in the failures
    assert summary["failures"]["delete"]["error"] == "server said 503"


def test_a_forced_stop_during_a_retry_attempt_keeps_the_failure_before_it():
    s = Scheduler(workers=1)
    second_running, release = threading.Event(), threading.Event()
    attempts = []

    def delete():
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("server said 503")
        second_running.set()
        release.wait(WAIT)

    s.register(delete, "delete", always=True, retries=1)
    stopper = threading.Thread(target=lambda: (second_running.wait(WAIT), s.cancel(force=True)))
    stopper.start()
    try:
        summary = s.start()
    finally:
        release.set()
        stopper.join(WAIT)
    delete = summary["tasks"]["delete"]
    assert (delete["status"], delete["error"], delete["attempts"]) == (FAILED, "server said 503", 2)
    assert delete["reason"] == "retries stopped: attempt 2 still running when the run was stopped"
