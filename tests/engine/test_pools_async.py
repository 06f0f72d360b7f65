"""Async tasks in pools: coroutines wait at the same gate as threads (engine/aiogate.py)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from thread_order import Scheduler, TaskStatus

from test_pools import Meter, run_bounded


class AsyncMeter(Meter):
    """Meter's count of tasks running at once per pool, from inside coroutines too."""

    def coroutine(self, name: str, pools: tuple[str, ...], work: float = 0.005, fail: bool = False,
                  hang: asyncio.Event | None = None):
        async def fn():
            with self._lock:
                self.order.append(name)
                for p in pools:
                    self.now[p] = self.now.get(p, 0) + 1
                    self.peak[p] = max(self.peak.get(p, 0), self.now[p])
            try:
                await asyncio.sleep(work)  # the task's own work, handing the loop to the others
                if hang is not None:
                    await asyncio.Event().wait()  # until its timeout cancels it
                if fail:
                    raise RuntimeError(f"{name} failed")
            finally:
                with self._lock:
                    for p in pools:
                        self.now[p] -= 1
        return fn


def test_a_pool_of_2_over_10_coroutines_never_runs_more_than_2():
    meter = AsyncMeter()
    s = Scheduler(workers=4, pools={"api": 2})
    for i in range(10):
        s.register(meter.coroutine(f"c{i}", ("api",)), f"c{i}", pool="api")
    summary = run_bounded(s)
    assert len(summary["passed"]) == 10
    assert meter.peak == {"api": 2}  # used in full, never above
    assert meter.order == [f"c{i}" for i in range(10)]  # registration order within the pool
    records = {r.name: r for r in s.last_records}
    assert records["c0"].waited_for is None and records["c9"].waited_for == "api"
    assert records["c9"].waited > 0 and records["c9"].is_async
    assert summary["pools"]["api"]["waited"] == 8


def test_coroutines_and_threads_share_one_pool():
    meter = AsyncMeter()
    s = Scheduler(workers=6, pools={"api": 3})
    for i in range(8):
        s.register(meter.coroutine(f"c{i}", ("api",)), f"c{i}", pool="api")
        s.register(meter.task(f"t{i}", ("api",)), f"t{i}", pool="api")
        s.register(meter.coroutine(f"free{i}", ("none",)), f"free{i}")  # in no pool: never waits
    summary = run_bounded(s)
    assert len(summary["passed"]) == 24
    assert meter.peak["api"] == 3  # threads and coroutines together
    assert {r.waited_for for r in s.last_records if r.name.startswith("free")} == {None}
    assert {r.waited_for for r in s.last_records if r.name in ("c7", "t7")} == {"api"}


def test_a_mixed_pool_of_1_admits_in_registration_order():
    meter = AsyncMeter()
    s = Scheduler(workers=4, pools={"api": 1})
    for i in range(6):
        s.register(meter.coroutine(f"c{i}", ("api",)), f"c{i}", pool="api")
        s.register(meter.task(f"t{i}", ("api",)), f"t{i}", pool="api")
    run_bounded(s)
    assert meter.order == [n for i in range(6) for n in (f"c{i}", f"t{i}")]  # one line for both kinds
    assert meter.peak == {"api": 1}


def test_a_coroutine_and_a_thread_in_two_pools_wait_for_both():
    meter = AsyncMeter()
    s = Scheduler(workers=4, pools={"api": 2, "db": 1})
    for i in range(4):
        s.register(meter.coroutine(f"c{i}", ("api", "db")), f"c{i}", pool=["api", "db"])
        s.register(meter.task(f"t{i}", ("api",)), f"t{i}", pool="api")
    run_bounded(s)
    assert meter.peak["db"] == 1 and meter.peak["api"] <= 2


def test_a_timed_out_coroutine_gives_its_slot_back():
    meter = AsyncMeter()
    s = Scheduler(workers=2, pools={"api": 1})
    s.register(meter.coroutine("hung", ("api",), hang=True), "hung", pool="api", timeout=0.2)
    for i in range(3):
        s.register(meter.coroutine(f"c{i}", ("api",)), f"c{i}", pool="api")
    summary = run_bounded(s)
    records = {r.name: r for r in s.last_records}
    assert records["hung"].status is TaskStatus.FAILED and records["hung"].error_type == "TimeoutError"
    assert summary["passed"] == ["c0", "c1", "c2"]
    assert meter.peak == {"api": 1} and meter.now == {"api": 0}  # its cleanup ran before c0 started
    assert records["c0"].waited_for == "api" and records["c0"].waited >= 0.15


def test_failures_and_retries_leak_no_slot():
    meter = AsyncMeter()
    calls: dict[str, int] = {}
    lock = threading.Lock()  # guards calls

    def flaky(name: str):
        async def fn():
            with lock:
                calls[name] = calls.get(name, 0) + 1
                first = calls[name] == 1
            await meter.coroutine(name, ("api",), fail=first)()
        return fn

    s = Scheduler(workers=3, pools={"api": 2})
    for i in range(5):
        s.register(flaky(f"r{i}"), f"r{i}", pool="api", retries=1)  # fails once, then passes
        s.register(meter.coroutine(f"bad{i}", ("api",), fail=True), f"bad{i}", pool="api")
        s.register(meter.task(f"t{i}", ("api",), fail=i % 2 == 0), f"t{i}", pool="api")
    s.register(meter.coroutine("last", ("api",)), "last", pool="api",
               after=[f"bad{i}" for i in range(5)], always=True)
    summary = run_bounded(s)
    assert sorted(summary["passed"]) == sorted([f"r{i}" for i in range(5)] + ["t1", "t3", "last"])
    assert len(summary["failed"]) == 8
    assert meter.peak == {"api": 2} and meter.now == {"api": 0}
    assert all(r.attempts == 2 for r in s.last_records if r.name.startswith("r"))
    # the gate holds nothing at the end: a second run of the same scheduler does not wait on it
    summary = run_bounded(s)
    assert len(summary["passed"]) == 8


def test_a_rate_paces_coroutines():
    starts: list[float] = []

    async def call():
        starts.append(time.monotonic())  # one loop thread: appends never race

    s = Scheduler(workers=2, pools={"quota": {"rate": "20/s"}})
    for i in range(6):
        s.register(call, f"call{i}", pool="quota")
    run_bounded(s)
    assert len(starts) == 6
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert sum(gaps) >= 5 * 0.05 * 0.8  # one every 50 ms, give or take the clock's grain
    assert all(r.waited_for == "quota" for r in s.last_records[1:])


def test_a_stopped_run_drops_waiting_coroutines_and_ends():
    started = threading.Event()
    release = threading.Event()

    async def holder():
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    async def other():
        pass

    s = Scheduler(workers=2, pools={"api": 1})
    s.register(holder, "holder", pool="api")
    for i in range(3):
        s.register(other, f"o{i}", pool="api")
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("summary", s.start()), daemon=True)
    t.start()
    assert started.wait(10)
    s.cancel()
    release.set()
    t.join(30)
    assert not t.is_alive()
    assert out["summary"]["passed"] == ["holder"]
    assert sorted(out["summary"]["cancelled"]) == ["o0", "o1", "o2"]


@pytest.mark.parametrize("order", [{}, {"order": "critical-path"}])
def test_pooled_coroutines_under_a_start_order(order):
    meter = AsyncMeter()
    s = Scheduler(workers=3, pools={"api": 2}, **order)
    for i in range(6):
        s.register(meter.coroutine(f"c{i}", ("api",)), f"c{i}", pool="api")
        s.register(meter.task(f"u{i}", ()), f"u{i}", after=[f"c{i}"])
    summary = run_bounded(s)
    assert len(summary["passed"]) == 12 and meter.peak["api"] == 2
