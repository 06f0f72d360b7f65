"""The history against what a hostile world does to it: locks held by others, read-only folders, damaged files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import MODULES, tdrun_env
from thread_order import Scheduler
from thread_order.history import HistoryRecorder, HistoryStore

LIFECYCLE = MODULES / "history_lifecycle.py"
WAIT = 30.0
# longer than the 15 s a write used to wait for a lock inside SQLite before recording gave up
LOCK_HELD = 17.0


def tdrun_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "thread_order", *map(str, args)]


# --------------------------------------------------------------------------- 9.5: a lock held by another


def _chain_module(folder: Path) -> Path:
    """A chain of 60 tasks; ``t26`` says HALF on the real stdout and waits for a line on stdin."""
    lines = ["import sys, time", "from thread_order import mark", ""]
    for i in range(60):
        lines += [f"@mark(after={[f't{i - 1}'] if i else None!r})", f"def t{i}(state):"]
        if i == 26:
            lines += ["    sys.__stdout__.write('HALF\\n')", "    sys.__stdout__.flush()",
                      "    sys.stdin.readline()  # the test holds the write lock now"]
        lines += ["    time.sleep(0.01)", ""]
    path = folder / "chain.py"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_a_write_lock_held_by_another_process_mid_run_loses_nothing(tmp_path):
    """Seen: a 20 s exclusive lock mid-run left a passed run recorded as interrupted with 27 of 60 tasks."""
    path = tmp_path / "h.db"
    proc = subprocess.Popen(tdrun_cmd(_chain_module(tmp_path), "--plain", "--workers", "2", "--history", path),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=tdrun_env(TDRUN_HISTORY="on"), cwd=tmp_path)
    locker = None
    try:
        lines = []
        for line in proc.stdout:  # the plain display's lines come first
            lines.append(line)
            if line == "HALF\n":
                break
        assert lines[-1] == "HALF\n", lines
        # a second process's connection: an exclusive transaction on the real file
        locker = sqlite3.connect(path, isolation_level=None, timeout=WAIT)
        locker.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        try:
            proc.wait(LOCK_HELD)  # the run ends while the lock is held; tdrun waits for the file
            pytest.fail(f"tdrun exited {proc.returncode} while the file was locked: {proc.stderr.read()}")
        except subprocess.TimeoutExpired:
            pass
        assert time.monotonic() - locked_at >= LOCK_HELD
        locker.execute("ROLLBACK")
        out, err = proc.communicate(timeout=WAIT)
        out = "".join(lines) + out
    finally:
        if locker is not None:
            locker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    assert proc.returncode == 0, err
    # said once (through the display, with the run's other lines), and the run still recorded
    said = [line for line in (out + err).splitlines() if "history file" in line]
    assert len(said) == 1 and "waiting up to 30s to record run 1" in said[0], out + err
    assert "run 1 recorded in" in out
    with HistoryStore(path) as store:
        run = store.get_run(1)
    assert (run["status"], run["passed"], run["total"]) == ("passed", 60, 60)
    assert sorted(t["name"] for t in run["tasks"]) == sorted(f"t{i}" for i in range(60))


def test_a_file_that_stays_locked_is_said_once_and_finish_names_what_was_lost(tmp_path, monkeypatch):
    from thread_order.history import recorder as recorder_module

    monkeypatch.setattr(recorder_module, "FINAL_WAIT", 0.5)
    monkeypatch.setattr(recorder_module, "ATTEMPT_WAIT", 0.1)
    path = tmp_path / "h.db"
    sched = Scheduler(workers=2)
    for i in range(5):
        sched.register(lambda: None, f"t{i}")
    recorder = HistoryRecorder(path)
    recorder.attach(sched, {})
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        sched.start()
        from thread_order import HistoryError

        with pytest.raises(HistoryError, match=r"could not record run 1: database is locked; "
                                               r"5 finished tasks were not written$"):
            recorder.finish()
    finally:
        locker.execute("ROLLBACK")
        locker.close()


# --------------------------------------------------------------------------- 9.6: read-only folders


def _as_nobody(argv: list[str], cwd: Path) -> tuple[int, str, str]:
    """tdrun's read commands in a child process that cannot write ``cwd`` (root: dropped to nobody)."""
    from thread_order.history import commands
    import rich.console, rich.table, rich.text  # noqa: E401,F401 - loaded before the uid changes

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            os.chdir(cwd)
            sys.stdout = os.fdopen(1, "w")
            sys.stderr = os.fdopen(2, "w")
            code = commands.main(argv)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
        os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r) as out, os.fdopen(err_r) as err:
        stdout, stderr = out.read(), err.read()
    return os.waitpid(pid, 0)[1] >> 8, stdout, stderr


@pytest.fixture
def open_tmp():
    """A temporary folder every user can reach (pytest's own is private to its user)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="tdrun-test-"))
    os.chmod(folder, 0o755)
    yield folder
    for sub in folder.iterdir():
        if sub.is_dir():
            os.chmod(sub, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("wal", ["none", "empty", "with commits"])
def test_read_commands_work_in_a_folder_that_cannot_be_written(open_tmp, tdrun_main, wal):
    """Seen: 'attempt to write a readonly database' (a WAL file, no -shm beside it, no right to create one)."""
    tmp_path = open_tmp
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "h.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path).code == 0
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path, "--fail=update").code == 1
    keep = None
    if wal == "empty":
        Path(f"{path}-wal").touch()
    elif wal == "with commits":
        # a writer that is gone without checkpointing: copy the file and -wal while one is open
        keep = sqlite3.connect(path, isolation_level=None)
        keep.execute("SELECT COUNT(*) FROM runs").fetchone()  # open: the last one out checkpoints
        assert tdrun_main(LIFECYCLE, "--plain", "--history", path, "--slow=login").code == 0
        assert Path(f"{path}-wal").stat().st_size > 0
        copy = tmp_path / "copy"
        copy.mkdir()
        for suffix in ("", "-wal"):
            (copy / f"h.db{suffix}").write_bytes(Path(f"{path}{suffix}").read_bytes())
        keep.close()
        folder, path = copy, copy / "h.db"
    for side in ("-shm",) + (("-wal",) if wal == "none" else ()):
        Path(f"{path}{side}").unlink(missing_ok=True)
    os.chmod(folder, 0o555)
    try:
        before = sorted(os.listdir(folder))
        code, out, err = _as_nobody(["history", "--history", str(path)], folder)
        assert (code, err) == (0, ""), err
        ids = [line.split()[0] for line in out.splitlines()[1:]]
        assert ids == (["3", "2", "1"] if wal == "with commits" else ["2", "1"])
        code, out, err = _as_nobody(["show", "2", "--history", str(path)], folder)
        assert (code, err) == (0, "") and "RuntimeError" in out, err
        code, out, err = _as_nobody(["compare", "1", "2", "--history", str(path)], folder)
        assert (code, err) == (0, "") and "status changed" in out, err
        assert sorted(os.listdir(folder)) == before
    finally:
        os.chmod(folder, 0o755)


# --------------------------------------------------------------------------- 9.6: damaged values

GARBAGE = ["garbage", b"\xff\x00", None, -1, 1e308, "{not json", "[1, 2", '"a string"', "5",
           '{"nodes": 7, "edges": [[1]]}', "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[" * 2000]


def _loose_copy(source: Path, target: Path) -> None:
    """The same tables without their NOT NULL and type rules: a file any other tool may have written."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    for table in ("runs", "tasks", "task_batches"):
        cols = [row[1] for row in src.execute(f"PRAGMA table_info({table})")]
        dst.execute(f"CREATE TABLE {table} ({', '.join(cols)})")
        rows = src.execute(f"SELECT * FROM {table}").fetchall()
        dst.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(cols))})", rows)
    dst.execute(f"PRAGMA user_version = {src.execute('PRAGMA user_version').fetchone()[0]}")
    dst.commit()
    src.close()
    dst.close()


def test_every_read_command_survives_garbage_in_any_column(tmp_path, tdrun_main):
    """Seen: text in runs.started_at made history, show and compare exit 3 with a traceback."""
    good = tmp_path / "good.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", good).code == 0
    assert tdrun_main(LIFECYCLE, "--plain", "--history", good, "--fail=update", "--x=1").code == 1
    conn = sqlite3.connect(good)
    columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("runs", "tasks", "task_batches")}
    conn.close()
    failures = []
    case = 0
    for table, names in columns.items():
        for column in names:
            if column in ("id", "run_id"):
                continue
            for value in GARBAGE:
                case += 1
                path = tmp_path / f"case{case}.db"
                _loose_copy(good, path)
                with sqlite3.connect(path) as bad:
                    bad.execute(f"UPDATE {table} SET {column} = ?", (value,))
                for argv in (("history",), ("history", "--json"), ("show", "2"), ("show", "1", "--json"),
                             ("compare", "1", "2"), ("report", "2", "-o", tmp_path / "r.html")):
                    r = tdrun_main(*argv, "--history", path)
                    if r.code != 0 or r.err:
                        failures.append((table, column, repr(value)[:30], argv[0], r.code, r.err[-200:]))
    assert failures == [], "\n".join(map(str, failures))


def test_a_tasks_row_with_an_unknown_status_is_shown_as_it_is(tmp_path, tdrun_main):
    path = tmp_path / "h.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path, "--fail=update").code == 1
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tasks SET status = 'exploded' WHERE name = 'update'")
    out = tdrun_main("show", "1", "--history", path).out
    assert "EXPLODED" in out
    assert tdrun_main("report", "1", "-o", tmp_path / "r.html", "--history", path).code == 0


# --------------------------------------------------------------------------- 9.4: teardown not run


def test_teardown_not_run_is_stored_with_the_run_and_shown(tmp_path, tdrun_main):
    path = tmp_path / "h.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path).code == 0
    with HistoryStore(path) as store:
        assert store.get_run(1)["teardown_not_run"] == []
    # as a recorder writes it from a forced stop's summary
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET teardown_not_run = ?", (json.dumps(["teardown", "drop_db"]),))
    with HistoryStore(path) as store:
        assert store.get_run(1)["teardown_not_run"] == ["teardown", "drop_db"]
    out = tdrun_main("show", "1", "--history", path).out
    assert ("  teardown did not run: teardown, drop_db \u2014 resources they clean up may remain\n"
            in out)
    assert "teardown did not run" not in tdrun_main("show", "1", "--history", tmp_path / "h.db").out.replace(
        "teardown did not run: teardown, drop_db", "")


def test_a_forced_stop_records_the_teardown_that_did_not_run(tmp_path):
    import threading

    path = tmp_path / "h.db"
    sched = Scheduler(workers=1)
    started, release = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(WAIT)

    sched.register(hold, "hold")
    sched.register(lambda: None, "cleanup", after=["hold"], always=True)
    recorder = HistoryRecorder(path)
    recorder.attach(sched, {})
    worker = threading.Thread(target=sched.start)
    worker.start()
    assert started.wait(WAIT)
    sched.cancel(force=True)
    worker.join(WAIT)
    release.set()
    run_id = recorder.finish()
    with HistoryStore(path) as store:
        assert store.get_run(run_id)["teardown_not_run"] == ["cleanup"]


# --------------------------------------------------------------------------- 9.20: report without -o


def test_report_without_o_writes_into_the_current_folder_and_says_where(tmp_path, tdrun_main):
    path = tmp_path / "h.db"
    assert tdrun_main(LIFECYCLE, "--plain", "--history", path).code == 0
    here = tmp_path / "here"
    here.mkdir()
    proc = subprocess.run(tdrun_cmd("report", "last", "--history", path), cwd=here, capture_output=True,
                          text=True, timeout=WAIT, env=tdrun_env(), stdin=subprocess.DEVNULL)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "report of run 1 written to tdrun-report-1.html\n"
    assert (here / "tdrun-report-1.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
