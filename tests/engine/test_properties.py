"""Property-based tests of the engine's invariants over random DAGs, failures and pool sizes.

Each DAG is drawn in topological order (node i may only depend on nodes < i, so it is
acyclic) and then registered in a random permutation, so dependencies are often
registered after their dependents. The expected outcome comes from a small model
written here, independently of the scheduler.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import EventKind, Scheduler, TaskStatus

K = EventKind
PASSED, FAILED, SKIPPED = TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED
PROPERTY = settings(max_examples=100, deadline=None)
REASON = re.compile(r"dependency '(t\d+)' (?:failed|skipped: upstream '(t\d+)' failed)")


@dataclass
class Case:
    deps: list[list[int]]  # deps[i] are indices < i
    failing: frozenset[int]
    always: frozenset[int]
    register_order: list[int]  # a permutation of range(n)
    workers: int

    @property
    def n(self) -> int:
        return len(self.deps)

    def children(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in range(self.n)]
        for i, ps in enumerate(self.deps):
            for p in ps:
                out[p].append(i)
        return out

    def upstream(self, i: int) -> set[int]:
        seen: set[int] = set()
        stack = list(self.deps[i])
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(self.deps[p])
        return seen


def name(i: int) -> str:
    return f"t{i}"


@st.composite
def cases(draw, max_nodes: int = 14) -> Case:
    n = draw(st.integers(1, max_nodes))
    deps = []
    for i in range(n):
        if i == 0:
            deps.append([])
        else:
            deps.append(draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 4))))
    nodes = st.integers(0, n - 1)
    failing = frozenset(draw(st.sets(nodes, max_size=n)))
    always = frozenset(draw(st.sets(nodes, max_size=n)))
    order = draw(st.permutations(range(n)))
    workers = draw(st.integers(1, 8))
    return Case(deps, failing, always, list(order), workers)


def expected_statuses(case: Case, outcome=None) -> dict[int, TaskStatus]:
    """The model: a task runs iff it is an always-task or every dependency PASSED."""
    outcome = outcome or (lambda i: FAILED if i in case.failing else PASSED)
    status: dict[int, TaskStatus] = {}
    for i in range(case.n):  # topological order by construction
        runs = i in case.always or all(status[p] is PASSED for p in case.deps[i])
        status[i] = outcome(i) if runs else SKIPPED
    return status


def expected_serial_order(case: Case) -> list[int]:
    """With one worker: whenever the worker is free, the earliest-registered ready task runs."""
    rank = {i: r for r, i in enumerate(case.register_order)}
    children = case.children()
    left = [len(ps) for ps in case.deps]
    status: dict[int, TaskStatus] = {}
    heap: list[tuple[int, int]] = []
    order: list[int] = []

    def decide(i: int) -> None:
        if i in case.always or all(status[p] is PASSED for p in case.deps[i]):
            heapq.heappush(heap, (rank[i], i))
        else:
            status[i] = SKIPPED
            release(i)

    def release(i: int) -> None:
        for c in children[i]:
            left[c] -= 1
            if not left[c]:
                decide(c)

    for i in case.register_order:
        if not case.deps[i]:
            decide(i)
    while heap:
        _, i = heapq.heappop(heap)
        order.append(i)
        status[i] = FAILED if i in case.failing else PASSED
        release(i)
    return order


class Probe:
    """Instrumented no-op tasks: what ran, what had returned when each started, peak concurrency."""

    def __init__(self, case: Case, fail_attempts=None) -> None:
        self.case = case
        self.fail_attempts = fail_attempts or {}
        self.lock = threading.Lock()  # guards everything below
        self.active = 0
        self.peak = 0
        self.started: list[int] = []
        self.returned: set[int] = set()
        self.seen_returned: dict[int, frozenset[int]] = {}
        self.calls: dict[int, int] = {}

    def task(self, i: int):
        def fn():
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
                self.started.append(i)
                self.calls[i] = self.calls.get(i, 0) + 1
                attempt = self.calls[i]
                self.seen_returned.setdefault(i, frozenset(self.returned))
            time.sleep(0.0005)  # a bounded workload, so that running tasks overlap
            with self.lock:
                self.active -= 1
                self.returned.add(i)
            if i in self.case.failing or attempt <= self.fail_attempts.get(i, 0):
                raise RuntimeError(f"{name(i)} attempt {attempt} failed")
            return i
        return fn

    def scheduler(self, **kwargs) -> Scheduler:
        case = self.case
        s = Scheduler(workers=case.workers, **kwargs)
        for i in case.register_order:
            s.register(self.task(i), name(i), after=[name(p) for p in case.deps[i]],
                       always=i in case.always, **self.options(i))
        return s

    def options(self, i: int) -> dict:
        return {}


def check_reported_once(case: Case, summary: dict, events: list) -> None:
    names = sorted(name(i) for i in range(case.n))
    finished = [e.name for e in events if e.kind is K.TASK_FINISHED]
    assert sorted(finished) == names
    assert [e.count for e in events if e.kind is K.TASK_FINISHED] == list(range(1, case.n + 1))
    listed = summary["passed"] + summary["failed"] + summary["skipped"] + summary["cancelled"]
    assert sorted(listed) == names
    assert sorted(summary["tasks"]) == names
    assert summary["cancelled"] == [] and summary["interrupted"] is False
    for status_name, status in (("passed", PASSED), ("failed", FAILED), ("skipped", SKIPPED)):
        assert all(summary["tasks"][n]["status"] is status for n in summary[status_name])


def check_dependencies_final_before_start(case: Case, probe: Probe, events: list) -> None:
    finished_seq = {e.name: e.seq for e in events if e.kind is K.TASK_FINISHED}
    for e in events:
        # a task's fate (run, skip) is decided only once every dependency is final;
        # an interrupt cancels what never started without waiting (rule 8)
        if e.kind is K.TASK_FINISHED and e.record.status is TaskStatus.CANCELLED:
            continue
        if e.kind in (K.TASK_READY, K.TASK_STARTED, K.TASK_RUNNING, K.TASK_FINISHED):
            i = int(e.name[1:])
            for p in case.deps[i]:
                assert finished_seq[name(p)] < e.seq, (e.kind, e.name, name(p))
    # and, seen from inside the tasks: every dependency that executed had returned
    for i, seen in probe.seen_returned.items():
        for p in case.deps[i]:
            if p in probe.calls:
                assert p in seen, (name(i), name(p))


@PROPERTY
@given(cases())
def test_random_dags_obey_the_invariants(case):
    probe = Probe(case)
    s = probe.scheduler()
    events = []
    s.subscribe(events.append)
    summary = s.start()

    expected = expected_statuses(case)
    got = {int(n[1:]): t["status"] for n, t in summary["tasks"].items()}
    assert got == expected

    # a failure skips exactly its transitive dependents (minus always-tasks and what they
    # unblock), and nothing skipped ever executed
    ran = {i for i, st_ in expected.items() if st_ is not SKIPPED}
    assert set(probe.calls) == ran
    assert all(count == 1 for count in probe.calls.values())
    assert sorted(summary["ran"]) == sorted(name(i) for i in ran)

    check_reported_once(case, summary, events)
    check_dependencies_final_before_start(case, probe, events)
    assert probe.peak <= case.workers
    threads = {t["thread"] for t in summary["tasks"].values() if t["thread"] is not None}
    assert threads <= {f"thread_{w}" for w in range(case.workers)}

    # every skip names a non-passed dependency and a failed task upstream
    for i, status in expected.items():
        if status is not SKIPPED:
            continue
        task = summary["tasks"][name(i)]
        m = REASON.fullmatch(task["reason"])
        assert m, task["reason"]
        dep = int(m.group(1)[1:])
        root = int((m.group(2) or m.group(1))[1:])
        assert dep in case.deps[i] and expected[dep] is not PASSED
        assert expected[root] is FAILED and root in case.upstream(i)
        assert task["thread"] is None and task["attempts"] == 0


@PROPERTY
@given(cases())
def test_skip_dependents_false_runs_everything(case):
    probe = Probe(case)
    summary = probe.scheduler(skip_dependents=False).start()
    assert set(probe.calls) == set(range(case.n))
    assert sorted(summary["failed"]) == sorted(name(i) for i in case.failing)
    assert summary["skipped"] == []


@PROPERTY
@given(cases(max_nodes=10))
def test_one_worker_runs_in_the_same_registration_order_tie_break_every_time(case):
    case.workers = 1
    expected = [name(i) for i in expected_serial_order(case)]
    orders = []
    for _ in range(2):
        probe = Probe(case)
        s = probe.scheduler()
        running = []
        s.subscribe(lambda e: running.append(e.name), K.TASK_RUNNING)
        first = s.start()
        second = s.start()  # the same scheduler again
        assert first["ran"] == second["ran"]
        orders.append((first["ran"], running[: len(first["ran"])], running[len(first["ran"]):]))
        assert [name(i) for i in probe.started] == expected * 2
    for ran, run1, run2 in orders:
        assert ran == run1 == run2 == expected


class RetryProbe(Probe):
    def __init__(self, case: Case, fail_attempts: dict[int, int], retries: dict[int, int]) -> None:
        super().__init__(case, fail_attempts)
        self.retries = retries

    def options(self, i: int) -> dict:
        return {"retries": self.retries[i]}


@PROPERTY
@given(st.data())
def test_retries_follow_the_model(data):
    case = data.draw(cases(max_nodes=10))
    case.failing = frozenset()
    fail_attempts = {i: data.draw(st.integers(0, 3)) for i in range(case.n)}
    retries = {i: data.draw(st.integers(0, 2)) for i in range(case.n)}
    probe = RetryProbe(case, fail_attempts, retries)
    s = probe.scheduler()
    events = []
    s.subscribe(events.append)
    summary = s.start()

    def outcome(i):
        return PASSED if fail_attempts[i] <= retries[i] else FAILED

    expected = expected_statuses(case, outcome)
    got = {int(n[1:]): t["status"] for n, t in summary["tasks"].items()}
    assert got == expected
    for i, status in expected.items():
        task = summary["tasks"][name(i)]
        if status is SKIPPED:
            assert i not in probe.calls
            continue
        attempts = min(fail_attempts[i], retries[i]) + 1
        assert task["attempts"] == attempts == probe.calls[i]
        retrying = [e for e in events if e.kind is K.TASK_RETRYING and e.name == name(i)]
        assert [e.attempt for e in retrying] == list(range(1, attempts))
    check_reported_once(case, summary, events)
    check_dependencies_final_before_start(case, probe, events)
    assert probe.peak <= case.workers


@PROPERTY
@given(st.data())
def test_cancel_at_any_point_runs_teardown_and_cancels_the_rest(data):
    case = data.draw(cases())
    if case.n < 2:
        case.deps.append([0])
        case.register_order.append(1)
    cancel_after = data.draw(st.integers(1, case.n - 1))  # finished tasks before cancel()
    probe = Probe(case)
    s = probe.scheduler()
    events = []
    s.subscribe(events.append)
    s.subscribe(lambda e: e.count == cancel_after and s.cancel(), K.TASK_FINISHED)
    summary = s.start()

    check_reported_once_allowing_cancelled(case, summary, events)
    check_dependencies_final_before_start(case, probe, events)
    assert probe.peak <= case.workers

    interrupts = [e for e in events if e.kind is K.RUN_INTERRUPTED]
    if not interrupts:
        # the request came as the last running tasks' results were already queued:
        # nothing was left to stop, so nothing new may have started after it
        asked = next(e.seq for e in events if e.kind is K.TASK_FINISHED and e.count == cancel_after)
        assert not [e for e in events if e.seq > asked and e.kind in (K.TASK_READY, K.TASK_STARTED)]
        assert summary["interrupted"] is False
        assert {int(n[1:]): t["status"] for n, t in summary["tasks"].items()} == expected_statuses(case)
        return
    assert summary["interrupted"] is True
    (interrupt,) = interrupts
    assert interrupt.data == {"force": False}
    for e in events:
        if e.kind is K.TASK_STARTED and e.seq > interrupt.seq:
            assert int(e.name[1:]) in case.always, f"{e.name} started after the interrupt"
    # not forced: every always-task runs once its dependencies are final
    assert case.always <= set(probe.calls)
    for i in range(case.n):
        task = summary["tasks"][name(i)]
        if i in probe.calls:
            assert task["status"] is (FAILED if i in case.failing else PASSED)
        else:
            assert i not in case.always
            finished = next(e for e in events if e.kind is K.TASK_FINISHED and e.name == name(i))
            if finished.seq > interrupt.seq:
                assert task["status"] is TaskStatus.CANCELLED, (name(i), task)
            else:
                assert task["status"] is SKIPPED, (name(i), task)


def check_reported_once_allowing_cancelled(case: Case, summary: dict, events: list) -> None:
    names = sorted(name(i) for i in range(case.n))
    finished = [e.name for e in events if e.kind is K.TASK_FINISHED]
    assert sorted(finished) == names
    listed = summary["passed"] + summary["failed"] + summary["skipped"] + summary["cancelled"]
    assert sorted(listed) == names
    for n in summary["cancelled"]:
        assert summary["tasks"][n]["reason"] == "cancelled: the run was interrupted"


@st.composite
def chain_heavy_cases(draw, max_nodes: int = 14) -> Case:
    """Like cases(), but most nodes hang off the one before: single-child chains, often."""
    case = draw(cases(max_nodes))
    for i in range(1, case.n):
        if draw(st.booleans()):
            case.deps[i] = [i - 1]
    return case


@PROPERTY
@given(chain_heavy_cases())
def test_without_subscribers_one_worker_keeps_the_start_order_and_outcomes(case):
    # no subscriber: a worker may hand a single child on directly; the order seen from
    # inside the tasks must still be the dispatcher's, and every outcome the model's
    case.workers = 1
    expected = [name(i) for i in expected_serial_order(case)]
    for _ in range(2):
        probe = Probe(case)
        summary = probe.scheduler().start()
        assert [name(i) for i in probe.started] == expected
        assert summary["ran"] == expected
        got = {int(n[1:]): t["status"] for n, t in summary["tasks"].items()}
        assert got == expected_statuses(case)


@PROPERTY
@given(chain_heavy_cases())
def test_without_subscribers_any_pool_obeys_dependencies_and_the_model(case):
    probe = Probe(case)
    summary = probe.scheduler().start()
    got = {int(n[1:]): t["status"] for n, t in summary["tasks"].items()}
    assert got == expected_statuses(case)
    assert all(count == 1 for count in probe.calls.values())
    for i, seen in probe.seen_returned.items():
        for p in case.deps[i]:
            if p in probe.calls:
                assert p in seen, (name(i), name(p))
    assert probe.peak <= case.workers
    threads = {t["thread"] for t in summary["tasks"].values() if t["thread"] is not None}
    assert threads <= {f"thread_{w}" for w in range(case.workers)}


@PROPERTY
@given(st.data())
def test_without_subscribers_retries_in_chains_follow_the_model(data):
    case = data.draw(chain_heavy_cases(max_nodes=10))
    case.failing = frozenset()
    fail_attempts = {i: data.draw(st.integers(0, 2)) for i in range(case.n)}
    retries = {i: data.draw(st.integers(0, 2)) for i in range(case.n)}
    probe = RetryProbe(case, fail_attempts, retries)
    summary = probe.scheduler().start()
    expected = expected_statuses(
        case, lambda i: PASSED if fail_attempts[i] <= retries[i] else FAILED)
    got = {int(n[1:]): t["status"] for n, t in summary["tasks"].items()}
    assert got == expected
    for i, status in expected.items():
        if status is not SKIPPED:
            attempts = min(fail_attempts[i], retries[i]) + 1
            assert summary["tasks"][name(i)]["attempts"] == attempts == probe.calls[i]
