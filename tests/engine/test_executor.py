"""The executor seam, without Dask: a RemoteExecutor whose "cluster" is a thread pool of this process.

Every attempt goes through the real path (pickled call, private state copy,
changes merged back in finish order), so the engine's half of the contract
is tested here, fast; tests/executors/ run the same against Dask.
"""

from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import ExecutorError, Scheduler, TaskStatus
from thread_order.engine.executor import RemoteExecutor, executor_from_spec
from thread_order.engine.remote import run_call
from thread_order.engine.statefind import conflict

WAIT = 10


class PoolExecutor(RemoteExecutor):
    """Runs each call on a thread of a pool of ``width`` threads, as a cluster would."""

    name = "pool"

    def __init__(self, width: int = 3) -> None:
        super().__init__()
        self.width = width
        self.sent: list[str] = []  # submission keys, in order
        self.stopped = False

    def _connect(self, workers):
        self.pool = ThreadPoolExecutor(self.width, thread_name_prefix="pool")
        return [f"pool/thread_{i}" for i in range(self.width)]

    def _send(self, job, key, call):
        self.sent.append(key)
        self.pool.submit(self._run, job, key, call)

    def _run(self, job, key, call):
        lane = f"pool/{threading.current_thread().name}"
        if self.stopped and not call.always:
            self.dropped(job)
            return
        self.began(key, job, lane)
        self.completed(job, run_call(call, pickle.dumps, pickle.loads), lane)

    def _cancel(self, job):
        pass

    def stop(self):
        self.stopped = True

    def _disconnect(self, forced):
        self.pool.shutdown(wait=not forced)


def test_local_is_no_executor_and_an_unknown_name_is_refused():
    assert executor_from_spec("local") is None
    with pytest.raises(ExecutorError, match=r"^unknown executor 'ray': expected one of dask, local"):
        Scheduler(executor="ray")
    with pytest.raises(TypeError, match=r"^executor must be"):
        Scheduler(executor=3)


def add(state):
    state["seen"] = state["results"]["a"] + 1
    state.setdefault("log", []).append("b")  # changed in place: still a change
    state.pop("gone", None)
    return state["seen"]


def make(state):
    state["log"] = ["a"]
    return 1


def test_a_task_gets_a_copy_of_the_state_and_its_changes_are_merged():
    state = {"gone": 1, "kept": {"x": 1}}
    s = Scheduler(state=state, executor=PoolExecutor())
    s.register(make, "a", with_state=True)
    s.register(add, "b", after="a", with_state=True)
    summary = s.start()
    assert summary["text"].startswith("2 passed")
    assert state["results"] == {"a": 1, "b": 2}
    assert state["log"] == ["a", "b"] and state["seen"] == 2 and "gone" not in state
    assert state["kept"] == {"x": 1}
    assert summary["executor"] == "pool" and "write_conflicts" not in summary
    assert "state_findings" not in summary  # one writer per key: nothing to report, nothing claimed checked
    assert s.last_records[1].thread.startswith("pool/pool_")


class set_region:
    """A task that sets state['region'] (a class: pickle sends it by reference)."""

    def __init__(self, value):
        self.value = value

    def __call__(self, state):
        state["region"] = self.value


class drop_region:
    def __call__(self, state):
        del state["region"]


def test_two_unordered_tasks_changing_one_key_is_the_checkers_write_conflict():
    s = Scheduler(state={"region": "xx"}, executor=PoolExecutor(1))
    s.register(set_region("eu"), "a", with_state=True)
    s.register(set_region("us"), "b", with_state=True)
    s.register(set_region("ap"), "c", after=["a", "b"], with_state=True)  # ordered after both
    s.register(drop_region(), "d", with_state=True)  # a deletion is a change too
    summary = s.start()
    key = "state['region']"
    assert summary["state_findings"][0] == {
        "kind": "write conflict", "key": key, "tasks": ["a", "b"], "locked": False, "static": False,
        "message": "a and b both write state['region'] and neither runs after the other, so the final "
                   "value depends on timing: add after=['a'] to b, or the reverse",
    }
    # the checker's own records, pair by pair in registration order: c is ordered after a and b only
    assert summary["state_findings"] == [conflict(x, y, key, False) for x, y in
                                         (("a", "b"), ("a", "d"), ("b", "d"), ("c", "d"))]
    assert "write_conflicts" not in summary and summary["failed"] == []
    last = max((r for r in s.last_records if r.name in ("c", "d")), key=lambda r: r.finished_at).name
    assert s.state.get("region") == {"c": "ap", "d": None}[last]  # the last to finish won


class locked_append:
    """Appends under _state_lock: on a cluster that lock guards the task's own copy only."""

    def __init__(self, value):
        self.value = value

    def __call__(self, state):
        with state["_state_lock"]:
            state.setdefault("subnets", []).append(self.value)


class fails_first:
    """Sets state['zone'] on each attempt and fails the first (the failed attempt's changes merge too)."""

    def __call__(self, state):
        first = "tried" not in state
        state["tried"] = True
        state["zone"] = "z1"
        if first:
            raise RuntimeError("first attempt")


def test_a_remote_write_under_the_lock_is_not_locked_and_a_retried_task_is_one_writer():
    s = Scheduler(executor=PoolExecutor(2))
    s.register(locked_append("a"), "a", with_state=True)
    s.register(locked_append("b"), "b", with_state=True)
    s.register(fails_first(), "flaky", with_state=True, retries=1)
    summary = s.start()
    assert summary["tasks"]["flaky"]["attempts"] == 2 and summary["failed"] == []
    [finding] = summary["state_findings"]  # nothing for zone or tried: one task changed them, twice
    assert finding["key"] == "state['subnets']" and finding["tasks"] == ["a", "b"]
    assert finding["locked"] is False and "_state_lock" not in finding["message"]


def test_a_task_or_state_value_that_cannot_be_sent_is_named_before_anything_runs():
    lock = threading.Lock()
    ran = []
    s = Scheduler(state={"sock": threading.Lock(), "fine": 1}, executor=PoolExecutor())
    s.register(lambda: lock, "closure")  # pickle cannot send a lambda
    s.register(lambda: ran.append(1), "other")
    with pytest.raises(ExecutorError) as info:
        s.start()
    message = str(info.value)
    assert message.startswith("cannot run on pool: these cannot be sent to its workers: task 'closure' (")
    assert "task 'other' (" in message and "state['sock'] (lock: " in message
    assert "\n" not in message and ran == []


def test_a_result_that_cannot_be_sent_back_fails_the_attempt():
    s = Scheduler(executor=PoolExecutor())
    s.register(threading.Lock, "lock")
    summary = s.start()
    rec = summary["tasks"]["lock"]
    assert rec["status"] == TaskStatus.FAILED and rec["error_type"] == "TypeError"
    assert rec["error"].startswith("task 'lock' returned a value that cannot be sent back to the client (lock): ")


# ---------------------------------------------------------------------------- the same fates as threads


@st.composite
def dags(draw):
    n = draw(st.integers(1, 12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else [] for i in range(n)]
    fail = draw(st.sets(st.integers(0, n - 1)))
    always = draw(st.sets(st.integers(0, n - 1)))
    return n, deps, fail, always


@settings(max_examples=40, deadline=None)
@given(dags(), st.integers(1, 4))
def test_every_task_ends_as_it_does_on_threads(dag, width):
    n, deps, fail, always = dag

    def run(executor):
        s = Scheduler(workers=width, executor=executor)
        for i in range(n):
            s.register(pickle.loads(pickle.dumps(_picklable(i, fail))), f"t{i}",
                       after=[f"t{d}" for d in deps[i]], always=i in always)
        summary = s.start()
        return {name: (rec["status"], rec["attempts"]) for name, rec in summary["tasks"].items()}, s

    local, _ = run("local")
    remote, s = run(PoolExecutor(width))
    assert remote == local
    assert all(rec.status is not TaskStatus.PASSED or rec.thread.startswith("pool/") for rec in s.last_records)


class _picklable:
    """A task pickle can send (a module-level class), failing when told to."""

    def __init__(self, i, fail):
        self.i, self.fail = i, frozenset(fail)

    def __call__(self):
        if self.i in self.fail:
            raise RuntimeError(f"task {self.i}")
        return self.i


# module-level, so pickle sends these tasks by reference and they share what they touch
HOLD_BEGAN, HOLD_RELEASE = threading.Event(), threading.Event()
RAN: list[str] = []


def hold():
    HOLD_BEGAN.set()
    assert HOLD_RELEASE.wait(WAIT)


def queued():
    RAN.append("queued")


def cleanup():
    RAN.append("teardown")


def test_an_attempt_queued_ahead_when_the_run_is_stopped_never_begins():
    executor = PoolExecutor(1)
    s = Scheduler(workers=1, executor=executor)
    s.register(hold, "hold")
    s.register(queued, "queued")  # sent ahead, behind `hold`, as a lane queues ahead
    s.register(cleanup, "teardown", after=["hold", "queued"], always=True)
    s.subscribe(lambda e: HOLD_RELEASE.set(), "run_interrupted")  # the executor was told before
    sent = threading.Event()  # handed to the executor (TASK_STARTED follows the hand-over)
    s.subscribe(lambda e: e.name == "queued" and sent.set(), "task_started")
    box = {}
    thread = threading.Thread(target=lambda: box.update(summary=s.start()))
    thread.start()
    assert HOLD_BEGAN.wait(WAIT) and sent.wait(WAIT)
    assert len(executor.sent) == 2
    s.cancel()
    thread.join(WAIT)
    tasks = box["summary"]["tasks"]
    assert (tasks["queued"]["status"], tasks["queued"]["attempts"]) == (TaskStatus.CANCELLED, 0)
    assert tasks["hold"]["status"] == tasks["teardown"]["status"] == TaskStatus.PASSED
    assert RAN == ["teardown"]


class LateNoticeExecutor(PoolExecutor):
    """A cluster whose "began" notices arrive after the outcome, as Dask's may."""

    def _run(self, job, key, call):
        lane = f"pool/{threading.current_thread().name}"
        self.completed(job, run_call(call, pickle.dumps, pickle.loads), lane)
        self.began(key, job, lane)  # too late: the attempt is over


_flaky_calls = []


def flaky_once():
    _flaky_calls.append(1)
    if len(_flaky_calls) == 1:
        raise RuntimeError("first attempt fails")


def test_a_task_is_announced_running_before_it_finishes_even_when_the_notice_comes_late():
    _flaky_calls.clear()
    scheduler = Scheduler(workers=2, executor=LateNoticeExecutor())
    scheduler.register(flaky_once, "flaky", retries=1)
    seen = []
    scheduler.subscribe(lambda e: seen.append((e.kind.value, e.attempt)),
                        "task_started", "task_running", "task_retrying", "task_finished")
    summary = scheduler.start()
    assert summary["tasks"]["flaky"]["status"] == "PASSED"
    kinds = [kind for kind, _ in seen]
    assert kinds == ["task_started", "task_running", "task_retrying",
                     "task_started", "task_running", "task_finished"]
