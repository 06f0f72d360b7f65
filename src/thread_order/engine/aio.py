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
import collections
import heapq
import inspect
import logging
import threading
import time
from types import CoroutineType
from typing import Any

from . import aiostep
from .aiostep import block_message, timed
from .capture import task_buffer
from .aiogate import AsyncGateMethods
from .dispatch import Run
from .errors import WorkerStartError
from .events import EventKind
from .lanes import MSG_RUNNING, Lane, describe, joined
from .model import TaskRecord, TaskStatus, new_record

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

# messages from the loop to the dispatcher (lanes.py numbers the workers' from 0); the loop
# sends what one of its iterations produced as one MSG_ASYNC_BATCH, a list of the others
MSG_ASYNC_DONE, MSG_ASYNC_DROPPED, MSG_ASYNC_WARNING, MSG_ASYNC_BATCH = 10, 11, 12, 13

_PASSED = TaskStatus.PASSED
_K_WARNING, _K_STARTED, _K_READY = EventKind.TASK_WARNING, EventKind.TASK_STARTED, EventKind.TASK_READY
_READY, _RUNNING = Run.READY, Run.RUNNING
_OUR_FILES = (__file__, aiostep.__file__)  # frames of ours, above the task's own
_DONE = object()  # a coroutine's first step was its last
_ABANDONED = "abandoned: still running when the run was stopped"
_CANCELLED_RUNNING = "cancelled: still running when the run was stopped; its coroutine was cancelled"


_LANE = Lane(0)  # what a forced stop reads of the lane an async job ran on: its name
_LANE.name = LOOP_THREAD


class AsyncJob:
    """One attempt of one async task, handed to the loop (``lanes.Job``'s fields, and the loop's)."""

    __slots__ = ("idx", "attempt", "lane", "abandoned", "done", "started", "direct", "task",
                 "timed_out", "warned", "final")

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

    def __init__(self, run: "AsyncRun") -> None:
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
        create = self.loop.create_task
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
            for job in begin:
                job.task = create(attempt(job), name=names[job.idx])  # the job keeps it alive
            if len(begin) < len(take):
                for job in take:
                    if job.done:
                        self._send((MSG_ASYNC_DROPPED, job))

    def _send(self, msg: tuple) -> None:
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
        duration = perf() - t0
        job.task = None  # nothing left to cancel: the finished Task need not outlive this step
        self._ended()
        run = self.run  # the start in epoch seconds, without a second clock call
        self._send((MSG_ASYNC_DONE, job, ok, value, error, run.started_at + (t0 - run.t0), duration,
                    joined(mine) if mine else ""))

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
            self.loop.create_task(self._shutdown())

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
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


class AsyncRun(AsyncGateMethods, Run):
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
        # async tasks not final yet, and attempts in flight that no retry may follow: when a
        # hand-over leaves the two equal in a run of coroutines only, it is the run's last
        options = self.options
        self.async_open = sum(1 for i in range(self.n) if options[i].is_async)
        self.all_async = self.async_open == self.n
        self.final_inflight = 0
        self.aio: EventLoopThread | None = None
        self.warnings: dict[int, str] = {}  # task -> the warning its record carries
        if self.at is not None:  # a start-order plan (order.py) keys the ready heaps by rank
            self._make_ready = self._make_ready_async_ranked

    def _start_lanes(self, count: int) -> None:
        options = self.options
        threaded = sum(1 for i in range(self.n) if not options[i].is_async)
        super()._start_lanes(min(count, threaded))  # none at all for a run of coroutines only
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
        self._gate_coroutines()
        try:
            super()._loop()
        finally:
            if self.aio is not None:
                self.aio.stop()
            with self.state_lock:
                self.state.pop(ASYNC_LOCK_KEY, None)

    def _heap_roots(self, roots: list[int]) -> None:
        options = self.options
        to_loop, to_lanes = self.ready_async.append, self.ready.append  # both stay in order: heaps
        for i in roots:
            (to_loop if options[i].is_async else to_lanes)(i)

    def _make_ready(self, idx: int) -> None:
        if not self.options[idx].is_async:
            super()._make_ready(idx)
            return
        self.where[idx] = _READY
        first = self.first  # tasks to start first (tdrun --failed-first) sort below the others
        self._ready_coroutine(idx, idx - self.n if first is not None and first[idx] else idx)
        if self.attempts[idx] == 0 and self.events._subs[_K_READY]:
            self.events.emit_task(_K_READY, self.names[idx])

    def _make_ready_async_ranked(self, idx: int) -> None:  # _make_ready under an OrderPlan
        if not self.options[idx].is_async:
            Run._make_ready_ranked(self, idx)
            return
        self.where[idx] = _READY
        self._ready_coroutine(idx, self.rank[idx])
        if self.attempts[idx] == 0 and self.events._subs[_K_READY]:
            self.events.emit_task(_K_READY, self.names[idx])

    def _replay_finished_before(self, idx: int) -> bool:
        """Under a replay: has every task that had finished before ``idx`` started, in the
        recording, finished (a coroutine is held here, not parked on the loop)?"""
        need = self.need[idx]
        p = self.finished_prefix
        if need <= p:
            return True
        order = self.plan.finish_order
        where = self.where
        end = len(order)
        while p < end and where[order[p]] == self.DONE:
            p += 1
        self.finished_prefix = p
        return need <= p

    def _dispatch(self) -> None:
        """Hand ready coroutines to the loop, lowest registration index first, then threads.

        The loop runs at most ``async_limit`` at once; as with worker lanes, up
        to as many again are handed over ahead, so the loop starts the next
        one the moment a coroutine ends — but only tasks that would start next
        whatever finishes meanwhile (see ``Run._dispatch``).
        """
        if self.pool_gate is not None:
            self._pump()  # the coroutines it admits are handed over just below (aiogate.py)
        ready = self.ready_async
        if ready:
            where = self.where
            limit = self.async_limit
            low = None  # the low-water mark, computed once when needed and kept up to date
            batch = []
            hand_over = batch.append
            n = self.n
            at, need = self.at, self.need  # a start-order plan: keys are ranks (order.py)
            # how far ahead: as many again as run while someone hears of task events (TASK_STARTED
            # is sent at hand-over); while nobody does, every task the rule below allows, so the
            # loop starts the next ones without waiting for this thread to be scheduled
            ahead = n if self.events.task_quiet else 2 * limit
            if at is None and need is None and self.async_inflight + len(ready) <= limit:
                # every ready coroutine may start now: all of them, in heap order, without popping
                ready.sort()
                for key in ready:
                    idx = key + n if key < 0 else key  # (a task to start first)
                    if where[idx] == _READY:  # (else cancelled while it waited)
                        hand_over(self._launch_async(idx))
                ready.clear()
            while ready:
                idx = key = ready[0]
                if at is not None:
                    idx = at[key]
                elif idx < 0:  # a task to start first (see _make_ready)
                    idx += n
                if where[idx] != _READY:
                    heapq.heappop(ready)  # cancelled while it waited
                    continue
                if self.async_inflight >= limit:
                    if self.async_inflight >= ahead or self.first is not None:
                        break
                    if low is None:
                        low = self._low_water()
                    if key >= low:
                        break
                if need is not None and not self._replay_finished_before(idx):
                    if self.async_inflight or self.inflight or self.timers:
                        break  # a replay: what finished before it in the recording has not yet
                    self._open_gate()  # nothing in flight could bring it about (a changed graph)
                heapq.heappop(ready)
                job = self._launch_async(idx)
                if low is not None and job.attempt <= self.options[idx].retries:
                    low = min(low, key)  # a running task that may retry: may become ready again
                hand_over(job)
            if batch:
                self.aio.submit(batch, self.all_async and self.final_inflight == self.async_open)
        Run._dispatch(self)

    def _launch_async(self, idx: int) -> AsyncJob:
        self.where[idx] = _RUNNING
        attempt = self.attempts[idx] = self.attempts[idx] + 1
        self.async_inflight += 1
        job = AsyncJob(idx, attempt)
        self.job_of[idx] = job
        if self.pool_gate is not None:
            self._coroutine_launched(idx)
        if attempt <= self.options[idx].retries:
            heapq.heappush(self.retry_heap, idx if self.at is None else self.rank[idx])
        else:
            job.final = True
            self.final_inflight += 1
        if self.events._subs[_K_STARTED]:
            self.events.emit_task(_K_STARTED, self.names[idx], None, attempt)
        return job

    def _handle(self, msg: tuple) -> None:
        if msg[0] != MSG_ASYNC_BATCH:
            self._handle_one(msg)
            return
        box = msg[1]
        done = 0
        # the common message, a coroutine that passed, is handled inline (a 10,000-task run's
        # hot path); anything else goes through _handle_one
        names, options, job_of, results = self.names, self.options, self.job_of, self.results
        state_lock, finish, warnings = self.state_lock, self._finish_async, self.warnings
        pooled = self.pool_gate.of if self.pool_gate is not None else None  # via _handle_one
        try:
            for one in box:
                done += 1
                if one[0] != MSG_ASYNC_DONE or not one[2] or (pooled is not None and pooled[one[1].idx]):
                    self._handle_one(one)
                    continue
                _, job, _, value, _, started, duration, output = one
                self.async_inflight -= 1
                if job.final:
                    self.final_inflight -= 1
                idx = job.idx
                if job_of[idx] is not job:
                    continue  # a forced stop has recorded it already
                self.async_open -= 1
                name = names[idx]
                if results is not None:
                    with state_lock:
                        results[name] = value
                finish(idx, new_record(TaskRecord, (
                    name, _PASSED, LOOP_THREAD, started, started + duration, duration, job.attempt,
                    None, None, None, output, None, options[idx].tags, True,
                    warnings.get(idx) if warnings else None, 0.0, None,
                )))
        except BaseException:  # noqa: B902 - e.g. Ctrl-C in a subscriber: keep what is left
            if done < len(box):
                self.inbox.put((MSG_ASYNC_BATCH, box[done:]))
            raise

    def _handle_one(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == MSG_ASYNC_DONE:
            _, job, ok, value, error, started, duration, output = msg
            self.async_inflight -= 1
            if job.final:
                self.final_inflight -= 1
            idx = job.idx
            if self.job_of[idx] is not job:
                return  # a forced stop has recorded it already
            wait = self._coroutine_ended(idx, started)  # (0.0, None) outside any pool
            if ok:
                name = self.names[idx]
                if self.results is not None:
                    with self.state_lock:
                        self.results[name] = value
                self._finish(idx, TaskRecord(
                    name, _PASSED, LOOP_THREAD, started, started + duration, duration, job.attempt,
                    None, None, None, output, None, self.options[idx].tags, True,
                    self.warnings.get(idx) if self.warnings else None, *wait,
                ))
            else:
                self._attempt_failed(idx, LOOP_THREAD, error, started, duration, output, wait)
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
            if job.final:
                self.final_inflight -= 1
            if self.where[idx] != self.RUNNING or self.job_of[idx] is not job:
                return  # already accounted for (the run was stopped)
            self.attempts[idx] -= 1  # this attempt never ran
            self._stop_unstarted(idx)
        else:
            super()._handle(msg)

    def _finish(self, idx: int, record: TaskRecord, pending: list[int] | None = None) -> None:
        if self.options[idx].is_async:
            self.async_open -= 1
        if not record.is_async and self.options[idx].is_async:  # a failure, skip or cancel
            reason = _CANCELLED_RUNNING if record.reason == _ABANDONED else record.reason
            record = record._replace(is_async=True, warning=self.warnings.get(idx), reason=reason)
        Run._finish(self, idx, record, pending)

    _finish_async = Run._finish  # for records built as async already
