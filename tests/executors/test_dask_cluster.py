"""The Dask executor against real processes: worker processes, a `dask scheduler` with `dask worker`s,
the demo on every mode, Ctrl-C in a real tdrun, and a worker killed mid-task."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dask_support import DEMO, WAIT, Gate, demo_api, gate, run_demo, statuses  # noqa: F401 - fixtures

from conftest import MODULES, Lines, tdrun_env
from thread_order import EventKind, Scheduler, TaskStatus
from thread_order.executors.dask import DaskExecutor

pytestmark = pytest.mark.slow

EMPTY = {"networks": 0, "subnets": 0, "gateways": 0, "routes": 0}
BIN = Path(sys.executable).parent


class RealCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, started and stopped by the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.file = tmp / "scheduler.json"
        self.scheduler = self._spawn("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                     "--scheduler-file", str(self.file))
        deadline = time.monotonic() + WAIT
        while not self.file.exists():  # the scheduler writes it once it listens
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("dask scheduler did not start")
            time.sleep(0.05)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self.add_worker() for _ in range(2)]
        self.wait_for(2)

    def _spawn(self, *argv: str) -> subprocess.Popen:
        proc = subprocess.Popen([str(BIN / "dask"), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=tdrun_env())
        self.procs.append(proc)
        return proc

    def add_worker(self) -> subprocess.Popen:
        # no nanny: the worker is this process, so killing it is a worker dying for good
        return self._spawn("worker", "--scheduler-file", str(self.file), "--nthreads", "4", "--no-nanny",
                           "--no-dashboard", "--host", "127.0.0.1")

    def wait_for(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=WAIT, set_as_default=False) as client:
            client.wait_for_workers(n, timeout=WAIT)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)  # a worker closing gracefully waits for its running tasks: not for long
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory):
    cluster = RealCluster(tmp_path_factory.mktemp("dask"))
    try:
        yield cluster
    finally:
        cluster.close()


# ---------------------------------------------------------------------------- the demo, every mode


def test_the_demo_ends_the_same_on_threads_and_on_every_dask_mode(tmp_path, real_cluster):
    port = real_cluster.address.rsplit(":", 1)[1]
    modes = {
        "local": ["--executor", "local"],
        "dask": ["--executor", "dask"],
        "processes": ["--executor", "dask", "--dask-processes", "2", "--workers", "4"],
        "scheduler": ["--executor", f"dask://127.0.0.1:{port}"],
    }
    seen = {}
    for mode, argv in modes.items():
        with demo_api() as api:
            code, data, output = run_demo(tmp_path, api, "--fail_at=create_subnet_a", *argv, tag=mode)
            assert code == 1, output
            assert api.store.counts() == EMPTY, mode  # the teardown deleted everything it created
        seen[mode] = statuses(data)
        failed = {t["name"]: t for t in data["tasks"]}["create_subnet_a"]
        assert "INFO    demo: POST /subnets -> 500" in failed["output"], (mode, failed["output"])
        assert f'File "{DEMO}", line' in failed["traceback"], (mode, failed["traceback"])
        assert data["executor"] == {"local": "local", "scheduler": f"dask://127.0.0.1:{port}"}.get(mode, "dask")
        if mode != "local":
            threads = {t["thread"] for t in data["tasks"] if t["thread"]}
            assert threads and all(re.fullmatch(r"(inproc/\d+|127\.0\.0\.1:\d+)/thread_\d+", t) for t in threads)
    assert seen["local"]["create_subnet_a"] == "FAILED" and seen["local"]["delete_network"] == "PASSED"
    assert seen["dask"] == seen["local"]
    assert seen["processes"] == seen["local"]
    assert seen["scheduler"] == seen["local"]


def test_an_unreachable_scheduler_is_one_line_and_exit_4(tmp_path, tdrun_proc):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = tdrun_proc(MODULES / "cli_ok.py", "--executor", f"dask://127.0.0.1:{port}",
                        DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="1s")
    assert result.code == 4
    assert re.fullmatch(rf"tdrun: error: executor dask://127.0.0.1:{port}: cannot reach the dask scheduler "
                        rf"at tcp://127.0.0.1:{port}: .*\n", result.err), result.err


def test_without_the_dask_extra_the_executor_is_refused_in_one_line(tmp_path):
    code = ("import sys; sys.modules['distributed'] = None\n"
            "from thread_order.cli.main import main\n"
            f"sys.exit(main([{str(MODULES / 'cli_ok.py')!r}, '--executor', 'dask']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT,
                          env=tdrun_env())
    assert proc.returncode == 4
    assert proc.stderr.startswith("tdrun: error: executor 'dask' needs Dask, which is not installed: "
                                  "pip install 'thread-order[dask]' (")
    assert proc.stderr.count("\n") == 1


# ---------------------------------------------------------------------------- Ctrl-C in a real tdrun


def test_ctrl_c_in_tdrun_on_dask_lets_teardown_run_and_exits_2(tmp_path, gate):
    report = tmp_path / "r.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "thread_order", str(MODULES / "dask_hold.py"), "--executor", "dask",
         "--plain", f"--port={gate.port}", "--json-report", str(report)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tdrun_env(),
    )
    try:
        err = Lines(proc.stderr, WAIT)
        assert gate.arrived() == "running"
        proc.send_signal(signal.SIGINT)
        err.wait_for(r"^interrupted: running tasks may finish, teardown tasks still run")
        gate.answer("done")
        assert proc.wait(WAIT) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    tasks = {t["name"]: t for t in json.loads(report.read_text())["tasks"]}
    assert {n: t["status"] for n, t in tasks.items()} == {
        "setup": "PASSED", "hold": "PASSED", "after_hold": "CANCELLED", "teardown": "PASSED"}
    assert tasks["teardown"]["output"] == "teardown ran\n"
    assert tasks["after_hold"]["reason"] == "cancelled: the run was interrupted"


# ---------------------------------------------------------------------------- a worker dying mid-task


def report_pid(state):
    """Tell the test which process runs this attempt, then do what it answers."""
    from distributed import get_worker

    key = get_worker().get_current_task()
    with socket.create_connection(("127.0.0.1", state["port"]), timeout=60) as conn:
        conn.sendall(f"{os.getpid()} {key}\n".encode())
        return conn.recv(64).decode().strip()


def run_killing_the_first_worker(executor, gate, on_kill=None):
    """Run report_pid with one retry, killing the process of its first attempt; returns what happened."""
    s = Scheduler(workers=2, state={"port": gate.port}, executor=executor)
    s.register(report_pid, "victim", with_state=True, retries=1)
    retrying = []
    s.subscribe(retrying.append, EventKind.TASK_RETRYING)
    running = threading.Event()  # the client heard that the first attempt began
    s.subscribe(lambda e: running.set(), EventKind.TASK_RUNNING)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(summary=s.start()))
    thread.start()
    try:
        pid, key = gate.arrived().split()
        assert key.startswith("victim-1-")
        assert running.wait(WAIT)
        os.kill(int(pid), signal.SIGKILL)
        if on_kill is not None:
            on_kill()
        while True:  # a re-run of the first attempt elsewhere may knock too: it gets no answer
            pid2, key2 = gate.arrived().split()
            if key2.startswith("victim-2-"):
                gate.answer("survived")
                break
    finally:
        thread.join(WAIT)
    return box["summary"], retrying, pid, pid2


def test_a_worker_process_dying_fails_that_attempt_and_the_retry_runs(gate):
    summary, retrying, pid, pid2 = run_killing_the_first_worker(DaskExecutor(processes=1), gate)
    rec = summary["tasks"]["victim"]
    assert (rec["status"], rec["attempts"]) == (TaskStatus.PASSED, 2) and pid2 != pid
    [event] = retrying
    assert (event.record.error_type, event.record.error) == (
        "WorkerLostError", "the dask worker running task 'victim' died: this attempt fails")


def test_a_task_dask_starts_again_after_its_worker_died_is_not_run_twice_silently(real_cluster, gate):
    # a scheduler we do not own may re-run a task whose worker died (allowed-failures): that
    # second beginning fails the attempt, and the retry is ours
    summary, retrying, pid, pid2 = run_killing_the_first_worker(
        DaskExecutor(real_cluster.address), gate, on_kill=real_cluster.add_worker)
    rec = summary["tasks"]["victim"]
    assert (rec["status"], rec["attempts"]) == (TaskStatus.PASSED, 2)
    [event] = retrying
    assert event.record.error_type == "WorkerLostError"
    assert re.fullmatch(r"the worker running task 'victim' was lost and the cluster started it again on "
                        r"127\.0\.0\.1:\d+/thread_\d+; this attempt fails rather than run twice",
                        event.record.error), event.record.error
    real_cluster.wait_for(2)
