"""Replay's constraints, by property, on drawn recordings: the analysis of a recording, and runs
replaying it on several workers (the dispatcher's hand-out rule and the workers' gate together)."""

from __future__ import annotations

import itertools
import random
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import Scheduler
from thread_order.engine.order import ReplayOrder


def recording(rng: random.Random, n: int, serial: bool):
    """A DAG of ``n`` tasks and a recording of a run of it, on integer clock ticks (ties on purpose).

    Tasks start in a random topological order; each starts at or after the previous start and
    after every dependency finished; it lasts 0-3 ticks. ``serial``: each also starts after the
    one before it finished (a run of short tasks whose dispatcher is the bottleneck).
    """
    names = [f"t{i}" for i in range(n)]
    after = {names[i]: sorted({names[rng.randrange(i)] for _ in range(rng.randrange(3))} if i else ())
             for i in range(n)}
    left = {name: set(deps) for name, deps in after.items()}
    starts: dict[str, tuple[float, float]] = {}
    clock = 0
    last_finish = 0
    while left:
        name = rng.choice(sorted(name for name, deps in left.items() if not deps))
        del left[name]
        begin = max([clock, *(starts[d][1] + rng.randrange(2) for d in after[name])])
        if serial:
            begin = max(begin, last_finish + rng.randrange(2))
        begin += rng.randrange(2)
        end = begin + rng.randrange(4)
        starts[name] = (float(begin), float(end))
        clock, last_finish = begin, max(last_finish, end)
        for deps in left.values():
            deps.discard(name)
    order = list(after.items())
    rng.shuffle(order)  # registration order is not the recorded order
    return order, starts


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**9), n=st.integers(min_value=0, max_value=30),
       serial=st.booleans())
def test_the_analysis_counts_for_each_start_the_tasks_finished_strictly_before_it(seed, n, serial):
    _, starts = recording(random.Random(seed), n, serial)
    names, at_start, need, at_finish = ReplayOrder(1, starts).analysis
    by_start = [names[i] for i in at_start]
    by_finish = [names[i] for i in at_finish]
    assert sorted(by_start) == sorted(by_finish) == sorted(starts)
    assert [starts[name][0] for name in by_start] == sorted(s for s, _ in starts.values())
    assert [starts[name][1] for name in by_finish] == sorted(f for _, f in starts.values())
    for name, count in zip(by_start, need):
        assert count == sum(1 for _, finish in starts.values() if finish < starts[name][0])


def replayed(dag, starts, workers, is_async):
    """Replay recording ``starts`` of ``dag`` (the tasks ``is_async(name)`` as coroutines), each
    task lasting as long as it did, so that others overlap it; checks that every task passed and
    started after what had finished before it in the recording. Returns (summary, seen): seen
    maps each task to its start and end ticks."""
    import asyncio

    ticks = itertools.count()  # next() is atomic: one total order of every task's start and end
    seen: dict[str, list[int]] = {}

    def task(name):
        lasts = (starts[name][1] - starts[name][0]) * 0.0005

        if is_async(name):
            async def coro():
                seen[name] = [next(ticks)]
                await asyncio.sleep(lasts)
                seen[name].append(next(ticks))
            return coro

        def run():
            seen[name] = [next(ticks)]
            time.sleep(lasts)
            seen[name].append(next(ticks))
        return run

    sched = Scheduler(workers=workers, order=ReplayOrder(7, starts))
    for name, after in dag:
        sched.register(task(name), name, after)
    summary = sched.start()
    assert sorted(summary["passed"]) == sorted(starts)
    for name, (begin, _) in starts.items():
        for other, (_, finish) in starts.items():
            if finish < begin:
                assert seen[other][1] < seen[name][0], f"{other} must end before {name} starts"
    return summary, seen


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**9), n=st.integers(min_value=1, max_value=25),
       serial=st.booleans(), workers=st.integers(min_value=1, max_value=4))
def test_a_replay_starts_each_task_after_what_had_finished_before_it(seed, n, serial, workers):
    dag, starts = recording(random.Random(seed), n, serial)
    summary, seen = replayed(dag, starts, workers, lambda name: False)
    assert summary["order"]["replay_of"] == 7
    if workers == 1:  # one at a time: exactly the recorded start order
        ranked = sorted(starts, key=lambda name: starts[name][0])
        assert sorted(seen, key=lambda name: seen[name][0]) == ranked


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**9), n=st.integers(min_value=1, max_value=20),
       serial=st.booleans(), workers=st.integers(min_value=1, max_value=3))
def test_a_replay_of_thread_and_async_tasks_starts_each_after_what_had_finished_before_it(
        seed, n, serial, workers):
    # either side of the dispatcher (worker lanes, the run's event loop) may hold the task that
    # must come first: neither gives up on the recording while the other has it in flight or
    # about to start
    rng = random.Random(seed)
    dag, starts = recording(rng, n, serial)
    is_async = {name: rng.random() < 0.5 for name, _ in dag}
    replayed(dag, starts, workers, is_async.__getitem__)


def test_a_replay_does_not_give_up_on_a_coroutine_while_a_thread_task_can_start():
    import asyncio

    # recorded: t2, then a1 (after t2 ended), then t0 (after a1 ended); a1 is the loop's, the
    # others threads: the first dispatch finds a1 waiting for t2, which is ready, not in flight
    starts = {"t2": (0.0, 1.0), "a1": (2.0, 3.0), "t0": (4.0, 5.0)}
    events: list[str] = []

    def thread_task(name):
        def run():
            events.append(name)
        return run

    async def a1():
        events.append("a1")
        await asyncio.sleep(0.01)
        events.append("a1 end")

    sched = Scheduler(workers=2, order=ReplayOrder(7, starts))
    sched.register(thread_task("t0"), "t0")
    sched.register(a1, "a1")
    sched.register(thread_task("t2"), "t2")
    sched.start()
    assert events == ["t2", "a1", "a1 end", "t0"]


def test_a_replay_does_not_give_up_on_a_thread_task_while_a_coroutine_runs():
    import asyncio

    # recorded: a0, then a1 (after a0 ended), then t2 (after a1 ended): while a0 runs, t2 waits
    # for a1, which waits for a0 on the dispatcher; no worker is busy, but the loop is
    starts = {"a0": (0.0, 1.0), "a1": (2.0, 3.0), "t2": (4.0, 5.0)}
    events: list[str] = []

    async def a0():
        events.append("a0")
        await asyncio.sleep(0.05)
        events.append("a0 end")

    async def a1():
        events.append("a1")
        await asyncio.sleep(0.01)
        events.append("a1 end")

    sched = Scheduler(workers=2, order=ReplayOrder(7, starts))
    sched.register(a0, "a0")
    sched.register(a1, "a1")
    sched.register(lambda: events.append("t2"), "t2")
    sched.start()
    assert events == ["a0", "a0 end", "a1", "a1 end", "t2"]
