"""Async task benchmarks: coroutines run by our Scheduler against asyncio.gather of the same.

The floor is the plain asyncio program: ``asyncio.run`` of an ``asyncio.gather``
of the same coroutines in one loop (a fresh loop each time, as our run starts
one). Ours is ``Scheduler.start()`` on the same coroutines registered as tasks
(the graph built beforehand): its loop thread, dispatcher, records and
capture included. The two run alternately, repeat after repeat; a row shows
the median of the per-pair ratios with their min-max. The sleeping case also
counts the threads the run started: one, the event loop's.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import sys
import threading
import time

from thread_order import Scheduler

NOOPS = 10_000
SLEEPERS = 1_000
SLEEP = 0.05
TARGET_NOOPS = 2.0
TARGET_SLEEP = 1.05


async def noop():
    return None


async def sleeper():
    await asyncio.sleep(SLEEP)


def floor(make, n):
    """Seconds of asyncio.run(gather(n coroutines)), a fresh loop included."""
    gc.collect()

    async def main():
        await asyncio.gather(*(make() for _ in range(n)))

    t0 = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t0


def ours(make, n, async_limit, threads=None):
    """Seconds of Scheduler.start() running n coroutine tasks (registered beforehand)."""
    gc.collect()
    sched = Scheduler(async_limit=async_limit)
    register = sched.register
    first = make
    if threads is not None:
        async def counting():  # the first of the n also counts the threads the run started, while they run
            threads.append((sum(1 for t in threading.enumerate() if t not in before),
                            os_threads() - before_os))
            return await make()

        before = set(threading.enumerate())
        before_os = os_threads()
        first = counting
    register(first, "t0")
    for i in range(1, n):
        register(make, f"t{i}")
    sched.graph
    t0 = time.perf_counter()
    summary = sched.start()
    elapsed = time.perf_counter() - t0
    if len(summary["passed"]) != n:
        raise SystemExit(f"benchmark run lost tasks: {summary['text']}")
    return elapsed


def os_threads() -> int:
    """The threads of this process as the OS counts them (Linux), or -1 where it cannot be told."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def paired(measure, repeat):
    """Interleaved repeats: (median floor, median ours, median ratio, min ratio, max ratio)."""
    base, mine, ratios = [], [], []
    for i in range(repeat):
        order = ("floor", "ours") if i % 2 == 0 else ("ours", "floor")
        got = {side: measure(side) for side in order}
        base.append(got["floor"])
        mine.append(got["ours"])
        ratios.append(got["ours"] / got["floor"])
    return statistics.median(base), statistics.median(mine), statistics.median(ratios), min(ratios), max(ratios)


def main(quick: bool = False):
    repeat = 3 if quick else 31  # short runs: more pairs steady the median on a busy machine
    rows = []
    rows.append((f"{NOOPS:,} no-op coroutines (async_limit=100)", *paired(
        lambda side: floor(noop, NOOPS) if side == "floor" else ours(noop, NOOPS, 100), repeat),
        TARGET_NOOPS))
    threads: list[int] = []
    rows.append((f"{SLEEPERS:,} coroutines sleeping {SLEEP * 1000:g} ms (async_limit={SLEEPERS:,})", *paired(
        lambda side: floor(sleeper, SLEEPERS) if side == "floor" else ours(sleeper, SLEEPERS, SLEEPERS, threads),
        repeat), TARGET_SLEEP))
    return rows, {"repeat": repeat, "threads": max(t for t, _ in threads), "os_threads": max(o for _, o in threads)}


def print_table(rows, extra) -> bool:
    print(f"Async tasks: Scheduler vs asyncio.run(asyncio.gather(...)) of the same coroutines; "
          f"median of {extra['repeat']} interleaved repeats, ratio min-max")
    print(f"{'case':<50} {'gather':>10} {'ours':>10} {'ratio':>7} {'min-max':>11} {'target':>7}  ok")
    ok_all = True
    for label, base, mine, ratio, lo, hi, target in rows:
        ok = ratio <= target
        ok_all &= ok
        print(f"{label:<50} {base:>9.3f}s {mine:>9.3f}s {ratio:>6.2f}x {lo:>5.2f}-{hi:<5.2f} "
              f"{target:>6.2f}x  {'yes' if ok else 'NO'}")
    ok = extra["threads"] == 1
    ok_all &= ok
    print(f"{'threads the sleeping run ran its tasks on':<50} {'':>10} {extra['threads']:>10} {'':>7} {'':>11} "
          f"{1:>7}  {'yes' if ok else 'NO'}")
    print(f"  all the threads it started, as the OS counts them: {extra['os_threads']} (its event loop's, and "
          "the reader of the signals' wakeup fd)")
    return ok_all


if __name__ == "__main__":
    rows, extra = main(quick="--quick" in sys.argv)
    print_table(rows, extra)
