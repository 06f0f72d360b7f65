"""Async tasks: the run's event loop, on its own thread, and what runs each attempt there.

The dispatcher (aio.py's ``AsyncRun``) hands ready coroutine tasks to the
run's :class:`EventLoopThread`; the loop starts at most ``async_limit`` at a
time and reports back through the run's inbox, once per loop iteration.

Each attempt is an ``asyncio.Task`` whose context holds its own capture buffer
(capture.py's ``task_buffer``), so concurrent coroutines never mix their
output; a ``timeout=`` cancels it for real (its ``finally`` blocks and
``async with`` exits run); each step of the task's coroutine is timed
(aiostep.py), and the first one that holds the loop longer than
``block_threshold`` is reported once, naming the task.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
import time
from types import CoroutineType
from typing import TYPE_CHECKING

from . import aiostep
from .aiostep import block_message, timed
from .capture import task_buffer
from .events import EventKind
from .lanes import MSG_RUNNING, Lane, describe, joined

if TYPE_CHECKING:
    from .dispatch import Run  # (an aio.AsyncRun, which is one)

__all__ = ["EventLoopThread", "AsyncJob", "LOOP_THREAD", "ASYNC_LOCK_KEY", "CANCEL_GRACE",
           "MSG_ASYNC_DROPPED", "MSG_ASYNC_WARNING", "MSG_ASYNC_BATCH"]

log = logging.getLogger("thread_order")

#: the name of the run's event loop thread: the ``thread`` of every async task's record
LOOP_THREAD = "event_loop"
#: the state key of the run's asyncio.Lock: ``async with state["_async_lock"]:`` guards a
#: coroutine's read-modify-write (``_state_lock`` is a thread lock: held across an ``await``
#: it would stall the loop, and a second coroutine taking it would deadlock it)
ASYNC_LOCK_KEY = "_async_lock"
#: how long a forced stop waits for cancelled coroutines to finish their cleanup
CANCEL_GRACE = 10.0

# messages from the loop to the dispatcher (lanes.py numbers the workers' from 0); the loop
# sends what one of its iterations produced as one MSG_ASYNC_BATCH, a list of the others and of
# the AsyncJobs whose attempts ended (each its own message: how it went is in its fields)
MSG_ASYNC_DROPPED, MSG_ASYNC_WARNING, MSG_ASYNC_BATCH = 11, 12, 13

_OUR_FILES = (__file__, aiostep.__file__)  # frames of ours, above the task's own
_DONE = object()  # a coroutine's first step was its last


_LANE = Lane(0)  # what a forced stop reads of the lane an async job ran on: its name
_LANE.name = LOOP_THREAD


class AsyncJob:
    """One attempt of one async task, handed to the loop (``lanes.Job``'s fields, and the loop's)."""

    __slots__ = ("idx", "attempt", "lane", "abandoned", "done", "started", "direct", "task",
                 "timed_out", "warned", "final",
                 # how the attempt went, set on the loop when it ends: the job itself is then the
                 # message to the dispatcher (no tuple per task for the GC to carry meanwhile)
                 "ok", "value", "error", "began", "duration", "output")

    def __init__(self, idx: int, attempt: int) -> None:
        self.idx = idx
        self.attempt = attempt
        self.lane = _LANE
        self.abandoned = False  # never: a coroutine that times out is cancelled, not abandoned
        self.done = False
        self.started = False  # set by the loop, under the run's handshake, when it commits to it
        self.direct = False
        self.task: asyncio.Task | None = None  # the loop's task running this attempt
        self.timed_out = False  # set on the loop when the timeout cancels it
        self.warned = False  # the blocking-loop warning was sent (once per attempt)
        self.final = False  # its task's last possible attempt (no retry may follow)


def _user_frames(exc: BaseException) -> BaseException:
    """``exc`` with a traceback whose second frame is the task's own (``describe`` drops the first)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_next.tb_frame.f_code.co_filename in _OUR_FILES:
        tb = tb.tb_next
    return exc.with_traceback(tb)


class EventLoopThread:
    """The run's event loop, running forever on its own daemon thread until ``stop()``.

    Everything but ``submit``, ``start`` and ``stop`` runs on the loop thread.
    """

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.threshold = run.s.block_threshold
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=LOOP_THREAD, daemon=True)
        # messages for the dispatcher, sent together once per loop iteration (one wake-up for
        # everything that iteration finished); touched on the loop thread only
        self.outbox: list[tuple] = []
        self.flushing = False
        # jobs handed over and not started yet, and how many run: async_limit caps them here,
        # so the dispatcher may hand over the next ones ahead (see AsyncRun._dispatch)
        self.queued: collections.deque[AsyncJob] = collections.deque()
        self.running = 0
        self.refilling = False  # a _refill is due this loop iteration
        self.limit = run.s.async_limit
        self.options, self.fns, self.state, self.capture = run.options, run.fns, run.state, run.s.capture
        self.names = run.names
        self.context = run.s.task_context  # None unless a front-end wraps each attempt
        self.cancelling: list[str] = []  # what stop() cancelled, for its warning if one hangs
        self.last = False  # the dispatcher handed over its last coroutine (see _flush)
        self.shutting = False  # the loop is shutting down (asked by stop(), or by itself)
        # TASK_RUNNING is announced if someone listened when the run started
        self.announce = bool(run.events._subs[EventKind.TASK_RUNNING])

    def start(self) -> None:
        """Start the loop thread (RuntimeError near the thread limit: the loop is closed then)."""
        try:
            self.thread.start()
        except RuntimeError:
            self.loop.close()
            raise

    def submit(self, jobs: list[AsyncJob], last: bool = False) -> None:
        """Start ``jobs`` on the loop (from the dispatcher: one wake-up per batch).

        ``last``: no coroutine will be handed over after these (see ``_flush``).
        """
        self.loop.call_soon_threadsafe(self._spawn, jobs, last)

    def _spawn(self, jobs: list[AsyncJob], last: bool) -> None:
        self.last = last
        self.queued.extend(jobs)
        self._start_queued()

    def _start_queued(self) -> None:
        queued = self.queued
        run = self.run
        options = self.options
        loop = self.loop
        new_task = asyncio.Task
        attempt = self._attempt
        while queued and self.running < self.limit:
            take = [queued.popleft() for _ in range(min(self.limit - self.running, len(queued)))]
            begin = []
            # decide under the handshake, as a worker does: a forced stop or cancel() either
            # happened before this point (the job is dropped) or after it (it counts as started)
            with run.handshake:
                forced, stopping = run.forced, run.stop_requested
                for job in take:
                    if forced or (stopping and not options[job.idx].always):
                        job.done = True
                    else:
                        job.started = True
                        begin.append(job)
            self.running += len(begin)
            names = self.names
            if loop.get_task_factory() is None:  # the Task itself, without create_task's layer
                for job in begin:
                    job.task = new_task(attempt(job), loop=loop, name=names[job.idx])  # the job keeps it
            else:  # a task factory someone set on the run's loop: ours go through it too
                for job in begin:
                    job.task = loop.create_task(attempt(job), name=names[job.idx])
            if len(begin) < len(take):
                for job in take:
                    if job.done:
                        self._send((MSG_ASYNC_DROPPED, job))

    def _send(self, msg: tuple | AsyncJob) -> None:
        self.outbox.append(msg)
        if not self.flushing:
            self.flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flushing = False
        box, self.outbox = self.outbox, []
        self.run.inbox.put((MSG_ASYNC_BATCH, box))
        if self.last and not self.running and not self.queued and not self.shutting:
            # the run's last coroutine has ended and nothing else runs: shut down now, while the
            # dispatcher records it, rather than be woken by stop() for it afterwards
            self._begin_shutdown()

    def blocked(self, job: AsyncJob, held: float) -> None:
        """A step of ``job`` held the loop for ``held`` seconds: tell the dispatcher, once."""
        if not job.warned:
            job.warned = True
            self._send((MSG_ASYNC_WARNING, job, block_message(held, self.threshold)))

    def _ended(self) -> None:
        self.running -= 1
        if self.queued and not self.refilling:  # the slots freed in one iteration, refilled at once
            self.refilling = True
            self.loop.call_soon(self._refill)

    def _refill(self) -> None:
        self.refilling = False
        self._start_queued()

    def _expire(self, job: AsyncJob) -> None:
        job.timed_out = True
        if job.task is not None:
            job.task.cancel()

    async def _attempt(self, job: AsyncJob) -> None:
        idx = job.idx
        opts = self.options[idx]
        if self.announce:
            self._send((MSG_RUNNING, job, LOOP_THREAD))
        mine: list[str] | None = None
        if self.capture:
            mine = []
            task_buffer.set(mine)  # this task's own context: concurrent coroutines never mix
        timer = entered = None
        failure: BaseException | None = None  # what the task's context is told on exit
        if opts.timeout is not None:
            timer = self.loop.call_later(opts.timeout, self._expire, job)
        if self.context is not None:  # front-end code around each attempt (engine/context.py)
            entered = self.context(self.names[idx], job.attempt)
            entered.__enter__()
        perf = time.perf_counter
        t0 = perf()
        error = None
        try:
            fn = self.fns[idx]
            value = fn(self.state) if opts.with_state else fn()
            threshold = self.threshold
            if type(value) is CoroutineType and threshold is not None:
                # its first step here (most no-op coroutines end in it), the rest through timed
                try:
                    first = value.send(None)
                except StopIteration as stop:
                    value = stop.value
                    first = _DONE
                held = perf() - t0  # (with the call that made the coroutine: it held the loop too)
                if held > threshold:
                    self.blocked(job, held)
                if first is not _DONE:
                    value = await timed(value, first, job, self, threshold)
            elif inspect.isawaitable(value):  # not timed: another kind of awaitable
                value = await value
            ok = not job.timed_out
            if not ok:  # it swallowed the cancellation and returned: it still overran
                value = None
                error = ("TimeoutError", f"task {self.names[idx]!r} still running after {opts.timeout:g}s; "
                         "its coroutine was cancelled", None)
        except asyncio.CancelledError as exc:
            failure = exc
            if not job.timed_out:
                self.running -= 1
                raise  # a forced stop: the dispatcher has already recorded it
            ok = False
            value = None
            error = ("TimeoutError", f"task {self.names[idx]!r} still running after {opts.timeout:g}s; "
                     "its coroutine was cancelled (its cleanup ran)", None)
        except GeneratorExit:  # the coroutine is being closed (a loop left behind, collected)
            raise
        except BaseException as exc:  # noqa: B902 - a task may raise anything, even SystemExit
            failure = exc
            ok = False
            value = None
            error = describe(_user_frames(exc))
            del exc
        finally:
            if timer is not None:
                timer.cancel()
            if entered is not None:  # never swallows the task's exception (see context.py)
                entered.__exit__(type(failure) if failure is not None else None, failure,
                                 failure.__traceback__ if failure is not None else None)
                failure = None
        job.duration = perf() - t0
        job.task = None  # nothing left to cancel: the finished Task need not outlive this step
        job.ok, job.value, job.error = ok, value, error
        run = self.run  # the start in epoch seconds, without a second clock call
        job.began = run.started_at + (t0 - run.t0)
        job.output = joined(mine) if mine else ""
        self._ended()
        self._send(job)  # the attempt ended: the job is the message

    def stop(self) -> None:
        """Stop the loop, from the dispatcher, once the run is over.

        Coroutines still running (a forced stop's, and any the tasks started
        themselves) are cancelled, and their cleanup runs before this returns;
        one that ignores cancellation is left behind after ``CANCEL_GRACE``
        seconds with a warning naming it. One hand-off each way: the loop
        shuts itself down and its thread ends, which is what this waits for.
        """
        if not self.thread.is_alive():
            return
        if not self.shutting:  # (else it is shutting itself down: the run's last coroutine ended)
            try:
                self.loop.call_soon_threadsafe(self._begin_shutdown)
            except RuntimeError:  # closed meanwhile: it has shut itself down
                pass
        try:
            self.thread.join(timeout=CANCEL_GRACE)
        except BaseException:  # noqa: B902 - a Ctrl-C while waiting: stop waiting, as for a timeout
            pass
        if self.thread.is_alive():
            log.warning("the event loop did not stop (TimeoutError): a coroutine ignores cancellation; "
                        "left running, among: %s", ", ".join(self.cancelling) or "?")
            self.loop.call_soon_threadsafe(self.loop.stop)

    def _begin_shutdown(self) -> None:
        if not self.shutting:
            self.shutting = True
            if asyncio.all_tasks(self.loop):  # coroutines to cancel: a task does it, awaiting their cleanup
                self.loop.create_task(self._shutdown())
            else:  # nothing left: stop now (_main closes any async generator left open)
                self.loop.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            if self.shutting and getattr(self.loop, "_asyncgens", True) and not self._tasks_pending():
                # stopped with nothing left running, but async generators left open: close them
                try:
                    self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                except RuntimeError:  # one that never ends, and stop() stopped the loop after it
                    pass
        finally:
            if not self._tasks_pending():
                self.loop.close()

    def _tasks_pending(self) -> bool:
        """Tasks still pending (a coroutine ignored cancellation): the loop is left open then."""
        return any(not t.done() for t in asyncio.all_tasks(self.loop))

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        self.cancelling = sorted(t.get_name() for t in others)
        for task in others:
            task.cancel()
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        self.loop.stop()
