"""Async tasks in pools: the event loop's side of the pools' gate (gate.py, aio.py).

A coroutine task in a pool waits at the same gate as a thread task, holding
neither a worker nor a place on the event loop: only once its pools have room
does it go to the loop's ready heap (``AsyncRun.ready_async``), in the same
registration order as the threads of its pools, and its slots go back when
the attempt ends on the loop — passed, failed, or timed out (once its
cancellation has run its cleanup). A rate counts the moments coroutines are
handed to the loop, which starts them at once unless ``async_limit`` is
reached.
"""

from __future__ import annotations

import heapq
import time

__all__ = ["AsyncGateMethods"]


class AsyncGateMethods:
    """For an ``aio.AsyncRun`` (which inherits these); dispatcher thread only."""

    def _gate_coroutines(self) -> None:
        """Before the run's loop: tell the pump which admitted tasks are coroutines."""
        if self.pool_gate is not None:
            self.pooled_async = [o.is_async for o in self.options]

    def _ready_coroutine(self, idx: int, key: int) -> None:
        """``idx`` is ready: to the loop's heap under ``key``, or in line at the gate."""
        pgate = self.pool_gate
        if pgate is None or pgate.of[idx] is None or pgate.enter(idx):
            heapq.heappush(self.ready_async, key)
        else:  # it waits at the gate, holding nothing: the pump lets it in (gate.py)
            self._waits_for_pool(idx)

    def _coroutine_launched(self, idx: int) -> None:
        """An admitted coroutine is handed to the loop: a rate counts it as started."""
        pgate = self.pool_gate
        if pgate is not None and idx in pgate.rated:
            pgate.began(idx, time.time())

    def _coroutine_ended(self, idx: int, started: float) -> tuple[float, str | None]:
        """The attempt of ``idx`` ended on the loop: its slots go back; returns its wait
        ``(seconds, pool)``, as a record keeps it (``(0.0, None)`` outside any pool)."""
        pgate = self.pool_gate
        if pgate is None or pgate.of[idx] is None:
            return 0.0, None
        pgate.release(idx)
        return pgate.wait_of(idx, started)
