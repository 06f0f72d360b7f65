"""One run of a Scheduler: the dispatcher loop, its worker threads and the run summary.

The dispatcher is the thread that called ``Scheduler.start()``. It alone owns
the run's bookkeeping (where each task is, what it waits for, its record), so
none of it needs a lock; workers and other threads talk to it only through
the ``inbox`` queue. Events are emitted from here, in order.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from .capture import OutputCapture
from .events import EventKind
from .graph import Graph
from .events import EventStream
from .model import TaskRecord, TaskSpec, TaskStatus
from .signals import install_interrupt_handler
from .summary import build_summary

__all__ = ["Run", "RunOptions"]

log = logging.getLogger("thread_order")

_K_RUNNING = EventKind.TASK_RUNNING

_PASSED, _FAILED, _SKIPPED, _CANCELLED = (
    TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED,
)

# where a task is in its life during a run
_WAITING, _READY, _RUNNING, _RETRY_WAIT, _DONE = range(5)

# messages to the dispatcher (the thread that called start())
_MSG_DONE, _MSG_RUNNING, _MSG_INTERRUPT, _MSG_DROPPED = range(4)


def _joined(pieces: list | None) -> str:
    """A task's captured output; never raises, whatever was written."""
    if not pieces:
        return ""
    try:
        return "".join(pieces)
    except TypeError:
        return "".join(p if isinstance(p, str) else repr(p) for p in pieces)


def _describe(exc: BaseException) -> tuple[str, str, str]:
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


class _Lane:
    """One worker thread's slot; a lane abandoned after a timeout is replaced by a twin."""

    __slots__ = ("slot", "name", "thread", "abandoned")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.name = f"thread_{slot}"
        self.thread: threading.Thread | None = None
        self.abandoned = False


class _Job:
    """One attempt of one task, handed to a worker."""

    __slots__ = ("idx", "attempt", "lane", "abandoned", "done", "started")

    def __init__(self, idx: int, attempt: int) -> None:
        self.idx = idx
        self.attempt = attempt
        self.lane: _Lane | None = None
        self.abandoned = False  # set by the dispatcher when the attempt timed out
        self.done = False  # set by the worker when the task returned, or when it dropped the job
        self.started = False  # set by the worker when it commits to running the task


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a Scheduler runs its tasks (its constructor's arguments)."""

    workers: int
    store_results: bool = True
    clear_results_on_start: bool = True
    skip_dependents: bool = True
    capture: bool = True


class Run:
    """The state of one call to ``Scheduler.start()``; lives on the dispatcher thread.

    ``specs`` is a snapshot: a task registered while this run goes on belongs
    to the next run. ``state`` is the scheduler's shared dict, guarded by
    ``state_lock``.
    """

    def __init__(self, specs: Sequence[TaskSpec], graph: Graph, state: dict, state_lock: Any,
                 events: EventStream, options: RunOptions) -> None:
        self.s = options
        self.specs = list(specs)
        self.index = graph._index
        self.graph = graph
        self.state = state
        self.state_lock = state_lock
        # every message to the dispatcher: worker reports, interrupts, cancel requests
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        # set at once by cancel()/SIGINT, before the dispatcher hears of it, so a worker
        # never starts a task queued ahead after the request
        self.stop_requested = False
        self.events = events
        n = len(self.specs)
        self.n = n
        self.where = [_WAITING] * n
        self.deps_left = [len(p) for p in graph._parent_idx]
        self.children = graph._child_idx
        # first non-passed dependency seen, and the failure at the root of it
        self.blame: list[tuple[str, TaskStatus, str] | None] = [None] * n
        self.records: list[TaskRecord | None] = [None] * n
        self.attempts = [0] * n
        self.failed_attempt: dict[int, TaskRecord] = {}
        self.ready: list[int] = []
        self.timers: list[tuple[float, int, int, Any]] = []  # (deadline, seq, kind, payload)
        self.timer_seq = 0
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lanes: list[_Lane] = []
        # jobs handed to workers and not yet reported back (running, or queued ahead)
        self.inflight = 0
        self.width = 0  # worker lanes of this run
        self.waiting_ptr = 0  # no task below this index is still _WAITING
        self.retry_heap: list[int] = []  # running or retry-waiting tasks that may become ready again
        self.unfinished = n
        self.finished_count = 0
        self.interrupted = False
        self.forced = False
        self.order: dict[TaskStatus, list[str]] = {s: [] for s in TaskStatus}
        self.finish_order: list[TaskRecord] = []
        self.results = state.get("results") if options.store_results else None
        # guards each _Job's lane/abandoned/done flags: a worker picking up or finishing a job
        # and the dispatcher timing it out must agree on who won, or two threads serve one lane
        self.handshake = threading.Lock()
        self.job_of: list[_Job | None] = [None] * n  # the latest attempt handed out, per task

    # -------------------------------------------------------------- worker side

    def _worker(self, lane: _Lane) -> None:
        # locals: this loop is the per-task hot path of every worker
        get = self.jobs.get
        put = self.inbox.put
        specs = self.specs
        state = self.state
        capture = self.s.capture
        buffers = OutputCapture.buffers  # this thread touches only its own slot
        ident = threading.get_ident()
        subs = self.events._subs
        handshake = self.handshake
        perf = time.perf_counter
        wall = time.time
        name = lane.name
        while True:
            job = get()
            if job is None:
                return
            spec = specs[job.idx]
            # decide under the handshake: a timeout, cancel() or a forced stop either happened
            # before this point (the job is dropped) or after it (the task counts as started)
            with handshake:
                if job.abandoned:  # timed out before this worker picked it up
                    continue
                if self.forced or (self.stop_requested and not spec.always):
                    job.done = True
                    drop = True
                else:
                    job.lane = lane
                    job.started = True
                    drop = False
            if drop:
                put((_MSG_DROPPED, job))  # queued ahead, but the run was stopped since
                continue
            if subs[_K_RUNNING]:
                put((_MSG_RUNNING, job, name))
            if capture:
                buffers[ident] = []
            started = wall()
            t0 = perf()
            try:
                value = spec.fn(state) if spec.with_state else spec.fn()
                ok = True
                error = None
            except BaseException as exc:  # noqa: B902 - a task may raise anything, even SystemExit
                ok = False
                value = None
                error = _describe(exc)
                del exc
            duration = perf() - t0
            if capture:
                output = _joined(buffers.pop(ident, None))
            else:
                output = ""
            if spec.timeout is not None:
                with handshake:
                    job.done = not job.abandoned
            put((_MSG_DONE, job, ok, value, error, started, duration, output, name))
            if lane.abandoned:  # timed out: a twin already serves this lane
                return

    def _start_lane(self, slot: int) -> _Lane:
        lane = _Lane(slot)
        thread = threading.Thread(target=self._worker, args=(lane,), name=lane.name, daemon=True)
        lane.thread = thread
        thread.start()
        return lane

    # -------------------------------------------------------------- dispatcher side

    def execute(self) -> dict:
        """Run every task; returns the summary (``self.records`` holds every record).

        The caller emits RUN_FINISHED, once it has published the records.
        """
        s = self.s
        state = self.state
        if s.store_results:
            with self.state_lock:
                results = state.setdefault("results", {})
                if s.clear_results_on_start:
                    results.clear()
            self.results = results
        self.events.reset()
        self.events.on_keyboard_interrupt = lambda: self.request_stop(False, from_signal=True)
        self.started_at = time.time()
        self.t0 = time.perf_counter()
        run_id = uuid.uuid4().hex
        self.run_id = run_id
        meta = {
            "run_id": run_id,
            "total_tasks": self.n,
            "workers": s.workers,
            "start_time": self.started_at,
            "tasks": list(self.graph.nodes),
        }
        self.events.emit(EventKind.RUN_STARTED, data=meta)

        completed = False
        restore_sigint = install_interrupt_handler(lambda: self.request_stop(False, from_signal=True))
        if s.capture:
            OutputCapture.install()
        try:
            self.lanes = [self._start_lane(i) for i in range(min(s.workers, max(self.n, 1)))]
            self.width = len(self.lanes)
            for i in range(self.n):
                if not self.deps_left[i]:
                    self._decide(i)
            self._loop()
            completed = True
        finally:
            if not completed:  # start() is raising: nothing queued may start after it returns
                with self.handshake:
                    self.stop_requested = self.forced = True
            for _ in self.lanes:
                self.jobs.put(None)
            if s.capture:
                OutputCapture.uninstall()
            restore_sigint()
            self.events.on_keyboard_interrupt = None
        if not self.forced:
            for lane in self.lanes:
                if not lane.abandoned and lane.thread is not None:
                    lane.thread.join()
        return build_summary(self)

    def request_stop(self, force: bool, from_signal: bool = False) -> None:
        """Ctrl-C or cancel(): safe from any thread and from a signal handler.

        Once this returns (from cancel()), no worker starts a task that is not
        ``always``. A signal handler must not take the handshake lock (the
        main thread may hold it), and needs no such promise.
        """
        if from_signal:
            self.stop_requested = True
        else:
            with self.handshake:
                self.stop_requested = True
        self.inbox.put((_MSG_INTERRUPT, force))

    def _loop(self) -> None:
        get = self.inbox.get
        handle = self._handle
        while self.unfinished and not self.forced:
            try:
                self._dispatch()
                if not self.unfinished:
                    break
                timers = self.timers
                if timers:
                    wait = timers[0][0] - time.monotonic()
                    if wait <= 0:
                        # what already arrived happened before the deadline we noticed late
                        # (e.g. behind a slow subscriber): handle it before any timer fires
                        self._drain()
                        self._fire_timers()
                        continue
                    try:
                        msg = get(timeout=min(wait, threading.TIMEOUT_MAX))
                    except queue.Empty:
                        msg = None
                    if msg is None:
                        self._fire_timers()
                        continue
                else:
                    msg = get()
                handle(msg)
                self._drain()  # what else has arrived, before dispatching again
            except KeyboardInterrupt:
                self._interrupt(force=self.interrupted)

    def _drain(self) -> None:
        get_nowait = self.inbox.get_nowait
        handle = self._handle
        while self.unfinished and not self.forced:
            try:
                msg = get_nowait()
            except queue.Empty:
                return
            handle(msg)

    def _dispatch(self) -> None:
        """Hand ready tasks to workers, lowest registration index first.

        Up to one task per lane is queued ahead of a free worker, so workers do
        not idle while this thread catches up — but only a task that would
        start next whatever else finishes meanwhile: no task that could still
        become ready (waiting, or able to retry) has a lower index. That keeps
        the start order independent of timing (identical runs with one
        worker). Tasks with a timeout are never queued ahead: their clock starts
        when they are handed over.
        """
        ready = self.ready
        where = self.where
        width = self.width
        while ready:
            idx = ready[0]
            if where[idx] != _READY:
                heapq.heappop(ready)  # cancelled while queued
                continue
            if self.inflight >= width and (
                self.inflight >= 2 * width
                or self.specs[idx].timeout is not None
                or idx >= self._low_water()
            ):
                return
            heapq.heappop(ready)
            self._launch(idx)

    def _low_water(self) -> int:
        """The lowest index of a task that may still become ready."""
        where = self.where
        ptr = self.waiting_ptr
        n = self.n
        while ptr < n and where[ptr] != _WAITING:  # a task never returns to _WAITING
            ptr += 1
        self.waiting_ptr = ptr
        heap = self.retry_heap
        while heap:
            i = heap[0]
            if where[i] in (_RUNNING, _RETRY_WAIT) and self.attempts[i] <= self.specs[i].retries:
                return min(ptr, i)
            heapq.heappop(heap)
        return ptr

    def _launch(self, idx: int) -> None:
        spec = self.specs[idx]
        self.where[idx] = _RUNNING
        self.attempts[idx] += 1
        job = _Job(idx, self.attempts[idx])
        self.job_of[idx] = job
        self.inflight += 1
        if job.attempt <= spec.retries:
            heapq.heappush(self.retry_heap, idx)
        if spec.timeout is not None:
            self._add_timer(time.monotonic() + spec.timeout, 0, job)
        self.jobs.put(job)
        events = self.events
        if events._subs[EventKind.TASK_STARTED]:
            events.emit(EventKind.TASK_STARTED, name=spec.name, attempt=job.attempt)

    def _add_timer(self, deadline: float, kind: int, payload: Any) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (deadline, self.timer_seq, kind, payload))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, _, kind, payload = heapq.heappop(timers)
            if kind == 0:
                self._timeout(payload)
            else:  # a retry's delay is over
                idx = payload
                if self.where[idx] == _RETRY_WAIT:
                    self._make_ready(idx)

    def _timeout(self, job: _Job) -> None:
        idx = job.idx
        if self.where[idx] != _RUNNING or job.abandoned or self.attempts[idx] != job.attempt:
            return  # finished in time
        spec = self.specs[idx]
        with self.handshake:
            if job.done:
                return  # it returned before we looked; its message is on the way
            job.abandoned = True
            lane = job.lane
            if lane is not None:
                lane.abandoned = True
        self.inflight -= 1
        output = ""
        if lane is None:
            thread_name = None  # nobody picked it up; whoever does will drop it
        else:
            # Python cannot kill a thread: abandon this one (daemon) and keep the pool's width
            thread_name = lane.name
            if lane.thread is not None:
                # what the stuck attempt printed so far is the best clue to why it is stuck
                output = _joined(list(OutputCapture.buffers.get(lane.thread.ident) or ()))
                lane.thread.name = f"{lane.name}-abandoned"
            self.lanes[lane.slot] = self._start_lane(lane.slot)
        message = f"task {spec.name!r} still running after {spec.timeout:g}s"
        log.warning("%s; abandoning its thread", message)
        self._attempt_failed(
            idx, thread_name, ("TimeoutError", message, None), started=None, duration=spec.timeout,
            output=output,
        )

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == _MSG_DONE:
            _, job, ok, value, error, started, duration, output, thread = msg
            if job.abandoned:
                return  # timed out earlier; its outcome is already recorded
            self.inflight -= 1
            idx = job.idx
            if ok:
                name = self.specs[idx].name
                results = self.results
                if results is not None:
                    with self.state_lock:
                        results[name] = value
                self._finish(
                    idx,
                    TaskRecord(
                        name, _PASSED, thread, started, started + duration, duration,
                        job.attempt, output=output, tags=self.specs[idx].tags,
                    ),
                )
            else:
                self._attempt_failed(idx, thread, error, started, duration, output)
        elif kind == _MSG_RUNNING:
            _, job, thread = msg
            if not job.abandoned:
                self.events.emit(
                    EventKind.TASK_RUNNING, name=self.specs[job.idx].name, thread=thread, attempt=job.attempt
                )
        elif kind == _MSG_DROPPED:
            job = msg[1]
            idx = job.idx
            if job.abandoned or self.where[idx] != _RUNNING or self.job_of[idx] is not job:
                return  # already accounted for (timed out, or the run was stopped)
            self.inflight -= 1
            self.attempts[idx] -= 1  # this attempt never ran
            self._stop_unstarted(idx)
        else:
            self._interrupt(force=msg[1] or self.interrupted)

    def _attempt_failed(self, idx, thread, error, started, duration, output) -> None:
        spec = self.specs[idx]
        attempt = self.attempts[idx]
        error_type, message, tb = error
        if started is None:
            started = time.time() - duration
        record = TaskRecord(
            spec.name, _FAILED, thread, started, started + duration, duration, attempt,
            error_type, message, tb if tb is not None else f"{error_type}: {message}\n", output,
            tags=spec.tags,
        )
        if attempt <= spec.retries and not self.interrupted:
            self.where[idx] = _RETRY_WAIT
            self.failed_attempt[idx] = record
            self.events.emit(
                EventKind.TASK_RETRYING, name=spec.name, thread=thread, attempt=attempt,
                record=record, data={"delay": spec.retry_delay},
            )
            if spec.retry_delay > 0:
                self._add_timer(time.monotonic() + spec.retry_delay, 1, idx)
            else:
                self._make_ready(idx)
            return
        self._finish(idx, record)

    def _make_ready(self, idx: int) -> None:
        self.where[idx] = _READY
        heapq.heappush(self.ready, idx)
        if self.attempts[idx] == 0:
            self.events.emit(EventKind.TASK_READY, name=self.specs[idx].name)

    def _decide(self, idx: int) -> None:
        """Every dependency of ``idx`` is final: run it, skip it or cancel it."""
        pending = [idx]
        while pending:
            i = pending.pop()
            if self.where[i] != _WAITING:
                continue
            spec = self.specs[i]
            blame = self.blame[i]
            if spec.always:
                self._make_ready(i)
            elif self.interrupted:
                self._finish(i, self._final(i, _CANCELLED, "cancelled: the run was interrupted"), pending)
            elif blame is not None and (self.s.skip_dependents or blame[1] is _CANCELLED):
                dep, status, root = blame
                if root == dep:
                    reason = f"dependency {dep!r} {status.value.lower()}"
                else:
                    reason = f"dependency {dep!r} skipped: upstream {root!r} failed"
                status = _CANCELLED if status is _CANCELLED else _SKIPPED
                self._finish(i, self._final(i, status, reason), pending)
            else:
                self._make_ready(i)

    def _final(self, idx: int, status: TaskStatus, reason: str) -> TaskRecord:
        now = time.time()
        spec = self.specs[idx]
        return TaskRecord(spec.name, status, None, None, now, 0.0, self.attempts[idx],
                          reason=reason, tags=spec.tags)

    def _finish(self, idx: int, record: TaskRecord, pending: list[int] | None = None) -> None:
        """Record a final state and release the dependents it was holding back."""
        self.where[idx] = _DONE
        self.records[idx] = record
        self.unfinished -= 1
        self.finished_count += 1
        status = record.status
        self.order[status].append(record.name)
        self.finish_order.append(record)
        events = self.events
        if events._subs[EventKind.TASK_FINISHED]:
            events.emit(EventKind.TASK_FINISHED, name=record.name, record=record, count=self.finished_count)
        if status is not _PASSED:
            if status is _SKIPPED and self.blame[idx] is not None:
                root = self.blame[idx][2]
            else:
                root = record.name
            blame_entry = (record.name, status, root)
        deps_left = self.deps_left
        blame = self.blame
        release = pending if pending is not None else []
        for c in self.children[idx]:
            if status is not _PASSED and blame[c] is None:
                blame[c] = blame_entry
            deps_left[c] -= 1
            if not deps_left[c]:
                release.append(c)
        if pending is None and release:
            for c in release:
                self._decide(c)

    def _interrupt(self, force: bool) -> None:
        first = not self.interrupted
        self.interrupted = self.stop_requested = True
        if first:
            # its own logger, so a front-end that reports RUN_INTERRUPTED itself can mute it
            logging.getLogger("thread_order.interrupt").warning(
                "interrupted: running tasks may finish, teardown tasks still run; "
                "interrupt again to stop waiting")
            self.events.emit(EventKind.RUN_INTERRUPTED, data={"force": False})
            # Only what is ready now is cancelled now. A waiting task is cancelled by _decide
            # when its dependencies are final, like any other decision: cancelling it early
            # would release an `always` teardown below it while something upstream still runs.
            where = self.where
            for i, spec in enumerate(self.specs):
                if spec.always:
                    continue
                if where[i] in (_RETRY_WAIT, _READY):
                    self._stop_unstarted(i)
            if not force:
                return
        if not self.forced:
            with self.handshake:  # from here on, workers drop every job still queued
                self.forced = True
            self.events.emit(EventKind.RUN_INTERRUPTED, data={"force": True})
            for i in range(self.n):
                if self.where[i] == _DONE:
                    continue
                job = self.job_of[i] if self.where[i] == _RUNNING else None
                if job is not None and job.started:
                    reason = "abandoned: still running when the run was stopped"
                    record = self._final(i, _CANCELLED, reason)._replace(thread=job.lane.name)
                else:
                    if job is not None:
                        self.attempts[i] -= 1  # queued, never started
                    record = self._final(i, _CANCELLED, "cancelled: the run was stopped")
                self._finish(i, record, pending=[])

    def _stop_unstarted(self, idx: int) -> None:
        """An interrupt keeps ``idx`` from starting: CANCELLED, or FAILED if an earlier
        attempt already ran and failed (its retries are cut short, its error kept)."""
        earlier = self.failed_attempt.get(idx)
        if earlier is not None:
            self._finish(idx, earlier._replace(reason="retries stopped: the run was interrupted"))
        else:
            self._finish(idx, self._final(idx, _CANCELLED, "cancelled: the run was interrupted"))
