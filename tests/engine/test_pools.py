"""Pools and rate limits: declaring them, and the gate's promises (engine/pools.py)."""

from __future__ import annotations

import bisect
import threading
import time

import pytest

from thread_order import EventKind, PoolError, Scheduler, TaskStatus, mark
from thread_order.engine.pools import Pool, parse_pool_option, parse_pools, parse_rate

WAIT = 10.0  # every wait on an Event has a timeout


def run_bounded(s: Scheduler, limit: float = 30.0) -> dict:
    """start() on a helper thread; a run that hangs (a leaked slot) fails instead of blocking."""
    out: dict = {}

    def go():
        out["summary"] = s.start()

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        s.cancel(force=True)
        t.join(WAIT)
        pytest.fail("the run did not end: a pool slot leaked or a task starved")
    return out["summary"]


class Meter:
    """Counts, per pool, how many tasks run at once, from inside the tasks themselves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards now, peak, order
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.order: list[str] = []

    def task(self, name: str, pools: tuple[str, ...], work: float = 0.003, fail: bool = False):
        def fn():
            with self._lock:
                self.order.append(name)
                for p in pools:
                    self.now[p] = self.now.get(p, 0) + 1
                    self.peak[p] = max(self.peak.get(p, 0), self.now[p])
            try:
                time.sleep(work)  # the task's own work, not synchronisation
                if fail:
                    raise RuntimeError(f"{name} failed")
            finally:
                with self._lock:
                    for p in pools:
                        self.now[p] -= 1
        return fn


# ------------------------------------------------------------------------- declaring


@pytest.mark.parametrize("text, expected", [
    ("10/s", (10, 1.0)), ("3/min", (3, 60.0)), ("1000/h", (1000, 3600.0)), (" 5 / s ", (5, 1.0)),
])
def test_rates(text, expected):
    assert parse_rate(text, "pool 'x'") == expected


@pytest.mark.parametrize("text", ["10", "10/d", "0/s", "-1/s", "x/s", "", "1.5/s", None, 10])
def test_bad_rates_name_the_pool(text):
    with pytest.raises(PoolError, match=r"^pool 'x': bad rate .*; expected N/s, N/min or N/h with N >= 1$"):
        parse_rate(text, "pool 'x'")


def test_pools_of_every_shape():
    pools = parse_pools({"api": 2, "quota": {"size": 4, "rate": "10/s"}, "burst": {"rate": "100/min"}})
    assert pools == {"api": Pool("api", 2), "quota": Pool("quota", 4, (10, 1.0)),
                     "burst": Pool("burst", None, (100, 60.0))}
    assert [p.describe() for p in pools.values()] == ["2", "4,10/s", "100/min"]
    assert pools["quota"].to_dict() == {"size": 4, "rate": "10/s"}


@pytest.mark.parametrize("pools, message", [
    ({"api": 0}, r"^Scheduler: pool 'api': size must be at least 1, not 0$"),
    ({"api": -2}, r"^Scheduler: pool 'api': size must be at least 1, not -2$"),
    ({"api": True}, r"^Scheduler: pool 'api': size must be a whole number >= 1, not True$"),
    ({"api": 2.5}, r"^Scheduler: pool 'api': size must be a whole number >= 1, not 2.5$"),
    ({"api": {"size": 2, "rate": "ten/s"}}, r"^Scheduler: pool 'api': bad rate 'ten/s'"),
    ({"api": {"sise": 2}}, r"^Scheduler: pool 'api': unknown key 'sise'; allowed: size, rate$"),
    ({"api": {}}, r"^Scheduler: pool 'api': give a size, a rate or both$"),
    ({"bad name": 1}, r"^Scheduler: bad pool name 'bad name'"),
    (["api"], r"^Scheduler: pools must be a dict"),
])
def test_bad_pools_are_refused_by_the_constructor(pools, message):
    with pytest.raises(PoolError, match=message):
        Scheduler(pools=pools)


def test_add_pool_and_its_errors():
    s = Scheduler()
    s.add_pool("api", 2)
    s.add_pool("quota", rate="5/min")
    assert s.pools == {"api": Pool("api", 2), "quota": Pool("quota", None, (5, 60.0))}
    with pytest.raises(PoolError, match=r"^add_pool: pool 'x': size must be at least 1, not 0$"):
        s.add_pool("x", 0)
    with pytest.raises(PoolError, match=r"^add_pool: pool 'x': give a size, a rate or both$"):
        s.add_pool("x")
    assert issubclass(PoolError, ValueError)


@pytest.mark.parametrize("text, name, pool", [
    ("api=2", "api", Pool("api", 2)), ("quota=4,10/s", "quota", Pool("quota", 4, (10, 1.0))),
    ("burst=100/min", "burst", Pool("burst", None, (100, 60.0))),
])
def test_pool_options(text, name, pool):
    assert parse_pool_option(text) == (name, pool)


@pytest.mark.parametrize("text", ["api", "api=", "=2", "api=2,3", "api=10/s,2", "api=two"])
def test_bad_pool_options(text):
    with pytest.raises(PoolError, match=r"^--pool '.*': expected NAME=SIZE, NAME=SIZE,RATE or NAME=RATE"):
        parse_pool_option(text)


def test_a_task_in_an_unknown_pool_fails_before_anything_runs():
    ran = []
    s = Scheduler(pools={"api": 1})
    s.register(lambda: ran.append("a"), "a")
    s.register(lambda: ran.append("b"), "b", pool=["api", "quota"])
    with pytest.raises(PoolError, match=r"^task 'b' is in unknown pool 'quota' \(declared: api\)$"):
        s.start()
    assert ran == [] and not s.running
    s.add_pool("quota", 1)
    assert s.start()["passed"] == ["a", "b"]


@pytest.mark.parametrize("pool, message", [
    (3, r"^task 't': pool must be a pool name or a list of them, not 3$"),
    ([""], r"^task 't': pool must hold pool names, got ''$"),
    (["a", None], r"^task 't': pool must hold pool names, got None$"),
])
def test_register_refuses_a_bad_pool(pool, message):
    with pytest.raises(TypeError, match=message):
        Scheduler().register(lambda: None, "t", pool=pool)
    with pytest.raises(TypeError, match=message.replace("'t'", "'fn'")):
        @mark(pool=pool)
        def fn(state):
            pass


def test_parametrized_cases_inherit_the_pool():
    meter = Meter()
    s = Scheduler(workers=4, pools={"api": 1})
    s.register(lambda i: meter.task(f"c{i}", ("api",))(), "c", pool="api", params={"i": [1, 2, 3, 4]})
    summary = run_bounded(s)
    assert len(summary["passed"]) == 4
    assert s.tasks[0].pools == ("api",) and meter.peak == {"api": 1}


# ------------------------------------------------------------------------- the gate


def test_never_more_than_size_and_the_pool_is_used_in_full():
    meter = Meter()
    s = Scheduler(workers=8, pools={"api": 2, "db": 3})
    for i in range(12):
        s.register(meter.task(f"a{i}", ("api",), work=0.01), f"a{i}", pool="api")
        s.register(meter.task(f"d{i}", ("db",), work=0.01), f"d{i}", pool="db")
    summary = run_bounded(s)
    assert len(summary["passed"]) == 24
    assert meter.peak == {"api": 2, "db": 3}


def test_a_waiting_task_holds_no_worker_and_blocks_nothing_outside_its_pool():
    # a holds the only slot of api until c (outside the pool, registered after b) runs:
    # with b holding a worker or standing in c's way, a would wait in vain
    released = threading.Event()
    seen = {}

    def a():
        seen["a"] = released.wait(WAIT)

    s = Scheduler(workers=2, pools={"api": 1})
    s.register(a, "a", pool="api")
    s.register(lambda: seen.setdefault("b_after_c", released.is_set()), "b", pool="api")
    s.register(released.set, "c")
    summary = run_bounded(s)
    assert summary["passed"] == ["c", "a", "b"]
    assert seen == {"a": True, "b_after_c": True}
    rec = {r.name: r for r in s.last_records}
    assert rec["b"].waited_for == "api" and rec["b"].waited > 0
    assert rec["a"].waited_for is None and rec["c"].waited_for is None


def test_within_a_pool_tasks_start_in_registration_order():
    meter = Meter()
    s = Scheduler(workers=6, pools={"api": 1})
    names = [f"t{i}" for i in range(15)]
    for name in names:
        s.register(meter.task(name, ("api",), work=0.001), name, pool="api")
    run_bounded(s)
    assert meter.order == names


def test_a_task_in_two_pools_is_not_overtaken_in_either():
    # x needs a and b; the tasks after it in b must not start before it, however long a stays full
    meter = Meter()
    s = Scheduler(workers=8, pools={"a": 1, "b": 2})
    s.register(meter.task("a0", ("a",), work=0.05), "a0", pool="a")
    s.register(meter.task("x", ("a", "b"), work=0.001), "x", pool=["a", "b"])
    for i in range(6):
        s.register(meter.task(f"b{i}", ("b",), work=0.001), f"b{i}", pool="b")
    run_bounded(s)
    assert meter.order[:2] == ["a0", "x"]
    assert meter.peak["a"] == 1 and meter.peak["b"] <= 2


def test_a_failed_task_gives_its_slot_back_and_a_retry_takes_one_again():
    meter = Meter()
    attempts = {"flaky": 0}

    def flaky():
        attempts["flaky"] += 1
        meter.task("flaky", ("api",), fail=attempts["flaky"] < 3)()

    s = Scheduler(workers=4, pools={"api": 1})
    s.register(flaky, "flaky", pool="api", retries=3)
    s.register(meter.task("bad", ("api",), fail=True), "bad", pool="api")
    for i in range(4):
        s.register(meter.task(f"ok{i}", ("api",)), f"ok{i}", pool="api")
    summary = run_bounded(s)
    assert summary["failed"] == ["bad"] and len(summary["passed"]) == 5
    assert attempts["flaky"] == 3 and meter.peak == {"api": 1}
    assert {r.name: r.attempts for r in s.last_records}["flaky"] == 3


def test_a_timed_out_task_frees_its_slot_at_the_timeout():
    # the hung call keeps running on its abandoned thread; the pool goes on without it
    hung = threading.Event()
    after = {}

    def stuck():
        hung.wait(WAIT)

    def next_one():
        after["hung_still_running"] = not hung.is_set()

    s = Scheduler(workers=2, pools={"api": 1})
    s.register(stuck, "stuck", pool="api", timeout=0.1)
    s.register(next_one, "next", pool="api")
    try:
        summary = run_bounded(s)
    finally:
        hung.set()
    assert summary["failed"] == ["stuck"] and summary["passed"] == ["next"]
    assert after == {"hung_still_running": True}
    rec = {r.name: r for r in s.last_records}
    assert rec["stuck"].error_type == "TimeoutError"
    assert rec["next"].waited_for == "api" and rec["next"].waited >= 0.09


def test_cancel_cancels_the_waiting_and_teardown_in_the_pool_still_runs():
    holding = threading.Event()
    release = threading.Event()

    def hold():
        holding.set()
        release.wait(WAIT)

    s = Scheduler(workers=3, pools={"api": 1})
    s.register(hold, "hold", pool="api")
    s.register(lambda: None, "queued1", pool="api")
    s.register(lambda: None, "queued2", pool="api")
    s.register(lambda: None, "teardown", after=["queued1"], pool="api", always=True)

    def stopper():
        if holding.wait(WAIT):
            s.cancel()
            release.set()

    threading.Thread(target=stopper, daemon=True).start()
    summary = run_bounded(s)
    status = {r.name: r.status for r in s.last_records}
    assert status == {"hold": TaskStatus.PASSED, "queued1": TaskStatus.CANCELLED,
                      "queued2": TaskStatus.CANCELLED, "teardown": TaskStatus.PASSED}
    assert summary["interrupted"] is True


def test_a_forced_stop_ends_the_run_with_tasks_waiting_for_a_pool():
    holding = threading.Event()
    release = threading.Event()

    def hold():
        holding.set()
        release.wait(WAIT)

    s = Scheduler(workers=2, pools={"api": 1})
    s.register(hold, "hold", pool="api")
    s.register(lambda: None, "waiting", pool="api", always=True)
    threading.Thread(target=lambda: holding.wait(WAIT) and s.cancel(force=True), daemon=True).start()
    try:
        summary = run_bounded(s)
    finally:
        release.set()
    status = {r.name: r.status for r in s.last_records}
    assert status == {"hold": TaskStatus.CANCELLED, "waiting": TaskStatus.CANCELLED}
    assert summary["teardown_not_run"] == ["waiting"]
    # the scheduler is whole again: a new run gets the pool back in full
    release.set()
    assert run_bounded(s)["passed"] == ["hold", "waiting"]


def test_a_pooled_dependent_is_never_started_by_the_worker_past_the_gate():
    # a -> b alone is what the direct hand-off starts on the worker; b is in a pool that
    # `holder` keeps full, so b must wait for it (no subscriber: the hand-off is allowed)
    holding = threading.Event()
    spans = {}

    def holder():
        holding.set()
        time.sleep(0.1)  # the task's own work
        spans["holder_end"] = time.perf_counter()

    def b():
        spans["b_start"] = time.perf_counter()

    s = Scheduler(workers=3, pools={"api": 1})
    s.register(holder, "holder", pool="api")
    s.register(lambda: holding.wait(WAIT), "a")
    s.register(b, "b", after=["a"], pool="api")
    run_bounded(s)
    assert spans["b_start"] >= spans["holder_end"]


def _order_of_a_run(work: dict[str, float]) -> list[str]:
    s = Scheduler(workers=1, pools={"p": 1, "q": 2})
    order = []

    def task(name):
        def fn():
            order.append(name)
            time.sleep(work.get(name, 0.0))
        return fn

    s.register(task("r0"), "r0", pool="p")
    s.register(task("r1"), "r1")
    s.register(task("c0"), "c0", after=["r0"], pool="q")
    s.register(task("c1"), "c1", after=["r0"])
    s.register(task("c2"), "c2", after=["r1"], pool=["p", "q"])
    s.register(task("d0"), "d0", after=["c0"], pool="p")
    s.register(task("d1"), "d1", after=["c1", "c2"])
    s.register(task("e0"), "e0", after=["d0"])
    run_bounded(s)
    return order


def test_with_one_worker_the_start_order_does_not_depend_on_timing():
    quick = _order_of_a_run({})
    slow = _order_of_a_run({"r0": 0.02, "c0": 0.01, "c2": 0.015})
    assert quick == slow
    assert quick == ["r0", "r1", "c0", "c1", "c2", "d0", "d1", "e0"]


def test_live_view_events_count_tasks_waiting_per_pool():
    counts = []
    s = Scheduler(workers=4, pools={"api": 1, "idle": 3})
    s.subscribe(lambda e: counts.append(dict(e.data["waiting"])), EventKind.POOL_WAITING)
    for i in range(4):
        s.register(lambda: time.sleep(0.002), f"t{i}", pool="api")
    run_bounded(s)
    assert counts[0] == {"api": 0, "idle": 0} or counts[0]["api"] >= 0
    assert max(c["api"] for c in counts) == 3 and counts[-1] == {"api": 0, "idle": 0}
    assert all(c["idle"] == 0 for c in counts)


def test_a_run_without_pools_has_no_gate_and_records_no_waits():
    s = Scheduler(workers=2)
    for i in range(5):
        s.register(lambda: None, f"t{i}")
    summary = s.start()
    assert summary["pools"] == {}
    assert all(r.waited == 0.0 and r.waited_for is None for r in s.last_records)


def test_the_summary_tallies_each_pool():
    s = Scheduler(workers=4, pools={"api": 1, "spare": {"size": 9, "rate": "100/s"}})
    for i in range(3):
        s.register(lambda: time.sleep(0.01), f"t{i}", pool="api")
    summary = run_bounded(s)
    api = summary["pools"]["api"]
    assert api["size"] == 1 and api["rate"] is None and api["waited"] == 2
    assert api["longest"] >= 0.015 and api["total"] >= api["longest"]
    assert summary["pools"]["spare"] == {"size": 9, "rate": "100/s", "waited": 0, "longest": 0.0, "total": 0.0}
    assert summary["tasks"]["t2"]["waited_for"] == "api"


# ------------------------------------------------------------------------- rates


def busiest(starts: list[float], period: float) -> int:
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, s + period) - i for i, s in enumerate(starts))


def test_a_rate_caps_every_window_and_paces_the_starts():
    s = Scheduler(workers=4, pools={"api": {"rate": "20/s"}})
    for i in range(30):
        s.register(lambda: None, f"t{i}", pool="api")
    t0 = time.perf_counter()
    run_bounded(s)
    took = time.perf_counter() - t0
    starts = [r.started_at for r in s.last_records]
    assert busiest(starts, 1.0) <= 20
    assert busiest(starts, 0.5) <= 15  # paced (a burst would put 20 in the first half second)
    assert 29 / 20 * 0.95 <= took <= 29 / 20 * 1.5


def test_a_rate_with_retries_counts_every_attempt():
    failures = {"n": 0}

    def flaky():
        failures["n"] += 1
        if failures["n"] % 2:
            raise RuntimeError("again")

    starts = []
    s = Scheduler(workers=3, pools={"api": {"size": 2, "rate": "10/s"}})
    s.subscribe(lambda e: starts.append(e.time), EventKind.TASK_RUNNING)
    for i in range(4):
        s.register(flaky, f"t{i}", pool="api", retries=1)
    run_bounded(s)
    assert len(starts) >= 6 and busiest(starts, 1.0) <= 10


@pytest.mark.parametrize("order", [{"shuffle": 7}, {"order": "critical-path"}])
def test_a_start_order_plan_goes_through_the_gate_too(order):
    meter = Meter()
    s = Scheduler(workers=6, pools={"api": 2}, **order)
    for i in range(12):
        s.register(meter.task(f"t{i}", ("api",)), f"t{i}", pool="api")
        s.register(meter.task(f"u{i}", ()), f"u{i}", after=[f"t{i}"])
    summary = run_bounded(s)
    assert len(summary["passed"]) == 24
    assert meter.peak == {"api": 2}
    assert sum(1 for r in s.last_records if r.waited_for == "api") >= 1
