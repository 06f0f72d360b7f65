"""Property-based tests of the pools' invariants over random DAGs, pools, failures, retries and timeouts.

For any run (thread tasks, or threads and coroutines mixed): no pool ever has more tasks running than its size; the run ends (a
leaked slot or a starved task would hang it: each run is bounded); every task ends
as a small model says; within a pool of one slot, the tasks ready at the start
begin in registration order; and the same scheduler runs again with its pools whole.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import Scheduler, TaskStatus

PROPERTY = settings(max_examples=60, deadline=None)
PASSED, FAILED, SKIPPED = TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED
POOLS = ("p0", "p1", "p2")


@dataclass
class Case:
    deps: list[list[int]]
    pools: list[tuple[str, ...]]
    sizes: dict[str, int]
    fails: dict[int, int]  # task -> attempts that fail before one passes (> retries: it fails)
    retries: dict[int, int]
    hangs: frozenset[int]  # tasks that hang past their timeout
    always: frozenset[int]
    workers: int
    coros: frozenset[int] = field(default_factory=frozenset)  # tasks that are async def


@st.composite
def cases(draw) -> Case:
    n = draw(st.integers(1, 12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else [] for i in range(n)]
    sizes = {p: draw(st.integers(1, 3)) for p in POOLS}
    pools = [tuple(draw(st.lists(st.sampled_from(POOLS), max_size=2, unique=True))) for _ in range(n)]
    retries = {i: draw(st.integers(0, 2)) for i in range(n)}
    fails = {i: draw(st.integers(0, 3)) for i in range(n)}
    hangs = frozenset(draw(st.sets(st.integers(0, n - 1), max_size=1)))
    always = frozenset(draw(st.sets(st.integers(0, n - 1), max_size=3)))
    return Case(deps, pools, sizes, fails, retries, hangs, always, draw(st.integers(1, 4)))


@st.composite
def mixed_cases(draw) -> Case:
    """Cases where some tasks are coroutines, in the same pools as the threads."""
    case = draw(cases())
    n = len(case.deps)
    case.coros = frozenset(draw(st.sets(st.integers(0, n - 1), min_size=1)))
    return case


def expected(case: Case) -> list[TaskStatus]:
    out: list[TaskStatus] = []
    for i, ds in enumerate(case.deps):
        if not case.always.__contains__(i) and any(out[d] is not PASSED for d in ds):
            out.append(SKIPPED)
        elif i in case.hangs or case.fails[i] > case.retries[i]:
            out.append(FAILED)
        else:
            out.append(PASSED)
    return out


class Meter:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards now, peak, order
        self.now = {p: 0 for p in POOLS}
        self.peak = {p: 0 for p in POOLS}
        self.order: list[int] = []
        self.attempts: dict[int, int] = {}


def build(case: Case, meter: Meter, unhang: threading.Event) -> Scheduler:
    s = Scheduler(workers=case.workers, pools=case.sizes)
    attempts = meter.attempts

    def count(i: int, delta: int) -> None:
        with meter._lock:
            if delta > 0:
                attempts[i] = attempts.get(i, 0) + 1
                meter.order.append(i)
            for p in case.pools[i]:
                meter.now[p] += delta
                meter.peak[p] = max(meter.peak[p], meter.now[p])

    def coroutine(i: int):
        async def fn():
            if i in case.hangs:
                await asyncio.sleep(5)  # past its timeout: cancelled, its slot given back then
                return
            count(i, 1)
            try:
                await asyncio.sleep(0.001)  # the task's own work, handing the loop on
                if attempts[i] <= case.fails[i]:
                    raise RuntimeError(f"t{i} attempt {attempts[i]}")
            finally:
                count(i, -1)
        return fn

    def task(i: int):
        if i in case.coros:
            return coroutine(i)

        def fn():
            if i in case.hangs:
                unhang.wait(5)  # past its timeout: abandoned, its slot given back at the timeout
                return
            with meter._lock:
                attempts[i] = attempts.get(i, 0) + 1
                meter.order.append(i)
                for p in case.pools[i]:
                    meter.now[p] += 1
                    meter.peak[p] = max(meter.peak[p], meter.now[p])
            try:
                time.sleep(0.001)  # the task's own work
                if attempts[i] <= case.fails[i]:
                    raise RuntimeError(f"t{i} attempt {attempts[i]}")
            finally:
                with meter._lock:
                    for p in case.pools[i]:
                        meter.now[p] -= 1
        return fn

    for i, ds in enumerate(case.deps):
        s.register(task(i), f"t{i}", [f"t{d}" for d in ds], pool=list(case.pools[i]) or None,
                   retries=case.retries[i], always=i in case.always,
                   timeout=0.05 if i in case.hangs else None)
    return s


def bounded(s: Scheduler, limit: float = 30.0) -> dict:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("summary", s.start()), daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        s.cancel(force=True)
        t.join(5)
        pytest.fail("the run did not end: a slot leaked or a task starved")
    return out["summary"]


@PROPERTY
@given(cases())
def test_pools_are_exact_fair_and_never_leak(case: Case):
    check(case)


@settings(max_examples=40, deadline=None)
@given(mixed_cases())
def test_pools_hold_for_coroutines_and_threads_together(case: Case):
    check(case)


def check(case: Case) -> None:
    meter = Meter()
    unhang = threading.Event()
    s = build(case, meter, unhang)
    try:
        bounded(s)
        statuses = [r.status for r in s.last_records]
        assert statuses == expected(case)
        for p, size in case.sizes.items():
            assert meter.peak[p] <= size, (p, meter.peak, case)
        # every attempt ran once: never twice (two workers handed one task), never skipped
        for i, status in enumerate(statuses):
            if status is not SKIPPED and i not in case.hangs:
                want = min(case.fails[i], case.retries[i]) + 1
                assert meter.attempts.get(i) == want == s.last_records[i].attempts, (i, meter.attempts, case)
        # a pool of one slot starts the tasks ready at once (roots, first attempts) in order
        for p, size in case.sizes.items():
            if size == 1:
                firsts = [i for k, i in enumerate(meter.order) if i not in meter.order[:k]]
                roots = [i for i in firsts if not case.deps[i] and p in case.pools[i]]
                assert roots == sorted(roots), (p, meter.order, case)
        # whatever happened, the pools are whole for the next run
        meter.order.clear()
        meter.attempts.clear()
        bounded(s)
        assert [r.status for r in s.last_records] == statuses
    finally:
        unhang.set()
