"""The pool hand-off under a long line: tasks joining it behind and ahead of the named ones.

A worker ending an attempt in a full pool starts the task the gate named next
there (engine/gate.py). Names are topped up as workers use them, and a task
that joins the line ahead of a name (a retry) takes the names back; one that
joins behind them all leaves them be. Whatever happens, each attempt runs
once, no pool holds more than its size, and the line keeps registration order.
"""

from __future__ import annotations

import threading

import pytest

from thread_order import Scheduler, TaskStatus

ROOTS, LATE = 200, 100  # pooled tasks ready at the start, and pooled tasks that become ready later
FLAKY = frozenset(range(7, ROOTS, 23))  # fail their first attempt, pass the retry


def build(size: int, workers: int):
    s = Scheduler(workers=workers, pools={"p": size})
    lock = threading.Lock()  # guards runs, starts, now, peak
    runs: dict[int, int] = {}
    starts: list[tuple[int, int]] = []  # (task, attempt), in the order they began
    now = [0]
    peak = [0]

    def task(i: int):
        def fn():
            with lock:
                runs[i] = runs.get(i, 0) + 1
                starts.append((i, runs[i]))
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            try:
                if i in FLAKY and runs[i] == 1:
                    raise RuntimeError(f"t{i} fails once")
            finally:
                with lock:
                    now[0] -= 1
        return fn

    for i in range(ROOTS):
        s.register(task(i), f"t{i}", pool="p", retries=1 if i in FLAKY else 0)
    s.register(lambda: None, "trigger")  # outside the pool: its dependents join the line late
    for i in range(ROOTS, ROOTS + LATE):
        s.register(task(i), f"t{i}", ["trigger"], pool="p")
    return s, runs, starts, peak


def run_bounded(s: Scheduler, limit: float = 60.0) -> dict:
    out: dict = {}
    t = threading.Thread(target=lambda: out.setdefault("summary", s.start()), daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        s.cancel(force=True)
        t.join(10)
        pytest.fail("the run did not end: a pool slot leaked or a task starved")
    return out["summary"]


@pytest.mark.parametrize("size,workers", [(1, 4), (3, 8), (8, 8)])
def test_a_long_line_runs_each_attempt_once_within_the_pool(size, workers):
    s, runs, starts, peak = build(size, workers)
    summary = run_bounded(s)
    assert summary["failed"] == []
    assert len(summary["passed"]) == ROOTS + LATE + 1
    assert runs == {i: 2 if i in FLAKY else 1 for i in range(ROOTS + LATE)}
    assert peak[0] <= size
    records = {r.name: r for r in s.last_records}
    assert all(records[f"t{i}"].attempts == (2 if i in FLAKY else 1) for i in range(ROOTS + LATE))
    waited = summary["pools"]["p"]["waited"]
    assert 0 < waited <= ROOTS + LATE
    assert waited == sum(1 for r in s.last_records if r.waited_for == "p")


def test_one_slot_keeps_registration_order_while_tasks_join_the_line():
    s, runs, starts, peak = build(1, 4)
    run_bounded(s)
    assert peak[0] == 1
    # the first attempts of tasks that never failed begin in registration order, the late
    # joiners (behind the named tasks) included, whatever retries rejoined the line meanwhile
    firsts = [i for i, attempt in starts if attempt == 1 and i not in FLAKY]
    assert firsts == sorted(firsts)
    assert len(firsts) == ROOTS + LATE - len(FLAKY)
