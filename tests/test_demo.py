"""The demo: the API it starts, the lifecycle against it, and an injected failure."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pytest

from conftest import REPO

DEMO = REPO / "examples" / "demo.py"
SPARES = ["10.20.8.0/24", "10.20.9.0/24"]
TEARDOWN = ["delete_route", "delete_subnet_a", "delete_subnet_b", "delete_gateway", "delete_network",
            *(f"delete_spare[{cidr}]" for cidr in SPARES)]
EMPTY = {"networks": 0, "subnets": 0, "gateways": 0, "routes": 0}


@pytest.fixture
def api():
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from demo_api import DemoAPI
    finally:
        sys.path.remove(str(REPO / "examples"))
    with DemoAPI(latency=(0.0, 0.01)) as server:
        yield server


def request(api, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_demo_api_resources_conflicts_and_faults(api):
    status, net = request(api, "POST", "/networks", {"name": "n", "cidr": "10.0.0.0/16"})
    assert status == 201 and net["id"].startswith("net-")
    status, sub = request(api, "POST", "/subnets", {"network_id": net["id"], "name": "s", "cidr": "10.0.1.0/24"})
    assert status == 201
    assert request(api, "DELETE", f"/networks/{net['id']}") == (
        409, {"error": f"network {net['id']!r} still has subnets", "status": 409})
    assert request(api, "POST", "/subnets", {"network_id": "net-000000", "name": "s", "cidr": "x"}) == (
        404, {"error": "network_id 'net-000000' does not exist", "status": 404})
    assert request(api, "POST", "/gateways", {"name": "g"}) == (
        422, {"error": "missing field(s): network_id", "status": 422})
    assert request(api, "GET", "/networks", headers={"X-Fault": "503"}) == (
        503, {"error": "injected fault", "status": 503})
    status, _ = request(api, "PATCH", f"/networks/{net['id']}", {"description": "d"})
    assert status == 200
    assert request(api, "GET", f"/networks/{net['id']}")[1]["status"] == "updating"  # settles later
    assert request(api, "DELETE", f"/subnets/{sub['id']}") == (204, None)
    assert request(api, "DELETE", f"/networks/{net['id']}") == (204, None)
    assert api.store.counts() == EMPTY


def run_demo(tdrun_proc, tmp_path, *argv):
    report = tmp_path / "demo.json"
    result = tdrun_proc(DEMO, "--json-report", report, *argv)
    data = json.loads(report.read_text()) if report.exists() else None
    return result, data


def test_the_demo_api_says_nothing_of_a_client_that_went_away(api, capsys):
    """A second Ctrl-C cancels the async demo's coroutines and closes their connections mid-request:
    the server's write then fails, which is no error of the server's (it printed a traceback)."""
    server = api._server
    for gone in (BrokenPipeError(32, "Broken pipe"), ConnectionResetError(104, "Connection reset by peer")):
        try:
            raise gone
        except OSError:
            server.handle_error(None, ("127.0.0.1", 9))
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a bug in a handler")
    except ValueError:
        server.handle_error(None, ("127.0.0.1", 9))
    assert "ValueError: a bug in a handler" in capsys.readouterr().err


def test_demo_lifecycle_passes_and_leaves_nothing_behind(tdrun_proc, tmp_path, api):
    result, data = run_demo(tdrun_proc, tmp_path, f"--api_url={api.url}")
    assert result.code == 0, result.out + result.err
    assert data["counts"] == {"total": 20, "passed": 20, "failed": 0, "skipped": 0, "cancelled": 0}
    assert api.store.counts() == EMPTY
    assert api.store.requests >= 14
    tasks = {t["name"]: t for t in data["tasks"]}
    # the subnets, the gateway and the spares are created in parallel, two at a time: the API's
    # quota is the pool "creates" of size 2, and the others wait for a slot
    creates = [t for t in data["tasks"] if t["name"].startswith("create_") and t["name"] != "create_network"]
    edges = sorted([(t["started_at"], 1) for t in creates] + [(t["finished_at"], -1) for t in creates],
                   key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert data["pools"]["creates"]["size"] == 2 and data["pools"]["creates"]["waited"] >= 1
    assert any(t["waited_for"] == "creates" and t["waited"] > 0 for t in creates)
    assert all(tasks[n]["always"] for n in TEARDOWN)


def test_injected_failure_skips_dependents_and_teardown_still_cleans_up(tdrun_proc, tmp_path, api):
    result, data = run_demo(tdrun_proc, tmp_path, f"--api_url={api.url}", "--fail_at=create_subnet_a")
    assert result.code == 1
    status = {t["name"]: t["status"] for t in data["tasks"]}
    assert status["create_subnet_a"] == "FAILED"
    assert {n for n, s in status.items() if s == "SKIPPED"} == {
        "verify_subnet_a", "create_route", "update_network", "verify_network"}
    assert all(status[n] == "PASSED" for n in TEARDOWN)
    assert api.store.counts() == EMPTY  # teardown deleted what had been created
    assert "ApiError: POST /subnets -> 500: injected fault" in result.out
    assert "SKIPPED   create_route     dependency 'create_subnet_a' failed" in result.out


def test_demo_starts_its_own_api(tdrun_proc, tmp_path):
    result, data = run_demo(tdrun_proc, tmp_path, "--latency=0.02")
    assert result.code == 0, result.out + result.err
    assert data["state_keys"]["api_url"] == "setup_state"


def test_demo_rejects_an_unknown_fail_at(tdrun_proc, tmp_path, api):
    result, data = run_demo(tdrun_proc, tmp_path, f"--api_url={api.url}", "--fail_at=create_subnet_z")
    assert result.code == 4 and data is None
    assert result.err.startswith(f"tdrun: error: {DEMO}: setup_state() raised ValueError: "
                                 "--fail_at=create_subnet_z: no task of that name; pick one of create_network, ")


@pytest.mark.parametrize("value, message", [
    ("abc", "--latency=abc: expected seconds, such as 0.5"),
    ("-1", "--latency=-1: expected seconds from 0 to 60"),
])
def test_demo_rejects_a_bad_latency_naming_the_option(tdrun_proc, tmp_path, value, message):
    result, data = run_demo(tdrun_proc, tmp_path, f"--latency={value}")
    assert result.code == 4 and data is None
    assert result.err == f"tdrun: error: {DEMO}: setup_state() raised ValueError: {message}\n"


def test_a_failed_case_of_the_demos_parametrized_step_skips_only_its_own_verify(tdrun_proc, tmp_path, api):
    result, data = run_demo(tdrun_proc, tmp_path, f"--api_url={api.url}", "--fail_at=create_spare[10.20.8.0/24]")
    assert result.code == 1, result.err
    status = {t["name"]: t["status"] for t in data["tasks"]}
    assert {n for n, s in status.items() if s != "PASSED"} == {
        "create_spare[10.20.8.0/24]", "verify_spare[10.20.8.0/24]"}
    assert status["delete_spare[10.20.8.0/24]"] == "PASSED"  # always: it finds nothing to delete
    assert api.store.counts() == EMPTY


LIFECYCLE = '''
from demo import ApiError, call, ident
from thread_order import mark

CIDRS = {"cidr": ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]}


@mark()
def create_network(state):
    return call(state, "POST", "/networks", {"name": "n", "cidr": "10.1.0.0/16"})


@mark(after=["create_network"])
def create_gateway(state):
    return call(state, "POST", "/gateways", {"network_id": ident(state, "create_network"), "name": "gw"})


@mark(after=["create_network"], params=CIDRS)
def create_subnet(state, cidr):
    body = {"network_id": ident(state, "create_network"), "name": cidr, "cidr": cidr}
    return call(state, "POST", "/subnets", body, task=f"create_subnet[{cidr}]")


@mark(after=["create_subnet", "create_gateway"], params=CIDRS)
def attach_route(state, cidr):
    body = {"subnet_id": ident(state, f"create_subnet[{cidr}]"), "gateway_id": ident(state, "create_gateway"),
            "destination": "0.0.0.0/0"}
    return call(state, "POST", "/routes", body)


@mark(after=["attach_route"], params=CIDRS, always=True)
def delete_route(state, cidr):
    item = ident(state, f"attach_route[{cidr}]")
    if item:
        call(state, "DELETE", f"/routes/{item}")
    return item


@mark(after=["delete_route"], params=CIDRS, always=True)
def delete_subnet(state, cidr):
    item = ident(state, f"create_subnet[{cidr}]")
    if item:
        call(state, "DELETE", f"/subnets/{item}")
    return item


@mark(after=["delete_route"], always=True)
def delete_gateway(state):
    call(state, "DELETE", f"/gateways/{ident(state, 'create_gateway')}")


@mark(after=["delete_subnet", "delete_gateway"], always=True)
def delete_network(state):
    call(state, "DELETE", f"/networks/{ident(state, 'create_network')}")
'''


def test_a_parametrized_lifecycle_where_one_case_fails_only_its_pair_and_dependents_react(
        tdrun_proc, tmp_path, api):
    module = tmp_path / "lifecycle.py"
    module.write_text(LIFECYCLE)
    report = tmp_path / "r.json"
    bad = "create_subnet[10.1.2.0/24]"
    result = tdrun_proc(module, f"--api_url={api.url}", f"--fail_at={bad}", "--json-report", report,
                        PYTHONPATH=str(REPO / "examples"))
    assert result.code == 1, result.out + result.err
    tasks = {t["name"]: t for t in json.loads(report.read_text())["tasks"]}
    status = {name: t["status"] for name, t in tasks.items()}
    assert {n: s for n, s in status.items() if s != "PASSED"} == {
        bad: "FAILED", "attach_route[10.1.2.0/24]": "SKIPPED"}
    # its own teardown pair ran (and found nothing of its own to delete); the others deleted theirs
    assert tasks["delete_route[10.1.2.0/24]"]["after"] == ["attach_route[10.1.2.0/24]"]
    assert tasks["delete_subnet[10.1.2.0/24]"]["after"] == ["delete_route[10.1.2.0/24]"]
    assert tasks["attach_route[10.1.3.0/24]"]["after"] == ["create_subnet[10.1.3.0/24]", "create_gateway"]
    assert tasks["delete_network"]["after"] == [
        "delete_subnet[10.1.1.0/24]", "delete_subnet[10.1.2.0/24]", "delete_subnet[10.1.3.0/24]",
        "delete_gateway"]
    assert api.store.counts() == EMPTY
    assert "ApiError: POST /subnets -> 500: injected fault" in result.out
