"""Pools and rate limits: declaring them, and the gate a pooled task passes before it starts.

A pool caps how many of its tasks hold a slot at once (``size``) and how many
start in any window of its period (``rate``, ``"10/s"``). A task may be in
several pools and starts only when all of them have room.

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
- A rate of N per period paces starts evenly, one every period/N on a fixed
  grid (so timer delays do not add up), and caps them exactly: it counts real
  starts (the worker's clock, reported back as the attempt begins), and a task
  is admitted only if the starts known within the last period, plus the
  admitted attempts that have not reported their start yet, leave room, so no
  window of the period ever holds more than N starts. A pool out of rate tells
  the dispatcher when it will have room, and the dispatcher sleeps on its timer
  heap until then.
"""

from __future__ import annotations

import bisect
import heapq
import math
import re
import time
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from .errors import PoolError

__all__ = ["Pool", "Gate", "parse_rate", "pool_of", "parse_pools", "parse_pool_option",
           "pool_names", "check_task_pools", "module_pools", "pool_summary", "RATE_UNITS"]

#: the periods a rate may be given in, in seconds
RATE_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|min|h)\s*$")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


class Pool(NamedTuple):
    """One declared pool: at most ``size`` tasks at once (None: no cap), at most ``rate[0]``
    starts in any ``rate[1]`` seconds (None: no rate)."""

    name: str
    size: int | None = None
    rate: tuple[int, float] | None = None

    @property
    def rate_text(self) -> str | None:
        """The rate as it is written (``"10/s"``), or None."""
        if self.rate is None:
            return None
        n, period = self.rate
        unit = next(u for u, s in RATE_UNITS.items() if s == period)
        return f"{n}/{unit}"

    def describe(self) -> str:
        """``"2"``, ``"4,10/s"``, ``"10/s"``: what ``--pool NAME=...`` takes."""
        parts = [str(self.size)] if self.size is not None else []
        if self.rate is not None:
            parts.append(self.rate_text)
        return ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "rate": self.rate_text}


def parse_rate(text: Any, where: str) -> tuple[int, float]:
    """``"10/s"`` -> ``(10, 1.0)``; ``N/s``, ``N/min``, ``N/h`` with N >= 1.

    Raises:
        PoolError: naming ``where`` (the pool) and what is allowed.
    """
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) < 1:
        raise PoolError(f"{where}: bad rate {text!r}; expected N/s, N/min or N/h with N >= 1")
    return int(m.group(1)), RATE_UNITS[m.group(2)]


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoolError(f"{where}: size must be a whole number >= 1, not {value!r}")
    if value < 1:
        raise PoolError(f"{where}: size must be at least 1, not {value!r}")
    return value


def pool_of(name: Any, value: Any = None, *, size: Any = None, rate: Any = None,
            where: str = "") -> Pool:
    """A checked :class:`Pool` from ``value`` (a size, or ``{"size": .., "rate": ..}``) or
    from ``size=``/``rate=``.

    Raises:
        PoolError: a bad name, a size below 1, a bad rate, neither size nor rate.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, Pool) and value.name == name:
        return value
    if not isinstance(name, str) or not _NAME.match(name):
        raise PoolError(f"{prefix}bad pool name {name!r}; use letters, digits, '_', '.' or '-'")
    label = f"{prefix}pool {name!r}"
    if value is not None:
        if isinstance(value, Mapping):
            unknown = set(value) - {"size", "rate"}
            if unknown:
                raise PoolError(f"{label}: unknown key {sorted(unknown)[0]!r}; allowed: size, rate")
            size, rate = value.get("size"), value.get("rate")
        elif isinstance(value, str):
            return parse_pool_option(f"{name}={value}", where=where)[1]
        else:
            size = value
    if size is None and rate is None:
        raise PoolError(f"{label}: give a size, a rate or both")
    return Pool(name, None if size is None else _size(size, label),
                None if rate is None else parse_rate(rate, label))


def parse_pools(pools: Any, where: str = "") -> dict[str, Pool]:
    """``{"api": 2, "quota": {"size": 4, "rate": "10/s"}}`` -> ``{name: Pool}``.

    Raises:
        PoolError: not a dict, or a bad pool in it (naming ``where`` and the pool).
    """
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        prefix = f"{where}: " if where else ""
        raise PoolError(f"{prefix}pools must be a dict of pool name -> size or "
                        f"{{'size': N, 'rate': 'N/s'}}, not {type(pools).__name__}")
    return {name: pool_of(name, value, where=where) for name, value in pools.items()}


def parse_pool_option(text: str, where: str = "--pool") -> tuple[str, Pool]:
    """``"api=2"``, ``"quota=4,10/s"``, ``"burst=10/s"`` -> ``(name, Pool)``.

    Raises:
        PoolError: naming ``where`` and the text.
    """
    label = f"{where} {text!r}" if where else repr(text)
    name, eq, spec = text.partition("=")
    name = name.strip()
    if not eq or not name or not spec.strip():
        raise PoolError(f"{label}: expected NAME=SIZE, NAME=SIZE,RATE or NAME=RATE "
                        "(api=2, quota=4,10/s)")
    size = rate = None
    for part in (p.strip() for p in spec.split(",")):
        if "/" in part and rate is None:
            rate = part
        elif part.isdigit() and size is None and rate is None:
            size = int(part)
        else:
            raise PoolError(f"{label}: expected NAME=SIZE, NAME=SIZE,RATE or NAME=RATE "
                            "(api=2, quota=4,10/s)")
    return name, pool_of(name, size=size, rate=rate, where=label)


def module_pools(modules: Iterable[tuple[str, Any]]) -> dict[str, Pool]:
    """The ``POOLS = {...}`` of each module of a suite, combined; a pool two modules declare
    must be declared alike.

    Raises:
        PoolError: a bad ``POOLS`` (naming the file), or two modules declaring one pool
            differently (naming both).
    """
    out: dict[str, Pool] = {}
    where: dict[str, str] = {}
    for path, module in modules:
        declared = getattr(module, "POOLS", None)
        if declared is None:
            continue
        for name, pool in parse_pools(declared, f"{path}: POOLS").items():
            if name in out and out[name] != pool:
                raise PoolError(f"{path}: POOLS: pool {name!r} is {pool.describe()} here but "
                                f"{out[name].describe()} in {where[name]}")
            out.setdefault(name, pool)
            where.setdefault(name, path)
    return out


def pool_summary(pools: Mapping[str, Pool], records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Per pool: its ``size`` and ``rate``, how many tasks ``waited`` for it, the ``longest``
    wait and the ``total`` (seconds) — the summary's and the reports' ``pools``."""
    out = {name: {**pool.to_dict(), "waited": 0, "longest": 0.0, "total": 0.0}
           for name, pool in pools.items()}
    for rec in records:
        if rec is not None and rec.waited_for in out:
            row = out[rec.waited_for]
            row["waited"] += 1
            row["total"] += rec.waited
            row["longest"] = max(row["longest"], rec.waited)
    return out


def pool_names(pool: Any, task: str) -> tuple[str, ...]:
    """``pool=`` of a task (a name or a list of names) as a tuple of distinct names.

    Raises:
        TypeError: not a string or a list of non-empty strings, naming the task.
    """
    if pool is None:
        return ()
    items = [pool] if isinstance(pool, str) else pool
    try:
        names = list(items)
    except TypeError:
        raise TypeError(f"task {task!r}: pool must be a pool name or a list of them, not {pool!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"task {task!r}: pool must hold pool names, got {name!r}")
    return tuple(dict.fromkeys(names))


def check_task_pools(pools: Mapping[str, Pool], task_pools: Sequence[tuple[str, ...]],
                     names: Iterable[str]) -> None:
    """Every pool a task names is declared (``task_pools`` and ``names`` by task position).

    Raises:
        PoolError: ``task 'x' is in unknown pool 'api' (declared: quota)``.
    """
    unknown = {name for group in set(task_pools) for name in group if name not in pools}
    if not unknown:
        return
    for task, group in zip(names, task_pools):
        for name in group:
            if name in unknown:
                declared = ", ".join(sorted(pools)) or "none"
                raise PoolError(f"task {task!r} is in unknown pool {name!r} (declared: {declared})")


# ---------------------------------------------------------------------------------- the gate

_WAITING, _HOLDING = 1, 2


class _PoolState:
    """One pool during one run."""

    __slots__ = ("name", "size", "count", "period", "interval", "next_at", "in_use", "queue",
                 "waiting", "starts", "pending", "timer_at")

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
        grid (so that wake-up delays do not add up over a long run), or an interval from now
        when the pool fell behind its pace by more than that (it was idle)."""
        due = self.next_at
        self.next_at = (due if due is not None and now - due < self.interval else now) + self.interval


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
        self.state = bytearray(n)  # per task: 0, _WAITING or _HOLDING
        self.ready_at: dict[int, float] = {}  # a task waiting: when this attempt became ready
        self.waited: dict[int, tuple[float, str]] = {}  # a task admitted after waiting: (ready_at, pool)
        self.blocker: dict[int, str] = {}  # a task waiting: the pool that kept it waiting last
        self.unbegun: set[int] = set()  # rated attempts admitted whose start is not known yet
        self.dirty: set[_PoolState] = set()  # pools whose room or line changed since the last pump
        self.changed = True  # waiting counts changed since the last look (for the live view)
        self.waiting = 0  # tasks waiting for a pool

    # ---------------------------------------------------------------- the dispatcher's hooks

    def enter(self, idx: int) -> bool:
        """``idx`` is ready: True if it may start now (it holds its slot), else it waits in
        line in each of its pools and ``pump`` lets it in later."""
        p = self.simple[idx]
        if p is not None and p.in_use < p.size and not p.waiting:
            p.in_use += 1
            self.state[idx] = _HOLDING
            return True
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
        self.waited[idx] = (self.ready_at.pop(idx), self.blocker.pop(idx, pool))

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
            self.ready_at.pop(idx, None)
            self.blocker.pop(idx, None)
            for p in self.of[idx]:
                p.waiting -= 1
                self.dirty.add(p)  # its place in line is free: the next one may go
            self.changed = True
        self.waited.pop(idx, None)

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
        return low

    def waiting_counts(self) -> dict[str, int]:
        """Tasks waiting, per pool (a task in two pools counts in both)."""
        return {name: p.waiting for name, p in self.pools.items()}

    def wait_of(self, idx: int, started: float | None) -> tuple[float, str | None]:
        """``(seconds between ready and started, the pool that kept it waiting)`` of the
        attempt of ``idx`` that just ended; ``(0.0, None)`` if no pool kept it waiting."""
        got = self.waited.pop(idx, None)
        if got is None:
            return 0.0, None
        ready, pool = got
        return (max(started - ready, 0.0) if started is not None else 0.0), pool
