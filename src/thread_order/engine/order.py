"""Start-order policies: which ready task starts first (declared, shuffle, critical path, replay).

A policy is turned, for one run, into an :class:`OrderPlan`: a rank per task
(the key of the dispatcher's ready heap, lower starts first) and, for a
replay, a gate. The declared order, today's default, has no plan at all: the
heap is keyed by registration index and nothing else changes.

The dispatcher's two timing-free rules hold under any plan, because both are
stated in ranks rather than indices: a task is queued ahead of a free worker
only when no task that may still become ready has a lower rank, and a worker
starts a single child directly only when nothing else is in flight or ready,
so that child is the only candidate whatever the ranks. A replay also holds
tasks back until what they followed in the recording has finished
(:class:`ReplayGate`); the direct hand-off is off then, as the worker would
pass the gate by.
"""

from __future__ import annotations

import heapq
import itertools
import operator
import random
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .graph import Graph

__all__ = ["ORDERS", "OrderPlan", "ReplayGate", "ReplayOrder", "bound_of", "critical_path_plan",
           "first_in_plan", "graph_changes", "lower_bound", "make_plan", "new_seed", "recorded_bound",
           "replay_plan", "shuffle_plan"]

#: the orders ``Scheduler(order=...)`` and ``tdrun --order`` accept
ORDERS = ("declared", "critical-path")


def new_seed() -> int:
    """A fresh seed for ``--shuffle`` without a value: short enough to type back."""
    return random.SystemRandom().randrange(1, 10**6)


@dataclass(slots=True)
class OrderPlan:
    """A run's start order.

    ``rank[i]`` is task ``i``'s key on the ready heap and ``at[k]`` the task of
    key ``k`` (a permutation and its inverse). A replay also has ``need[i]``:
    how many tasks of ``finish_order`` must be final before task ``i`` may
    start (-1: no constraint); ``info`` is what the summary says about the order.
    """

    rank: list[int]
    at: list[int]
    info: dict[str, Any]
    need: list[int] | None = None
    finish_order: list[int] = field(default_factory=list)


def _ranks(at: list[int]) -> list[int]:
    """The inverse permutation of ``at``: ``rank[at[k]] == k`` (at C speed)."""
    rank = [0] * len(at)
    deque(map(rank.__setitem__, at, range(len(at))), 0)
    return rank


def _plan(keys: Sequence[Any], info: dict[str, Any]) -> OrderPlan:
    at = sorted(range(len(keys)), key=keys.__getitem__)
    return OrderPlan(_ranks(at), at, info)


def shuffle_plan(graph: Graph, seed: int) -> OrderPlan:
    """Ready tasks in an order drawn from ``random.Random(seed)``: the same seed, the same order."""
    at = list(range(len(graph.nodes)))
    random.Random(seed).shuffle(at)
    return OrderPlan(_ranks(at), at, {"order": "shuffle", "seed": seed})


def _weights(graph: Graph, durations: Mapping[str, float] | None) -> list[float]:
    """Each task's expected duration: its entry in ``durations``, else the median of the known ones."""
    durations = durations or {}
    known = [float(v) for v in durations.values() if _finite(v) and v >= 0]
    fallback = statistics.median(known) if known else 1.0
    out = []
    for name in graph.nodes:
        value = durations.get(name)
        out.append(float(value) if _finite(value) and value >= 0 else fallback)
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and value not in (float("inf"), float("-inf"))


def _remaining(graph: Graph, weights: Sequence[float]) -> list[float]:
    """Per task, the heaviest path from its start to the end of the graph (itself included)."""
    cstart, cflat = graph._cstart, graph._cflat
    rem = list(weights)
    if not graph.edge_count:
        return rem
    for v in reversed(graph._order):
        lo, hi = cstart[v], cstart[v + 1]
        if lo != hi:
            rem[v] = weights[v] + max(rem[c] for c in cflat[lo:hi])
    return rem


def critical_path_plan(graph: Graph, durations: Mapping[str, float] | None) -> OrderPlan:
    """The ready task with the longest remaining path first; ties in registration order."""
    weights = _weights(graph, durations)
    rem = _remaining(graph, weights)
    plan = _plan([(-r, i) for i, r in enumerate(rem)], {"order": "critical-path"})
    plan.info["estimated_critical_path"] = max(rem, default=0.0)
    plan.info["known_durations"] = sum(1 for n in graph.nodes if _finite((durations or {}).get(n)))
    return plan


def lower_bound(graph: Graph, durations: Mapping[str, float], workers: int) -> dict[str, float]:
    """``max(critical path, total work / workers)`` of a run, from the durations it had.

    No schedule of these durations on ``workers`` threads can end sooner. A
    task missing from ``durations`` (it did not run) weighs nothing.
    """
    weights = [max(float(durations.get(name) or 0.0), 0.0) for name in graph.nodes]
    return bound_of(graph, weights, workers)


def bound_of(graph: Graph, weights: list[float], workers: int) -> dict[str, float]:
    """:func:`lower_bound` with the durations as a list by task position."""
    critical = max(_remaining(graph, weights), default=0.0)
    work = sum(weights)
    lanes = max(1, min(workers, len(weights)))
    return {"critical_path": critical, "total_work": work, "workers": lanes,
            "lower_bound": max(critical, work / lanes)}


def recorded_bound(nodes: Sequence[str], edges: Iterable[Sequence[str]], durations: Mapping[str, float],
                   workers: int) -> dict[str, float] | None:
    """:func:`lower_bound` of a recorded run (its graph as names and edges); None if it is no DAG."""
    parents: dict[str, list[str]] = {str(n): [] for n in nodes}
    for a, b in edges:
        if a in parents and b in parents:
            parents[b].append(a)
    try:
        graph = Graph(parents.items())
    except ValueError:  # GraphError: a damaged record
        return None
    clean = {name: d for name, d in durations.items() if _finite(d)}
    bound = lower_bound(graph, clean, workers if isinstance(workers, int) and workers > 0 else 1)
    return bound if all(map(_finite, bound.values())) else None


def _analyse(starts: Mapping[str, tuple[float, float]]) -> tuple[list[str], list[int], list[int], list[int]]:
    """(the names, their positions by recorded start, how many had finished before each of them
    started, their positions by recorded finish); positions index the names.

    The tasks finished before a recorded start are a prefix of the tasks sorted
    by recorded finish, so each task's constraint is one number: that prefix's
    length, counted by walking the finishes along the sorted starts (cheaper
    than a binary search per task).
    """
    names = list(starts)
    n = len(names)
    times = list(starts.values())
    began = list(map(_FIRST, times))
    ended = list(map(_SECOND, times))
    by_start = sorted(range(n), key=began.__getitem__)
    by_finish = sorted(range(n), key=ended.__getitem__)
    finish_times = list(map(ended.__getitem__, by_finish))
    need = []
    count = 0
    for start in map(began.__getitem__, by_start):
        while count < n and finish_times[count] < start:
            count += 1
        need.append(count)
    return names, by_start, need, by_finish


_FIRST, _SECOND = operator.itemgetter(0), operator.itemgetter(1)


@dataclass(frozen=True, slots=True)
class ReplayOrder:
    """The recorded start and finish of every task of a run to replay.

    ``starts`` maps a task that started to ``(started_at, finished_at)``
    (epoch seconds). Tasks that never started in the recording (skipped,
    cancelled) or are new have no constraint and start as soon as they are
    ready, before the recorded ones. The recording is analysed once, here,
    so that a run only maps it onto its graph.
    """

    run_id: int | None
    starts: Mapping[str, tuple[float, float]]
    serial: bool = False
    analysis: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "analysis", _analyse(self.starts))


def replay_plan(graph: Graph, replay: ReplayOrder) -> OrderPlan:
    """Ranks by recorded start; each task waits for the tasks that had finished before it started.

    A later start never needs a shorter prefix of the finish order, so when
    the best-ranked ready task must wait, so must the others.
    """
    index = graph._index
    names, by_start, need_of, by_finish = replay.analysis
    try:
        where = list(map(index.__getitem__, names))  # recorded position -> task index
    except KeyError:  # --force: tasks gone since the recording
        names, by_start, need_of, by_finish = _analyse({k: v for k, v in replay.starts.items() if k in index})
        where = list(map(index.__getitem__, names))
    tasks = list(map(where.__getitem__, by_start))
    finish_order = list(map(where.__getitem__, by_finish))
    n = len(graph.nodes)
    at = tasks
    if len(tasks) < n:
        # tasks with no recorded start first, in registration order; then the recorded starts
        seen = set(tasks)
        at = [i for i in range(n) if i not in seen] + tasks
    rank = _ranks(at)
    need = [-1] * n
    deque(map(need.__setitem__, tasks, need_of), 0)
    info = {"order": "replay", "replay_of": replay.run_id, "serial": replay.serial}
    return OrderPlan(rank, at, info, need, finish_order)


class ReplayGate:
    """The worker side of a replay: a task starts once what had finished before it started has.

    The dispatcher hands a replayed task out once every task it waits for has
    been handed out (or is final), not once they have all finished: a round
    trip through the dispatcher per task would make the replay of a run of
    short tasks several times slower than the run. A worker taking a task whose
    turn has not come parks it here and takes the next job; the worker that
    finishes the last task it waited for runs it next (the others it frees go
    back on the queue), so a run whose tasks followed one another is replayed
    without a thread hand-off per task, and nothing parked holds a worker.
    A task that is retried, or a stop, opens the gate for good.
    """

    def __init__(self, plan: OrderPlan, n: int) -> None:
        self.need = plan.need
        self.order = plan.finish_order
        self.end = len(self.order)
        # finished[i]: task i is final. Set without the lock (one list store, atomic), so that
        # finishing a task costs no lock when nothing is parked; prefix, a hint that only ever
        # lags, likewise. What is decided under the lock -- parking a job, freeing jobs --
        # rescans the flags there, and a job is parked only after a scan that follows its push
        # (see admit), so a finish that saw nothing parked cannot strand it.
        self.finished = [False] * n
        self.prefix = 0  # the first `prefix` tasks of `order` have finished (it may lag)
        # guards open and _parked, and the authoritative scans of finished
        self._lock = threading.Lock()
        self.open = False
        self._parked: list[tuple[int, int, Any]] = []  # (need, seq, job), a heap
        self._seq = itertools.count()

    def _scan(self) -> int:
        p = self.prefix
        order, finished = self.order, self.finished
        end = self.end
        while p < end and finished[order[p]]:
            p += 1
        if p > self.prefix:
            self.prefix = p
        return p

    def admit(self, job: Any) -> bool:
        """True if ``job`` may start now; else it is parked until it may."""
        need = self.need[job.idx]
        if need <= self.prefix or self.open:
            return True
        with self._lock:
            if self.open or need <= self._scan():
                return True
            heapq.heappush(self._parked, (need, next(self._seq), job))
            if need <= self._scan():  # a finish between the scan and the push saw nothing parked
                self._unpark(job)
                return True
            return False

    def _unpark(self, job: Any) -> None:
        self._parked = [entry for entry in self._parked if entry[2] is not job]
        heapq.heapify(self._parked)

    def done(self, idx: int) -> Sequence:
        """Task ``idx`` is final (any thread); returns the parked jobs that may start now.

        A worker does the same inline (lanes.py), as this is once per task: the flag first,
        then, if anything is parked, :meth:`release`, else the hint moves on without the lock.
        """
        finished = self.finished
        if finished[idx]:
            return ()
        finished[idx] = True
        if not self._parked:
            self._scan()
            return ()
        return self.release()

    def release(self) -> list:
        """The parked jobs that may start now, taken off the heap (after a task was marked final)."""
        with self._lock:
            p = self._scan()
            parked = self._parked
            freed = []
            while parked and parked[0][0] <= p:
                freed.append(heapq.heappop(parked)[2])
            return freed

    def open_all(self) -> list:
        """From now on nothing waits (a retry the recording cannot order, or a stop);
        returns every parked job, in the order they were handed out."""
        with self._lock:
            self.open = True
            freed = [job for _, _, job in sorted(self._parked, key=lambda entry: entry[1])]
            self._parked.clear()
            return freed


def first_in_plan(plan: OrderPlan, first: Sequence[bool]) -> OrderPlan:
    """``plan`` with the tasks flagged in ``first`` (``--failed-first``) ranked before the others,
    each group in the plan's order."""
    at = [i for i in plan.at if first[i]] + [i for i in plan.at if not first[i]]
    return OrderPlan(_ranks(at), at, plan.info, plan.need, plan.finish_order)


def make_plan(graph: Graph, order: str, shuffle: int | None, durations: Mapping[str, float] | None,
              replay: ReplayOrder | None) -> OrderPlan | None:
    """The plan of a run (None: the declared order, with nothing to do)."""
    if replay is not None:
        return replay_plan(graph, replay)
    if shuffle is not None:
        return shuffle_plan(graph, shuffle)
    if order == "critical-path":
        return critical_path_plan(graph, durations)
    return None


def graph_changes(recorded_nodes: Iterable[str], recorded_edges: Iterable[Sequence[str]],
                  dependencies: Mapping[str, Sequence[str]]) -> dict[str, list]:
    """What changed between a recorded graph and the current one: tasks and edges, added and removed."""
    old_nodes = list(dict.fromkeys(recorded_nodes))
    old_set = set(old_nodes)
    new_nodes = list(dependencies)
    new_set = set(new_nodes)
    old_edges = {(str(a), str(b)) for a, b in recorded_edges}
    new_edges = {(dep, name) for name, after in dependencies.items() for dep in after}
    return {
        "tasks_added": [n for n in new_nodes if n not in old_set],
        "tasks_removed": [n for n in old_nodes if n not in new_set],
        "edges_added": sorted(new_edges - old_edges),
        "edges_removed": sorted(old_edges - new_edges),
    }
