"""Recording the run history: each run and its tasks written to SQLite as they finish.

A :class:`HistoryRecorder` subscribes to a scheduler's event stream. Its
subscriber only puts events on a queue (cheap, on the dispatcher thread); a
writer thread of its own turns them into rows, one transaction per batch: a
batch stays open for at most ``BATCH_WINDOW`` seconds, so a busy run commits
about ten times a second and a run killed with SIGKILL loses at most the last
fraction of a second. The file is in WAL mode with a busy timeout, and every
write transaction is ``BEGIN IMMEDIATE``, so several processes can record into
one file at once.
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
from ..engine.model import TaskStatus, parse_tags
from .db import (
    HOST,
    OUTPUT_CAP,
    cap_text,
    describe,
    fail,
    open_writable,
    redact_argv,
    snapshot_state,
    transaction,
)

__all__ = ["HistoryRecorder", "BATCH_WINDOW", "HEARTBEAT_INTERVAL"]

log = logging.getLogger("thread_order")

#: a batch of finished tasks is committed at most this long after its first task
BATCH_WINDOW = 0.1
HEARTBEAT_INTERVAL = 5.0


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
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        # wakes the writer before its batch window is over: the run ended, or flush() was called
        self._wake = threading.Event()
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
        specs = scheduler.tasks
        graph = {"nodes": [s.name for s in specs],
                 "edges": [[dep, s.name] for s in specs for dep in s.after]}
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
            "total": len(specs),
            "graph": json.dumps(graph),
            "state": json.dumps(snapshot_state(state)),
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
        put = self._queue.put
        self._undo = [
            # the bound put is the whole subscriber: nothing else runs on the dispatcher thread
            scheduler.subscribe(put, EventKind.RUN_STARTED, EventKind.TASK_FINISHED,
                                EventKind.RUN_INTERRUPTED),
            scheduler.subscribe(self._on_run_finished, EventKind.RUN_FINISHED),
        ]
        self._thread = threading.Thread(target=self._write_loop, name="tdrun-history", daemon=True)
        self._thread.start()

    def _on_run_finished(self, event: Event) -> None:
        self._ending = True
        self._queue.put(event)
        self._wake.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every task finished so far is committed; False if ``timeout`` passed first.

        Safe from any thread, a running task included. Raises HistoryError if
        recording failed.
        """
        if self._thread is None:
            raise RuntimeError("flush: the recorder was never attached")
        done = threading.Event()
        self._queue.put(done)
        self._wake.set()
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
            self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise fail(self.path, f"still writing run {self.run_id} after {timeout:g}s")
        if self._error is not None:
            raise fail(self.path, f"could not record run {self.run_id}: {self._error}")
        return self.run_id

    # ---------------------------------------------------------------- writer thread

    def _write_loop(self) -> None:
        q = self._queue
        conn = self._conn
        try:
            while True:
                try:
                    first = q.get(timeout=HEARTBEAT_INTERVAL)
                except queue.Empty:
                    self._write(conn, [], [], None)  # a heartbeat: this run is still alive
                    continue
                if first is not _STOP and not self._wake.is_set():
                    # hold the batch open: one commit per window instead of one per task, and no
                    # wake-up per task competing with the dispatcher for the GIL
                    self._wake.wait(BATCH_WINDOW)
                if not self._ending:
                    self._wake.clear()
                batch = [first]
                get = q.get_nowait
                while True:
                    try:
                        batch.append(get())
                    except queue.Empty:
                        break
                if self._apply(conn, batch):
                    return
        except BaseException as exc:  # noqa: B902 - never let recording take the process down
            self._note_error(exc)
        finally:
            conn.close()

    def _apply(self, conn: sqlite3.Connection, batch: list) -> bool:
        """Write one batch of events; True when the run is over."""
        finished: list[Event] = []
        add = finished.append
        finished_kind = EventKind.TASK_FINISHED
        final: dict[str, Any] = {}
        flushes: list[threading.Event] = []
        stop = False
        for item in batch:
            if item is _STOP:
                stop = True
            elif type(item) is not Event:
                flushes.append(item)
            elif item.kind is finished_kind:
                add(item)
            elif item.kind is EventKind.RUN_STARTED:
                self._started = True
                meta = item.data or {}
                final.update(run_uuid=meta.get("run_id"), started_at=meta.get("start_time", item.time))
            elif item.kind is EventKind.RUN_INTERRUPTED:
                self._interrupted = True
            elif item.kind is EventKind.RUN_FINISHED:
                final.update(_final_fields(item.data or {}))
                stop = True
        if stop and "status" not in final:
            if not self._started:
                self._discard(conn)
                for done in flushes:
                    done.set()
                return True
            # start() ended without RUN_FINISHED (it raised): keep what finished
            final.update(status="interrupted", finished_at=time.time())
        if self._interrupted and final.get("status") in ("passed", "failed"):
            final["status"] = "interrupted"
        self._counts.update(map(_EVENT_STATUS, finished))
        # most tasks have no output, error or reason: their fields come out of the events with
        # one attrgetter call each, so a batch costs little Python time (the GIL stays with the run)
        lean = [e for e in finished if _EVENT_DETAIL(e) == _NO_DETAIL]
        rows = [_task_row(self.run_id, e) for e in finished if _EVENT_DETAIL(e) != _NO_DETAIL] \
            if len(lean) != len(finished) else []
        self._write(conn, rows, list(itertools.chain.from_iterable(map(_EVENT_LEAN, lean))),
                    final or None)
        for done in flushes:
            done.set()
        return stop

    def _write(self, conn, rows, lean, final) -> None:
        if self._error is not None:
            return  # recording failed earlier; keep draining so the run is unaffected
        counts = self._counts
        fields = {
            "passed": counts[TaskStatus.PASSED], "failed": counts[TaskStatus.FAILED],
            "skipped": counts[TaskStatus.SKIPPED], "cancelled": counts[TaskStatus.CANCELLED],
            "heartbeat": time.time(),
        }
        if final:
            fields.update(final)
        try:
            with transaction(conn):
                _insert(conn, self.run_id, _LEAN_COLUMNS, lean)
                _insert(conn, self.run_id, _TASK_COLUMNS, list(itertools.chain.from_iterable(rows)))
                conn.execute(
                    f"UPDATE runs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                    (*fields.values(), self.run_id),
                )
        except sqlite3.Error as exc:
            self._note_error(exc)

    def _discard(self, conn) -> None:
        try:
            with transaction(conn):
                conn.execute("DELETE FROM tasks WHERE run_id = ?", (self.run_id,))
                conn.execute("DELETE FROM runs WHERE id = ?", (self.run_id,))
        except sqlite3.Error as exc:
            self._note_error(exc)
        self.run_id = None

    def _note_error(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = describe(exc) if isinstance(exc, sqlite3.Error) else f"{type(exc).__name__}: {exc}"
            log.warning("history file %s: recording stopped: %s", self.path, self._error)


# a task row's columns after run_id; "lean" rows are tasks without output, error or reason
_LEAN_COLUMNS = ("seq", "name", "status", "thread", "attempts", "started_at", "finished_at", "duration")
_TASK_COLUMNS = _LEAN_COLUMNS + ("error_type", "error", "traceback", "reason", "output",
                                 "output_bytes", "tags")
_EVENT_LEAN = operator.attrgetter(
    "count", "record.name", "record.status", "record.thread", "record.attempts",
    "record.started_at", "record.finished_at", "record.duration",
)
_EVENT_DETAIL = operator.attrgetter("record.output", "record.error", "record.reason", "record.tags")
_NO_DETAIL = ("", None, None, ())
_EVENT_STATUS = operator.attrgetter("record.status")
_MAX_PARAMS = 999  # SQLite's smallest default limit on parameters per statement


def _insert(conn: sqlite3.Connection, run_id: int, columns: tuple[str, ...], params: list) -> None:
    """Insert task rows of ``run_id`` given as one flat list of parameters, ~100 rows a statement.

    ``executemany`` binds and steps one row at a time, taking the GIL back
    after every row; a multi-row VALUES statement does a hundred rows per trip,
    at less than half the cost, and leaves the GIL to the run meanwhile.
    """
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


def _task_row(run_id: int, event: Event) -> tuple:
    rec = event.record
    output, size = cap_text(rec.output)
    tb = rec.traceback
    if tb is not None and len(tb) > OUTPUT_CAP // 4:
        tb = cap_text(tb)[0]
    error = rec.error
    if error is not None and len(error) > OUTPUT_CAP // 4:
        error = cap_text(error)[0]
    return (
        event.count, rec.name, rec.status, rec.thread, rec.attempts, rec.started_at,
        rec.finished_at, rec.duration, rec.error_type, error, tb, rec.reason, output or "", size,
        json.dumps(list(rec.tags)) if rec.tags else "[]",
    )


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
    }
