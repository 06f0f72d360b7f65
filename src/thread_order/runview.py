"""The one run-view model: the engine's event stream turned into what every live front-end draws.

tdrun's live view and the web UI both show a run through :class:`RunView`:
lanes (what each worker thread runs, and what it finished last; the event
loop's lane group: the coroutines running on it), counters,
retries, the latest completions, the failures so far (pinned, never scrolled
away), the phase, and the teardown tasks that did not run. Because both read
the same :class:`RunSnapshot`, they cannot disagree; each keeps only its
rendering.

The handlers run on the scheduler's dispatcher thread for every task, so they
only store what arrived (records, not strings made from them) under the lock;
:meth:`RunView.snapshot`, on the caller's thread, turns that into a copy.
With ``journal=True`` the view also keeps each task's latest status and an
append-only change log, read with :meth:`RunView.read_since`, for front-ends
that send changes rather than whole pictures (the web UI's streams).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from .engine.aio import LOOP_THREAD
from .engine.events import Event, EventKind
from .engine.model import TaskRecord, TaskStatus

__all__ = ["RunView", "RunSnapshot", "Running", "Completion", "RECENT", "PHASES", "LOOP_THREAD", "lane_names",
           "loop_rows",
           "completion", "first_line", "record_dict", "completion_dict"]

#: latest completions kept (and sent); a front-end shows as many as fit
RECENT = 30
#: the phases of a run, in the order they can happen
PHASES = ("starting", "running", "interrupting", "forced", "finished")

_PASSED, _FAILED, _SKIPPED = TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED


class Running(NamedTuple):
    """The task a lane is running: since when (epoch seconds, from the event) and which attempt."""

    task: str
    since: float
    attempt: int


class Completion(NamedTuple):
    """One line of the latest completions; ``status`` is ``"RETRY"`` for an attempt that is retried."""

    name: str
    status: str
    thread: str | None
    duration: float
    detail: str  # the error's first line for a failure, the reason for a skip
    record: TaskRecord
    attempt: int  # the failed attempt of a RETRY, else 0


@dataclass(frozen=True)
class RunSnapshot:
    """A consistent copy of a :class:`RunView`, taken under its lock."""

    title: str
    total: int
    lanes: tuple[str, ...]
    running: dict  # lane -> Running
    last: dict  # lane -> (task, status) the lane finished last
    counts: dict  # "PASSED"/"FAILED"/"SKIPPED"/"CANCELLED" -> n
    finished: int
    retries: int
    recent: tuple  # Completion, newest first
    failures: tuple  # TaskRecord of every task that ended FAILED, in the order they failed
    phase: str  # one of PHASES
    teardown_not_run: tuple  # always-tasks a forced stop left behind (from the summary)
    stopped: int  # 0 not interrupted, 1 graceful stop, 2 forced stop (kept once finished)
    started: float | None  # epoch seconds, display only
    now: float
    name_width: int = 24  # the longest task name, to size columns
    # the async lane group: coroutines running on the run's event loop thread, by task
    coroutines: dict = None  # type: ignore[assignment]
    warnings: tuple = ()  # (task, warning) of each task warned about, in order

    pool_waiting: dict = field(default_factory=dict)  # pool -> tasks waiting for it (runs with pools)

    @property
    def in_flight(self) -> int:
        """Tasks running now: one per busy worker lane, plus every running coroutine."""
        return len(self.running) + len(self.coroutines or ())

    @property
    def waiting(self) -> int:
        return max(self.total - self.finished - self.in_flight, 0)

    @property
    def elapsed(self) -> float:
        return (self.now - self.started) if self.started is not None else 0.0

    @property
    def interrupted(self) -> int:
        return self.stopped

    @property
    def done(self) -> bool:
        return self.phase == "finished"

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        """The snapshot as JSON (the web UI's): progress, lanes and counters; with ``full``
        also ``recent`` (oldest first) and ``failures``, which batches send as changes."""
        out = {
            "run_phase": self.phase,
            "finished": self.finished,
            "total": self.total,
            "counts": dict(self.counts),
            "running": self.in_flight,
            "retries": self.retries,
            "lanes": [{"thread": t, "task": r.task, "since": r.since, "attempt": r.attempt}
                      for t, r in sorted(self.running.items(), key=_lane_order)],
            "loop": {"thread": LOOP_THREAD, "running": len(self.coroutines or ()),
                     "tasks": [{"task": r.task, "since": r.since, "attempt": r.attempt}
                               for r in sorted((self.coroutines or {}).values(), key=lambda r: r.since)]},
            "warnings": [{"task": t, "warning": w} for t, w in self.warnings],
            "lane_last": {t: {"task": task, "status": status} for t, (task, status) in self.last.items()},
            "lane_names": list(self.lanes),
            "teardown_not_run": list(self.teardown_not_run),
            "server_time": self.now,
            "started_at": self.started,
            "pool_waiting": dict(self.pool_waiting),
        }
        if full:
            out["recent"] = [completion_dict(c) for c in reversed(self.recent)]
            out["failures"] = [record_dict(rec) for rec in self.failures]
        return out


def lane_names(n: int) -> tuple[str, ...]:
    """The engine's worker thread names for a pool of ``n``."""
    return tuple(f"thread_{i}" for i in range(n))


class RunView:
    """What a live front-end shows of one run, kept up to date from the event stream.

    ``on_change``, if given, is called after every event the view recorded,
    outside the lock, on the dispatcher thread: keep it as cheap as the
    handlers (the web UI rings its streams' doorbells there).
    """

    def __init__(self, total: int = 0, lanes: int = 1, title: str = "", *, journal: bool = False,
                 on_change: Callable[[], Any] | None = None) -> None:
        # guards every field below; held for a few assignments at a time, never while calling out
        self._lock = threading.Lock()
        self.title = title
        self.total = total
        self.lanes = lane_names(lanes)
        self.named_lanes = False  # lanes named by an executor, not thread_0..N
        self.running: dict[str, Running] = {}
        self.coroutines: dict[str, Running] = {}  # task -> Running, on the event loop thread
        self.warnings: list[tuple[str, str]] = []
        self.last: dict[str, TaskRecord] = {}  # lane -> the record it finished last
        self.counts = {"PASSED": 0, "FAILED": 0, "SKIPPED": 0, "CANCELLED": 0}
        self.finished = 0
        self.retries = 0
        self.recent: deque = deque(maxlen=RECENT)  # (record, attempt if a retry else 0), newest first
        self.failures: list[TaskRecord] = []
        self.phase = "starting"
        self.stopped = 0  # 1 graceful, 2 forced: kept once the run is finished
        self.teardown_not_run: tuple[str, ...] = ()
        self.started: float | None = None
        self.name_width = 24
        self.on_change = on_change
        # the journal: task -> latest status (RUNNING, RETRYING or final) and the change log
        self.pool_waiting: dict[str, int] = {}  # pool -> tasks waiting for it
        self.statuses: dict[str, str] | None = {} if journal else None
        self.log: list[tuple[str, str, TaskRecord | None, int]] | None = [] if journal else None

    def subscribe(self, scheduler) -> list[Callable[[], None]]:
        """Follow ``scheduler``'s events; returns the undo functions."""
        sub = scheduler.subscribe
        return [
            sub(self._on_started, EventKind.RUN_STARTED),
            sub(self._on_running, EventKind.TASK_RUNNING),
            sub(self._on_retrying, EventKind.TASK_RETRYING),
            sub(self._on_finished, EventKind.TASK_FINISHED),
            sub(self._on_interrupted, EventKind.RUN_INTERRUPTED),
            sub(self._on_run_finished, EventKind.RUN_FINISHED),
            sub(self._on_warning, EventKind.TASK_WARNING),
            sub(self._on_pool_waiting, EventKind.POOL_WAITING),
        ]

    def feed(self, event: Event) -> None:
        """Apply one event (what the subscriptions do; for replaying a recorded stream)."""
        handler = {
            EventKind.RUN_STARTED: self._on_started, EventKind.TASK_RUNNING: self._on_running,
            EventKind.TASK_RETRYING: self._on_retrying, EventKind.TASK_FINISHED: self._on_finished,
            EventKind.RUN_INTERRUPTED: self._on_interrupted, EventKind.RUN_FINISHED: self._on_run_finished,
            EventKind.TASK_WARNING: self._on_warning,
            EventKind.POOL_WAITING: self._on_pool_waiting,
        }.get(event.kind)
        if handler is not None:
            handler(event)

    # ------------------------------------------------------------ handlers (dispatcher thread)

    def _on_started(self, event: Event) -> None:
        meta = event.data or {}
        with self._lock:
            self.total = meta.get("total_tasks", self.total)
            n = meta.get("threads", min(meta.get("workers", len(self.lanes)), max(self.total, 1)))
            # an executor's lanes are named by it (a Dask cluster's worker-address/thread_N)
            self.named_lanes = bool(meta.get("lanes"))
            self.lanes = tuple(meta["lanes"]) if self.named_lanes else lane_names(n)
            self.name_width = max((len(t) for t in meta.get("tasks", ())), default=24)
            self.started = event.time
            self.phase = "running"
            if self.log is not None:
                self.log.append(("", "PHASE", None, 0))
        if self.on_change is not None:
            self.on_change()

    def _on_running(self, event: Event) -> None:
        name = event.name
        with self._lock:
            if event.thread == LOOP_THREAD:  # many at once: one entry per coroutine
                self.coroutines[name] = Running(name, event.time, event.attempt)
            else:
                self.running[event.thread] = Running(name, event.time, event.attempt)
                if self.named_lanes and event.thread not in self.lanes:
                    self.lanes += (event.thread,)  # a worker that joined the cluster during the run
            if self.log is not None:
                self.statuses[name] = "RUNNING"
                self.log.append((name, "RUNNING", None, event.attempt))
        if self.on_change is not None:
            self.on_change()

    def _on_retrying(self, event: Event) -> None:
        rec = event.record
        name = rec.name
        with self._lock:
            held = self.running.get(rec.thread)
            if held is not None and held[0] == name:
                del self.running[rec.thread]
            self.coroutines.pop(name, None)
            self.retries += 1
            self.recent.appendleft((rec, event.attempt))
            if self.log is not None:
                self.statuses[name] = "RETRYING"
                self.log.append((name, "RETRYING", rec, event.attempt))
        if self.on_change is not None:
            self.on_change()

    def _on_finished(self, event: Event) -> None:
        rec = event.record
        status = rec.status
        thread = rec.thread
        with self._lock:
            if thread is not None:
                held = self.running.get(thread)
                if held is not None and held[0] == rec.name:
                    del self.running[thread]
                self.coroutines.pop(rec.name, None)
                self.last[thread] = rec
            self.counts[status.value] += 1
            if status is _FAILED:
                self.failures.append(rec)
            self.finished = event.count
            self.recent.appendleft((rec, 0))
            if self.log is not None:
                self.statuses[rec.name] = status.value
                self.log.append((rec.name, status.value, rec, 0))
        if self.on_change is not None:
            self.on_change()

    def _on_interrupted(self, event: Event) -> None:
        force = bool((event.data or {}).get("force"))
        with self._lock:
            if self.phase != "finished":
                self.phase = "forced" if force else "interrupting"
            self.stopped = 2 if force else max(self.stopped, 1)
            if self.log is not None:
                self.log.append(("", "PHASE", None, 0))
        if self.on_change is not None:
            self.on_change()

    def _on_run_finished(self, event: Event) -> None:
        summary = event.data or {}
        with self._lock:
            self.running.clear()
            self.coroutines.clear()
            self.phase = "finished"
            self.teardown_not_run = tuple(summary.get("teardown_not_run", ()))
            if summary.get("interrupted") and not self.stopped:
                self.stopped = 1
            if self.log is not None:
                self.log.append(("", "PHASE", None, 0))
        if self.on_change is not None:
            self.on_change()

    def _on_warning(self, event: Event) -> None:
        text = (event.data or {}).get("warning", "")
        with self._lock:
            self.warnings.append((event.name, text))
            if self.log is not None:
                self.log.append(("", "PHASE", None, 0))
        if self.on_change is not None:
            self.on_change()

    def _on_pool_waiting(self, event: Event) -> None:
        waiting = dict((event.data or {}).get("waiting", {}))
        with self._lock:
            self.pool_waiting = waiting
            if self.log is not None:
                self.log.append(("", "POOLS", None, 0))
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------ readers (any thread)

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            raw = self._copy_locked()
        return raw.build()

    def snapshot_with_cursor(self) -> tuple[RunSnapshot, dict[str, str], int]:
        """``(snapshot, statuses, cursor)`` at one instant: ``read_since(cursor)`` continues from it."""
        if self.log is None:
            raise RuntimeError("snapshot_with_cursor: this RunView keeps no journal")
        with self._lock:
            raw, statuses, cursor = self._copy_locked(), dict(self.statuses), len(self.log)
        return raw.build(), statuses, cursor

    def read_since(self, cursor: int) -> tuple[dict[str, Any], int]:
        """What changed after ``cursor`` as JSON, and the new cursor.

        The dict is :meth:`RunSnapshot.to_dict` without ``recent`` and
        ``failures``, plus ``changes`` (``{status: [task, ...]}``, each task
        once under its latest status: lists of names encode several times
        faster than a name -> status object, which matters at 10,000 tasks),
        ``completed`` (the new latest completions, oldest first, at most
        RECENT) and ``new_failures`` (to append to ``failures``).
        """
        if self.log is None:
            raise RuntimeError("read_since: this RunView keeps no journal")
        with self._lock:
            entries, raw, cursor = self.log[cursor:], self._copy_locked(), len(self.log)
        out = raw.build().to_dict(full=False)
        last = {name: status for name, status, _, _ in entries if name}
        changes: dict[str, list[str]] = {}
        for name, status in last.items():
            group = changes.get(status)
            if group is None:
                changes[status] = [name]
            else:
                group.append(name)
        completed: list[Completion] = []
        for _, _, rec, attempt in reversed(entries):
            if rec is not None:
                completed.append(completion(rec, attempt))
                if len(completed) == RECENT:
                    break
        out["changes"] = changes
        out["completed"] = [completion_dict(c) for c in reversed(completed)]
        out["new_failures"] = [record_dict(rec) for _, status, rec, _ in entries if status == "FAILED"]
        return out, cursor

    def _copy_locked(self) -> _Raw:
        # only copies under the lock: the snapshot is built after it is released
        return _Raw(self.title, self.total, self.lanes, dict(self.running), dict(self.last),
                    dict(self.counts), self.finished, self.retries, tuple(self.recent),
                    tuple(self.failures), self.phase, self.teardown_not_run, self.started,
                    self.name_width, self.stopped, dict(self.coroutines), tuple(self.warnings),
                    dict(self.pool_waiting))


class _Raw(NamedTuple):
    """The view's fields as copied under its lock."""

    title: str
    total: int
    lanes: tuple
    running: dict
    last: dict
    counts: dict
    finished: int
    retries: int
    recent: tuple
    failures: tuple
    phase: str
    teardown_not_run: tuple
    started: float | None
    name_width: int
    stopped: int
    coroutines: dict
    warnings: tuple
    pool_waiting: dict = {}

    def build(self) -> RunSnapshot:
        return RunSnapshot(
            self.title, self.total, self.lanes, self.running,
            {lane: (rec.name, rec.status.value) for lane, rec in self.last.items()},
            self.counts, self.finished, self.retries,
            tuple(completion(rec, attempt) for rec, attempt in self.recent),
            self.failures, self.phase, self.teardown_not_run, self.stopped, self.started,
            time.time(), self.name_width, self.coroutines, self.warnings, self.pool_waiting,
        )


def completion(rec: TaskRecord, attempt: int = 0) -> Completion:
    """The latest-completions line of a final record, or of a failed attempt that is retried."""
    if attempt:
        detail = f"attempt {attempt} failed: {first_line(rec.error_type, rec.error)}"
        return Completion(rec.name, "RETRY", rec.thread, rec.duration, detail, rec, attempt)
    status = rec.status.value
    detail = first_line(rec.error_type, rec.error) if status == "FAILED" else (rec.reason or "")
    return Completion(rec.name, status, rec.thread, rec.duration, detail, rec, 0)


def first_line(error_type: str | None, error: str | None) -> str:
    """``"ValueError: the first line of the message"``."""
    message = (error or "").strip().split("\n", 1)[0]
    return f"{error_type}: {message}" if message else (error_type or "")


def record_dict(rec: TaskRecord) -> dict[str, Any]:
    """The fields of a record a live front-end shows, JSON-ready."""
    return {
        "name": rec.name, "status": rec.status.value, "thread": rec.thread,
        "duration": rec.duration, "attempts": rec.attempts, "error_type": rec.error_type,
        "error": rec.error, "reason": rec.reason, "finished_at": rec.finished_at,
        "waited": rec.waited, "waited_for": rec.waited_for,
    }


def completion_dict(line: Completion) -> dict[str, Any]:
    """A latest-completions line as JSON: the record, with status ``RETRY`` for a retried attempt."""
    out = record_dict(line.record)
    out.update(status=line.status, detail=line.detail, attempt=line.attempt)
    return out


def loop_rows(ran: list, end_of: Callable[[Any], float]) -> dict[int, str]:
    """Rows for the tasks of a finished run that ran on the event loop (async tasks), by index.

    ``ran`` holds task dicts with ``thread`` and ``started_at``; ``end_of(task)``
    gives its end. Coroutines overlap on their one thread: each row holds
    tasks that do not, packed greedily by start time (``event_loop``,
    ``event_loop ·2``, ...), so a timeline (the HTML report's, a trace) shows
    every overlap.
    """
    rows: list[float] = []  # per row, when its last task ends
    out: dict[int, str] = {}
    loop = [i for i, t in enumerate(ran) if t.get("thread") == LOOP_THREAD]
    for i in sorted(loop, key=lambda i: ran[i]["started_at"]):
        t = ran[i]
        for r, free in enumerate(rows):
            if free <= t["started_at"]:
                break
        else:
            r = len(rows)
            rows.append(0.0)
        rows[r] = end_of(t)
        out[i] = LOOP_THREAD if r == 0 else f"{LOOP_THREAD} \u00b7{r + 1}"
    return out


def _lane_order(item: tuple[str, Any]) -> tuple[int, str]:
    thread = item[0]
    tail = thread.rsplit("_", 1)[-1]
    return (int(tail), thread) if tail.isdigit() else (1 << 30, thread)
