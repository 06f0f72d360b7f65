"""One run of a Scheduler: the dispatcher loop and the bookkeeping of every task's life.

The dispatcher is the thread that called ``Scheduler.start()``. It alone owns
the run's bookkeeping (where each task is, what it waits for, its record), so
none of it needs a lock; workers and other threads talk to it only through
the ``inbox`` queue. Events are emitted from here, in order. The worker side
and timeouts live in lanes.py, interrupts in interrupts.py.
"""

from __future__ import annotations

import heapq
import operator
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from itertools import islice
from typing import Any, Callable, Sequence

from .events import EventKind, EventStream
from .gate import GateMethods
from .graph import Graph
from .interrupts import InterruptMethods
from .lanes import MSG_BEGAN, MSG_DONE, MSG_DROPPED, MSG_RUNNING, TIMER_RETRY, TIMER_TIMEOUT, Job, Lane, LaneMethods
from .model import TaskOptions, TaskRecord, TaskStatus, new_record
from .order import OrderPlan, ReplayGate, first_in_plan
from .replaying import ReplayMethods
from .signals import install_interrupt_handler
from .summary import build_summary
from .capture import OutputCapture

__all__ = ["Run", "RunOptions"]

_K_READY, _K_STARTED, _K_FINISHED = EventKind.TASK_READY, EventKind.TASK_STARTED, EventKind.TASK_FINISHED

_PASSED, _FAILED, _SKIPPED, _CANCELLED = (
    TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED,
)

# where a task is in its life during a run
_WAITING, _READY, _RUNNING, _RETRY_WAIT, _DONE = range(5)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a Scheduler runs its tasks (its constructor's arguments)."""

    workers: int
    store_results: bool = True
    clear_results_on_start: bool = True
    skip_dependents: bool = True
    capture: bool = True
    #: names of tasks to start before any other ready task (tdrun --failed-first)
    first: frozenset | None = None
    #: entered on the worker thread around each attempt (engine/context.py), or None
    task_context: Any = None
    executor: Any = None  # an executor.Executor; None: the run's own worker threads
    async_limit: int = 100  # coroutines running at once on the run's loop (engine/aio.py)
    block_threshold: float | None = 0.1  # seconds a coroutine step may hold the loop unwarned


class Run(LaneMethods, InterruptMethods, GateMethods, ReplayMethods):
    """The state of one call to ``Scheduler.start()``; lives on the dispatcher thread.

    ``fns`` and ``options`` are a snapshot, by task position: a task registered
    while this run goes on belongs to the next run. ``state`` is the
    scheduler's shared dict, guarded by ``state_lock``.
    """

    WAITING, READY, RUNNING, RETRY_WAIT, DONE = _WAITING, _READY, _RUNNING, _RETRY_WAIT, _DONE
    async_inflight = 0  # coroutines in flight on the run's event loop: an AsyncRun's (aio.py)

    def __init__(self, fns: Sequence[Callable[..., Any]], options: Sequence[TaskOptions], graph: Graph,
                 state: dict, state_lock: Any, events: EventStream, run_options: RunOptions,
                 plan: OrderPlan | None = None) -> None:
        self.s = run_options
        self.fns = fns
        self.options = options
        self.names = graph.nodes
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
        n = len(self.names)
        self.n = n
        self.where = [_WAITING] * n
        # the graph's edges as flat index arrays (see Graph): read-only, shared with workers
        self.pstart, self.cstart, self.cflat = graph._pstart, graph._cstart, graph._cflat
        pstart = self.pstart
        self.deps_left = list(map(operator.sub, islice(pstart, 1, None), pstart))  # pstart[i + 1] - pstart[i]
        # first non-passed dependency seen, and the failure at the root of it
        self.blame: dict[int, tuple[str, TaskStatus, str]] = {}  # (few tasks have one)
        self.records: list[TaskRecord | None] = [None] * n
        self.attempts = [0] * n
        self.failed_attempt: dict[int, TaskRecord] = {}
        self.ready: list[int] = []
        self.timers: list[tuple[float, int, int, Any]] = []  # (deadline, seq, kind, payload)
        self.timer_seq = 0
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.lanes: list[Lane] = []
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
        self.ran: list[str] = []  # tasks that ran at least once, in the order they finished
        self.results = state.get("results") if run_options.store_results else None
        # guards each Job's lane/abandoned/done/started flags, and job_of entries a worker
        # writes when it starts a child directly: a worker picking up or finishing a job and
        # the dispatcher timing it out or stopping the run must agree on who won
        self.handshake = threading.Lock()
        # the attempt in flight per task (None once final); a worker starting a child
        # directly fills the child's entry before the dispatcher hears of it
        self.job_of: list[Job | None] = [None] * n
        # the pools' gate (engine/gate.py), set by the Scheduler; None when no task is in a pool
        self.pool_gate: Any = None
        # tasks to start first: their heap key is idx - n (below every other task's idx)
        self.first = [name in run_options.first for name in self.names] if run_options.first else None
        # the start order (order.py): None keys the ready heap (and retry_heap) by index;
        # a plan keys them by rank, at[rank] being the task. need/finish_order: a replay's gate
        if plan is not None and self.first is not None:
            plan = first_in_plan(plan, self.first)  # the tasks to start first lead the plan's ranks
            self.first = None
        self.plan = plan
        self.at = plan.at if plan is not None else None
        self.need = plan.need if plan is not None else None
        self.finished_prefix = 0  # the first this many tasks of plan.finish_order are final
        self.launched_prefix = 0  # ... handed to a worker or final
        self.finish_end = len(plan.finish_order) if plan is not None else 0
        self.gate = ReplayGate(plan, n) if plan is not None and plan.need is not None else None
        if plan is not None:
            self.rank = plan.rank
            self._make_ready = self._make_ready_ranked  # the declared order keeps its own
        # where launched attempts go: the worker lanes' queue, or an executor (executor.py)
        self.executor = run_options.executor
        self.submit = self.jobs.put if self.executor is None else self.executor.submit

    def execute(self) -> dict:
        """Run every task; returns the summary (``self.records`` holds every record).

        The caller emits RUN_FINISHED, once it has published the records.
        """
        s = self.s
        state = self.state
        # first of all: a run that cannot have its threads has not started (nothing announced)
        if self.executor is None:
            self._start_lanes(min(s.workers, max(self.n, 1)))
        else:  # may raise too: nothing announced yet
            self.width = len(self.executor.open(self))
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
        if self.events.wants(EventKind.RUN_STARTED):
            meta = {
                "run_id": run_id,
                "total_tasks": self.n,
                "workers": s.workers,
                "start_time": self.started_at,
                "tasks": list(self.names),
                "threads": self.width,  # worker threads started (none for coroutines only)
            }
            if self.executor is not None:
                meta["lanes"] = list(self.executor.lanes)
                meta["executor"] = self.executor.name
            self.events.emit(EventKind.RUN_STARTED, data=meta)

        completed = False
        restore_sigint = install_interrupt_handler(lambda: self.request_stop(False, from_signal=True))
        if s.capture:
            OutputCapture.install()
        try:
            self._ready_roots()
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
            if self.executor is not None:
                self.executor.close(self.forced)
        if not self.forced:
            for lane in self.lanes:
                if not lane.abandoned and lane.thread is not None:
                    lane.thread.join()
        summary = build_summary(self)
        if self.executor is not None:
            self.executor.annotate(summary)
        return summary

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
        inbox = self.inbox
        get_nowait = inbox.get_nowait
        handle = self._handle
        # this thread is the inbox's only reader: not empty() means get_nowait() succeeds,
        # without the cost of raising queue.Empty at the end of every batch
        while self.unfinished and not self.forced and not inbox.empty():
            handle(get_nowait())

    def _dispatch(self) -> None:
        """Hand ready tasks to workers, lowest registration index (or rank, see order.py) first.

        Up to one task per lane is queued ahead of a free worker, so workers do
        not idle while this thread catches up — but only a task that would
        start next whatever else finishes meanwhile: no task that could still
        become ready (waiting, or able to retry) has a lower index. That keeps
        the start order independent of timing (identical runs with one
        worker). Tasks with a timeout are never queued ahead: their clock starts
        when a worker begins them, which should be at once. A worker may start a task itself only when
        this rule would have started it next anyway (see ``_launch``).
        """
        if self.pool_gate is not None:
            self._pump()
        ready = self.ready
        where = self.where
        width = self.width
        options = self.options
        at = self.at
        need = self.need
        while ready:
            idx = key = ready[0]
            if at is not None:
                idx = at[key]
            elif idx < 0:  # a task to start first (see _make_ready)
                idx += self.n
            if where[idx] != _READY:
                heapq.heappop(ready)  # cancelled while queued
                continue
            if self.inflight >= width and (
                self.inflight >= 2 * width
                or options[idx].timeout is not None
                or self.first is not None  # queue ahead only in plain index order
                or key >= self._low_water()
            ):
                return
            # a replay: wait for what had finished before it started in the recording, unless
            # nothing in flight or pending could ever bring that about (a changed graph)
            if need is not None and (need[idx] > self.launched_prefix or options[idx].timeout is not None) \
                    and not self._replay_allows(idx):
                if self.inflight or self.async_inflight or self.timers:  # (a coroutine may be it)
                    return
                self._open_gate()
            heapq.heappop(ready)
            self._launch(idx)
            if need is not None:
                # the launched prefix of the finish order grows by this task when it is next in
                # it (a recording whose tasks followed one another): no scan for the next task
                p = self.launched_prefix
                if p < self.finish_end and self.plan.finish_order[p] == idx:
                    self.launched_prefix = p + 1

    def _low_water(self) -> int:
        """The lowest key (index, or rank under a plan) of a task that may still become ready."""
        where = self.where
        ptr = self.waiting_ptr
        n = self.n
        at = self.at
        if at is None:
            while ptr < n and where[ptr] != _WAITING:  # a task never returns to _WAITING
                ptr += 1
        else:
            while ptr < n and where[at[ptr]] != _WAITING:
                ptr += 1
        self.waiting_ptr = ptr
        if self.pool_gate is not None and self.pool_gate.waiting:
            # a task waiting for a pool may start as soon as it has room (under a plan its
            # rank is not at hand: nothing is queued ahead while one waits)
            low = self.pool_gate.lowest_waiting() if at is None else -1
            if low is not None and low < ptr:
                ptr = low
        heap = self.retry_heap
        while heap:
            k = heap[0]
            i = k if at is None else at[k]
            if where[i] in (_RUNNING, _RETRY_WAIT) and self.attempts[i] <= self.options[i].retries:
                return min(ptr, k)
            heapq.heappop(heap)
        return ptr

    def _launch(self, idx: int) -> None:
        opts = self.options[idx]
        self.where[idx] = _RUNNING
        attempt = self.attempts[idx] = self.attempts[idx] + 1
        self.inflight += 1
        # alone in flight, nothing ready, no timer that could make anything ready, nobody
        # to react to events in between: only this task's dependents can be next
        # (a replay's gate is the dispatcher's to apply: no direct start under it)
        direct = (self.inflight == 1 and not self.ready and not self.timers and opts.timeout is None
                  and self.events.task_quiet and self.need is None
                  and (self.pool_gate is None or not self.pool_gate.waiting))
        job = Job(idx, attempt, direct)
        if self.pool_gate is not None and idx in self.pool_gate.rated:
            if self.executor is None:
                job.rated = True  # its worker reports when it begins
            else:  # a remote worker does not: a rate counts hand-overs to the executor
                self.pool_gate.began(idx, time.time())
        self.job_of[idx] = job
        if attempt <= opts.retries:
            heapq.heappush(self.retry_heap, idx if self.at is None else self.rank[idx])
        if opts.timeout is not None:
            self._add_timer(time.monotonic() + opts.timeout, TIMER_TIMEOUT, job)
        self.submit(job)
        if self.events._subs[_K_STARTED]:
            self.events.emit_task(_K_STARTED, self.names[idx], None, attempt)

    def _adopt(self, job: Job) -> None:
        """Account for a task a worker started directly, as if this thread had launched it."""
        idx = job.idx
        self.attempts[idx] = job.attempt
        self.inflight += 1
        if job.attempt <= self.options[idx].retries:
            heapq.heappush(self.retry_heap, idx if self.at is None else self.rank[idx])
        events = self.events
        if events._subs[_K_READY]:
            events.emit_task(_K_READY, self.names[idx])
        if events._subs[_K_STARTED]:
            events.emit_task(_K_STARTED, self.names[idx], None, job.attempt)

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == MSG_DONE:
            _, job, ok, value, error, started, duration, output, thread, nxt = msg
            if job.abandoned:
                return  # timed out earlier; its outcome is already recorded
            self.inflight -= 1
            idx = job.idx
            if self.pool_gate is not None and self.pool_gate.of[idx] is not None:
                self._pooled_done(msg)
                return
            if ok:
                name = self.names[idx]
                results = self.results
                # else the worker stored it already (a direct start, or a replay: see lanes.py)
                if results is not None and nxt is None and (self.gate is None or self.options[idx].timeout is not None):
                    with self.state_lock:
                        results[name] = value
                if nxt is not None:
                    self.where[nxt.idx] = _RUNNING  # so that releasing it does not decide it again
                self._finish(idx, new_record(TaskRecord, (  # every field, in order: the hot path
                    name, _PASSED, thread, started, started + duration, duration, job.attempt,
                    None, None, None, output, None, self.options[idx].tags, False, None, 0.0, None,
                )))
                if nxt is not None:
                    self._adopt(nxt)
            else:
                self._attempt_failed(idx, thread, error, started, duration, output)
        elif kind == MSG_RUNNING:
            _, job, thread = msg
            if not job.abandoned:
                self.events.emit_task(EventKind.TASK_RUNNING, self.names[job.idx], thread, job.attempt)
        elif kind == MSG_BEGAN:
            job = msg[1]
            self.pool_gate.began(job.idx, msg[2])
        elif kind == MSG_DROPPED:
            job = msg[1]
            idx = job.idx
            if job.abandoned or self.where[idx] != _RUNNING or self.job_of[idx] is not job:
                return  # already accounted for (timed out, or the run was stopped)
            self.inflight -= 1
            if self.pool_gate is not None:
                self.pool_gate.release(idx, started=False)
            self.attempts[idx] -= 1  # this attempt never ran
            self._stop_unstarted(idx)
        else:
            self._interrupt(force=msg[1] or self.interrupted)

    def _attempt_failed(self, idx, thread, error, started, duration, output, wait=None) -> None:
        opts = self.options[idx]
        name = self.names[idx]
        attempt = self.attempts[idx]
        error_type, message, tb = error
        if started is None:
            started = time.time() - duration
        if wait is None and self.pool_gate is not None and self.pool_gate.of[idx] is not None:  # a timeout
            wait = self.pool_gate.wait_of(idx, started)
        record = TaskRecord(
            name, _FAILED, thread, started, started + duration, duration, attempt,
            error_type, message, tb if tb is not None else f"{error_type}: {message}\n", output,
            tags=opts.tags, **({} if wait is None else {"waited": wait[0], "waited_for": wait[1]}),
        )
        if attempt <= opts.retries and not self.interrupted:
            if self.gate is not None:
                self._open_gate()  # the recording cannot order a retry: the replay stops holding back
            self.where[idx] = _RETRY_WAIT
            self.failed_attempt[idx] = record
            self.events.emit(
                EventKind.TASK_RETRYING, name=name, thread=thread, attempt=attempt,
                record=record, data={"delay": opts.retry_delay},
            )
            if opts.retry_delay > 0:
                self._add_timer(time.monotonic() + opts.retry_delay, TIMER_RETRY, idx)
            else:
                self._make_ready(idx)
            return
        self._finish(idx, record)

    def _ready_roots(self) -> None:
        """Make every task without dependencies ready: what ``_decide`` concludes for a root."""
        deps_left = self.deps_left
        roots = [i for i in range(self.n) if not deps_left[i]]
        if self.pool_gate is None and self.first is None and not self.events._subs[_K_READY]:
            # nothing to weigh: every root ready at once, each heap filled already sorted
            where = self.where
            for i in roots:
                where[i] = _READY
            self._heap_roots(roots)
        else:
            for i in roots:
                self._make_ready(i)

    def _heap_roots(self, roots: list[int]) -> None:
        """The roots (ready, in ascending order) to the ready heap, empty until now."""
        self.ready.extend(self._sorted_keys(roots))

    def _sorted_keys(self, idxs: list[int]) -> list[int]:
        """The heap keys of tasks ``idxs`` (ascending), ascending: a heap as it is."""
        return idxs if self.plan is None else sorted(map(self.rank.__getitem__, idxs))

    def _make_ready(self, idx: int) -> None:
        self.where[idx] = _READY
        pgate = self.pool_gate
        if pgate is None or pgate.of[idx] is None or pgate.enter(idx):
            first = self.first
            heapq.heappush(self.ready, idx - self.n if first is not None and first[idx] else idx)
        elif self.attempts[idx] or pgate.named:  # it waits at the gate, holding nothing: _dispatch
            self._waits_for_pool(idx)  # lets it in when its pools have room
        if self.attempts[idx] == 0 and self.events._subs[_K_READY]:
            self.events.emit_task(_K_READY, self.names[idx])

    def _make_ready_ranked(self, idx: int) -> None:  # _make_ready under an OrderPlan
        self.where[idx] = _READY
        pgate = self.pool_gate
        if pgate is None or pgate.of[idx] is None or pgate.enter(idx):
            heapq.heappush(self.ready, self.rank[idx])
        elif self.attempts[idx] or pgate.named:  # it waits at the gate, as in _make_ready
            self._waits_for_pool(idx)
        if self.attempts[idx] == 0 and self.events._subs[_K_READY]:
            self.events.emit_task(_K_READY, self.names[idx])

    def _decide(self, idx: int) -> None:
        """Every dependency of ``idx`` is final: run it, skip it or cancel it."""
        pending = [idx]
        where = self.where
        options = self.options
        while pending:
            i = pending.pop()
            if where[i] != _WAITING:
                continue
            blame = self.blame.get(i)
            if options[i].always:
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
        return TaskRecord(self.names[idx], status, None, None, time.time(), 0.0, self.attempts[idx],
                          reason=reason, tags=self.options[idx].tags)

    def _finish(self, idx: int, record: TaskRecord, pending: list[int] | None = None) -> None:
        """Record a final state and release the dependents it was holding back."""
        self.where[idx] = _DONE
        self.records[idx] = record
        self.job_of[idx] = None
        if self.pool_gate is not None and self.pool_gate.state[idx]:
            self.pool_gate.final(idx)  # whatever it still holds or waits for: no slot outlives a task
        gate = self.gate
        if gate is not None and not gate.finished[idx]:  # (a worker says so first for most)
            for job in gate.done(idx):  # parked replayed tasks its end lets start
                self.jobs.put(job)
        self.unfinished -= 1
        self.finished_count += 1
        status = record.status
        self.order[status].append(record.name)
        if record.attempts:
            self.ran.append(record.name)
        events = self.events
        if events._subs[_K_FINISHED]:
            events.emit_task(_K_FINISHED, record.name, None, 0, record, self.finished_count)
        cstart = self.cstart
        if cstart[idx] != cstart[idx + 1]:  # (else no slice, no release list: a wide run's common case)
            self._release(idx, record, pending)

    def _release(self, idx: int, record: TaskRecord, pending: list[int] | None = None) -> None:
        """``idx`` is final (``record``): its dependents have one dependency fewer to wait for;
        those with none left are decided now (or put in ``pending``, to be decided by the caller)."""
        deps_left, cstart = self.deps_left, self.cstart
        children = self.cflat[cstart[idx]:cstart[idx + 1]]
        status = record.status
        if status is not _PASSED:
            mine = self.blame.get(idx) if status is _SKIPPED else None
            root = mine[2] if mine is not None else record.name
            blame_entry = (record.name, status, root)
            blame = self.blame
            for c in children:
                if c not in blame:
                    blame[c] = blame_entry
        if pending is not None:
            for c in children:
                deps_left[c] -= 1
                if not deps_left[c]:
                    pending.append(c)
            return
        release = []
        for c in children:
            deps_left[c] -= 1
            if not deps_left[c]:
                release.append(c)
        if release:
            blame = self.blame
            quick = not self.interrupted
            for c in release:
                if quick and c not in blame and self.where[c] == _WAITING:
                    self._make_ready(c)  # what _decide concludes, without its loop
                else:
                    self._decide(c)
