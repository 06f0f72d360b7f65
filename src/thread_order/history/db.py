"""The history file itself: schema and migrations, connections, and what is safe to store.

Every write transaction is ``BEGIN IMMEDIATE`` in WAL mode with a busy
timeout, so several processes can write one file at once. The schema version
lives in ``PRAGMA user_version``; ``MIGRATIONS`` take a file forward one
version at a time, and a new file is built by running them all.

A run row says ``running`` until its recorder writes the outcome. To tell a
live run from one whose process died, each row keeps the writer's ``host``,
``pid`` and a ``heartbeat`` (refreshed by every commit, and every few seconds
while a run is quiet). :func:`effective_status` reads a ``running`` row as
``interrupted`` when its process is gone (same host: the pid no longer exists)
or its heartbeat is older than ``LEASE`` (other hosts, or a reused pid). Rows
from schema version 1 have neither and always read as interrupted.

Tasks are stored two ways. A task with anything to say (output, an error, a
reason, tags, or a status other than PASSED) is a row of ``tasks``. Passed
tasks with nothing more than their times -- most tasks of a big run -- are
stored a batch at a time, a row of ``task_batches`` per commit or per
1,024 tasks of it (schema version 3): the batch's names and threads as JSON lists, its times as
little-endian float64 arrays and its attempts and sequence numbers as int64
arrays. Encoding a batch costs a fraction of binding a row per task, and the
recorder's writer thread competes with the run for the GIL.
"""

from __future__ import annotations

import array
import contextlib
import json
import logging
import math
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from ..engine.aio import LOOP_THREAD
from ..engine.errors import HistoryError

log = logging.getLogger("thread_order")

#: the schema this version writes; it reads every version up to this one
SCHEMA_VERSION = 8
#: captured output (and tracebacks) longer than this many UTF-8 bytes are cut in the middle
OUTPUT_CAP = 64 * 1024
REDACTED = "***redacted***"
#: state keys (and ``--option=value`` names) that look like secrets
SECRET_KEY = re.compile(r"password|passwd|token|secret|key|auth|credential", re.IGNORECASE)
#: a "running" row whose heartbeat is older than this is a dead run
LEASE = 60.0
BUSY_TIMEOUT_MS = 15_000
RUN_STATUSES = ("passed", "failed", "interrupted", "running")
HOST = socket.gethostname()
_NOT_JSON = "__not_json__"
_MAX_DEPTH = 32

# MIGRATIONS[v] upgrades a file from schema version v to v + 1; a new file runs them all.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 0 -> 1: the first schema
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at REAL NOT NULL,
            finished_at REAL,
            module TEXT,
            target TEXT,
            argv TEXT NOT NULL DEFAULT '[]',
            tags TEXT NOT NULL DEFAULT '[]',
            workers INTEGER,
            host TEXT,
            status TEXT NOT NULL,
            passed INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            cancelled INTEGER NOT NULL DEFAULT 0,
            total INTEGER NOT NULL DEFAULT 0,
            duration REAL,
            graph TEXT NOT NULL DEFAULT '{}',
            state TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE tasks (
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            thread TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            started_at REAL,
            finished_at REAL,
            duration REAL NOT NULL DEFAULT 0,
            error_type TEXT,
            error TEXT,
            traceback TEXT,
            reason TEXT,
            output TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (run_id, name)
        )""",
    ),
    (  # 1 -> 2: tell dead runs from live ones; tasks in insertion order (rowid) with an index
        # on run_id instead of a (run_id, name) key: appending a batch no longer reshuffles a
        # B-tree by name, which halves the cost of recording a task
        """CREATE TABLE tasks_v2 (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            thread TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            started_at REAL,
            finished_at REAL,
            duration REAL NOT NULL DEFAULT 0,
            error_type TEXT,
            error TEXT,
            traceback TEXT,
            reason TEXT,
            output TEXT NOT NULL DEFAULT '',
            output_bytes INTEGER,
            tags TEXT NOT NULL DEFAULT '[]'
        )""",
        """INSERT INTO tasks_v2 (run_id, seq, name, status, thread, attempts, started_at, finished_at,
                                 duration, error_type, error, traceback, reason, output)
           SELECT run_id, seq, name, status, thread, attempts, started_at, finished_at,
                  duration, error_type, error, traceback, reason, output
           FROM tasks ORDER BY run_id, seq""",
        "DROP TABLE tasks",
        "ALTER TABLE tasks_v2 RENAME TO tasks",
        "CREATE INDEX tasks_by_run ON tasks (run_id)",
        "ALTER TABLE runs ADD COLUMN pid INTEGER",
        "ALTER TABLE runs ADD COLUMN heartbeat REAL",
        "ALTER TABLE runs ADD COLUMN run_uuid TEXT",
        "CREATE INDEX runs_by_module ON runs (module, id)",
        "CREATE INDEX runs_by_status ON runs (status, id)",
    ),
    (  # 2 -> 3: passed tasks without details a batch per row; the teardown a forced stop left
        """CREATE TABLE task_batches (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            tasks INTEGER NOT NULL,
            names TEXT NOT NULL,
            threads TEXT NOT NULL,
            times BLOB NOT NULL,
            numbers BLOB NOT NULL
        )""",
        "CREATE INDEX task_batches_by_run ON task_batches (run_id)",
        "ALTER TABLE runs ADD COLUMN teardown_not_run TEXT NOT NULL DEFAULT '[]'",
    ),
    (  # 3 -> 4: the state checker's findings (tdrun --check-state); NULL: the run was not checked
        "ALTER TABLE runs ADD COLUMN state_findings TEXT",
    ),
    (  # 4 -> 5: every attempt of a retried task; the one that ended it stays its tasks row
        """CREATE TABLE task_attempts (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            status TEXT NOT NULL,
            thread TEXT,
            started_at REAL,
            finished_at REAL,
            duration REAL NOT NULL DEFAULT 0,
            error_type TEXT,
            error TEXT,
            traceback TEXT,
            output TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX task_attempts_by_run ON task_attempts (run_id)",
    ),
    (  # 5 -> 6: the start order (shuffle seed, critical path, replay and its lower bound) and
        # the run a replay reran
        "ALTER TABLE runs ADD COLUMN ordering TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE runs ADD COLUMN replay_of INTEGER",
        "CREATE INDEX runs_by_replay_of ON runs (replay_of)",
    ),
    (  # 6 -> 7: which tasks were async (a batch's task is async when its thread is the event
        # loop's), and a task's warning (a coroutine that blocked the loop)
        "ALTER TABLE tasks ADD COLUMN is_async INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN warning TEXT",
    ),
    (  # 7 -> 8: pools: how long each task waited for which pool, and each pool's tally
        "ALTER TABLE tasks ADD COLUMN waited REAL NOT NULL DEFAULT 0",
        "ALTER TABLE tasks ADD COLUMN waited_for TEXT",
        "ALTER TABLE runs ADD COLUMN pools TEXT NOT NULL DEFAULT '{}'",
    ),
)


# --------------------------------------------------------------------------- values


def snapshot_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready copy of a run's initial state, safe to store.

    ``_state_lock`` and ``results`` are left out. Values under a key that looks
    like a secret (see :data:`SECRET_KEY`) become ``"***redacted***"``, at any
    depth of nested dicts. Values JSON cannot hold are stored as
    ``{"__not_json__": "TypeName"}``: the type only, because an object's repr
    can carry the very secrets redaction is there to keep out.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in ("_state_lock", "results"):
            continue
        out[str(key)] = _clean(key, value, 0)
    return out


def _clean(key: Any, value: Any, depth: int) -> Any:
    if isinstance(key, str) and SECRET_KEY.search(key):
        return REDACTED
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {_NOT_JSON: "float"}
    if depth >= _MAX_DEPTH:
        return {_NOT_JSON: type(value).__name__}
    if isinstance(value, Mapping):
        return {str(k): _clean(k, v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(None, v, depth + 1) for v in value]
    return {_NOT_JSON: type(value).__qualname__}


def redact_argv(argv: Iterable[str]) -> list[str]:
    """Hide the values of secret-looking options: ``--api-token=x`` and ``--api-token x``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        arg = str(arg)
        if hide_next and not arg.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        if arg.startswith("-"):
            name, eq, _ = arg.partition("=")
            if SECRET_KEY.search(name):
                if eq:
                    arg = f"{name}={REDACTED}"
                else:
                    hide_next = True
        out.append(arg)
    return out


def cap_text(text: str | None, limit: int = OUTPUT_CAP) -> tuple[str | None, int]:
    """Cut ``text`` to at most ``limit`` UTF-8 bytes, keeping its head and tail.

    Returns ``(text, original_size_in_bytes)``; a cut text says
    ``[... truncated N bytes ...]`` where the middle was.
    """
    if not text:
        return text, 0
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a misbehaving stream
        raw = text.encode("utf-8", "replace")
        text = raw.decode("utf-8")
    if len(raw) <= limit:
        return text, len(raw)
    budget = limit - 64  # room for the note
    head = raw[: budget * 3 // 4].decode("utf-8", "ignore")
    tail = raw[len(raw) - (budget - budget * 3 // 4):].decode("utf-8", "ignore")
    dropped = len(raw) - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return f"{head}\n[... truncated {dropped} bytes ...]\n{tail}", len(raw)


_LITTLE = sys.byteorder == "little"


def encode_batch(names: Sequence, threads: Sequence, times: Sequence, numbers: Sequence) -> tuple:
    """One ``task_batches`` row's values after ``run_id`` (see the module docstring).

    ``times`` holds started_at, finished_at and duration of every task, column
    after column; ``numbers`` attempts and then seq. Raises TypeError or
    ValueError when a value does not fit (a time that is None, a huge number).
    """
    floats = array.array("d", times)
    ints = array.array("q", numbers)
    if not _LITTLE:  # pragma: no cover - big-endian machines
        floats.byteswap()
        ints.byteswap()
    return (len(names), json_strings(names), json_strings(threads), floats.tobytes(), ints.tobytes())


def json_strings(items: Sequence) -> str:
    """``json.dumps(items)`` for a list of strings, the same text, several times faster when no
    item needs escaping (printable ASCII without quotes or backslashes: task and thread names,
    nearly always). The recorder encodes every batch on a thread that competes with the run."""
    try:
        body = '", "'.join(items)
    except TypeError:  # not all strings: json says what it makes of them
        return json.dumps(items)
    if (body.count('"') == 2 * (len(items) - 1) and "\\" not in body and body.isascii()
            and body.isprintable()):
        return f'["{body}"]'
    return json.dumps(items)


def decode_batch(tasks: Any, names: Any, threads: Any, times: Any, numbers: Any) -> list[dict] | None:
    """The task dicts of one ``task_batches`` row; None when the row is damaged."""
    try:
        n = int(tasks)
        names, threads = json.loads(names), json.loads(threads)
        floats, ints = array.array("d"), array.array("q")
        floats.frombytes(times)
        ints.frombytes(numbers)
    except (TypeError, ValueError, OverflowError):
        return None
    if not (isinstance(names, list) and isinstance(threads, list) and len(names) == len(threads) == n
            and len(floats) == 3 * n and len(ints) == 2 * n):
        return None
    if not _LITTLE:  # pragma: no cover - big-endian machines
        floats.byteswap()
        ints.byteswap()
    out = []
    for i in range(n):
        out.append({
            "seq": ints[n + i], "name": names[i], "status": "PASSED", "thread": threads[i],
            "attempts": ints[i], "started_at": floats[i], "finished_at": floats[n + i],
            "duration": floats[2 * n + i], "error_type": None, "error": None, "traceback": None,
            "reason": None, "output": "", "output_bytes": 0, "tags": [],
            "is_async": threads[i] == LOOP_THREAD, "warning": None,
        })
    return out


# --------------------------------------------------------------------------- connections


def fail(path: Path, what: str) -> HistoryError:
    return HistoryError(f"history file {path}: {what}")


def describe(exc: sqlite3.Error) -> str:
    text = str(exc) or type(exc).__name__
    if "not a database" in text or "malformed" in text:
        return f"not a readable thread-order history file ({text})"
    return text


def check_version(conn: sqlite3.Connection, path: Path, *, allow_empty: bool) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise fail(path, f"written by a newer thread-order (schema version {version}, "
                          f"this version reads up to {SCHEMA_VERSION})")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0:
        if tables - {"sqlite_sequence"} or not allow_empty:
            raise fail(path, "not a thread-order history file (no schema version)")
    elif not {"runs", "tasks"} <= tables:
        raise fail(path, "not a thread-order history file (tables runs and tasks are missing)")
    return version


def open_readonly(path: Path) -> sqlite3.Connection:
    """Open ``path`` read-only, never creating, migrating or modifying it.

    A WAL-mode file needs a ``-shm`` file beside it, which SQLite cannot create
    in a folder we may not write. Such a file is then read as it is on disk
    (``immutable=1``) when its ``-wal`` file is missing or empty, and from a
    copy in memory otherwise (the copy includes the commits the ``-wal`` holds).
    """
    if not path.exists():
        raise fail(path, "no such file")
    if path.is_dir():
        raise fail(path, "is a directory")
    uri = path.resolve().as_uri()
    try:
        return _connect_readonly(path, uri + "?mode=ro")
    except sqlite3.Error as exc:
        text = str(exc)
        if "readonly" not in text and "unable to open" not in text:
            raise fail(path, describe(exc)) from None
        first = exc
    wal = Path(f"{path}-wal")
    try:
        if not wal.exists() or wal.stat().st_size == 0:
            return _connect_readonly(path, uri + "?mode=ro&immutable=1")
        return _copy_in_memory(path, wal)
    except sqlite3.Error as exc:
        raise fail(path, f"{describe(first)}; reading it as it is failed too: {describe(exc)}") from None
    except OSError as exc:
        raise fail(path, f"{describe(first)}; copying it to read failed too: {exc.strerror or exc}") from None


def _connect_readonly(path: Path, uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        check_version(conn, path, allow_empty=False)
    except BaseException:
        conn.close()
        raise
    return conn


def _copy_in_memory(path: Path, wal: Path) -> sqlite3.Connection:
    """The file and its ``-wal`` copied where SQLite may write, then loaded into memory."""
    with tempfile.TemporaryDirectory(prefix="tdrun-history-") as folder:
        copy = Path(folder) / "history.db"
        shutil.copyfile(path, copy)
        shutil.copyfile(wal, f"{copy}-wal")
        source = _connect_readonly(path, copy.as_uri() + "?mode=ro")
        try:
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            source.backup(memory)
        finally:
            source.close()
    return memory


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction that takes the write lock up front (waiting up to the busy timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_writable(path: Path) -> sqlite3.Connection:
    """Open ``path`` for writing, creating it and migrating it to ``SCHEMA_VERSION``."""
    if path.is_dir():
        raise fail(path, "is a directory")
    try:
        fresh_dir = not path.parent.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        if fresh_dir and path.parent.name == ".tdrun":
            # keep recorded runs (state, output) out of version control by default
            (path.parent / ".gitignore").write_text("# created by tdrun\n*\n", encoding="utf-8")
    except OSError as exc:
        raise fail(path, f"cannot create its folder: {exc.strerror or exc}") from None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise fail(path, f"cannot open: {describe(exc)}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not _ready(conn):
            # creating, converting or migrating the file: one process at a time, or two of
            # them starting on a fresh file trip over each other's half-made schema
            with _setup_lock(path):
                _set_up(conn, path)
        # in WAL mode NORMAL keeps every commit through a process crash; only power loss can
        # cost the last commits
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise fail(path, describe(exc)) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _ready(conn: sqlite3.Connection) -> bool:
    """Already a current history file in WAL mode (one consistent read)?"""
    conn.execute("BEGIN")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.execute("COMMIT")
    return version == SCHEMA_VERSION and mode.lower() == "wal"


def _set_up(conn: sqlite3.Connection, path: Path) -> None:
    # look before touching: someone else's database must not even be switched to WAL
    conn.execute("BEGIN")
    try:
        check_version(conn, path, allow_empty=True)
    finally:
        conn.execute("COMMIT")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        log.warning("history file %s: journal mode is %s, not wal", path, mode)
    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        # under the write lock too: a process of an older tdrun may be opening it as well
        with transaction(conn):
            version = check_version(conn, path, allow_empty=True)
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextlib.contextmanager
def _setup_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<file>.lock`` beside the history file, waited for in the kernel.

    SQLite's own locks cannot cover switching the journal mode or a schema
    check followed by its creation; where ``fcntl`` is missing (Windows) this
    degrades to SQLite's locking alone.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise fail(path, f"cannot create its lock file: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else (or we cannot tell)
    return True


def effective_status(status: str, host: str | None, pid: int | None, heartbeat: float | None,
                     now: float | None = None) -> str:
    """A stored run status, with a ``running`` row whose writer is gone read as ``interrupted``."""
    if status != "running":
        return status
    if heartbeat is None:
        return "interrupted"  # schema 1 rows, or a writer that never wrote
    # os.kill(pid, 0) is a liveness probe on POSIX only (on Windows it would terminate the process)
    if host == HOST and pid and os.name == "posix" and not pid_alive(pid):
        return "interrupted"
    if (now if now is not None else time.time()) - heartbeat > LEASE:
        return "interrupted"
    return "running"
