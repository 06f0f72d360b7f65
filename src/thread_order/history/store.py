"""Reading the run history: :class:`HistoryStore` and comparing two recorded runs.

:class:`HistoryStore` opens the file read-only (``mode=ro``) and never
creates, migrates or modifies it; it reads older schema versions as they are.
A file written by a newer schema is refused with a :class:`HistoryError`.
A run row says ``running`` until its recorder writes the outcome; readers
tell a live run from a dead one by the writer's host, pid and heartbeat (see
``db``), and report the dead one as ``interrupted``.

What a file holds is checked as it is read, not trusted: a value of the wrong
type (text in a number column, a NULL, JSON that is garbage or of the wrong
shape) reads as "unknown" (None, 0, an empty list), so every command can show
the rest of the run.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..engine.aio import LOOP_THREAD
from ..engine.errors import HistoryError
from ..engine.order import recorded_bound
from .db import (
    RUN_STATUSES,
    decode_batch,
    describe,
    effective_status,
    fail,
    open_readonly,
    open_writable,
)

__all__ = ["DEFAULT_HISTORY", "HistoryStore", "resolve_history_path", "compare_runs", "differs_text"]

#: where tdrun records runs, relative to the current directory
DEFAULT_HISTORY = Path(".tdrun/history.db")

_RUN_FIELDS = (
    "id", "started_at", "finished_at", "module", "target", "status", "passed", "failed",
    "skipped", "cancelled", "total", "duration", "workers", "host",
)
_RUN_PRIVATE = ("pid", "heartbeat", "run_uuid")
_RUN_LISTED = ("tags", "state")
_RUN_DETAIL = ("argv", "graph", "teardown_not_run", "state_findings", "pools")
_RUN_ORDER = ("ordering", "replay_of")  # schema 6
_TASK_FIELDS = (
    "seq", "name", "status", "thread", "attempts", "started_at", "finished_at", "duration",
    "error_type", "error", "traceback", "reason", "output", "output_bytes", "tags", "is_async", "warning",
    "waited", "waited_for",
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
            # task_batches exists from schema version 3 on
            self._columns = {table: {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
                             for table in ("runs", "tasks", "task_batches", "task_attempts")}
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
        row = {k: _RUN_TYPES[k](v) for k, v in row.items()}
        status = row["status"] if row["status"] in RUN_STATUSES else "interrupted"
        out = {k: row[k] for k in _RUN_FIELDS}
        out["status"] = effective_status(status, row["host"], row["pid"], row["heartbeat"], now)
        return out

    def list_runs(self, limit: int | None = 50, module: str | None = None,
                  status: str | None = None) -> list[dict[str, Any]]:
        """Runs newest first, optionally only of ``module`` and/or with ``status``.

        Each run has the fields of its row, its ``tags`` and (redacted) initial
        ``state``, and ``differs``: what tells it apart from the other runs of
        its module in this list -- ``{"state": {key: value}, "tags": [...],
        "workers": n}``, each part present only when it varies among them.

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
            where.append("status NOT IN ('passed', 'failed')")
        sql = f"SELECT {self._cols('runs', _RUN_FIELDS + _RUN_PRIVATE + _RUN_LISTED + _RUN_ORDER)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None and status not in ("running", "interrupted"):
            sql += f" LIMIT {max(int(limit), 0)}"
        now = time.time()
        runs = []
        for row in self._query(sql, params):
            run = self._run_dict(row, now)
            run["tags"] = _str_list(_loads(row["tags"], []))
            run["state"] = _dict(_loads(row["state"], {}))
            _order_fields(run, row)
            runs.append(run)
        if status is not None:
            runs = [r for r in runs if r["status"] == status]
        runs = runs if limit is None else runs[: max(int(limit), 0)]
        _mark_differences(runs)
        return runs

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

    def last_run_of(self, target: str) -> int | None:
        """The id of the newest run recorded for ``target`` (tdrun's PATHs as typed), or None."""
        return self._query("SELECT MAX(id) AS id FROM runs WHERE target = ?", (target,))[0]["id"]

    def get_run(self, run_id: int | str) -> dict[str, Any]:
        """One run with its graph, state, argv, tags and tasks (in start order).

        Tasks that never started (skipped, cancelled) come after the others, in
        the order they were decided.

        Raises:
            HistoryError: unknown run id, or the file cannot be read.
        """
        rid = self.resolve_id(run_id)
        rows = self._query(
            f"SELECT {self._cols('runs', _RUN_FIELDS + _RUN_PRIVATE + _RUN_LISTED + _RUN_DETAIL + _RUN_ORDER)} "
            "FROM runs WHERE id = ?",
            (rid,),
        )
        row = rows[0]
        run = self._run_dict(row, time.time())
        run["run_uuid"] = _text(row["run_uuid"])
        run["argv"] = _str_list(_loads(row["argv"], []))
        run["tags"] = _str_list(_loads(row["tags"], []))
        graph = _dict(_loads(row["graph"], {}))
        nodes = _str_list(graph.get("nodes"))
        edges = graph.get("edges")
        run["graph"] = {"nodes": nodes,
                        "edges": [[str(e[0]), str(e[1])] for e in (edges if isinstance(edges, list) else [])
                                  if isinstance(e, list) and len(e) == 2]}
        run["state"] = _dict(_loads(row["state"], {}))
        #: the always tasks a forced stop left unrun (empty for files from before schema 3)
        run["teardown_not_run"] = _str_list(_loads(row["teardown_not_run"], []))
        #: the state checker's findings; None when the run was not checked (or before schema 4)
        run["state_findings"] = _findings(_loads(row["state_findings"], None))
        _order_fields(run, row)
        run["replays"] = [r["id"] for r in self._query(
            "SELECT id FROM runs WHERE replay_of = ? ORDER BY id", (rid,))] if "replay_of" in self._columns["runs"] else []
        #: per pool: size, rate, how many tasks waited, the longest and total wait (schema 8)
        run["pools"] = {str(k): v for k, v in _dict(_loads(row["pools"], {})).items() if isinstance(v, dict)}
        tasks = [{k: _TASK_TYPES[k](v) for k, v in task.items()} for task in self._query(
            f"SELECT {self._cols('tasks', _TASK_FIELDS)} FROM tasks WHERE run_id = ?", (rid,))]
        for task in tasks:
            task["tags"] = _str_list(_loads(task["tags"], []))
            if task["output_bytes"] is None:
                task["output_bytes"] = len(task["output"].encode("utf-8", "replace"))
            if not task["is_async"]:  # files from before schema 4 say it by the thread alone
                task["is_async"] = task["thread"] == LOOP_THREAD
        if self._columns["task_batches"]:
            for batch in self._query("SELECT tasks, names, threads, times, numbers FROM task_batches "
                                     "WHERE run_id = ? ORDER BY id", (rid,)):
                decoded = decode_batch(*batch.values())
                if decoded is not None:  # a damaged batch: its tasks show as not recorded
                    tasks.extend({k: _TASK_TYPES[k](v) for k, v in t.items()} for t in decoded)
        _add_earlier_attempts(tasks, self._query(
            "SELECT name, attempt, status, thread, started_at, finished_at, duration, error_type, "
            "error, traceback, output FROM task_attempts WHERE run_id = ? ORDER BY name, attempt",
            (rid,)) if self._columns["task_attempts"] else [])
        # by start; tasks that never started (skipped, cancelled) after, in the order decided
        for task in tasks:  # batched tasks, and files from before schema 4, waited for nothing
            task.setdefault("waited", 0.0)
            task.setdefault("waited_for", None)
        tasks.sort(key=lambda t: (t["started_at"] is None, t["started_at"] or 0.0, t["seq"]))
        run["tasks"] = tasks
        _bound(run)
        return run


def _add_earlier_attempts(tasks: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """Give each task its ``earlier_attempts``: the failed attempts before its last, in order.

    Empty for a task that ran once, and for every task of a file from before schema 5.
    """
    by_name: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        attempt = _whole(row["attempt"])
        name = _text(row["name"])
        if attempt is None or name is None:
            continue  # a damaged row: the task shows without it
        by_name.setdefault(name, []).append({
            "attempt": attempt, "status": _text(row["status"]) or "FAILED",
            "thread": _text(row["thread"]), "started_at": _epoch(row["started_at"]),
            "finished_at": _epoch(row["finished_at"]), "duration": _number(row["duration"]) or 0.0,
            "error_type": _text(row["error_type"]), "error": _text(row["error"]),
            "traceback": _text(row["traceback"]), "output": _text(row["output"]) or "",
        })
    for task in tasks:
        task["earlier_attempts"] = by_name.get(task["name"], [])


def _findings(value: Any) -> list[dict[str, Any]] | None:
    if not isinstance(value, list):
        return None
    return [{"kind": _text(f.get("kind")) or "?", "key": _text(f.get("key")) or "?",
             "tasks": _str_list(f.get("tasks")), "locked": f.get("locked") is True,
             "static": f.get("static") is True, "message": _text(f.get("message")) or ""}
            for f in value if isinstance(f, dict)]


def _bound(run: dict[str, Any]) -> None:
    """``lower_bound``: as recorded (another order than declared), else worked out from the tasks."""
    bound = run["ordering"].get("lower_bound")
    if not isinstance(bound, dict) or not isinstance(bound.get("lower_bound"), (int, float)):
        durations = {t["name"]: t["duration"] for t in run["tasks"] if t["started_at"] is not None}
        bound = recorded_bound(run["graph"]["nodes"], run["graph"]["edges"], durations, run["workers"] or 1)
    run["lower_bound"] = bound


def _order_fields(run: dict[str, Any], row: dict[str, Any]) -> None:
    """``ordering`` (``{"order": "declared"}`` for runs recorded before schema 6) and ``replay_of``."""
    ordering = _dict(_loads(row.get("ordering"), {}))
    if not isinstance(ordering.get("order"), str):
        ordering = {"order": "declared"}
    run["ordering"] = ordering
    run["replay_of"] = _whole(row.get("replay_of"))


def _loads(text: Any, default: Any) -> Any:
    if not text or not isinstance(text, (str, bytes)):
        return default
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return default


# what each stored value must be; anything else reads as unknown


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
        return value if math.isfinite(value) else None
    return None


def _epoch(value: Any) -> float | None:
    """A wall-clock time every calendar function can take (up to the year 9999)."""
    value = _number(value)
    return value if value is not None and 0 <= value < 253402300800 else None


def _whole(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _count(value: Any) -> int:
    number = _whole(value)
    return number if number is not None and number >= 0 else 0


def _str_list(value: Any) -> list[str]:
    return [str(v) for v in value if isinstance(v, (str, int, float))] if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _same(value: Any) -> Any:
    return value


_RUN_TYPES = {
    "id": _same, "started_at": _epoch, "finished_at": _epoch, "module": _text, "target": _text,
    "status": _text, "passed": _count, "failed": _count, "skipped": _count, "cancelled": _count,
    "total": _count, "duration": _number, "workers": _whole, "host": _text, "pid": _whole,
    "heartbeat": _epoch, "run_uuid": _text, "argv": _same, "tags": _same, "graph": _same,
    "state": _same, "teardown_not_run": _same, "state_findings": _same, "ordering": _same,
    "replay_of": _whole, "pools": _same,
}
_TASK_TYPES = {
    "seq": _count, "name": lambda v: _text(v) or "?", "status": lambda v: (_text(v) or "?").upper(),
    "thread": _text, "attempts": _count, "started_at": _epoch, "finished_at": _epoch,
    "duration": lambda v: _number(v) or 0.0, "error_type": _text, "error": _text,
    "traceback": _text, "reason": _text, "output": lambda v: _text(v) or "", "output_bytes": _whole,
    "tags": _same, "is_async": lambda v: bool(v) if isinstance(v, int) else False, "warning": _text,
    "waited": lambda v: _number(v) or 0.0, "waited_for": _text,
}


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _mark_differences(runs: list[dict[str, Any]]) -> None:
    """Set each run's ``differs``: the state keys, tags and workers that vary within its module."""
    by_module: dict[Any, list[dict[str, Any]]] = {}
    for run in runs:
        by_module.setdefault(run["module"], []).append(run)
    for group in by_module.values():
        keys: list[str] = []
        for run in group:
            keys.extend(k for k in run["state"] if k not in keys)
        # a key some runs lack varies too: "absent" is one more value
        varying = [k for k in keys
                   if len({_key(r["state"][k]) if k in r["state"] else "" for r in group}) > 1]
        tags_vary = len({tuple(r["tags"]) for r in group}) > 1
        workers_vary = len({r["workers"] for r in group}) > 1
        for run in group:
            differs: dict[str, Any] = {}
            state = {k: run["state"][k] for k in varying if k in run["state"]}
            if state:
                differs["state"] = state
            if tags_vary:
                differs["tags"] = list(run["tags"])
            if workers_vary:
                differs["workers"] = run["workers"]
            run["differs"] = differs


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

    replay = (b.get("replay_of") is not None and b.get("replay_of") == a.get("id")) or \
        (a.get("replay_of") is not None and a.get("replay_of") == b.get("id"))
    return {
        "a": head(a) | {"ordering": a.get("ordering"), "replay_of": a.get("replay_of")},
        "b": head(b) | {"ordering": b.get("ordering"), "replay_of": b.get("replay_of")},
        "replay": replay,
        # a replay beside its recording: both start orders, side by side
        "start_order": _start_orders(a, b) if replay else None,
        "same_module": a.get("module") == b.get("module"),
        "status_changes": status_changes,
        "added": [n for n in names_b if n not in set_a],
        "removed": [n for n in names_a if n not in set_b],
        "duration_changes": durations[:top],
    }


def _start_orders(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{position, a, b}]``: the tasks of both runs that started, in start order."""
    def started(run):
        return [t["name"] for t in run.get("tasks", []) if t.get("started_at") is not None]

    sa, sb = started(a), started(b)
    return [{"position": i + 1, "a": sa[i] if i < len(sa) else None, "b": sb[i] if i < len(sb) else None}
            for i in range(max(len(sa), len(sb)))]


def _value(value: Any, limit: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def differs_text(differs: dict[str, Any]) -> str:
    """``fail=update workers=2 tags=smoke``: what sets a run apart from the others of its module."""
    parts = [f"{k}={_value(v)}" for k, v in differs.get("state", {}).items()]
    if "tags" in differs:
        parts.append(f"tags={','.join(differs['tags']) or '-'}")
    if "workers" in differs:
        parts.append(f"workers={differs['workers'] if differs['workers'] is not None else '?'}")
    return " ".join(parts)
