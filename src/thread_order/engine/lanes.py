"""A run's worker lanes: the worker loop, its direct hand-off to a single child, and timeouts.

Each lane is one worker thread taking jobs from the run's queue; a lane whose
task outlives its timeout is abandoned (Python cannot kill a thread) and a
twin thread takes its place. ``Run`` (dispatch.py) inherits these methods.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import traceback
from types import CoroutineType
from typing import Any

from .capture import OutputCapture
from .errors import WorkerStartError
from .events import EventKind

__all__ = ["Job", "Lane", "LaneMethods", "joined"]

log = logging.getLogger("thread_order")

_K_RUNNING = EventKind.TASK_RUNNING

# messages to the dispatcher (the thread that called start())
MSG_DONE, MSG_RUNNING, MSG_INTERRUPT, MSG_DROPPED, MSG_BEGAN = range(5)
# timer kinds
TIMER_TIMEOUT, TIMER_RETRY, TIMER_GATE = range(3)


def joined(pieces: list | None) -> str:
    """A task's captured output; never raises, whatever was written."""
    if not pieces:
        return ""
    try:
        return "".join(pieces)
    except TypeError:
        return "".join(p if isinstance(p, str) else repr(p) for p in pieces)


def describe(exc: BaseException) -> tuple[str, str, str]:
    """(type name, message, traceback) of ``exc``; never raises, whatever the exception does."""
    try:
        message = str(exc)
    except BaseException:  # noqa: B902 - a broken __str__ must not kill the worker
        message = f"<{type(exc).__name__} object: str() failed>"
    try:
        # start at the task's own frame: the worker loop calling it is noise to the user
        frames = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        tb = "".join(traceback.format_exception(type(exc), exc, frames))
    except BaseException:  # noqa: B902
        tb = f"{type(exc).__name__}: {message}\n"
    return type(exc).__name__, message, tb


class Lane:
    """One worker thread's slot; a lane abandoned after a timeout is replaced by a twin."""

    __slots__ = ("slot", "name", "thread", "abandoned")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.name = f"thread_{slot}"
        self.thread: threading.Thread | None = None
        self.abandoned = False


class Job:
    """One attempt of one task, handed to a worker."""

    __slots__ = ("idx", "attempt", "lane", "abandoned", "done", "started", "direct", "rated", "handed",
                 "began")

    def __init__(self, idx: int, attempt: int, direct: bool = False) -> None:
        self.idx = idx
        self.attempt = attempt
        self.lane: Lane | None = None
        self.abandoned = False  # set by the dispatcher when the attempt timed out
        self.done = False  # set by the worker when the task returned, or when it dropped the job
        self.started = False  # set by the worker when it commits to running the task
        # set when nothing else is in flight or ready: if this task passes and has a single
        # child depending on it alone, the worker may start that child itself (see _worker)
        self.direct = direct
        # in a pool with a rate: the worker reports when it begins (MSG_BEGAN), as the rate
        # counts real starts
        self.rated = False
        # started by the worker that ended an attempt in its pool, named next there (gate.py):
        # 0 no, 1 yes, 2 yes and the dispatcher has accounted for it
        self.handed = 0
        # for a task with a timeout, when (time.monotonic()) a worker began it: its clock starts
        # then, not when the dispatcher handed it out (a worker may be slow to wake on a busy machine)
        self.began: float | None = None


class LaneMethods:
    """The worker side of a ``dispatch.Run``, and the timers the dispatcher keeps for it."""

    def _worker(self, lane: Lane) -> None:
        # locals: this loop is the per-task hot path of every worker
        get = self.jobs.get
        put = self.inbox.put
        fns = self.fns
        options = self.options
        names = self.names
        state = self.state
        state_lock = self.state_lock
        results = self.results
        capture = self.s.capture
        context = self.s.task_context  # None unless a front-end wraps each attempt
        buffers = OutputCapture.buffers  # this thread touches only its own slot
        mine: list[str] = []  # this lane's capture buffer, emptied after each task
        ident = threading.get_ident()
        events = self.events
        subs = events._subs
        handshake = self.handshake
        job_of = self.job_of
        cstart, cflat, pstart = self.cstart, self.cflat, self.pstart
        pgate = self.pool_gate
        alone = pgate.simple if pgate is not None else None  # per task: its pool, if one without a rate
        perf = time.perf_counter
        wall = time.time
        name = lane.name
        gate = self.gate  # a replay's (order.py): None otherwise
        if gate is not None:
            need, finished, finish_order, finish_end = gate.need, gate.finished, gate.order, gate.end
        freed = None  # a replayed job this worker's last task let start: it runs it next
        job = None
        while True:
            if job is None:
                if freed is not None:
                    job, freed = freed, None
                else:
                    job = get()
                    if job is None:
                        return
                idx = job.idx
                opts = options[idx]
                if gate is not None and opts.timeout is None and need[idx] > gate.prefix \
                        and not gate.admit(job):
                    job = None  # parked: the worker finishing what it waits for runs it
                    continue
                # decide under the handshake: a timeout, cancel() or a forced stop either
                # happened before this point (the job is dropped) or after it (it counts as started)
                with handshake:
                    if job.abandoned:  # timed out before this worker picked it up
                        job = None
                        continue
                    if self.forced or (self.stop_requested and not opts.always):
                        job.done = True
                        drop = True
                    else:
                        job.lane = lane
                        job.started = True
                        if opts.timeout is not None:
                            job.began = time.monotonic()
                        drop = False
                if drop:
                    put((MSG_DROPPED, job))  # queued ahead, but the run was stopped since
                    job = None
                    continue
            else:  # handed over directly, already started
                idx = job.idx
                opts = options[idx]
            if subs[_K_RUNNING]:
                put((MSG_RUNNING, job, name))
            if capture:
                buffers[ident] = mine
            started = wall()
            if job.rated:
                put((MSG_BEGAN, job, started))
            t0 = perf()
            try:
                if context is None:
                    value = fns[idx](state) if opts.with_state else fns[idx]()
                else:
                    with context(names[idx], job.attempt):
                        value = fns[idx](state) if opts.with_state else fns[idx]()
                if type(value) is CoroutineType:  # an async function called, never awaited
                    value.close()
                    value = None
                    raise TypeError("the task returned a coroutine, which would never run: "
                                    "it called an async function without awaiting it")
                ok = True
                error = None
            except BaseException as exc:  # noqa: B902 - a task may raise anything, even SystemExit
                ok = False
                value = None
                error = describe(exc)
                del exc
            duration = perf() - t0
            if capture:
                buffers.pop(ident, None)
                if mine:
                    output = joined(mine)
                    mine.clear()
                else:
                    output = ""
            else:
                output = ""
            if opts.timeout is not None:
                with handshake:
                    job.done = not job.abandoned
            elif gate is not None and (ok or job.attempt > opts.retries):
                # finished as far as the replay goes: what it waits for may start now, and may
                # read its result, so the result is stored first (the dispatcher stores it again)
                if ok and results is not None:
                    with state_lock:
                        results[names[idx]] = value
                # ReplayGate.done, inlined (once per task): the flag first, then whatever is parked
                # (a job parked after this test is so after a scan that sees the flag: see admit)
                finished[idx] = True
                if gate._parked:
                    more = gate.release()
                    if more:
                        freed = more[0]
                        for other in more[1:]:
                            self.jobs.put(other)
                else:  # the prefix hint moves on, without the lock
                    p = gate.prefix
                    while p < finish_end and finished[finish_order[p]]:
                        p += 1
                    if p > gate.prefix:
                        gate.prefix = p
            nxt = None
            # The direct hand-off. The dispatcher marked this job `direct` when it was the only
            # job in flight with nothing ready and no timer pending, and nobody listens to task
            # events: then, if it passed, its dependents are the only tasks that can become
            # ready, so a single child that depends on it alone is the task the dispatcher
            # would start next, whatever the number of workers. Starting it here saves two
            # thread hand-offs; the dispatcher records both as if it had done the work.
            if ok and job.direct and cstart[idx + 1] - cstart[idx] == 1:
                child = cflat[cstart[idx]]
                if (pstart[child + 1] - pstart[child] == 1 and options[child].timeout is None
                        and not options[child].is_async and not options[child].pools
                        and events.task_quiet):
                    with handshake:
                        if not (self.forced or self.stop_requested):
                            nxt = Job(child, 1, direct=True)
                            nxt.lane = lane
                            nxt.started = True
                            job_of[child] = nxt  # seen by a forced stop before this message is
                    if nxt is not None and results is not None:
                        with state_lock:  # the child may read it: it must be there first
                            results[names[idx]] = value
            # The pool hand-off (gate.py): the attempt ends in a full pool whose next task in line
            # the gate has named; this worker starts it, and the slot passes from one to the other.
            if alone is not None and nxt is None and alone[idx] is not None and alone[idx].next:
                pool = alone[idx]
                with handshake:
                    if pool.next and not (self.forced or self.stop_requested or job.abandoned):
                        w, attempt = pool.next.pop()
                        nxt = Job(w, attempt)
                        nxt.lane = lane
                        nxt.started = True
                        nxt.handed = 1
                        job_of[w] = nxt
                        pool.taken.append((idx, nxt))
            put((MSG_DONE, job, ok, value, error, started, duration, output, name, nxt))
            if lane.abandoned:  # timed out: a twin already serves this lane
                return
            job = nxt

    def _start_lanes(self, count: int) -> None:
        """Start the run's ``count`` worker lanes, or none: a failure stops those already started.

        Raises:
            RuntimeError: a thread could not be started (near the process's thread limit).
        """
        lanes = self.lanes
        try:
            for slot in range(count):
                lanes.append(self._start_lane(slot))
        except RuntimeError as exc:  # "can't start new thread"
            started = len(lanes)
            for _ in lanes:
                self.jobs.put(None)
            for lane in lanes:
                lane.thread.join()
            lanes.clear()
            raise WorkerStartError(f"start: cannot start worker thread {started + 1} of {count} "
                               f"({exc}); nothing ran: use fewer workers or raise the "
                               "thread limit") from None
        self.width = count

    def _start_lane(self, slot: int) -> Lane:
        lane = Lane(slot)
        thread = threading.Thread(target=self._worker, args=(lane,), name=lane.name, daemon=True)
        lane.thread = thread
        thread.start()
        return lane

    def _add_timer(self, deadline: float, kind: int, payload: Any) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (deadline, self.timer_seq, kind, payload))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, kind, payload = heapq.heappop(timers)
            if kind == TIMER_TIMEOUT:
                self._timeout(payload)
            elif kind == TIMER_GATE:
                self.pool_gate.timer()
            else:  # a retry's delay is over
                idx = payload
                if self.where[idx] == self.RETRY_WAIT:
                    self._make_ready(idx)

    def _timeout(self, job: Job) -> None:
        idx = job.idx
        if self.where[idx] != self.RUNNING or job.abandoned or self.attempts[idx] != job.attempt:
            return  # finished in time
        timeout = self.options[idx].timeout
        with self.handshake:
            if job.done:
                return  # it returned before we looked; its message is on the way
            if self.executor is None:
                # the clock runs from when a worker began the task: one handed out but not yet
                # picked up (its worker not scheduled yet) has not used any of its time
                now = time.monotonic()
                if not job.started:  # timeout > 0: a task not begun always waits again
                    self._add_timer(now + timeout, TIMER_TIMEOUT, job)
                    return
                if job.began is not None and job.began + timeout > now:
                    self._add_timer(job.began + timeout, TIMER_TIMEOUT, job)
                    return
            job.abandoned = True
            lane = job.lane
            if lane is not None:
                lane.abandoned = True
        self.inflight -= 1
        if self.pool_gate is not None:
            # the slot is given back at the timeout, though the abandoned call may still run:
            # a hung call must not hold its pool for the rest of the run (see README)
            self.pool_gate.release(idx, started=lane is not None)
        output = ""
        if self.executor is not None:  # cancelled on its cluster, or abandoned there
            thread_name = self.executor.timed_out(job)
        else:
            # Python cannot kill a thread: abandon this one (daemon) and keep the pool's width
            thread_name = lane.name
            if lane.thread is not None:
                # what the stuck attempt printed so far is the best clue to why it is stuck
                output = joined(list(OutputCapture.buffers.get(lane.thread.ident) or ()))
                lane.thread.name = f"{lane.name}-abandoned"
            try:
                self.lanes[lane.slot] = self._start_lane(lane.slot)
            except RuntimeError as exc:  # near the thread limit: the pool gets narrower
                self.width -= 1
                log.error("cannot start a thread to replace %s (%s); %d worker(s) left",
                          lane.name, exc, self.width)
        message = f"task {self.names[idx]!r} still running after {timeout:g}s"
        log.warning("%s; abandoning its %s", message, "thread" if self.executor is None else "attempt")
        self._attempt_failed(
            idx, thread_name, ("TimeoutError", message, None), started=None, duration=timeout,
            output=output,
        )
        if self.width < 1:  # every lane is stuck and none can be replaced: nothing can run
            self._interrupt(force=True)
