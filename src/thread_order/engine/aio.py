"""Async tasks: the dispatcher's side of a run's event loop.

A run with ``async def`` tasks is an :class:`AsyncRun`. Its dispatcher hands
each ready coroutine task to the run's event loop thread (aioloop.py) instead
of a worker lane, at most ``async_limit`` at a time, and the loop reports back
through the same inbox the workers use: the dispatcher stays the one owner of
the run's books. Every coroutine of the run runs on that one loop, so a client
bound to it (created by ``setup_state`` or an earlier task) works in every
later task. A run without async tasks is a plain ``Run``: no loop, no thread,
no cost.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Any

from .aiogate import AsyncGateMethods
from .aioloop import (ASYNC_LOCK_KEY, LOOP_THREAD, MSG_ASYNC_BATCH, MSG_ASYNC_DROPPED,
                      MSG_ASYNC_WARNING, AsyncJob, EventLoopThread)
from .dispatch import Run
from .errors import WorkerStartError
from .events import EventKind
from .model import TaskRecord, TaskStatus, new_record

__all__ = ["AsyncRun", "EventLoopThread", "LOOP_THREAD", "ASYNC_LOCK_KEY"]

_PASSED = TaskStatus.PASSED
_K_WARNING, _K_STARTED, _K_READY, _K_FINISHED = (
    EventKind.TASK_WARNING, EventKind.TASK_STARTED, EventKind.TASK_READY, EventKind.TASK_FINISHED)
_READY, _RUNNING, _DONE = Run.READY, Run.RUNNING, Run.DONE
_ABANDONED = "abandoned: still running when the run was stopped"
_CANCELLED_RUNNING = "cancelled: still running when the run was stopped; its coroutine was cancelled"


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
        self.async_open = sum(o.is_async for o in options[:self.n])
        self.all_async = self.async_open == self.n
        self.final_inflight = 0
        self.aio: EventLoopThread | None = None
        self.warnings: dict[int, str] = {}  # task -> the warning its record carries
        if self.at is not None:  # a start-order plan (order.py) keys the ready heaps by rank
            self._make_ready = self._make_ready_async_ranked

    def _start_lanes(self, count: int) -> None:
        threaded = self.n - self.async_open  # (no task is final yet)
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
        coroutines = [i for i in roots if options[i].is_async]
        threads = [i for i in roots if not options[i].is_async] if coroutines else roots
        self.ready_async.extend(self._sorted_keys(coroutines))
        self.ready.extend(self._sorted_keys(threads))

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
                first = self.first is not None  # (keys of tasks to start first are below 0)
                batch += self._launch_coroutines([
                    idx for idx in (key + n if first and key < 0 else key for key in ready)
                    if where[idx] == _READY])  # (else cancelled while it waited)
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
                if need is not None and not self._finished_before(idx):
                    if not (self.async_inflight or self.inflight or self.timers):
                        Run._dispatch(self)  # a ready thread task may be what it waits for: its turn
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
        return self._launch_coroutines((idx,))[0]

    def _launch_coroutines(self, idxs: Any) -> list[AsyncJob]:
        """An attempt of each of ``idxs`` (ready coroutine tasks), to hand to the loop."""
        where, attempts, job_of, options = self.where, self.attempts, self.job_of, self.options
        pooled = self.pool_gate is not None
        announce = self.events._subs[_K_STARTED]
        at = self.at
        jobs = []
        for idx in idxs:
            where[idx] = _RUNNING
            attempt = attempts[idx] = attempts[idx] + 1
            self.async_inflight += 1
            job = AsyncJob(idx, attempt)
            job_of[idx] = job
            if pooled:
                self._coroutine_launched(idx)
            if attempt <= options[idx].retries:
                heapq.heappush(self.retry_heap, idx if at is None else self.rank[idx])
            else:
                job.final = True
                self.final_inflight += 1
            if announce:
                self.events.emit_task(_K_STARTED, self.names[idx], None, attempt)
            jobs.append(job)
        return jobs

    def _handle(self, msg: tuple) -> None:
        if msg[0] != MSG_ASYNC_BATCH:
            self._handle_one(msg)
            return
        box = msg[1]
        done = 0
        # the common message, a coroutine that passed, is handled inline (a 10,000-task run's
        # hot path); anything else goes through _handle_one. While nobody hears of finished
        # tasks, no pool or replay gate needs telling, its record is kept right here too
        names, options, job_of, results = self.names, self.options, self.job_of, self.results
        state_lock, finish, warnings = self.state_lock, self._finish_async, self.warnings
        pooled = self.pool_gate.of if self.pool_gate is not None else None  # via _handle_one
        inline = pooled is None and self.gate is None and not self.events._subs[_K_FINISHED]
        where, records, cstart = self.where, self.records, self.cstart
        passed, ran = self.order[_PASSED], self.ran
        if results is not None and inline:  # every passed coroutine's result, under one lock
            with state_lock:
                for one in box:
                    if type(one) is AsyncJob and one.ok and job_of[one.idx] is one:
                        results[names[one.idx]] = one.value
        try:
            for one in box:
                done += 1
                if type(one) is not AsyncJob or not one.ok or (pooled is not None and pooled[one.idx]):
                    self._handle_one(one)
                    continue
                job = one
                value, started, duration = job.value, job.began, job.duration
                self.async_inflight -= 1
                if job.final:
                    self.final_inflight -= 1
                idx = job.idx
                if job_of[idx] is not job:
                    continue  # a forced stop has recorded it already
                self.async_open -= 1
                name = names[idx]
                if results is not None and not inline:
                    with state_lock:
                        results[name] = value
                record = new_record(TaskRecord, (
                    name, _PASSED, LOOP_THREAD, started, started + duration, duration, job.attempt,
                    None, None, None, job.output, None, options[idx].tags, True,
                    warnings.get(idx) if warnings else None, 0.0, None,
                ))
                if not inline:
                    finish(idx, record)
                    continue
                where[idx] = _DONE  # what Run._finish does, for this case
                records[idx] = record
                job_of[idx] = None
                self.unfinished -= 1
                self.finished_count += 1
                passed.append(name)
                ran.append(name)
                if cstart[idx] != cstart[idx + 1]:
                    self._release(idx, record)
                    # (a TASK_READY subscriber it called may have subscribed to TASK_FINISHED:
                    # the rest of the batch is then announced, through Run._finish)
                    inline = not self.events._subs[_K_FINISHED]
        except BaseException:  # noqa: B902 - e.g. Ctrl-C in a subscriber: keep what is left
            if done < len(box):
                self.inbox.put((MSG_ASYNC_BATCH, box[done:]))
            raise

    def _handle_one(self, msg: tuple | AsyncJob) -> None:
        if type(msg) is AsyncJob:  # its attempt ended
            job = msg
            ok, value, error, started, duration, output = (job.ok, job.value, job.error, job.began,
                                                           job.duration, job.output)
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
            return
        kind = msg[0]
        if kind == MSG_ASYNC_WARNING:
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
