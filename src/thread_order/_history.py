"""Run history: each run and its tasks recorded in SQLite as they finish, then read back.

Writing: a :class:`HistoryRecorder` subscribes to a scheduler's event stream.
Its subscriber only puts events on a queue (cheap, on the dispatcher thread);
a writer thread of its own turns them into rows, one transaction per batch:
a batch stays open for at most ``BATCH_WINDOW`` seconds, so a busy run commits
about ten times a second and a run killed with SIGKILL loses at most the last
fraction of a second. The file is in WAL mode with a busy timeout, and every
write transaction is ``BEGIN IMMEDIATE``, so several processes can record into
one file at once.

A run row says ``running`` until its recorder writes the outcome; readers
tell a live run from a dead one by the writer's host, pid and heartbeat (see
``_history_db``), and report the dead one as ``interrupted``.

Reading: :class:`HistoryStore` opens the file read-only (``mode=ro``) and never
creates, migrates or modifies it; it reads older schema versions as they are.
A file written by a newer schema is refused with a :class:`HistoryError`.
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
from typing import Any, Iterable, Mapping

from ._errors import HistoryError
from ._events import Event, EventKind
from ._history_db import (
    HOST,
    OUTPUT_CAP,
    RUN_STATUSES,
    SCHEMA_VERSION,
    cap_text,
    describe,
    effective_status,
    fail,
    open_readonly,
    open_writable,
    redact_argv,
    snapshot_state,
    transaction,
)
from ._model import TaskStatus, parse_tags

__all__ = [
    "DEFAULT_HISTORY",
    "OUTPUT_CAP",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "HistoryStore",
    "HistoryRecorder",
    "resolve_history_path",
    "snapshot_state",
    "redact_argv",
    "cap_text",
    "compare_runs",
    "effective_status",
]

log = logging.getLogger("thread_order")

#: where tdrun records runs, relative to the current directory
DEFAULT_HISTORY = Path(".tdrun/history.db")
#: a batch of finished tasks is committed at most this long after its first task
BATCH_WINDOW = 0.1
HEARTBEAT_INTERVAL = 5.0

_RUN_FIELDS = (
    "id", "started_at", "finished_at", "module", "target", "status", "passed", "failed",
    "skipped", "cancelled", "total", "duration", "workers", "host",
)
_RUN_PRIVATE = ("pid", "heartbeat", "run_uuid")
_RUN_DETAIL = ("argv", "tags", "graph", "state")
_TASK_FIELDS = (
    "seq", "name", "status", "thread", "attempts", "started_at", "finished_at", "duration",
    "error_type", "error", "traceback", "reason", "output", "output_bytes", "tags",
)


def resolve_history_path(explicit: str | os.PathLike | None, disabled: bool) -> Path | None:
    """Where to record a run: None when recording is off.

    ``disabled`` (``--no-history``) wins; then an explicit ``--history PATH``;
    then the environment variable ``TDRUN_HISTORY=off`` turns recording off;
    otherwise :data:`DEFAULT_HISTORY` under the current directory.
    """
    if disabled:
        return None
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    if os.environ.get("TDRUN_HISTORY", "").strip().lower() in ("off", "0", "false", "no"):
        return None
    return DEFAULT_HISTORY


# --------------------------------------------------------------------------- reading


class HistoryStore:
    """Read (or, with ``readonly=False``, create and migrate) a history file.

    Args:
        path: the SQLite file.
        readonly: open with ``mode=ro``: never creates, migrates or writes the file.

    Raises:
        HistoryError: the file is missing (readonly), is not a history file, is
            corrupt, or was written by a newer schema.
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self._conn = open_readonly(self.path) if readonly else open_writable(self.path)
        # guards _conn: the web UI may share one store between request threads
        self._lock = threading.Lock()
        try:
            self._columns = {table: {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
                             for table in ("runs", "tasks")}
        except sqlite3.Error as exc:
            self._conn.close()
            raise fail(self.path, describe(exc)) from None

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _cols(self, table: str, names: Iterable[str]) -> str:
        # older schema versions lack some columns: read them as NULL rather than migrate
        have = self._columns[table]
        return ", ".join(n if n in have else f"NULL AS {n}" for n in names)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            if self._conn is None:
                raise fail(self.path, "the store is closed")
            try:
                cur = self._conn.execute(sql, tuple(params))
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row)) for row in cur.fetchall()]
            except sqlite3.Error as exc:
                raise fail(self.path, describe(exc)) from None

    def _run_dict(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        status = effective_status(row["status"], row["host"], row["pid"], row["heartbeat"], now)
        out = {k: row[k] for k in _RUN_FIELDS}
        out["status"] = status
        return out

    def list_runs(self, limit: int | None = 50, module: str | None = None,
                  status: str | None = None) -> list[dict[str, Any]]:
        """Runs newest first, optionally only of ``module`` and/or with ``status``.

        Raises:
            HistoryError: the file cannot be read, or ``status`` is not a run status.
        """
        if status is not None and status not in RUN_STATUSES:
            raise HistoryError(f"unknown run status {status!r} (expected one of {', '.join(RUN_STATUSES)})")
        where, params = [], []
        if module is not None:
            where.append("module = ?")
            params.append(module)
        if status in ("passed", "failed"):
            where.append("status = ?")
            params.append(status)
        elif status is not None:  # both can be stored as 'running'; decided below
            where.append("status IN ('running', 'interrupted')")
        sql = f"SELECT {self._cols('runs', _RUN_FIELDS + _RUN_PRIVATE)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None and status not in ("running", "interrupted"):
            sql += f" LIMIT {max(int(limit), 0)}"
        now = time.time()
        runs = [self._run_dict(row, now) for row in self._query(sql, params)]
        if status is not None:
            runs = [r for r in runs if r["status"] == status]
        return runs if limit is None else runs[: max(int(limit), 0)]

    def resolve_id(self, run_id: int | str) -> int:
        """Turn ``42``, ``"42"`` or ``"last"`` into a run id that exists.

        Raises:
            HistoryError: not a number or ``last``, no such run, or no runs at all.
        """
        if isinstance(run_id, str):
            text = run_id.strip()
            if text.lower() == "last":
                rows = self._query("SELECT MAX(id) AS id FROM runs")
                if rows[0]["id"] is None:
                    raise fail(self.path, "no runs recorded yet")
                return rows[0]["id"]
            if not text.isdigit():
                raise HistoryError(f"run id must be a number or 'last', not {run_id!r}")
            run_id = int(text)
        if isinstance(run_id, bool) or not isinstance(run_id, int):
            raise HistoryError(f"run id must be a number or 'last', not {run_id!r}")
        if not self._query("SELECT id FROM runs WHERE id = ?", (run_id,)):
            raise fail(self.path, f"no run {run_id}")
        return run_id

    def get_run(self, run_id: int | str) -> dict[str, Any]:
        """One run with its graph, state, argv, tags and tasks (in start order).

        Tasks that never started (skipped, cancelled) come after the others, in
        the order they were decided.

        Raises:
            HistoryError: unknown run id, or the file cannot be read.
        """
        rid = self.resolve_id(run_id)
        rows = self._query(
            f"SELECT {self._cols('runs', _RUN_FIELDS + _RUN_PRIVATE + _RUN_DETAIL)} FROM runs WHERE id = ?",
            (rid,),
        )
        row = rows[0]
        run = self._run_dict(row, time.time())
        run["run_uuid"] = row["run_uuid"]
        run["argv"] = _loads(row["argv"], [])
        run["tags"] = _loads(row["tags"], [])
        graph = _loads(row["graph"], {})
        run["graph"] = {"nodes": list(graph.get("nodes", [])),
                        "edges": [list(e) for e in graph.get("edges", [])]}
        run["state"] = _loads(row["state"], {})
        tasks = self._query(
            f"SELECT {self._cols('tasks', _TASK_FIELDS)} FROM tasks WHERE run_id = ? "
            "ORDER BY started_at IS NULL, started_at, seq",
            (rid,),
        )
        for task in tasks:
            task["tags"] = _loads(task["tags"], [])
            if task["output_bytes"] is None:
                task["output_bytes"] = len((task["output"] or "").encode("utf-8"))
        run["tasks"] = tasks
        return run


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


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


# --------------------------------------------------------------------------- comparing


def compare_runs(a: Mapping[str, Any], b: Mapping[str, Any], top: int = 10) -> dict[str, Any]:
    """What changed from run ``a`` to run ``b`` (two ``get_run`` dicts).

    Returns ``status_changes`` ([{name, a, b}], a status is None when the task
    was not recorded), ``added`` and ``removed`` task names, and the ``top``
    largest ``duration_changes`` ([{name, a, b, delta, ratio}]) among tasks that
    ran in both.
    """

    def by_name(run):
        names = list(run.get("graph", {}).get("nodes", []))
        tasks = {t["name"]: t for t in run.get("tasks", [])}
        for name in tasks:
            if name not in names:
                names.append(name)
        return names, tasks

    names_a, tasks_a = by_name(a)
    names_b, tasks_b = by_name(b)
    set_a, set_b = set(names_a), set(names_b)
    status_changes = []
    durations = []
    for name in names_b:
        if name not in set_a:
            continue
        ta, tb = tasks_a.get(name), tasks_b.get(name)
        sa = ta["status"] if ta else None
        sb = tb["status"] if tb else None
        if sa != sb:
            status_changes.append({"name": name, "a": sa, "b": sb})
        if ta and tb and ta.get("started_at") is not None and tb.get("started_at") is not None:
            da, db = ta["duration"] or 0.0, tb["duration"] or 0.0
            durations.append({"name": name, "a": da, "b": db, "delta": db - da,
                              "ratio": (db / da) if da > 0 else None})
    durations.sort(key=lambda d: -abs(d["delta"]))

    def head(run):
        return {k: run.get(k) for k in ("id", "module", "target", "status", "started_at", "duration",
                                        "passed", "failed", "skipped", "cancelled", "total")}

    return {
        "a": head(a),
        "b": head(b),
        "same_module": a.get("module") == b.get("module"),
        "status_changes": status_changes,
        "added": [n for n in names_b if n not in set_a],
        "removed": [n for n in names_a if n not in set_b],
        "duration_changes": durations[:top],
    }
