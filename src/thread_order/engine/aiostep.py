"""Async tasks: what times each step of a task's coroutine on the run's event loop (see aio.py).

``timed`` awaits a coroutine as ``await`` would, with a clock around each
step; the first step that holds the loop longer than the run's
``block_threshold`` is reported to the loop (``EventLoopThread.blocked``),
which warns once per task with ``block_message``.
"""

from __future__ import annotations

import time
import types
from typing import Any

__all__ = ["timed", "block_message"]


def block_message(held: float, threshold: float) -> str:
    """The warning of a coroutine step that held the loop for ``held`` seconds."""
    return (f"blocked the event loop for {held * 1000:.0f}ms in one step (threshold "
            f"{threshold * 1000:g}ms): a blocking call (time.sleep, a sync client) stalls every "
            "other coroutine; await an async call or use asyncio.to_thread")


@types.coroutine
def timed(coro: Any, yielded: Any, job: Any, loop: Any, threshold: float):
    """Awaits the rest of ``coro``, whose first step already ran and yielded ``yielded``,
    step by step, timing each step it holds the loop (``await timed(...)``).

    What ``await coroutine`` does (``yield from``, passing sends, throws and
    close through), plus a clock around each step. A generator-based coroutine
    rather than an awaitable class: no object and no ``__await__`` call per
    task, which the loop pays for every coroutine it runs.
    """
    perf = time.perf_counter  # (a module function; no bound method kept across the awaits: one
    # per suspended coroutine would be that many more objects for the GC to look through)
    while True:
        try:
            message = yield yielded
            error = None
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: B902 - CancelledError and friends go to the coroutine
            error = exc
        t0 = perf()
        try:
            yielded = coro.send(message) if error is None else coro.throw(error)
        except StopIteration as stop:
            held = perf() - t0
            if held > threshold:
                loop.blocked(job, held)
            return stop.value
        except BaseException:  # noqa: B902 - the coroutine's own failure, as it is
            held = perf() - t0
            if held > threshold:
                loop.blocked(job, held)
            raise
        held = perf() - t0
        if held > threshold:
            loop.blocked(job, held)
