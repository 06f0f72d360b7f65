"""The worker lanes: the direct hand-off of a single child to the worker that finished its parent."""

from __future__ import annotations

import threading

from thread_order import EventKind, Scheduler, TaskStatus

WAIT = 10.0
PASSED, CANCELLED = TaskStatus.PASSED, TaskStatus.CANCELLED


def run_on_thread(s: Scheduler) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["summary"] = s.start()
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=run, name="test-runner", daemon=True)
    thread.start()
    return thread, out


class WatchedLock:
    """A re-entrant lock that tells when another thread starts waiting for it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.owner: int | None = None
        self.depth = 0
        self.waiter = threading.Event()

    def __enter__(self):
        if self.owner is not None and self.owner != threading.get_ident():
            self.waiter.set()
        self._lock.acquire()
        self.owner = threading.get_ident()
        self.depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self.depth -= 1
        if not self.depth:
            self.owner = None
        self._lock.release()


def chain(s: Scheduler, n: int, fn_for) -> None:
    for i in range(n):
        s.register(fn_for(i), f"t{i}", after=[f"t{i - 1}"] if i else None, with_state=True)


def test_a_chain_without_subscribers_runs_on_one_worker_and_sees_each_result():
    s = Scheduler(workers=8)
    threads, seen = [], []

    def step(i):
        def fn(state):
            threads.append(threading.current_thread().name)
            seen.append(state["results"].get(f"t{i - 1}") if i else None)
            return i
        return fn

    chain(s, 60, step)
    summary = s.start()
    assert summary["passed"] == [f"t{i}" for i in range(60)]
    # handed from worker to worker through the dispatcher, 60 tasks would not all land on one
    assert len(set(threads)) == 1, threads
    assert seen == [None] + list(range(59))
    tasks = summary["tasks"]
    assert {tasks[f"t{i}"]["thread"] for i in range(60)} == set(threads)
    assert all(tasks[f"t{i}"]["attempts"] == 1 for i in range(60))


def test_a_subscriber_sees_every_event_of_a_chain_in_order():
    s = Scheduler(workers=4)
    chain(s, 5, lambda i: (lambda state: i))
    kinds = []
    s.subscribe(lambda e: kinds.append((e.kind, e.name)))
    s.start()
    task_events = [k for k in kinds if k[1] is not None]
    expected = []
    for i in range(5):
        expected += [(k, f"t{i}") for k in (EventKind.TASK_READY, EventKind.TASK_STARTED,
                                              EventKind.TASK_RUNNING, EventKind.TASK_FINISHED)]
    assert task_events == expected


def test_cancel_inside_a_chain_stops_the_next_task_and_teardown_still_runs():
    s = Scheduler(workers=2)
    ran = []

    def step(i):
        def fn(state):
            ran.append(i)
            if i == 1:
                assert s.cancel() is True
        return fn

    chain(s, 4, step)
    s.register(lambda: ran.append("teardown"), "teardown", after="t3", always=True)
    summary = s.start()
    assert ran == [0, 1, "teardown"]
    tasks = summary["tasks"]
    assert [tasks[f"t{i}"]["status"] for i in range(4)] == [PASSED, PASSED, CANCELLED, CANCELLED]
    assert tasks["teardown"]["status"] is PASSED and summary["interrupted"] is True


def test_a_forced_stop_before_the_dispatcher_heard_of_a_direct_start_marks_it_abandoned():
    # t1 finishes and its worker starts t2 itself, then waits for the state lock (held here)
    # to store t1's result before telling the dispatcher: the forced stop lands in between
    lock = WatchedLock()
    s = Scheduler(workers=2, state={"_state_lock": lock})
    t1_running, release_t1 = threading.Event(), threading.Event()

    def t1(state):
        t1_running.set()
        assert release_t1.wait(WAIT)

    s.register(lambda state: None, "t0", with_state=True)
    s.register(t1, "t1", after="t0", with_state=True)
    s.register(lambda state: None, "t2", after="t1", with_state=True)
    runner, out = run_on_thread(s)
    try:
        assert t1_running.wait(WAIT)
        with lock:
            lock.waiter.clear()
            release_t1.set()
            assert lock.waiter.wait(WAIT), "t1's worker never asked for the state lock"
            # the worker is now blocked on the lock, t2 started but not reported
            assert s.cancel(force=True) is True
            runner.join(WAIT)
            assert not runner.is_alive(), "start() did not return after a forced stop"
    finally:
        release_t1.set()
    assert "error" not in out, out.get("error")
    tasks = out["summary"]["tasks"]
    assert tasks["t0"]["status"] is PASSED
    for name in ("t1", "t2"):
        assert tasks[name]["status"] is CANCELLED, (name, tasks[name])
        assert tasks[name]["reason"] == "abandoned: still running when the run was stopped"
        assert tasks[name]["thread"] == tasks["t0"]["thread"] and tasks[name]["attempts"] == 1
