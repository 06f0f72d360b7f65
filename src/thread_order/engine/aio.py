"""Async tasks: one event loop on one thread per run, and the dispatcher's side of it.

A run with ``async def`` tasks is an :class:`AsyncRun`. Its dispatcher hands
each ready coroutine task to the run's :class:`EventLoopThread` instead of a
worker lane, at most ``async_limit`` at a time, and the loop reports back
through the same inbox the workers use: the dispatcher stays the one owner of
the run's books. Every coroutine of the run runs on that one loop, so a client
bound to it (created by ``setup_state`` or an earlier task) works in every
later task. A run without async tasks is a plain ``Run``: no loop, no thread,
no cost.

On the loop, each attempt is an ``asyncio.Task`` whose context holds its own
capture buffer (capture.py's ``task_buffer``), so concurrent coroutines never
mix their output; a ``timeout=`` cancels it for real (its ``finally`` blocks
and ``async with`` exits run); each step of the task's coroutine is timed, and
the first one that holds the loop longer than ``block_threshold`` is reported
once, naming the task.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import threading
import time
from typing import Any

from .capture import task_buffer
from .dispatch import Run
from .errors import WorkerStartError
from .events import EventKind
from .lanes import MSG_RUNNING, describe, joined
from .model import TaskRecord, TaskStatus

__all__ = ["AsyncRun", "EventLoopThread", "LOOP_THREAD", "ASYNC_LOCK_KEY"]

log = logging.getLogger("thread_order")

#: the name of the run's event loop thread: the ``thread`` of every async task's record
LOOP_THREAD = "event_loop"
#: the state key of the run's asyncio.Lock: ``async with state["_async_lock"]:`` guards a
#: coroutine's read-modify-write (``_state_lock`` is a thread lock: held across an ``await``
#: it would stall the loop, and a second coroutine taking it would deadlock it)
ASYNC_LOCK_KEY = "_async_lock"
#: how long a forced stop waits for cancelled coroutines to finish their cleanup
CANCEL_GRACE = 10.0

# messages from the loop to the dispatcher (lanes.py numbers the workers' from 0)
MSG_ASYNC_DONE, MSG_ASYNC_DROPPED, MSG_ASYNC_WARNING = 10, 11, 12

_PASSED = TaskStatus.PASSED
_K_WARNING = EventKind.TASK_WARNING
_OUR_FILE = __file__
_ABANDONED = "abandoned: still running when the run was stopped"
_CANCELLED_RUNNING = "cancelled: still running when the run was stopped; its coroutine was cancelled"


class _LoopLane:
    """What a forced stop reads of the lane an async job ran on: its name."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = LOOP_THREAD


_LANE = _LoopLane()


class AsyncJob:
    """One attempt of one async task, handed to the loop (``lanes.Job``'s fields, and the loop's)."""

    __slots__ = ("idx", "attempt", "lane", "abandoned", "done", "started", "direct", "task",
                 "timed_out", "warned")

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


def block_message(held: float, threshold: float) -> str:
    """The warning of a coroutine step that held the loop for ``held`` seconds."""
    return (f"blocked the event loop for {held * 1000:.0f}ms in one step (threshold "
            f"{threshold * 1000:g}ms): a blocking call (time.sleep, a sync client) stalls every "
            "other coroutine; await an async call or use asyncio.to_thread")


class _Timed:
    """Awaits a coroutine (or any awaitable) step by step, timing each step it holds the loop.

    What ``await awaitable`` does (``yield from`` its iterator, passing sends,
    throws and close through), plus a clock around each step.
    """

    __slots__ = ("_it", "_job", "_loop")

    def __init__(self, awaitable: Any, job: AsyncJob, loop: "EventLoopThread") -> None:
        self._it = awaitable.__await__()
        self._job = job
        self._loop = loop

    def __await__(self):
        it = self._it
        send, throw = it.send, getattr(it, "throw", None)
        perf = time.perf_counter
        threshold = self._loop.threshold
        message: Any = None
        error: BaseException | None = None
        while True:
            t0 = perf()
            try:
                if error is None:
                    yielded = send(message)
                else:
                    exc, error = error, None
                    if throw is None:
                        raise exc
                    yielded = throw(exc)
            except StopIteration as stop:
                held = perf() - t0
                if threshold is not None and held > threshold:
                    self._loop.blocked(self._job, held)
                return stop.value
            held = perf() - t0
            if threshold is not None and held > threshold:
                self._loop.blocked(self._job, held)
            try:
                message = yield yielded
            except GeneratorExit:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
                raise
            except BaseException as exc:  # noqa: B902 - CancelledError and friends go to the coroutine
                error = exc


def _user_frames(exc: BaseException) -> BaseException:
    """``exc`` with a traceback whose second frame is the task's own (``describe`` drops the first)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None and tb.tb_next.tb_frame.f_code.co_filename == _OUR_FILE:
        tb = tb.tb_next
    return exc.with_traceback(tb)


class EventLoopThread:
    """The run's event loop, running forever on its own daemon thread until ``stop()``.

    Everything but ``submit``, ``start`` and ``stop`` runs on the loop thread.
    """

    def __init__(self, run: "AsyncRun") -> None:
        self.run = run
        self.threshold = run.s.block_threshold
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name=LOOP_THREAD, daemon=True)
        self.tasks: set[asyncio.Task] = set()  # the attempts in progress; touched on the loop only

    def start(self) -> None:
        """Start the loop thread (RuntimeError near the thread limit: the loop is closed then)."""
        try:
            self.thread.start()
        except RuntimeError:
            self.loop.close()
            raise

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, jobs: list[AsyncJob]) -> None:
        """Start ``jobs`` on the loop (from the dispatcher: one wake-up per batch)."""
        self.loop.call_soon_threadsafe(self._spawn, jobs)

    def _spawn(self, jobs: list[AsyncJob]) -> None:
        create = self.loop.create_task
        tasks = self.tasks
        for job in jobs:
            task = job.task = create(self._attempt(job))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def blocked(self, job: AsyncJob, held: float) -> None:
        """A step of ``job`` held the loop for ``held`` seconds: tell the dispatcher, once."""
        if not job.warned:
            job.warned = True
            self.run.inbox.put((MSG_ASYNC_WARNING, job, block_message(held, self.threshold)))

    def _expire(self, job: AsyncJob) -> None:
        job.timed_out = True
        if job.task is not None:
            job.task.cancel()

    async def _attempt(self, job: AsyncJob) -> None:
        run = self.run
        idx = job.idx
        opts = run.options[idx]
        put = run.inbox.put
        # decide under the handshake, as a worker does: a forced stop or cancel() either
        # happened before this point (the job is dropped) or after it (it counts as started)
        with run.handshake:
            if run.forced or (run.stop_requested and not opts.always):
                job.done = True
                drop = True
            else:
                job.started = True
                drop = False
        if drop:
            put((MSG_ASYNC_DROPPED, job))
            return
        if run.events._subs[EventKind.TASK_RUNNING]:
            put((MSG_RUNNING, job, LOOP_THREAD))
        mine: list[str] = []
        if run.s.capture:
            task_buffer.set(mine)  # this task's own context: concurrent coroutines never mix
        timer = None
        if opts.timeout is not None:
            timer = self.loop.call_later(opts.timeout, self._expire, job)
        started = time.time()
        t0 = time.perf_counter()
        error = None
        value = None
        try:
            fn = run.fns[idx]
            value = fn(run.state) if opts.with_state else fn()
            if inspect.isawaitable(value):
                value = await _Timed(value, job, self)
            ok = not job.timed_out
            if not ok:  # it swallowed the cancellation and returned: it still overran
                value = None
                error = ("TimeoutError", f"task {run.names[idx]!r} still running after {opts.timeout:g}s; "
                         "its coroutine was cancelled", None)
        except asyncio.CancelledError:
            if not job.timed_out:
                raise  # a forced stop: the dispatcher has already recorded it
            ok = False
            error = ("TimeoutError", f"task {run.names[idx]!r} still running after {opts.timeout:g}s; "
                     "its coroutine was cancelled (its cleanup ran)", None)
        except BaseException as exc:  # noqa: B902 - a task may raise anything, even SystemExit
            ok = False
            error = describe(_user_frames(exc))
            del exc
        finally:
            if timer is not None:
                timer.cancel()
        duration = time.perf_counter() - t0
        output = joined(mine) if mine else ""
        put((MSG_ASYNC_DONE, job, ok, value, error, started, duration, output))

    def stop(self) -> None:
        """Stop the loop, from the dispatcher, once the run is over.

        Coroutines still running (a forced stop's, and any the tasks started
        themselves) are cancelled, and their cleanup runs before
        this returns; one that ignores cancellation is left behind after
        ``CANCEL_GRACE`` seconds with a warning naming it.
        """
        if not self.thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        try:
            future.result(timeout=CANCEL_GRACE)
        except BaseException as exc:  # noqa: B902 - a timeout, or a Ctrl-C while waiting
            names = sorted(self.run.names[job.idx] for job in self.run.job_of_async() if job is not None)
            log.warning("stopping the event loop: %s; left running: %s", type(exc).__name__,
                        ", ".join(names) or "coroutines the tasks started")
            self.loop.call_soon_threadsafe(self.loop.stop)
            return
        self.thread.join(timeout=CANCEL_GRACE)
        if not self.thread.is_alive():
            self.loop.close()

    async def _shutdown(self) -> None:
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks() if t is not me]
        for task in others:
            task.cancel()
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        self.loop.call_soon(self.loop.stop)


class AsyncRun(Run):
    """A ``Run`` with async tasks: coroutines go to the run's loop, threads to the lanes.

    Ready coroutine tasks wait in their own heap (registration order, like
    threads) and start whenever fewer than ``async_limit`` are in flight,
    whatever the worker lanes are doing.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ready_async: list[int] = []
        self.async_inflight = 0
        self.async_limit = self.s.async_limit
        self.aio: EventLoopThread | None = None
        self.warnings: dict[int, str] = {}  # task -> the warning its record carries

    def job_of_async(self) -> list[AsyncJob]:
        return [job for job in self.job_of if isinstance(job, AsyncJob)]

    def _start_lanes(self, count: int) -> None:
        options = self.options
        threaded = sum(1 for i in range(self.n) if not options[i].is_async)
        super()._start_lanes(min(count, max(threaded, 1)))
        try:
            aio = EventLoopThread(self)
            aio.start()
        except RuntimeError as exc:
            for _ in self.lanes:
                self.jobs.put(None)
            for lane in self.lanes:
                lane.thread.join()
            self.lanes.clear()
            raise WorkerStartError(f"start: cannot start the event loop thread ({exc}); nothing ran: "
                                   "use fewer workers or raise the thread limit") from None
        self.aio = aio

    def _loop(self) -> None:
        # after RUN_STARTED (so no initial-state snapshot holds it), gone when the run is over
        with self.state_lock:
            self.state[ASYNC_LOCK_KEY] = asyncio.Lock()
        try:
            super()._loop()
        finally:
            if self.aio is not None:
                self.aio.stop()
            with self.state_lock:
                self.state.pop(ASYNC_LOCK_KEY, None)

    def _make_ready(self, idx: int) -> None:
        if not self.options[idx].is_async:
            super()._make_ready(idx)
            return
        self.where[idx] = self.READY
        heapq.heappush(self.ready_async, idx)
        if self.attempts[idx] == 0 and self.events._subs[EventKind.TASK_READY]:
            self.events.emit_task(EventKind.TASK_READY, self.names[idx])

    def _dispatch(self) -> None:
        ready = self.ready_async
        if ready and self.async_inflight < self.async_limit:
            where = self.where
            batch = []
            while ready and self.async_inflight < self.async_limit:
                idx = heapq.heappop(ready)
                if where[idx] != self.READY:
                    continue  # cancelled while it waited
                batch.append(self._launch_async(idx))
            if batch:
                self.aio.submit(batch)
        super()._dispatch()

    def _launch_async(self, idx: int) -> AsyncJob:
        self.where[idx] = self.RUNNING
        attempt = self.attempts[idx] = self.attempts[idx] + 1
        self.async_inflight += 1
        job = AsyncJob(idx, attempt)
        self.job_of[idx] = job
        if attempt <= self.options[idx].retries:
            heapq.heappush(self.retry_heap, idx)
        if self.events._subs[EventKind.TASK_STARTED]:
            self.events.emit_task(EventKind.TASK_STARTED, self.names[idx], None, attempt)
        return job

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == MSG_ASYNC_DONE:
            _, job, ok, value, error, started, duration, output = msg
            self.async_inflight -= 1
            idx = job.idx
            if self.job_of[idx] is not job:
                return  # a forced stop has recorded it already
            if ok:
                name = self.names[idx]
                if self.results is not None:
                    with self.state_lock:
                        self.results[name] = value
                self._finish(idx, TaskRecord(
                    name, _PASSED, LOOP_THREAD, started, started + duration, duration, job.attempt,
                    None, None, None, output, None, self.options[idx].tags,
                ))
            else:
                self._attempt_failed(idx, LOOP_THREAD, error, started, duration, output)
        elif kind == MSG_ASYNC_WARNING:
            _, job, message = msg
            if job.idx in self.warnings:
                return  # once per task, whichever attempt
            self.warnings[job.idx] = message
            self.events.emit(_K_WARNING, name=self.names[job.idx], thread=LOOP_THREAD,
                             attempt=job.attempt, data={"warning": message})
        elif kind == MSG_ASYNC_DROPPED:
            job = msg[1]
            idx = job.idx
            self.async_inflight -= 1
            if self.where[idx] != self.RUNNING or self.job_of[idx] is not job:
                return  # already accounted for (the run was stopped)
            self.attempts[idx] -= 1  # this attempt never ran
            self._stop_unstarted(idx)
        else:
            super()._handle(msg)

    def _finish(self, idx: int, record: TaskRecord, pending: list[int] | None = None) -> None:
        if self.options[idx].is_async:
            reason = _CANCELLED_RUNNING if record.reason == _ABANDONED else record.reason
            record = record._replace(is_async=True, warning=self.warnings.get(idx), reason=reason)
        super()._finish(idx, record, pending)
