"""The async demo: the same lifecycle with one httpx.AsyncClient shared by coroutines on one loop."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO

DEMO = REPO / "examples" / "demo_async.py"
SPARES = ["10.20.8.0/24", "10.20.9.0/24"]
TEARDOWN = ["delete_route", "delete_subnet_a", "delete_subnet_b", "delete_gateway", "delete_network",
            "close_client", *(f"delete_spare[{cidr}]" for cidr in SPARES)]
EMPTY = {"networks": 0, "subnets": 0, "gateways": 0, "routes": 0}


@pytest.fixture
def api():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from demo_api import DemoAPI
    finally:
        sys.path.remove(str(REPO / "examples"))
    with DemoAPI(latency=(0.05, 0.06)) as server:  # long enough for the creates to overlap
        yield server


def run_demo(tdrun_proc, tmp_path, *argv):
    report = tmp_path / "demo.json"
    result = tdrun_proc(DEMO, "--json-report", report, "--plain", *argv)
    data = json.loads(report.read_text()) if report.exists() else None
    return result, data


def test_async_demo_lifecycle_passes_and_leaves_nothing_behind(tdrun_proc, tmp_path, api):
    # a step is timed on the wall clock, which a loaded machine stretches past the default
    # 0.1 s now and then; a coroutine that really blocked on a call would still be caught
    result, data = run_demo(tdrun_proc, tmp_path, f"--api_url={api.url}", "--async-block-threshold=1")
    assert result.code == 0, result.out + result.err
    assert data["counts"] == {"total": 21, "passed": 21, "failed": 0, "skipped": 0, "cancelled": 0}
    assert api.store.counts() == EMPTY
    tasks = {t["name"]: t for t in data["tasks"]}
    # every task but verify_network is a coroutine on the one event loop; it is a thread task
    assert {n for n, t in tasks.items() if not t["is_async"]} == {"verify_network"}
    assert {t["thread"] for n, t in tasks.items() if t["is_async"]} == {"event_loop"}
    assert tasks["verify_network"]["thread"].startswith("thread_")
    # the three creates after the network overlapped on the loop
    parallel = sorted((tasks[n]["started_at"], tasks[n]["finished_at"])
                      for n in ("create_subnet_a", "create_subnet_b", "create_gateway"))
    assert parallel[1][0] < parallel[0][1] and parallel[2][0] < parallel[0][1]
    # the read-modify-write under the asyncio lock lost no update
    assert "inventory: {'networks': 1, " in tasks["verify_network"]["output"]
    assert "'subnets': 4" in tasks["verify_network"]["output"]
    assert all(tasks[n]["always"] for n in TEARDOWN)
    assert data["warnings"] == {}


def test_async_demo_injected_failure_skips_dependents_and_teardown_still_cleans_up(tdrun_proc, tmp_path, api):
    result, data = run_demo(tdrun_proc, tmp_path, f"--api_url={api.url}", "--fail_at=create_subnet_a")
    assert result.code == 1
    status = {t["name"]: t["status"] for t in data["tasks"]}
    assert status["create_subnet_a"] == "FAILED"
    assert {n for n, s in status.items() if s == "SKIPPED"} == {
        "verify_subnet_a", "create_route", "update_network", "verify_network"}
    assert all(status[n] == "PASSED" for n in TEARDOWN)
    assert api.store.counts() == EMPTY
    assert "ApiError: POST /subnets -> 500: injected fault" in result.out


def test_async_demo_starts_its_own_api(tdrun_proc, tmp_path):
    result, data = run_demo(tdrun_proc, tmp_path, "--latency=0.02")
    assert result.code == 0, result.out + result.err
    assert data["state_keys"]["api_url"] == "setup_state"
