"""Recording the run history: each run and its tasks written to SQLite as they finish.

A :class:`HistoryRecorder` subscribes to a scheduler's event stream. Its
subscribers only append finished tasks' records to a list and put the run's
own events on a queue (cheap, on the dispatcher thread); a writer thread of
its own turns them into rows, one transaction per batch. While the run goes on
the writer takes what has finished every ``BATCH_WINDOW`` seconds, so a busy
run commits about ten times a second and a run killed with SIGKILL loses at
most the last fraction of a second. The file is in WAL mode with a busy timeout, and every
write transaction is ``BEGIN IMMEDIATE``, so several processes can record into
one file at once.

Another process may hold the write lock for longer than an attempt waits. A
failed write loses nothing: its rows stay pending, the writer keeps taking the
run's events and tries again with a growing delay; it says so once when the
file stays locked past ``WARN_AFTER`` (or fails for another reason), and when
the run is over it waits up to ``FINAL_WAIT`` more before giving up.
"""

from __future__ import annotations

import itertools
import json
import logging
import operator
import os
import queue
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from ..engine.events import Event, EventKind
from ..engine.model import TaskRecord, TaskStatus, parse_tags
from .db import (
    HOST,
    OUTPUT_CAP,
    cap_text,
    describe,
    encode_batch,
    fail,
    json_strings,
    open_writable,
    redact_argv,
    snapshot_state,
    transaction,
)

__all__ = ["HistoryRecorder", "BATCH_WINDOW", "HEARTBEAT_INTERVAL", "FINAL_WAIT"]

log = logging.getLogger("thread_order")

#: a batch of finished tasks is committed at most this long after its first task
BATCH_WINDOW = 0.1
#: the most tasks one row of task_batches holds
BATCH_TASKS = 1024
HEARTBEAT_INTERVAL = 5.0
#: how long one write waits for another process's write lock before backing off
ATTEMPT_WAIT = 2.0
#: the delay before retrying a failed write, doubling up to RETRY_MAX
RETRY_FIRST, RETRY_MAX = 0.25, 5.0
#: a file locked this long is worth a warning (once per run)
WARN_AFTER = 10.0
#: once the run is over, how long the recorder still waits for a locked file
FINAL_WAIT = 30.0


# --------------------------------------------------------------------------- writing

_STOP = object()  # finish() was called


class HistoryRecorder:
    """Record one run into a history file, off the scheduler's hot path.

    ``attach`` opens (creating or migrating) the file, inserts the run row, so
    ``run_id`` is known before the run starts, and subscribes to the scheduler.
    ``finish`` waits for the last batch and returns the run id.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        #: the run's id in the history file, set by attach()
        self.run_id: int | None = None
        # the run's own events, flush() requests and _STOP: each wakes the writer at once
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # the records of TASK_FINISHED events: the dispatcher appends, the writer takes from the
        # front (both single list operations, atomic under the GIL); they do not wake the writer
        self._tasks: list[TaskRecord] = []
        self._seen = 0  # records taken so far: the next one's seq (its place in finishing order) - 1
        self._retried: list[Event] = []  # TASK_RETRYING events, taken the same way
        self._ending = False  # no more events will come: the writer stops waiting for windows
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._undo: list = []
        self._error: str | None = None
        self._finished = False
        # written by the writer thread only
        self._started = False  # RUN_STARTED seen
        self._interrupted = False  # RUN_INTERRUPTED seen
        self._counts: Counter = Counter()  # TaskStatus -> tasks recorded
        # what the next write transaction holds; kept until one commits
        self._batches: list[tuple] = []  # task_batches rows
        self._rows: list = []  # tasks rows, flattened
        self._attempt_rows: list[tuple] = []  # task_attempts rows
        self._pending_tasks = 0
        self._final: dict[str, Any] = {}  # run row fields the run's end sets
        self._flushes: list[threading.Event] = []  # set once what came before them is committed
        self._discarding = False  # the run never started: its row goes
        # backing off after a failed write
        self._retry_at: float | None = None  # monotonic time of the next attempt
        self._delay = RETRY_FIRST
        self._failing_since: float | None = None
        self._last_error = ""
        self._busy_last = False
        self._said = False  # the one warning of this run was given

    def attach(self, scheduler: Any, run_info: Mapping[str, Any] | None = None) -> None:
        """Start recording the next run of ``scheduler``.

        ``run_info`` keys (all optional): ``module`` (the module's path),
        ``target``, ``argv``, ``tags`` (a list or ``"a,b"``), ``workers``,
        ``state`` (the initial state; default ``scheduler.state``). Call
        before ``scheduler.start()``.

        Raises:
            HistoryError: the file cannot be created, opened or migrated.
            RuntimeError: this recorder was attached already.
        """
        if self._thread is not None:
            raise RuntimeError("attach: this recorder is already attached to a run")
        info = dict(run_info or {})
        deps = scheduler.dependencies  # names and edges only: no TaskSpec per task
        # the text json.dumps({"nodes": ..., "edges": ...}) writes, the names encoded in bulk
        graph = (f'{{"nodes": {json_strings(list(deps))}, "edges": '
                 f'{json.dumps([[dep, name] for name, after in deps.items() if after for dep in after])}}}')
        state = info.get("state")
        if state is None:
            state = scheduler.state
        now = time.time()
        values = {
            "started_at": now,
            "module": None if info.get("module") is None else str(info["module"]),
            "target": None if info.get("target") is None else str(info["target"]),
            "argv": json.dumps(redact_argv(info.get("argv") or [])),
            "tags": json.dumps(list(parse_tags(info.get("tags") or None))),
            "workers": info.get("workers", getattr(scheduler, "workers", None)),
            "host": HOST,
            "pid": os.getpid(),
            "heartbeat": now,
            "status": "running",
            "total": len(deps),
            "graph": graph,
            "state": json.dumps(snapshot_state(state)),
            **_ordering(scheduler, info),
        }
        conn = open_writable(self.path)
        try:
            with transaction(conn):
                cur = conn.execute(
                    f"INSERT INTO runs ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    tuple(values.values()),
                )
            self.run_id = cur.lastrowid
        except sqlite3.Error as exc:
            conn.close()
            raise fail(self.path, f"cannot record a run: {describe(exc)}") from None
        self._conn = conn
        take = self._tasks.append

        def task_finished(event: Event) -> None:  # the record alone: an event kept would cost the GC
            take(event.record)

        self._undo = [
            # (nearly) bound C methods are the whole subscribers: little runs on the dispatcher thread
            scheduler.subscribe(task_finished, EventKind.TASK_FINISHED),
            # an attempt that failed and is retried (rare): kept in task_attempts
            scheduler.subscribe(self._retried.append, EventKind.TASK_RETRYING),
            scheduler.subscribe(self._queue.put, EventKind.RUN_STARTED, EventKind.RUN_INTERRUPTED),
            scheduler.subscribe(self._on_run_finished, EventKind.RUN_FINISHED),
        ]
        self._thread = threading.Thread(target=self._write_loop, name="tdrun-history", daemon=True)
        self._thread.start()

    def _on_run_finished(self, event: Event) -> None:
        self._ending = True
        self._queue.put(event)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every task finished so far is committed; False if ``timeout`` passed first.

        Safe from any thread, a running task included. Raises HistoryError if
        recording failed.
        """
        if self._thread is None:
            raise RuntimeError("flush: the recorder was never attached")
        done = threading.Event()
        self._queue.put(done)
        ok = done.wait(timeout) or not self._thread.is_alive()
        if self._error is not None:
            raise fail(self.path, f"could not record run {self.run_id}: {self._error}")
        return ok

    def finish(self, timeout: float = 60.0) -> int | None:
        """Write what is left and close the file; returns the run id.

        Returns None when the run never started (``start()`` raised first): the
        run row is removed then. Idempotent.

        Raises:
            HistoryError: recording failed (the run itself is unaffected).
        """
        if self._thread is None:
            raise RuntimeError("finish: the recorder was never attached")
        if not self._finished:
            self._finished = True
            for undo in self._undo:
                undo()
            self._ending = True
            self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise fail(self.path, f"still writing run {self.run_id} after {timeout:g}s")
        if self._error is not None:
            raise fail(self.path, f"could not record run {self.run_id}: {self._error}")
        return self.run_id

    # ---------------------------------------------------------------- writer thread

    def _write_loop(self) -> None:
        q = self._queue
        tasks = self._tasks
        conn = self._conn
        try:
            # an attempt waits at most this long for another process's write lock, so the
            # writer keeps taking the run's events while it backs off
            conn.execute(f"PRAGMA busy_timeout = {int(ATTEMPT_WAIT * 1000)}")
            written = time.monotonic()
            while True:
                if self._retry_at is not None:
                    timeout = max(self._retry_at - time.monotonic(), 0.0)
                elif self._started and not self._ending:
                    timeout = BATCH_WINDOW  # finished tasks do not wake the writer: it looks each window
                else:
                    timeout = HEARTBEAT_INTERVAL
                batch = []
                try:
                    batch.append(q.get(timeout=timeout))
                except queue.Empty:
                    pass
                get = q.get_nowait
                while True:
                    try:
                        batch.append(get())
                    except queue.Empty:
                        break
                # after the queue: every task that finished before a RUN_FINISHED or a flush()
                # taken above is in the list by now
                count = len(tasks)
                finished = tasks[:count]
                del tasks[:count]
                if self._retried:
                    count = len(self._retried)
                    self._attempt_rows.extend(_attempt_row(e) for e in self._retried[:count])
                    del self._retried[:count]
                if self._take(batch, finished):
                    break
                if self._retry_at is not None and time.monotonic() < self._retry_at:
                    continue  # still backing off: the events wait with the rest
                if batch or finished or self._retry_at is not None \
                        or time.monotonic() - written >= HEARTBEAT_INTERVAL:
                    # with nothing pending, a heartbeat: this run is still alive
                    if self._attempt(conn):
                        written = time.monotonic()
            self._last_attempts(conn)
        except BaseException as exc:  # noqa: B902 - never let recording take the process down
            self._give_up(exc)
        finally:
            conn.close()

    def _take(self, batch: list, finished: list[Event]) -> bool:
        """Turn the run's events and finished tasks into pending rows; True when the run is over."""
        final = self._final
        stop = False
        for item in batch:
            if item is _STOP:
                stop = True
            elif type(item) is not Event:
                self._flushes.append(item)
            elif item.kind is EventKind.RUN_STARTED:
                self._started = True
                meta = item.data or {}
                final.update(run_uuid=meta.get("run_id"), started_at=meta.get("start_time", item.time))
            elif item.kind is EventKind.RUN_INTERRUPTED:
                self._interrupted = True
            elif item.kind is EventKind.RUN_FINISHED:
                final.update(_final_fields(item.data or {}))
                stop = True
        # a slice at a time: each field is a pass over the slice's records, and a slice whose
        # records stay in the CPU's cache costs about half what one of 10,000 does
        for start in range(0, len(finished), BATCH_TASKS):
            self._pend_tasks(finished[start:start + BATCH_TASKS], self._seen + start + 1)
        self._seen += len(finished)
        if stop:
            if "status" not in final:
                if not self._started:
                    self._discarding = True
                    return True
                # start() ended without RUN_FINISHED (it raised): keep what finished
                final.update(status="interrupted", finished_at=time.time())
            if self._interrupted and final.get("status") in ("passed", "failed"):
                final["status"] = "interrupted"
        return stop

    def _pend_tasks(self, records: list[TaskRecord], first: int) -> None:
        """``records`` finished in this order, the first of them ``first``-th in the run (its seq)."""
        n = len(records)
        self._pending_tasks += n
        # one C-level transposition gives every field of the batch as a tuple: the common case,
        # every task passed with nothing to say, then costs a pass or two per field, never a
        # tuple per task
        cols = tuple(zip(*records))
        statuses = cols[_I_STATUS]
        if (statuses.count(TaskStatus.PASSED) == n and not any(cols[_I_OUTPUT])
                and not any(cols[_I_TAGS]) and not any(cols[_I_ERROR]) and not any(cols[_I_REASON])
                and not any(cols[_I_WARNING]) and not any(cols[_I_WAITED_FOR])):
            self._counts[TaskStatus.PASSED] += n
            lean, seqs, full = records, range(first, first + n), []
        else:
            self._counts.update(statuses)
            is_lean = [d == _LEAN for d in map(_DETAIL, records)]
            lean = list(itertools.compress(records, is_lean))
            seqs = list(itertools.compress(itertools.count(first), is_lean))
            full = [(first + i, rec) for i, rec in enumerate(records) if not is_lean[i]]
            cols = tuple(zip(*lean))
        if lean:
            try:
                times = cols[_I_STARTED] + cols[_I_FINISHED] + cols[_I_DURATION]
                numbers = cols[_I_ATTEMPTS] + tuple(seqs)
                self._batches.append(encode_batch(cols[_I_NAME], cols[_I_THREAD], times, numbers))
            except (TypeError, ValueError, OverflowError):  # a value the arrays cannot hold
                full = list(enumerate(records, first))
        if full:
            self._rows.extend(itertools.chain.from_iterable(_task_row(seq, rec) for seq, rec in full))

    def _attempt(self, conn: sqlite3.Connection) -> bool:
        """Write everything pending in one transaction; on failure keep it and back off."""
        try:
            with transaction(conn):
                if self._discarding:
                    conn.execute("DELETE FROM tasks WHERE run_id = ?", (self.run_id,))
                    conn.execute("DELETE FROM task_batches WHERE run_id = ?", (self.run_id,))
                    conn.execute("DELETE FROM task_attempts WHERE run_id = ?", (self.run_id,))
                    conn.execute("DELETE FROM runs WHERE id = ?", (self.run_id,))
                else:
                    self._write_pending(conn)
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        if self._discarding:
            self.run_id = None
        self._batches.clear()
        self._rows.clear()
        self._attempt_rows.clear()
        self._pending_tasks = 0
        self._final = {}
        self._retry_at = None
        self._failing_since = None
        self._delay = RETRY_FIRST
        flushes, self._flushes = self._flushes, []
        for done in flushes:
            done.set()
        return True

    def _write_pending(self, conn: sqlite3.Connection) -> None:
        counts = self._counts
        fields = {
            "passed": counts[TaskStatus.PASSED], "failed": counts[TaskStatus.FAILED],
            "skipped": counts[TaskStatus.SKIPPED], "cancelled": counts[TaskStatus.CANCELLED],
            "heartbeat": time.time(),
        }
        fields.update(self._final)
        if self._batches:
            conn.executemany(
                "INSERT INTO task_batches (run_id, tasks, names, threads, times, numbers) "
                f"VALUES ({int(self.run_id)}, ?, ?, ?, ?, ?)", self._batches)
        _insert(conn, self.run_id, _TASK_COLUMNS, self._rows)
        if self._attempt_rows:
            conn.executemany(
                "INSERT INTO task_attempts (run_id, name, attempt, status, thread, started_at, "
                "finished_at, duration, error_type, error, traceback, output) "
                f"VALUES ({int(self.run_id)}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self._attempt_rows)
        conn.execute(
            f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
            (*fields.values(), self.run_id),
        )

    def _failed(self, exc: sqlite3.Error) -> None:
        """A write failed (most often another process holds the write lock): retry later."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, RETRY_MAX)
        self._last_error = describe(exc)
        self._busy_last = _busy(exc)
        if not _busy(exc) or now - self._failing_since >= WARN_AFTER:
            self._say_once(f"cannot write ({self._last_error}); keeping {self._pending_tasks} "
                           "finished tasks to write when it can")

    def _last_attempts(self, conn: sqlite3.Connection) -> None:
        """The run is over: write what is pending, waiting up to FINAL_WAIT for the file."""
        if self._attempt(conn):
            return
        deadline = time.monotonic() + FINAL_WAIT
        self._say_once(f"cannot write ({self._last_error}); waiting up to {FINAL_WAIT:g}s "
                       f"to record run {self.run_id}")
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # SQLite's busy handler does the waiting: the attempt returns as soon as the lock is free
            conn.execute(f"PRAGMA busy_timeout = {max(int(left * 1000), 1)}")
            if self._attempt(conn):
                return
            if not self._busy_last:
                break  # not a lock that may be released: waiting will not help
        lost = f"; {self._pending_tasks} finished tasks were not written" if self._pending_tasks else ""
        self._give_up(None, f"{self._last_error}{lost}")

    def _say_once(self, message: str) -> None:
        if not self._said:
            self._said = True
            log.warning("history file %s: %s", self.path, message)

    def _give_up(self, exc: BaseException | None, text: str | None = None) -> None:
        if self._error is None:
            if text is None:
                text = describe(exc) if isinstance(exc, sqlite3.Error) else f"{type(exc).__name__}: {exc}"
            self._error = text
            if exc is not None:
                log.warning("history file %s: recording stopped: %s", self.path, self._error)
        for done in self._flushes:
            done.set()


def _busy(exc: sqlite3.Error) -> bool:
    """Another connection holds the lock: the error goes away when it lets go."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


# a task row's columns after run_id
_TASK_COLUMNS = ("seq", "name", "status", "thread", "attempts", "started_at", "finished_at", "duration",
                 "error_type", "error", "traceback", "reason", "output", "output_bytes", "tags",
                 "is_async", "warning", "waited", "waited_for")
# where each field of a TaskRecord is, in the tuples a batch is transposed into
(_I_NAME, _I_STATUS, _I_THREAD, _I_STARTED, _I_FINISHED, _I_DURATION, _I_ATTEMPTS, _I_ERROR, _I_OUTPUT,
 _I_REASON, _I_TAGS, _I_WARNING, _I_WAITED_FOR) = map(TaskRecord._fields.index, (
    "name", "status", "thread", "started_at", "finished_at", "duration", "attempts", "error", "output",
    "reason", "tags", "warning", "waited_for"))
# a passed task with nothing but its times goes into a batch (see db): its details are these
_DETAIL = operator.attrgetter("status", "output", "tags", "error", "reason", "error_type", "traceback",
                              "warning", "waited_for")
_LEAN = (TaskStatus.PASSED, "", (), None, None, None, None, None, None)
_MAX_PARAMS = 999  # SQLite's smallest default limit on parameters per statement


def _insert(conn: sqlite3.Connection, run_id: int, columns: tuple[str, ...], params: list) -> None:
    """Insert task rows of ``run_id`` given as one flat list of parameters, ~60 rows a statement."""
    if not params:
        return
    width = len(columns)
    per = _MAX_PARAMS // width
    head = f"INSERT INTO tasks (run_id, {', '.join(columns)}) VALUES "
    one = f"({int(run_id)}, " + ", ".join("?" * width) + ")"
    full = head + ", ".join([one] * per)
    step = per * width
    for start in range(0, len(params), step):
        chunk = params[start:start + step]
        rows = len(chunk) // width
        conn.execute(full if rows == per else head + ", ".join([one] * rows), chunk)


def _task_row(seq: int, rec: TaskRecord) -> tuple:
    output, size = cap_text(rec.output)
    tb = rec.traceback
    if tb is not None and len(tb) > OUTPUT_CAP // 4:
        tb = cap_text(tb)[0]
    error = rec.error
    if error is not None and len(error) > OUTPUT_CAP // 4:
        error = cap_text(error)[0]
    return (
        seq, rec.name, rec.status, rec.thread, rec.attempts, rec.started_at,
        rec.finished_at, rec.duration, rec.error_type, error, tb, rec.reason, output or "", size,
        json.dumps(list(rec.tags)) if rec.tags else "[]", int(rec.is_async), rec.warning, rec.waited,
        rec.waited_for,
    )


def _attempt_row(event: Event) -> tuple:
    """A failed attempt that was retried, as a task_attempts row (less the run id)."""
    rec = event.record
    tb = rec.traceback
    if tb is not None and len(tb) > OUTPUT_CAP // 4:
        tb = cap_text(tb)[0]
    error = rec.error
    if error is not None and len(error) > OUTPUT_CAP // 4:
        error = cap_text(error)[0]
    return (rec.name, event.attempt, str(rec.status), rec.thread, rec.started_at, rec.finished_at,
            rec.duration, rec.error_type, error, tb, cap_text(rec.output)[0] or "")


def _final_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    failed = len(summary.get("failed", ()))
    if summary.get("interrupted"):
        status = "interrupted"
    else:
        status = "failed" if failed else "passed"
    return {
        "status": status,
        "finished_at": summary.get("finished_at", time.time()),
        "duration": summary.get("duration"),
        "passed": len(summary.get("passed", ())),
        "failed": failed,
        "skipped": len(summary.get("skipped", ())),
        "cancelled": len(summary.get("cancelled", ())),
        "teardown_not_run": json.dumps([str(n) for n in summary.get("teardown_not_run", [])]),
        # None (NULL) when the run was not checked, [] when it was and nothing was found
        "state_findings": (None if summary.get("state_findings") is None
                           else json.dumps(list(summary["state_findings"]), default=str)),
        **({"ordering": json.dumps(_order_of(summary))} if "order" in summary else {}),
        "pools": json.dumps(summary.get("pools") or {}),
    }


def _ordering(scheduler: Any, info: Mapping[str, Any]) -> dict[str, Any]:
    """The run row's ordering (as known before the run) and the run it replays."""
    order = info.get("ordering")
    if order is None:
        seed = getattr(scheduler, "shuffle", None)
        kind = getattr(scheduler, "order", "declared")
        if seed is not None:
            order = {"order": "shuffle", "seed": seed}
        else:
            order = {"order": kind if isinstance(kind, str) else "replay"}
    replay_of = info.get("replay_of")
    return {"ordering": json.dumps(order), "replay_of": replay_of if isinstance(replay_of, int) else None}


def _order_of(summary: Mapping[str, Any]) -> dict[str, Any]:
    order = dict(summary.get("order") or {})
    if isinstance(summary.get("lower_bound"), Mapping):
        order["lower_bound"] = dict(summary["lower_bound"])
    return order
