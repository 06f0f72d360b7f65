"""The gate a task in a pool passes before it starts, during one run (pools.py declares pools).

The gate (:class:`Gate`) lives on the dispatcher thread, like the rest of a
run's bookkeeping, so it needs no lock. Its invariants:

- A ready task in a pool waits here, not on a worker thread, and not in the
  run's ready heap: tasks outside its pools start past it (no head-of-line
  blocking across pools).
- Within a pool, waiting tasks are admitted in registration order, and a task
  is admitted only when it is first in line in *every* one of its pools: a
  later task never overtakes an earlier one in a pool they share, so a task in
  several pools cannot starve (the lowest waiting index is always first in
  line everywhere it waits, and its pools drain as their holders end).
- A slot is taken at admission and given back when the attempt ends — passed,
  failed, timed out (at the timeout: see ``release``), dropped by a stop — and
  whatever is still held when the task is final is given back then, so a slot
  cannot outlive its task.
- The pool hand-off (handoff.py): a worker that ends an attempt in a full pool
  may start, itself, the task the gate has named next in that pool's line
  (``_PoolState.next``, filled by the dispatcher in line order, a few names
  per slot, topped up as they are used), its slot passing from one task to
  the other without a round trip through the dispatcher. Only tasks in that
  one pool, with no rate and no timeout, are named; a slot freed another way
  goes to the lowest name, as a worker would take it; the names are taken back
  (under the run's handshake lock, with the tasks workers took meanwhile
  accounted for) when a task joins the line ahead of one of them or the run is
  stopped. With one worker nothing is named, so the start order stays the one
  the dispatcher alone would choose.
- A rate of N per period paces starts evenly, one every period/N on a fixed
  grid (a late start lets the next ones catch up, so delays do not add up; a
  pool idle for a whole period starts a new grid), and caps them exactly: it
  counts real starts (the worker's clock, reported back as the attempt
  begins), and a task is admitted only if the starts known within the last
  period, plus the admitted attempts that have not reported their start yet,
  leave room, so no window of the period ever holds more than N starts. A pool
  out of rate tells the dispatcher when it will have room, and the dispatcher
  sleeps on its timer heap until then.
"""

from __future__ import annotations

import bisect
import heapq
from heapq import heappush
import math
import time
from typing import Any, Mapping, Sequence

from .events import EventKind
from .handoff import _HOLDING, _WAITING, HandoffMethods
from .lanes import TIMER_GATE as _TIMER_GATE
from .model import TaskRecord as _TaskRecord
from .model import TaskStatus
from .pools import Pool, pool_summary

__all__ = ["Gate", "GateMethods"]

_POOL_WAITING, _TASK_STARTED = EventKind.POOL_WAITING, EventKind.TASK_STARTED
_PASSED = TaskStatus.PASSED
_now = time.time




class _PoolState:
    """One pool during one run."""

    __slots__ = ("name", "size", "count", "period", "interval", "next_at", "in_use", "queue",
                 "waiting", "starts", "pending", "timer_at", "next", "taken")

    def __init__(self, pool: Pool) -> None:
        self.name = pool.name
        self.size = pool.size if pool.size is not None else math.inf
        self.count, self.period = pool.rate if pool.rate is not None else (0, 0.0)
        self.interval = self.period / self.count if self.count else 0.0
        self.next_at: float | None = None  # the pace: the earliest wall time of the next start
        self.in_use = 0  # slots held: admitted attempts that have not ended
        self.queue: list[int] = []  # waiting task indexes (a heap); stale entries popped lazily
        self.waiting = 0  # tasks really waiting (the queue without its stale entries)
        self.starts: list[float] = []  # known start times within the period, sorted
        self.pending = 0  # admitted attempts whose start is not known yet (rate pools)
        self.timer_at: float | None = None  # wall time of the wake-up asked for, if any
        # the hand-off, shared with the workers under the run's handshake lock: the tasks named
        # next in line as (index, attempt), highest first (a worker pops the lowest), and the
        # (ended, started) pairs of hand-offs the dispatcher has not accounted for yet
        self.next: list[tuple[int, int]] = []
        self.taken: list[tuple[int, int]] = []

    def rate_room(self, now: float) -> float | None:
        """None if one more start fits in the rate, else the wall time it will (inf: when a
        pending start is reported)."""
        if self.next_at is not None and now < self.next_at:
            return self.next_at
        starts = self.starts
        floor = now - self.period
        if starts and starts[0] <= floor:
            del starts[:bisect.bisect_right(starts, floor)]
        used = len(starts) + self.pending
        if used < self.count:
            return None
        # the oldest known starts must leave the window until used < count
        k = used - self.count  # index of the known start whose expiry makes room
        if k >= len(starts):
            return math.inf
        return starts[k] + self.period

    def paced(self, now: float) -> None:
        """A start was admitted at ``now``: the next one is due an interval later on the same
        grid, so that wake-up delays (a loaded machine, a slow subscriber) do not add up over
        a long run — a late start lets the next ones catch up, within the cap; a pool that fell
        a whole period behind (it was idle) starts a new grid from now."""
        due = self.next_at
        self.next_at = (due if due is not None and now - due < self.period else now) + self.interval


class Gate:
    """The pools of one run of ``n`` tasks, and the tasks waiting for them (dispatcher
    thread only)."""

    def __init__(self, pools: Mapping[str, Pool], task_pools: Sequence[tuple[str, ...]]) -> None:
        self.declared = dict(pools)
        self.pools = {name: _PoolState(pool) for name, pool in pools.items()}
        n = len(task_pools)
        # worked out once per distinct list of pools, then mapped over the tasks at C speed
        groups = {names: tuple(self.pools[name] for name in names) or None for names in set(task_pools)}
        #: per task index: its pools' states (None for a task in no pool)
        self.of: list[tuple[_PoolState, ...] | None] = list(map(groups.__getitem__, task_pools))
        alone = {names: ps[0] if ps is not None and len(ps) == 1 and not ps[0].count else None
                 for names, ps in groups.items()}
        #: per task index: its pool when it is in exactly one, without a rate (the quick path)
        self.simple: list[_PoolState | None] = list(map(alone.__getitem__, task_pools))
        rated = {names for names, ps in groups.items() if ps and any(p.count for p in ps)}
        self.rated = frozenset(i for i, names in enumerate(task_pools) if names in rated) if rated else frozenset()
        #: pools a worker may hand a slot on in (no rate)
        self.handing = [p for p in self.pools.values() if not p.count]
        self.named = False  # some pool has tasks named next, or hand-offs not accounted for
        # pool -> [waits, longest, total] of attempts that waited
        self.tally: dict[str, list] = {name: [0, 0.0, 0.0] for name in pools}
        self.repeated = False  # a retry waited: the records keep only the last attempt's wait
        self.state = bytearray(n)  # per task: 0, _WAITING or _HOLDING
        # per task (lists: cheaper than dicts on the hot path): when its attempt became ready,
        # the pool that kept it waiting last, and, once admitted after waiting, that pool
        self.ready_at: list[float] = [0.0] * n
        self.blocker: list[str | None] = [None] * n
        self.held_for: list[str | None] = [None] * n
        self.unbegun: set[int] = set()  # rated attempts admitted whose start is not known yet
        self.dirty: set[_PoolState] = set()  # pools whose room or line changed since the last pump
        self.changed = True  # waiting counts changed since the last look (for the live view)
        self.waiting = 0  # tasks waiting for a pool

    # ---------------------------------------------------------------- the dispatcher's hooks

    def enter(self, idx: int) -> bool:
        """``idx`` is ready: True if it may start now (it holds its slot), else it waits in
        line in each of its pools and ``pump`` lets it in later."""
        p = self.simple[idx]
        if p is not None:  # the quick path: one pool, no rate
            if p.in_use < p.size and not p.waiting:
                p.in_use += 1
                self.state[idx] = _HOLDING
                return True
            self.state[idx] = _WAITING
            self.waiting += 1
            self.ready_at[idx] = _now()
            heappush(p.queue, idx)
            p.waiting += 1
            if p.in_use < p.size:  # (a full pool is looked at again when a slot comes back)
                self.dirty.add(p)
            self.changed = True
            return False
        self.state[idx] = _WAITING
        self.waiting += 1
        self.ready_at[idx] = time.time()
        for p in self.of[idx]:
            heapq.heappush(p.queue, idx)
            p.waiting += 1
            self.dirty.add(p)
        self.changed = True
        return False

    def pump(self) -> tuple[list[int], float | None]:
        """Admit every task that may start now; returns ``(admitted, the earliest wall time
        a rate will have room, or None)``."""
        out: list[int] = []
        wake = None
        dirty = self.dirty
        state = self.state
        simple = self.simple
        now = None
        while dirty:
            p = dirty.pop()
            if p.next:
                continue  # full, and its next tasks are named: the hand-off starts them
            queue = p.queue
            while queue:
                idx = queue[0]
                if state[idx] != _WAITING:
                    heapq.heappop(queue)  # admitted through another pool, or final
                    continue
                if simple[idx] is p:  # the quick path: this pool alone, no rate
                    if p.in_use >= p.size:
                        self.blocker[idx] = p.name
                        break
                    heapq.heappop(queue)
                    p.in_use += 1
                    p.waiting -= 1
                    self._admitted(idx, p.name)
                    out.append(idx)
                    continue
                mine = self.of[idx]
                blocked = None
                for q in mine:
                    if q.in_use >= q.size:
                        blocked = q
                        break
                    if q is not p:
                        head = q.queue
                        while head and state[head[0]] != _WAITING:
                            heapq.heappop(head)
                        if head[0] != idx:  # an earlier task waits in q: it goes first
                            blocked = q
                            break
                    if q.count:
                        if now is None:
                            now = time.time()
                        at = q.rate_room(now)
                        if at is not None:
                            blocked = q
                            if at != math.inf and (q.timer_at is None or q.timer_at > at):
                                q.timer_at = at
                                wake = at if wake is None else min(wake, at)
                            break
                if blocked is not None:
                    self.blocker[idx] = blocked.name
                    break
                # admitted: a slot in every pool, and its place in every line given up
                heapq.heappop(queue)
                for q in mine:
                    q.in_use += 1
                    q.waiting -= 1
                    if q.count:
                        q.pending += 1
                        q.paced(now)
                    if q is not p:
                        dirty.add(q)  # its line moved on
                if idx in self.rated:
                    self.unbegun.add(idx)
                self._admitted(idx, p.name)
                out.append(idx)
        if len(out) > 1:
            out.sort()
        return out, wake

    def _admitted(self, idx: int, pool: str) -> None:
        self.state[idx] = _HOLDING
        self.waiting -= 1
        self.changed = True
        # the pool named is the one that kept it waiting last; one it waited in line in when
        # it waited behind a task that was kept waiting
        self.held_for[idx] = self.blocker[idx] or pool
        self.blocker[idx] = None

    def release(self, idx: int, started: bool = True) -> None:
        """The attempt of ``idx`` ended: give its slots back.

        ``started`` False: the attempt never began (dropped by a stop, timed out before a
        worker picked it up), so no start will be reported for its rate.
        """
        if self.state[idx] != _HOLDING:
            return
        self.state[idx] = 0
        for p in self.of[idx]:
            p.in_use -= 1
            if p.waiting:
                self.dirty.add(p)
        if not started and idx in self.unbegun:
            self.unbegun.discard(idx)
            for p in self.of[idx]:
                if p.count:
                    p.pending -= 1
                    self.dirty.add(p)

    def transfer(self, ended: int, started: int) -> None:
        """A worker ended ``ended`` and started ``started``, named next in their pool: the
        slot passes from one to the other."""
        p = self.simple[started]
        if self.state[ended] == _HOLDING:
            self.state[ended] = 0
            for q in self.of[ended]:
                if q is not p:
                    q.in_use -= 1
                    if q.waiting:
                        self.dirty.add(q)
        else:  # pragma: no cover - a hand-off is refused to an attempt that no longer holds
            p.in_use += 1
        self.state[started] = _HOLDING
        self.waiting -= 1
        p.waiting -= 1
        self.changed = True
        self.held_for[started] = self.blocker[started] or p.name
        self.blocker[started] = None

    def began(self, idx: int, at: float) -> None:
        """A rated attempt of ``idx`` began at ``at`` (the worker's clock)."""
        for p in self.of[idx]:
            if p.count:
                bisect.insort(p.starts, at)
                if idx in self.unbegun:
                    p.pending -= 1
                self.dirty.add(p)
        self.unbegun.discard(idx)

    def final(self, idx: int) -> None:
        """``idx`` is final: whatever it held is given back, and it leaves every line."""
        st = self.state[idx]
        if st == _HOLDING:
            self.release(idx, started=False)
        elif st == _WAITING:
            self.state[idx] = 0
            self.waiting -= 1
            self.blocker[idx] = None
            for p in self.of[idx]:
                p.waiting -= 1
                self.dirty.add(p)  # its place in line is free: the next one may go
            self.changed = True
        self.held_for[idx] = None

    def timer(self) -> None:
        """A wake-up asked for by ``pump`` is due: look at the rated pools again (``pump``
        asks for another if the clock says it came early)."""
        for p in self.pools.values():
            if p.timer_at is not None:
                p.timer_at = None
                self.dirty.add(p)

    # ---------------------------------------------------------------- readers

    def lowest_waiting(self) -> int | None:
        """The lowest index waiting in any pool."""
        if not self.waiting:
            return None
        low = None
        state = self.state
        for p in self.pools.values():
            queue = p.queue
            while queue and state[queue[0]] != _WAITING:
                heapq.heappop(queue)
            if queue and (low is None or queue[0] < low):
                low = queue[0]
            named = p.next  # named tasks wait out of the heap (workers pop them meanwhile)
            if named:
                try:
                    first = named[-1][0]
                except IndexError:
                    continue
                if low is None or first < low:
                    low = first
        return low

    def waiting_counts(self) -> dict[str, int]:
        """Tasks waiting, per pool (a task in two pools counts in both)."""
        return {name: p.waiting for name, p in self.pools.items()}

    def wait_of(self, idx: int, started: float | None) -> tuple[float, str | None]:
        """``(seconds between ready and started, the pool that kept it waiting)`` of the
        attempt of ``idx`` that just ended; ``(0.0, None)`` if no pool kept it waiting."""
        pool = self.held_for[idx]
        if pool is None:
            return 0.0, None
        self.held_for[idx] = None
        waited = max(started - self.ready_at[idx], 0.0) if started is not None else 0.0
        tally = self.tally.get(pool)
        if tally is None:
            tally = self.tally[pool] = [0, 0.0, 0.0]  # attempts that waited, longest, total
        tally[0] += 1
        tally[2] += waited
        if waited > tally[1]:
            tally[1] = waited
        return waited, pool

    def summary(self, records: Sequence[Any]) -> dict[str, dict[str, Any]]:
        """Per pool: its ``size`` and ``rate``, how many tasks ``waited`` for it (their last
        attempt, as the records say), the ``longest`` wait and the ``total`` (seconds)."""
        out = {name: {**pool.to_dict(), "waited": 0, "longest": 0.0, "total": 0.0}
               for name, pool in self.declared.items()}
        if not self.repeated:
            for name, (n, longest, total) in self.tally.items():  # no retried wait: the tally is it
                out[name].update(waited=n, longest=longest, total=total)
            return out
        return pool_summary(self.declared, records)


class GateMethods(HandoffMethods):
    """The dispatcher's side of the pools' gate, for a ``dispatch.Run`` (which inherits these)."""

    #: per task, True for a coroutine (an ``aio.AsyncRun`` with a gate sets it): admitted, it
    #: goes to the event loop's ready heap, not the workers'
    pooled_async: list[bool] | None = None

    def _pump(self) -> None:
        """Let the tasks whose pools have room into the ready heap; sleep on the timer heap
        until a rate has room again; name the next tasks of full pools for the hand-off; tell
        the live view how many wait."""
        pgate = self.pool_gate
        if pgate.dirty:
            if pgate.named:  # slots given back in a pool with names: the names go first
                self._admit_named()
            admitted, wake = pgate.pump()
            coro = self.pooled_async  # per task: a coroutine, to the loop's heap (aio.py), or None
            for idx in admitted:
                if self.where[idx] == self.READY:
                    heapq.heappush(self.ready if coro is None or not coro[idx] else self.ready_async,
                                   self._ready_key(idx))
            if wake is not None:
                self._add_timer(time.monotonic() + max(wake - time.time(), 0.0), _TIMER_GATE, None)
        if (pgate.waiting and self.width > 1 and self.at is None and self.executor is None
                and self.events.task_quiet and not self.stop_requested):
            # (a plan, order.py, orders starts itself; an executor has no lanes to hand on)
            self._name_next()
        if pgate.changed:
            pgate.changed = False
            if self.events._subs[_POOL_WAITING]:
                self.events.emit(_POOL_WAITING, data={"waiting": pgate.waiting_counts()})

    def _waits_for_pool(self, idx: int) -> None:
        """``idx`` got in line at the gate (``Gate.enter`` said it may not start yet)."""
        pgate = self.pool_gate
        if self.attempts[idx]:
            pgate.repeated = True  # a retry waits: its record keeps this wait, not the first
        if pgate.named:
            # it joined a line whose next tasks are named: the names are taken back if it
            # comes before one of them (behind them all, they are still first in line)
            for p in pgate.of[idx]:
                named = p.next
                if named:
                    try:
                        last = named[0][0]  # the highest named (workers pop the lowest)
                    except IndexError:  # a worker took the last name meanwhile
                        continue
                    if idx < last:
                        self._collect_handoffs()
                        return

    def _ready_key(self, idx: int) -> int:
        """The ready heap's key of ``idx``: its rank under a plan (order.py), ``idx - n`` for a
        task to start first, else its index."""
        if self.at is not None:
            return self.rank[idx]
        first = self.first
        return idx - self.n if first is not None and first[idx] else idx

    def _pooled_done(self, msg: tuple) -> None:
        """MSG_DONE of a task in a pool: its slots go back (or on, to the task its worker
        started next), its record says how long it waited."""
        _, job, ok, value, error, started, duration, output, thread, nxt = msg
        idx = job.idx
        pgate = self.pool_gate
        state = pgate.state
        if nxt is not None and nxt.handed:
            if nxt.handed == 1:
                p = pgate.simple[idx]
                if p is not None and state[idx] == _HOLDING and not self.events._subs[_TASK_STARTED]:
                    # _take_handoff(), inline for the common case: the slot passes on in the
                    # one pool both are in, and nobody listens to starts
                    nxt.handed = 2
                    w = nxt.idx
                    self.where[w] = self.RUNNING
                    attempt = self.attempts[w] = nxt.attempt
                    self.inflight += 1
                    if attempt <= self.options[w].retries:
                        heappush(self.retry_heap, w)
                    state[idx] = 0
                    state[w] = _HOLDING
                    pgate.waiting -= 1
                    p.waiting -= 1
                    pgate.changed = True
                    blocker = pgate.blocker
                    pgate.held_for[w] = blocker[w] or p.name
                    blocker[w] = None
                else:
                    self._take_handoff(idx, nxt)
            nxt = None  # not a dependent: nothing below applies to it
        if state[idx] == _HOLDING:
            p = pgate.simple[idx]
            if p is None:
                pgate.release(idx)
            else:  # release(), inline for the common case: one pool without a rate
                state[idx] = 0
                p.in_use -= 1
                if p.waiting:
                    pgate.dirty.add(p)
        pool = pgate.held_for[idx]
        if pool is None:
            waited = 0.0
        elif not ok or pgate.repeated:
            waited, pool = pgate.wait_of(idx, started)
        else:  # wait_of(), inline for the common case
            pgate.held_for[idx] = None
            waited = started - pgate.ready_at[idx]
            if waited < 0.0:
                waited = 0.0
            tally = pgate.tally[pool]
            tally[0] += 1
            tally[2] += waited
            if waited > tally[1]:
                tally[1] = waited
        if not ok:
            self._attempt_failed(idx, thread, error, started, duration, output, (waited, pool))
            return
        name = self.names[idx]
        if self.results is not None and nxt is None:
            with self.state_lock:
                self.results[name] = value
        if nxt is not None:
            self.where[nxt.idx] = self.RUNNING
        self._finish(idx, _TaskRecord(
            name, _PASSED, thread, started, started + duration, duration, job.attempt,
            None, None, None, output, None, self.options[idx].tags, False, None, waited, pool,
        ))
        if nxt is not None:
            self._adopt(nxt)
