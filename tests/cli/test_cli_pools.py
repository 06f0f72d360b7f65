"""tdrun and pools: --pool, a module's POOLS, [tool.tdrun] pools, bad input, and a pool of 2
in front of a real HTTP API that counts its concurrent calls and answers 429 above 2."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from thread_order.history import HistoryStore

QUOTA = 2


class QuotaAPI:
    """An API allowing QUOTA calls at once: above that it answers 429. Counts its peak."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards now, peak, calls, refused
        self.now = self.peak = self.calls = self.refused = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                with api._lock:
                    api.now += 1
                    api.calls += 1
                    api.peak = max(api.peak, api.now)
                    over = api.now > QUOTA
                    api.refused += over
                try:
                    threading.Event().wait(0.03)  # the call's own latency
                    body = b'{"error": "too many requests"}' if over else b'{"id": "vm-1"}'
                    self.send_response(429 if over else 201)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with api._lock:
                        api.now -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def quota_api():
    api = QuotaAPI()
    yield api
    api.close()


CREATE_VMS = """
import json
import urllib.request
from thread_order import mark

POOLS = {"api": 2}
REGIONS = ["eu", "us", "ap", "sa", "af", "me", "ca", "au"]


@mark(pool="api", params={"region": REGIONS})
def create_vm(state, region):
    req = urllib.request.Request(state["api_url"] + "/vms", data=b"{}", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())["id"]


@mark()
def unrelated(state):
    return "ran"
"""


def test_a_pool_of_2_keeps_an_api_under_its_quota(quota_api, write_module, tdrun_main):
    path = write_module(CREATE_VMS)
    res = tdrun_main(path, "--workers", "8", "--plain", f"--api_url={quota_api.url}")
    assert res.code == 0, res.out + res.err
    assert quota_api.calls == 8 and quota_api.refused == 0
    assert quota_api.peak == QUOTA  # used in full, never above
    assert "pool api (size 2): " in res.out and "tasks waited" in res.out


def test_without_the_pool_the_same_suite_hits_429(quota_api, write_module, tdrun_main):
    # the control: --pool overrides the module's POOLS, and a wide pool lets the calls pile up
    path = write_module(CREATE_VMS)
    res = tdrun_main(path, "--workers", "8", "--plain", "--pool", "api=8", f"--api_url={quota_api.url}")
    assert res.code == 1
    assert quota_api.peak > QUOTA and quota_api.refused > 0
    assert "HTTPError: HTTP Error 429" in res.out


def test_pools_in_pyproject_and_the_command_line_over_them(tmp_path, monkeypatch, write_module, tdrun_main):
    write_module("""
        from thread_order import mark

        @mark(pool="api")
        def a(state):
            pass

        @mark(pool=["api", "quota"])
        def b(state):
            pass
    """)
    (tmp_path / "pyproject.toml").write_text('[tool.tdrun]\npools = {api = 1, quota = {size = 2, rate = "5/s"}}\n')
    monkeypatch.chdir(tmp_path)
    res = tdrun_main("tasks.py", "--show-config")
    assert res.code == 0
    rows = {line.split()[1]: line.split()[2:] for line in res.out.splitlines() if line.startswith("  pool ")}
    assert rows == {"api": ["1", "pyproject.toml", "[tool.tdrun]", "pools"],
                    "quota": ["2,5/s", "pyproject.toml", "[tool.tdrun]", "pools"]}
    res = tdrun_main("tasks.py", "--show-config", "--pool", "api=3")
    rows = {line.split()[1]: line.split()[2:] for line in res.out.splitlines() if line.startswith("  pool ")}
    assert rows["api"] == ["3", "command", "line"] and rows["quota"][0] == "2,5/s"
    res = tdrun_main("tasks.py", "--plain", "--json-report", "run.json")
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "run.json").read_text())
    assert report["pools"]["api"]["size"] == 1 and report["pools"]["quota"]["rate"] == "5/s"
    res = tdrun_main("tasks.py", "--plain", "--pool", "api=3", "--json-report", "run.json")
    assert json.loads((tmp_path / "run.json").read_text())["pools"]["api"]["size"] == 3


def test_the_command_line_overrides_a_module_pool(write_module, tdrun_main, tmp_path):
    write_module("""
        from thread_order import mark
        POOLS = {"api": {"size": 1, "rate": "1/h"}}

        @mark(pool="api", params={"i": [1, 2, 3]})
        def call(state, i):
            pass
    """)
    # 1/h would hold the second call for an hour: the command line's pool is the one in force
    res = tdrun_main(tmp_path / "tasks.py", "--plain", "--pool", "api=1", "--json-report", tmp_path / "r.json")
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pools"]["api"] == {"size": 1, "rate": None, "waited": 2,
                                      "longest": report["pools"]["api"]["longest"],
                                      "total": report["pools"]["api"]["total"]}
    assert [t["waited_for"] for t in report["tasks"]] == [None, "api", "api"]


@pytest.mark.parametrize("module, argv, message", [
    ('@mark(pool="api")\ndef a(state): pass\n', [],
     "tdrun: error: task 'a' is in unknown pool 'api' (declared: none)"),
    ('POOLS = {"api": 0}\n@mark(pool="api")\ndef a(state): pass\n', [],
     "tdrun: error: {path}: POOLS: pool 'api': size must be at least 1, not 0"),
    ('POOLS = {"api": {"size": 1, "rate": "2/day"}}\n@mark(pool="api")\ndef a(state): pass\n', [],
     "tdrun: error: {path}: POOLS: pool 'api': bad rate '2/day'; expected N/s, N/min or N/h with N >= 1"),
    ('POOLS = ["api"]\n@mark()\ndef a(state): pass\n', [],
     "tdrun: error: {path}: POOLS: pools must be a dict of pool name -> size or "
     "{'size': N, 'rate': 'N/s'}, not list"),
    ('@mark(pool=7)\ndef a(state): pass\n', [],
     "tdrun: error: {path}: cannot import module: TypeError: task 'a': pool must be a pool name or "
     "a list of them, not 7"),
    ('@mark()\ndef a(state): pass\n', ["--pool", "api=0"],
     "tdrun: error: argument --pool: 'api=0': pool 'api': size must be at least 1, not 0"),
    ('@mark()\ndef a(state): pass\n', ["--pool", "api=2,10/week"],
     "tdrun: error: argument --pool: 'api=2,10/week': pool 'api': bad rate '10/week'; "
     "expected N/s, N/min or N/h with N >= 1"),
    ('@mark()\ndef a(state): pass\n', ["--pool", "api"],
     "tdrun: error: argument --pool: 'api': expected NAME=SIZE, NAME=SIZE,RATE or NAME=RATE "
     "(api=2, quota=4,10/s)"),
])
def test_bad_pools_are_one_line_and_exit_4(module, argv, message, write_module, tdrun_main):
    path = write_module("from thread_order import mark\n" + module)
    res = tdrun_main(path, *argv)
    assert res.code == 4
    assert res.err.strip().splitlines()[-1] == message.replace("{path}", str(path))
    assert res.out == ""


def test_a_bad_pyproject_pool_names_file_and_key(tmp_path, monkeypatch, write_module, tdrun_main):
    write_module('from thread_order import mark\n@mark()\ndef a(state): pass\n')
    (tmp_path / "pyproject.toml").write_text('[tool.tdrun]\npools = {api = {size = 0}}\n')
    monkeypatch.chdir(tmp_path)
    res = tdrun_main("tasks.py")
    assert res.code == 4
    assert res.err.strip() == ("tdrun: error: pyproject.toml: [tool.tdrun] pools: pool 'api': "
                               "size must be at least 1, not 0")


def test_two_modules_of_a_suite_combine_their_pools(tmp_path, tdrun_main):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "network.py").write_text(
        'from thread_order import mark\nPOOLS = {"api": 1}\n'
        '@mark(pool="api")\ndef create_network(state): pass\n')
    (suite / "compute.py").write_text(
        'from thread_order import mark\nPOOLS = {"api": 1, "vm": 2}\n'
        '@mark(pool=["api", "vm"], after=["create_network"])\ndef create_vm(state): pass\n')
    res = tdrun_main(suite, "--plain", "--json-report", tmp_path / "r.json")
    assert res.code == 0, res.err
    assert set(json.loads((tmp_path / "r.json").read_text())["pools"]) == {"api", "vm"}
    (suite / "compute.py").write_text(
        'from thread_order import mark\nPOOLS = {"api": 3}\n@mark(pool="api")\ndef create_vm(state): pass\n')
    res = tdrun_main(suite)
    assert res.code == 4
    assert res.err.strip() == (f"tdrun: error: {suite / 'network.py'}: POOLS: pool 'api' is 1 here "
                               f"but 3 in {suite / 'compute.py'}")


def test_a_run_with_pools_in_the_history_and_tdrun_show(tmp_path, write_module, tdrun_proc):
    write_module("""
        import time
        from thread_order import mark
        POOLS = {"api": 1}

        @mark(pool="api", params={"i": [1, 2, 3]})
        def call(state, i):
            time.sleep(0.02)
    """)
    db = tmp_path / "h.db"
    res = tdrun_proc(tmp_path / "tasks.py", "--plain", "--history", db, TDRUN_HISTORY="on")
    assert res.code == 0, res.err
    with HistoryStore(db) as store:
        run = store.get_run("last")
    waits = {t["name"]: (t["waited"], t["waited_for"]) for t in run["tasks"]}
    assert waits["call[1]"] == (0.0, None)
    assert waits["call[2]"][1] == "api" and waits["call[2]"][0] >= 0.015
    assert waits["call[3]"][1] == "api" and waits["call[3]"][0] >= waits["call[2]"][0]
    assert run["pools"]["api"]["waited"] == 2
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 8
    show = tdrun_proc("show", "last", "--history", db)
    assert show.code == 0, show.err
    assert "  pool      api (size 1): 2 waited, longest" in show.out
    assert "waited for pool" in show.out
    lines = {line.split()[1]: line for line in show.out.splitlines() if line[:1].isdigit()}
    assert " api " in lines["call[3]"] and " api " not in lines["call[1]"]
    report = tdrun_proc("report", "last", "--history", db, "-o", tmp_path / "r.html")
    assert report.code == 0, report.err
    html = (tmp_path / "r.html").read_text()
    assert html.count('class="wait" data-task=') == 2 and 'data-task="call[3]" data-pool="api"' in html
