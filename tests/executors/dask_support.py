"""Shared by the Dask executor tests: a cluster per test module, a gate a remote task waits at, the demo as a process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from conftest import REPO, tdrun_env

pytest.importorskip("distributed", reason="the dask extra: pip install -e '.[dask]'")

WAIT = 60.0
DEMO = REPO / "examples" / "demo.py"


@pytest.fixture(scope="module")
def dask_client():
    """An in-process LocalCluster (no dashboard) shared by the tests of one module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, processes=False, threads_per_worker=4, dashboard_address=None,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as cluster:
        with Client(cluster, set_as_default=False) as client:
            yield client


class Gate:
    """A socket on 127.0.0.1 that a remote task connects to: the test knows it runs, and answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(WAIT)
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []

    def arrived(self) -> str:
        """Wait for the next task to connect; returns the line it sent."""
        conn, _ = self.server.accept()
        conn.settimeout(WAIT)
        self.conns.append(conn)
        return conn.makefile().readline().strip()

    def answer(self, text: str, which: int = -1) -> None:
        self.conns[which].sendall(text.encode() + b"\n")

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.server.close()


@pytest.fixture
def gate():
    g = Gate()
    yield g
    g.close()


def demo_api():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from demo_api import DemoAPI
    finally:
        sys.path.remove(str(REPO / "examples"))
    return DemoAPI(latency=(0.0, 0.01))


def run_demo(tmp_path, api, *argv: str, tag: str = "run") -> tuple[int, dict, str]:
    """tdrun examples/demo.py as a real process; returns its exit code, JSON report and stderr."""
    report = tmp_path / f"{tag}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "thread_order", str(DEMO), f"--api_url={api.url}", "--plain",
         "--json-report", str(report), *argv],
        capture_output=True, text=True, timeout=180, env=tdrun_env(), stdin=subprocess.DEVNULL,
    )
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def statuses(data: dict) -> dict[str, str]:
    return {t["name"]: t["status"] for t in data["tasks"]}
