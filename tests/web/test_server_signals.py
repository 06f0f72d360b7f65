"""``tdrun ui`` as a real process receiving real signals: SIGTERM stops it as Ctrl-C does.

``timeout``, CI cancellations, Kubernetes and systemd stop a server with
SIGTERM; it must cancel the run in progress (teardown still runs), record it,
and exit 0 as the README says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from thread_order.history import HistoryStore
from web_support import module_path, sse_events


class UiProcess:
    """``python -m thread_order ui`` on a free port with its own history file."""

    def __init__(self, tmp_path, module: str | None = None) -> None:
        self.history = tmp_path / "h.db"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("TDRUN_HISTORY", None)
        argv = [sys.executable, "-m", "thread_order", "ui", "--no-browser", "--port", "0",
                "--history", str(self.history)] + ([module] if module else [])
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=tmp_path, env=env)
        first = self.proc.stdout.readline()
        assert first.startswith("thread-order UI: http://127.0.0.1:"), first + self.proc.stderr.read()
        self.url = first.split(": ", 1)[1].strip()
        with httpx.Client(base_url=self.url, timeout=10) as http:
            page = http.get("/").text
        self.token = page.split('name="tdrun-token" content="')[1].split('"')[0]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, headers={"X-Tdrun-Token": self.token})

    def start_and_wait_for_a_running_task(self, http: httpx.Client, **options) -> str:
        run_id = http.post("/api/runs", json=options).json()["id"]
        with http.stream("GET", f"/api/runs/{run_id}/events") as r:
            for _, data in sse_events(r.iter_lines()):
                if data.get("lanes"):
                    return run_id
        raise AssertionError("the run ended before any task was seen running")

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.communicate()
        return self.proc.returncode, out, err

    def last_run(self) -> dict:
        store = HistoryStore(self.history)
        try:
            return store.get_run("last")
        finally:
            store.close()


@pytest.fixture
def kill_at_end():
    started = []
    yield started.append
    for ui in started:
        if ui.proc.poll() is None:
            ui.proc.kill()
            ui.proc.communicate()


def test_sigterm_stops_an_idle_server_with_exit_0(tmp_path, kill_at_end):
    ui = UiProcess(tmp_path)
    kill_at_end(ui)
    ui.proc.send_signal(signal.SIGTERM)
    code, _, err = ui.finish()
    assert code == 0, err
    assert err == ""


def test_sigterm_cancels_the_run_lets_teardown_run_records_it_and_exits_0(tmp_path, kill_at_end):
    ui = UiProcess(tmp_path, module_path("web_lifecycle"))
    kill_at_end(ui)
    with ui.client() as http:
        http.put("/api/state", json={"values": {"delay": "0.3"}})
        ui.start_and_wait_for_a_running_task(http, workers=1)
    ui.proc.send_signal(signal.SIGTERM)
    code, _, err = ui.finish()
    assert code == 0, err
    assert "cancelling the run in progress; teardown tasks still run" in err
    run = ui.last_run()
    assert run["status"] == "interrupted"
    rows = {t["name"]: t["status"] for t in run["tasks"]}
    assert rows["create_network"] == "PASSED" and rows["teardown"] == "PASSED"
    assert rows["verify"] == "CANCELLED"


def test_a_second_sigterm_stops_waiting_for_a_task_that_does_not_end(tmp_path, kill_at_end):
    # web_gate's first task waits 30 s for a gate nobody opens in this process
    ui = UiProcess(tmp_path, module_path("web_gate"))
    kill_at_end(ui)
    with ui.client() as http:
        ui.start_and_wait_for_a_running_task(http, workers=2)
    ui.proc.send_signal(signal.SIGTERM)
    assert "cancelling the run in progress" in ui.proc.stderr.readline()
    ui.proc.send_signal(signal.SIGTERM)
    # without the second signal this would take the task's 30 s, then its teardown
    code, _, err = ui.finish(timeout=20)
    assert code == 0, err
    run = ui.last_run()
    assert run["status"] == "interrupted"
    assert {t["name"]: t["status"] for t in run["tasks"]}["teardown"] == "CANCELLED"
