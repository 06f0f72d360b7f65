"""The pool hand-off: a worker ending an attempt in a full pool starts the task named next there.

The dispatcher (``GateMethods`` in gate.py, which inherits these) names, in
each full pool without a rate, the first tasks of its line: they leave the
pool's heap for its ``next`` list (highest first), shared with the workers
under the run's handshake lock. A worker ending an attempt in that pool pops
the lowest name and starts it itself, the slot passing from one task to the
other, and leaves ``(ended, started)`` in ``taken`` for the dispatcher to
account for. Names are topped up as they are used (every name comes before
every task left in the heap), admitted by the dispatcher into slots freed
another way, and taken back -- those no worker took wait in line again -- when
a task joins the line ahead of one of them or the run is stopped.
"""

from __future__ import annotations

from heapq import heappop, heappush
from typing import Any

from .events import EventKind

__all__ = ["HandoffMethods"]

_TASK_STARTED = EventKind.TASK_STARTED

#: a task's state at the gate (``Gate.state``): waiting in line, or holding its slots
_WAITING, _HOLDING = 1, 2

#: how many tasks of a pool's line are named next, per slot of the pool
_NAMED = 16


class HandoffMethods:
    """The dispatcher's side of the pool hand-off, for a ``dispatch.Run`` (through gate.GateMethods)."""

    def _name_next(self) -> None:
        """Name, in each full pool without a rate, the first tasks of its line a worker ending
        an attempt there may start itself (a few times as many as the pool has slots, so the
        workers do not run out of names between two turns of the dispatcher).

        A named task leaves its pool's heap (it waits in ``next`` instead), so that topping
        the names up costs a heap pop per new name and nothing for the names already given;
        ``_collect_handoffs`` puts back in line those no worker took."""
        pgate = self.pool_gate
        state, simple, options = pgate.state, pgate.simple, self.options
        for p in pgate.handing:
            want = min(_NAMED * p.size, p.waiting)
            named = p.next
            if not p.waiting or p.in_use < p.size or 2 * len(named) >= want:
                continue  # nobody to name, the dispatcher admits them itself, or all named already
            if p.taken:
                self._account_taken(p)  # what workers took is running, not waiting
            # the line's next tasks after those named already, smallest first; an entry of a
            # task no longer waiting is dropped on the way
            heads = []
            queue, attempts = p.queue, self.attempts
            more = want - len(named)
            # every name comes before every task left in the heap: an entry at or below the
            # highest name (a task in the heap twice) is not named again
            try:
                last = named[0][0] if named else -1
            except IndexError:  # workers took the last names meanwhile
                last = -1
            while queue and len(heads) < more:
                idx = queue[0]
                if state[idx] != _WAITING or idx <= last:
                    heappop(queue)
                    continue
                if simple[idx] is not p or options[idx].timeout is not None or options[idx].is_async:
                    break  # it goes first, through the dispatcher: nobody behind it is named
                heappop(queue)
                last = idx
                heads.append((idx, attempts[idx] + 1))
            if heads:
                heads.reverse()
                with self.handshake:
                    if not self.stop_requested:
                        p.next[:0] = heads  # highest first: workers pop the lowest
                        pgate.named = True
                        heads = None
                if heads:  # stopped meanwhile: nobody is named, they wait in line again
                    for idx, _ in heads:
                        heappush(queue, idx)

    def _account_taken(self, p: Any) -> None:
        """Account for the tasks workers started from the names of pool ``p``."""
        with self.handshake:
            taken = p.taken
            p.taken = []
        for ended, job in taken:
            if job.handed != 2:  # (most were accounted for as their worker's message came)
                self._take_handoff(ended, job)

    def _admit_named(self) -> None:
        """Account for the hand-offs workers made, and admit the named tasks of each pool
        into the slots it has free, lowest first, as a worker taking them would."""
        pgate = self.pool_gate
        taken, picked = [], []
        with self.handshake:
            named = False
            for p in pgate.handing:
                if p.taken:
                    taken += p.taken
                    p.taken = []
                free = p.size - p.in_use
                while p.next and free > 0:
                    picked.append((p, p.next.pop()[0]))
                    free -= 1
                named = named or bool(p.next)
            pgate.named = named
        for ended, job in taken:
            if job.handed != 2:  # (most were accounted for as their worker's message came)
                self._take_handoff(ended, job)
        state = pgate.state
        for p, idx in picked:
            state[idx] = _HOLDING
            p.in_use += 1
            p.waiting -= 1
            pgate.waiting -= 1
            pgate.changed = True
            pgate.held_for[idx] = pgate.blocker[idx] or p.name
            pgate.blocker[idx] = None
            heappush(self.ready, self._ready_key(idx))

    def _collect_handoffs(self) -> None:
        """Take back every name (the tasks no worker took wait in line again), and account
        for the tasks workers started from them."""
        pgate = self.pool_gate
        taken = []
        back = []
        with self.handshake:
            for p in pgate.handing:
                if p.taken:
                    taken += p.taken
                    p.taken = []
                if p.next:
                    back.append((p, p.next))
                    p.next = []
            pgate.named = False
        for ended, job in taken:
            if job.handed != 2:  # (most were accounted for as their worker's message came)
                self._take_handoff(ended, job)
        state = pgate.state
        for p, names in back:
            queue = p.queue
            for idx, _ in names:
                if state[idx] == _WAITING:
                    heappush(queue, idx)

    def _take_handoff(self, ended: int, job: Any) -> None:
        """Account for ``job``, started by the worker that ended ``ended`` (once)."""
        if job.handed == 2:
            return  # accounted for already
        job.handed = 2
        idx = job.idx
        self.where[idx] = self.RUNNING
        self.attempts[idx] = job.attempt
        self.inflight += 1
        if job.attempt <= self.options[idx].retries:
            heappush(self.retry_heap, idx)
        pgate = self.pool_gate
        state = pgate.state
        if state[ended] == _HOLDING and pgate.of[ended] is not None and len(pgate.of[ended]) == 1:
            # transfer(), inline for the common case: the ended task was in this pool alone
            p = pgate.simple[idx]
            state[ended] = 0
            state[idx] = _HOLDING
            pgate.waiting -= 1
            p.waiting -= 1
            pgate.changed = True
            pgate.held_for[idx] = pgate.blocker[idx] or p.name
            pgate.blocker[idx] = None
        else:
            pgate.transfer(ended, idx)
        if self.events._subs[_TASK_STARTED]:
            self.events.emit_task(_TASK_STARTED, self.names[idx], None, job.attempt)
