"""The web UI's JSON API through an HTTP client, against the real app and a real uvicorn server."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings

import httpx
import pytest

with warnings.catch_warnings():
    # starlette 1.x points to an httpx fork for its TestClient; httpx is what the project uses
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from thread_order.history import HistoryStore
from thread_order.web.server import main as ui_main
from thread_order.web.api import create_app
from conftest import REPO
from web_support import LiveServer, loaded, make_ui, module_path, sse_events

LOCAL = "http://127.0.0.1:8000"


@pytest.fixture
def ui(tmp_path):
    return make_ui(tmp_path)


@pytest.fixture
def client(ui):
    with TestClient(create_app(ui), base_url=LOCAL, headers={"X-Tdrun-Token": ui.token}) as c:
        yield c


def load(client, name):
    r = client.post("/api/module", json={"path": module_path(name)})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_pooled_task_lists_its_pools(client):
    r = client.post("/api/module", json={"path": str(REPO / "examples" / "demo.py")})
    assert r.status_code == 200, r.text
    pools = {t["name"]: t["pools"] for t in r.json()["tasks"]}
    assert pools["create_network"] == [] and pools["create_subnet_a"] == ["creates"]
    assert pools["create_spare[10.20.8.0/24]"] == ["creates"]  # a case inherits its task's pool


def follow(client, run_id):
    """Every event of a run's stream, until the server ends it (the run finished)."""
    with client.stream("GET", f"/api/runs/{run_id}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(r.iter_lines()))


def flat(changes):
    """A batch's ``{status: [task, ...]}`` as ``{task: status}``."""
    return {name: status for status, names in changes.items() for name in names}


def run_to_end(client, **options):
    r = client.post("/api/runs", json=options)
    assert r.status_code == 202, r.text
    events = follow(client, r.json()["id"])
    final = events[-1][1]
    assert final["phase"] == "finished", final
    return r.json()["id"], events, final


# --------------------------------------------------------------------------- page and module


def test_page_and_assets_are_served_with_the_token_and_a_same_site_cookie(client, ui):
    r = client.get("/")
    assert r.status_code == 200
    assert f'<meta name="tdrun-token" content="{ui.token}">' in r.text
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and ui.token in cookie
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    r = client.get("/api/nope")
    assert r.status_code == 404
    assert r.json() == {"error": "no such page or API endpoint: /api/nope"}


def test_load_module_lists_tasks_in_source_order(client):
    info = load(client, "web_lifecycle")
    names = [t["name"] for t in info["tasks"]]
    assert names == ["create_network", "create_subnet_a", "create_subnet_b", "attach_gateway",
                     "verify", "teardown"]
    first, last = info["tasks"][0], info["tasks"][-1]
    assert first == {"index": 1, "name": "create_network", "after": [], "tags": ["create"],
                     "always": False, "retries": 0, "timeout": None, "with_state": True,
                     "doc": "Create the network everything else lives in.",
                     "module": "web_lifecycle", "case": None, "is_async": False, "pools": []}
    assert last["always"] is True and last["after"] == ["verify"]
    assert info["edges"] == 6 and info["levels"] == 5 and info["has_setup_state"] is True
    assert info["tags"] == ["create", "teardown", "verify"]
    # the Run tab starts from what tdrun would choose: a thread per task, up to the default
    from thread_order import default_workers
    assert info["default_workers"] == min(default_workers, 6)
    assert client.get("/api/module").json()["tasks"] == info["tasks"]
    recent = client.get("/api/modules/recent").json()["recent"]
    assert recent[0] == module_path("web_lifecycle")


@pytest.mark.parametrize("body, status, message", [
    ({"path": "no/such/file.py"}, 400, "no/such/file.py: no such file"),
    ({"path": ""}, 400, "'path' must name a Python file or a directory, e.g. {\"path\": \"tests.py\"}"),
    ({"path": 42}, 400, "'path' must name a Python file or a directory, e.g. {\"path\": \"tests.py\"}"),
])
def test_bad_module_paths_are_4xx_with_a_message(client, body, status, message):
    r = client.post("/api/module", json=body)
    assert r.status_code == status
    assert r.json()["error"] == message


def test_a_module_that_fails_to_import_reports_its_traceback_and_keeps_it_for_the_page(client):
    path = module_path("web_broken")
    r = client.post("/api/module", json={"path": path})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == (f"{path}: cannot import module: ModuleNotFoundError: "
                             "No module named 'thread_order_no_such_module'")
    assert "web_broken.py" in body["traceback"] and "_collect.py" not in body["traceback"]
    shown = client.get("/api/module").json()
    assert shown["module"] is None
    assert shown["load_error"]["error"] == body["error"]


def test_a_cycle_is_reported_with_the_tasks_and_refused_at_run_time(client):
    info = load(client, "web_cycle")
    assert [t["name"] for t in info["tasks"]] == ["first", "second", "free"]
    assert info["graph_error"] == "dependency cycle: first -> second -> first"
    graph = client.get("/api/module/graph").json()
    assert graph["svg"] is None and graph["reason"] == info["graph_error"]
    r = client.post("/api/runs", json={})
    assert r.status_code == 400
    assert r.json()["error"] == f"{module_path('web_cycle')}: dependency cycle: first -> second -> first"


def test_request_bodies_must_be_json_objects(client):
    r = client.post("/api/module", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (400, "request body is not valid JSON")
    r = client.post("/api/module", json=[1, 2])
    assert (r.status_code, r.json()["error"]) == (400, "request body must be a JSON object")
    r = client.put("/api/module", json={})
    assert (r.status_code, r.json()["error"]) == (405, "PUT is not allowed on /api/module")


def test_running_without_a_module_is_a_clear_400(client):
    r = client.post("/api/runs", json={})
    assert (r.status_code, r.json()["error"]) == (400, "no module loaded; load a module first")


# --------------------------------------------------------------------------- state


def test_typed_values_are_parsed_like_json_and_listed_with_their_source(client):
    r = client.put("/api/state", json={"values": {"count": "3", "region": "eu-north-1",
                                                  "flags": '{"dry": true}', "quoted": '"42"'}})
    assert r.status_code == 200
    entries = {e["key"]: (e["value"], e["source"]) for e in r.json()["entries"]}
    assert entries == {"count": (3, "typed in"), "region": ("eu-north-1", "typed in"),
                       "flags": ({"dry": True}, "typed in"), "quoted": ("42", "typed in")}


@pytest.mark.parametrize("values, message", [
    ({"bad key": "1"}, "state key 'bad key': use letters, digits, '_', '.' or '-', starting with a letter or '_'"),
    ({"results": "1"}, "state key 'results' is reserved for the engine"),
    ({"": "1"}, "state key must be a non-empty string"),
    ({"cfg": "{oops"}, "state value 'cfg': invalid JSON: Expecting property name enclosed in double quotes "
                       "at line 1 column 2"),
])
def test_bad_state_values_are_refused_and_nothing_changes(client, values, message):
    client.put("/api/state", json={"values": {"keep": "1"}})
    r = client.put("/api/state", json={"values": values})
    assert r.status_code == 400
    assert r.json()["error"] == message
    assert [e["key"] for e in client.get("/api/state").json()["entries"]] == ["keep"]


def test_state_file_by_upload_and_by_path_with_errors_in_the_words_of_tdrun(client, tmp_path):
    r = client.put("/api/state/file", json={"name": "bad.json", "content": "{\n  'x': 1\n}"})
    assert r.status_code == 400
    assert r.json()["error"] == ("state file bad.json: invalid JSON: Expecting property name "
                                 "enclosed in double quotes at line 2 column 3")
    r = client.put("/api/state/file", json={"name": "list.json", "content": "[1]"})
    assert r.json()["error"] == "state file list.json: expected a JSON object, got list"
    missing = tmp_path / "missing.json"
    r = client.put("/api/state/file", json={"path": str(missing)})
    assert (r.status_code, r.json()["error"]) == (400, f"state file {missing}: no such file")

    good = tmp_path / "state.json"
    good.write_text(json.dumps({"region": "us-east-1", "owner": "team-a"}))
    client.put("/api/state", json={"values": {"region": "eu-west-3"}})
    view = client.put("/api/state/file", json={"path": str(good)}).json()
    assert view["file"] == str(good)
    assert {e["key"]: (e["value"], e["source"]) for e in view["entries"]} == {
        "region": ("eu-west-3", "typed in"), "owner": ("team-a", "state file")}
    view = client.delete("/api/state/file").json()
    assert view["file"] is None and [e["key"] for e in view["entries"]] == ["region"]


def test_a_run_shows_where_each_initial_value_came_from(client, ui):
    load(client, "web_lifecycle")
    client.put("/api/state/file", json={"name": "s.json", "content": '{"owner": "ops", "delay": 0}'})
    client.put("/api/state", json={"values": {"region": "ap-south-1", "api_token": "s3cr3t"}})
    run_id, _, final = run_to_end(client, workers=2)
    snap = client.get(f"/api/runs/{run_id}").json()
    sources = {e["key"]: (e["value"], e["source"]) for e in snap["state"]}
    # shown as the history stores it: secrets redacted
    assert sources == {"owner": ("ops", "state file"), "delay": (0, "state file"),
                       "region": ("ap-south-1", "typed in"), "api_token": ("***redacted***", "typed in"),
                       "session": ("session-for-ap-south-1", "setup_state")}
    assert "s3cr3t" not in client.get(f"/api/runs/{run_id}/events").text


# --------------------------------------------------------------------------- runs


def test_a_run_streams_a_snapshot_then_batches_and_is_recorded_in_the_history(client, ui):
    load(client, "web_lifecycle")
    client.put("/api/state", json={"values": {"delay": "0.02"}})
    run_id, events, final = run_to_end(client, workers=2)
    kinds = [k for k, _ in events]
    assert kinds[0] == "snapshot" and set(kinds[1:]) == {"batch"}
    snapshot = events[0][1]
    assert snapshot["total"] == 6 and [t["name"] for t in snapshot["tasks"]][0] == "create_network"
    assert final["counts"] == {"PASSED": 6, "FAILED": 0, "SKIPPED": 0, "CANCELLED": 0}
    assert final["finished"] == 6 and final["lanes"] == []
    assert final["summary"]["text"].startswith("6 passed, 0 failed, 0 skipped in ")
    # every task's last status, from the snapshot and the coalesced changes
    statuses = dict(snapshot["statuses"])
    for _, batch in events[1:]:
        statuses.update(flat(batch["changes"]))
    assert statuses == {t["name"]: "PASSED" for t in snapshot["tasks"]}

    history_id = final["history_id"]
    assert isinstance(history_id, int)
    runs = client.get("/api/history").json()["runs"]
    assert [r["id"] for r in runs] == [history_id]
    assert runs[0]["status"] == "passed" and runs[0]["workers"] == 2
    detail = client.get(f"/api/history/{history_id}").json()
    assert {t["name"]: t["status"] for t in detail["tasks"]} == statuses
    assert "creating network in eu-west-1" in next(
        t["output"] for t in detail["tasks"] if t["name"] == "create_network")


def test_a_tasks_info_log_records_are_in_its_captured_output_as_under_tdrun(client):
    # tdrun captures INFO records; a run from the UI must not lose them to the root logger's WARNING
    load(client, "web_lifecycle")
    client.put("/api/state", json={"values": {"delay": "0"}})
    level = logging.getLogger().level
    _, _, final = run_to_end(client, workers=2)
    detail = client.get(f"/api/history/{final['history_id']}").json()
    output = next(t["output"] for t in detail["tasks"] if t["name"] == "attach_gateway")
    assert re.search(r"INFO +lifecycle: attaching gateway\n", output), output
    assert logging.getLogger().level == level  # the server's logging is left as it was


def test_failures_skip_dependents_and_teardown_still_runs(client):
    load(client, "web_lifecycle")
    client.put("/api/state", json={"values": {"delay": "0", "fail_at": "create_subnet_b"}})
    _, events, final = run_to_end(client, workers=3)
    assert final["counts"] == {"PASSED": 3, "FAILED": 1, "SKIPPED": 2, "CANCELLED": 0}
    completed = events[0][1]["recent"] + [rec for _, b in events[1:] for rec in b["completed"]]
    by_name = {rec["name"]: rec for rec in completed}
    assert by_name["create_subnet_b"]["error"] == "create_subnet_b failed on purpose (fail_at)"
    assert by_name["attach_gateway"]["reason"] == "dependency 'create_subnet_b' failed"
    assert by_name["verify"]["reason"] == ("dependency 'attach_gateway' skipped: upstream "
                                           "'create_subnet_b' failed")
    assert by_name["teardown"]["status"] == "PASSED"

    _, _, final = run_to_end(client, workers=3, skip_dependents=False)
    assert final["counts"]["SKIPPED"] == 0 and final["counts"]["FAILED"] >= 1


def test_tags_choose_the_tasks_of_a_run(client):
    load(client, "web_lifecycle")
    client.put("/api/state", json={"values": {"delay": "0"}})
    _, events, final = run_to_end(client, workers=2, tags="create")
    assert [t["name"] for t in events[0][1]["tasks"]] == ["create_network", "create_subnet_a", "create_subnet_b"]
    assert final["counts"]["PASSED"] == 3
    r = client.post("/api/runs", json={"tags": "nothing-has-this"})
    assert (r.status_code, r.json()["error"]) == (400, "no task has the tags 'nothing-has-this'")


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers must be a whole number from 1 to 512, not 0"),
    ({"workers": "many"}, "workers must be a whole number from 1 to 512, not 'many'"),
    ({"workers": True}, "workers must be a whole number from 1 to 512, not True"),
    ({"skip_dependents": "yes"}, "skip_dependents must be true or false, not 'yes'"),
    ({"tags": 5}, "tags must be a string or a list of strings, not 5"),
    ({"wrokers": 2}, "unknown run option 'wrokers'"),
])
def test_bad_run_options_are_400(client, options, message):
    load(client, "web_lifecycle")
    r = client.post("/api/runs", json=options)
    assert (r.status_code, r.json()["error"]) == (400, message)


def test_one_run_at_a_time_cancel_lets_teardown_run(client, ui):
    load(client, "web_gate")
    gate = loaded(ui)
    r = client.post("/api/runs", json={"workers": 2})
    assert r.status_code == 202
    run_id = r.json()["id"]
    try:
        assert gate.STARTED.wait(10)
        second = client.post("/api/runs", json={})
        assert second.status_code == 409
        assert second.json()["error"].startswith(f"a run is already in progress (run {run_id}, 0/5 tasks done)")
        busy_load = client.post("/api/module", json={"path": module_path("web_lifecycle")})
        assert busy_load.status_code == 409
        assert client.post(f"/api/runs/{run_id}/cancel", json={}).json() == {
            "cancelled": True, "force": False, "id": run_id}
    finally:
        gate.GATE.set()
    final = follow(client, run_id)[-1][1]
    assert final["error"] is None
    assert final["counts"] == {"PASSED": 2, "FAILED": 0, "SKIPPED": 0, "CANCELLED": 3}
    assert final["summary"]["interrupted"] is True
    snap = client.get(f"/api/runs/{run_id}").json()
    assert snap["statuses"] == {"hold": "PASSED", "step_1": "CANCELLED", "step_2": "CANCELLED",
                                "step_3": "CANCELLED", "teardown": "PASSED"}
    r = client.post(f"/api/runs/{run_id}/cancel", json={})
    assert (r.status_code, r.json()["error"]) == (409, f"run {run_id} has already finished")
    history = client.get(f"/api/history/{final['history_id']}").json()
    assert history["status"] == "interrupted"


def test_unknown_runs_are_404(client):
    r = client.get("/api/runs/abc123")
    assert r.status_code == 404
    assert r.json()["error"] == "no live run 'abc123' on this server (finished runs are in the history)"
    assert client.get("/api/runs/abc123/events").status_code == 404
    assert client.post("/api/runs/abc123/cancel", json={}).status_code == 404
    r = client.get("/api/runs/current")
    assert (r.status_code, r.json()["error"]) == (404, "no run has been started on this server")


# --------------------------------------------------------------------------- history


def test_history_lists_filters_details_and_compares(client, ui):
    assert client.get("/api/history").json()["runs"] == []  # no file yet: empty, not an error
    load(client, "web_lifecycle")
    client.put("/api/state", json={"values": {"delay": "0"}})
    first = run_to_end(client, workers=2)[2]["history_id"]
    client.put("/api/state", json={"values": {"delay": "0", "fail_at": "verify"}})
    second = run_to_end(client, workers=2)[2]["history_id"]

    listed = client.get("/api/history").json()
    assert [r["id"] for r in listed["runs"]] == [second, first]
    # what tells the runs of one module apart, worded as `tdrun history` words it
    assert [r["differs_text"] for r in listed["runs"]] == ["fail_at=verify", ""]
    assert listed["modules"] == [module_path("web_lifecycle")]
    assert [r["id"] for r in client.get("/api/history?status=failed").json()["runs"]] == [second]
    assert client.get("/api/history?module=other.py").json()["runs"] == []
    r = client.get("/api/history?status=bogus")
    assert r.status_code == 400
    assert r.json()["error"] == "status must be passed, failed, interrupted or running, not 'bogus'"

    detail = client.get(f"/api/history/{second}").json()
    failed = [t for t in detail["tasks"] if t["status"] == "FAILED"]
    assert [t["name"] for t in failed] == ["verify"]
    assert "RuntimeError: verify failed on purpose (fail_at)" in failed[0]["traceback"]
    assert client.get("/api/history/last").json()["id"] == second
    report = client.get(f"/api/history/{second}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "verify failed on purpose (fail_at)" in report.text
    assert client.get("/api/history/999/report").status_code == 404
    trace = client.get(f"/api/history/{second}/trace")
    assert trace.status_code == 200 and trace.headers["content-type"].startswith("application/json")
    assert trace.headers["content-disposition"] == f'attachment; filename="tdrun-trace-{second}.json"'
    slices = {e["name"]: e for e in trace.json()["traceEvents"] if e["ph"] == "X"}
    assert slices["verify"]["args"]["error"] == "verify failed on purpose (fail_at)"
    assert client.get("/api/history/999/trace").status_code == 404
    r = client.get("/api/history/999")
    assert r.status_code == 404 and "no run 999" in r.json()["error"]
    assert client.get("/api/history/x1").status_code == 404

    cmp = client.get(f"/api/compare?a={first}&b={second}").json()
    assert cmp["changes"] == {"fixed": 0, "broken": 1, "changed": 0, "added": 0, "removed": 0, "same": 5}
    assert [c for c in cmp["status_changes"]] == [{"name": "verify", "a": "PASSED", "b": "FAILED"}]
    assert client.get("/api/compare?a=1").status_code == 400


def test_history_off_records_nothing_and_says_so(tmp_path):
    ui = make_ui(tmp_path, history=False)
    with TestClient(create_app(ui), base_url=LOCAL, headers={"X-Tdrun-Token": ui.token}) as client:
        load(client, "web_lifecycle")
        client.put("/api/state", json={"values": {"delay": "0"}})
        assert run_to_end(client, workers=2)[2]["history_id"] is None
        r = client.get("/api/history")
        assert (r.status_code, r.json()["error"]) == (400, "history is off for this server (TDRUN_HISTORY=off)")
    assert not (tmp_path / "history.db").exists()


def test_a_corrupt_history_file_is_a_400_not_a_500(tmp_path):
    ui = make_ui(tmp_path)
    ui.history_path.write_bytes(b"this is not sqlite" * 100)
    with TestClient(create_app(ui), base_url=LOCAL, headers={"X-Tdrun-Token": ui.token}) as client:
        r = client.get("/api/history")
        assert r.status_code == 400
        assert r.json()["error"].startswith(f"history file {ui.history_path}: ")


# --------------------------------------------------------------------------- security


def test_changes_need_the_token_or_cookie_and_our_own_origin(ui):
    app = create_app(ui)
    with TestClient(app, base_url=LOCAL) as anon:
        r = anon.put("/api/state", json={"values": {"a": "1"}})
        assert r.status_code == 403
        assert r.json()["error"] == ("request refused: missing the access token "
                                     "(X-Tdrun-Token header or the page's cookie)")
        assert anon.get("/api/state").status_code == 200  # reading is fine locally
        anon.get("/")  # the page sets the same-site cookie
        assert anon.put("/api/state", json={"values": {"a": "1"}}).status_code == 200
        r = anon.put("/api/state", json={"values": {}}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        assert r.json()["error"] == ("cross-site request refused: origin 'http://evil.example' "
                                     "is not 'http://127.0.0.1:8000'")
        r = anon.put("/api/state", json={"values": {}}, headers={"Sec-Fetch-Site": "cross-site"})
        assert r.json()["error"] == "cross-site request refused: sec-fetch-site is 'cross-site'"
        ok = anon.put("/api/state", json={"values": {}}, headers={"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"})
        assert ok.status_code == 200
    with TestClient(app, base_url="http://attacker.example") as rebinding:
        r = rebinding.get("/api/state", headers={"X-Tdrun-Token": ui.token})
        assert r.status_code == 403
        assert r.json()["error"] == ("host 'attacker.example' is not allowed: this server only "
                                     "answers on its loopback address")


def test_remote_mode_needs_the_token_on_every_request(tmp_path):
    ui = make_ui(tmp_path, remote=True)
    app = create_app(ui)
    with TestClient(app, base_url="http://10.1.2.3:8000", follow_redirects=False) as c:
        for path in ("/", "/api/info", "/static/app.js"):
            r = c.get(path)
            assert r.status_code == 401
            assert r.json()["error"] == ("this server needs its access token: open the URL printed "
                                         "when it started (with ?token=...)")
        assert c.get("/?token=wrong").status_code == 401
        r = c.get(f"/?token={ui.token}&tab=run")
        assert r.status_code == 303 and r.headers["location"] == "/?tab=run"
        assert c.get("/api/info").status_code == 200  # the cookie from the redirect
    with TestClient(app, base_url="http://10.1.2.3:8000") as c:
        assert c.get("/api/info", headers={"Authorization": f"Bearer {ui.token}"}).status_code == 200
        assert c.get("/api/info", headers={"X-Tdrun-Token": ui.token}).json()["remote"] is True


# --------------------------------------------------------------------------- real server


def test_live_stream_on_a_real_server_catches_up_after_reconnecting(ui):
    with LiveServer(ui) as srv, httpx.Client(base_url=srv.url, headers=srv.headers, timeout=10) as http:
        assert http.post("/api/module", json={"path": module_path("web_gate")}).status_code == 200
        gate = loaded(ui)
        run_id = http.post("/api/runs", json={"workers": 2}).json()["id"]
        try:
            assert gate.STARTED.wait(10)
            # a first page connects and goes away mid-run
            with http.stream("GET", f"/api/runs/{run_id}/events") as r:
                kind, snap = next(sse_events(r.iter_lines()))
            assert kind == "snapshot"
            assert snap["statuses"] == {"hold": "RUNNING"}
            assert snap["lanes"][0]["task"] == "hold" and snap["lanes"][0]["thread"] in ("thread_0", "thread_1")
            assert snap["lanes_count"] == 2
        finally:
            gate.GATE.set()
        # reconnecting after the run moved on: the snapshot alone tells the whole story
        with http.stream("GET", f"/api/runs/{run_id}/events") as r:
            events = list(sse_events(r.iter_lines()))
        statuses = dict(events[0][1]["statuses"])
        for _, batch in events[1:]:
            statuses.update(flat(batch["changes"]))
        assert statuses == dict.fromkeys(["hold", "step_1", "step_2", "step_3", "teardown"], "PASSED")
        assert events[-1][1]["phase"] == "finished"
        assert ui.runs.join(10)


def test_a_big_run_is_coalesced_into_few_batches(tmp_path, ui):
    module = tmp_path / "many.py"
    lines = ["from thread_order import dmark", ""]
    for i in range(3000):
        after = f'after=["t{i - 1}"]' if i % 10 else ""
        lines += ["", f"@dmark({after})", f"def t{i}():", "    pass", ""]
    module.write_text("\n".join(lines))
    with LiveServer(ui) as srv, httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as http:
        info = http.post("/api/module", json={"path": str(module)}).json()
        assert len(info["tasks"]) == 3000
        graph = http.get("/api/module/graph").json()
        assert graph["svg"] is None
        assert graph["reason"] == "3,000 tasks: the graph is drawn up to 800 tasks; see the task table"
        events = []

        def watch():
            with httpx.Client(base_url=srv.url, timeout=30) as h2:
                run_id = ui.runs.current.id
                with h2.stream("GET", f"/api/runs/{run_id}/events") as r:
                    for item in sse_events(r.iter_lines()):
                        events.append(item)

        t0 = time.monotonic()
        assert http.post("/api/runs", json={"workers": 4}).status_code == 202
        watcher = threading.Thread(target=watch)
        watcher.start()
        watcher.join(30)
        elapsed = time.monotonic() - t0
        assert not watcher.is_alive()
        final = events[-1][1]
        assert final["phase"] == "finished" and final["counts"]["PASSED"] == 3000
        statuses = dict(events[0][1]["statuses"])
        for _, batch in events[1:]:
            statuses.update(flat(batch["changes"]))
        assert len(statuses) == 3000 and set(statuses.values()) == {"PASSED"}
        batches = len(events) - 1
        # at most one batch per COALESCE (0.1 s) plus the last one, whatever the task count
        assert batches <= elapsed / 0.1 + 2, (batches, elapsed)


# --------------------------------------------------------------------------- the command


def test_tdrun_ui_goes_through_tdrun(capsys):
    from thread_order.cli.main import main as tdrun_main

    assert tdrun_main(["ui", "--host", "192.0.2.1", "--no-browser"]) == 4
    assert "--host 192.0.2.1 is not a loopback address" in capsys.readouterr().err


def test_remote_mode_prints_the_token_url_once_and_opens_the_browser_with_it(tmp_path):
    opened = tmp_path / "opened"
    os.mkfifo(opened)  # the stand-in browser writes the URL here; reading it waits with a timeout
    reader = os.open(opened, os.O_RDONLY | os.O_NONBLOCK)
    recorder = f"{sys.executable} -c \"import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])\" {opened} %s"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BROWSER": recorder, "TDRUN_HISTORY": "off"}
    proc = subprocess.Popen([sys.executable, "-m", "thread_order.web.server", "--allow-remote", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        first = proc.stdout.readline()
        match = re.fullmatch(r"thread-order UI: (http://127\.0\.0\.1:\d+/)\?token=(\S+)\n", first)
        assert match, first
        base, token = match.groups()
        assert "remote access is on" in proc.stdout.readline()
        with httpx.Client(base_url=base, timeout=10, follow_redirects=False) as http:
            assert http.get("/api/info").status_code == 401
            r = http.get(f"/?token={token}")
            assert r.status_code == 303 and "HttpOnly" in r.headers["set-cookie"]
            info = http.get("/api/info").json()  # the cookie from the redirect
            assert info["remote"] is True and info["history"] is None
        assert select.select([reader], [], [], 10)[0], "the browser was not opened"
        assert os.read(reader, 4096).decode() == f"{base}?token={token}"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(reader)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert token not in out  # printed once, at start-up


def test_main_refuses_remote_hosts_without_allow_remote(capsys):
    assert ui_main(["ui", "--host", "0.0.0.0", "--no-browser"]) == 4
    assert capsys.readouterr().err.strip() == (
        "tdrun ui: --host 0.0.0.0 is not a loopback address; add --allow-remote to accept "
        "connections from other machines (every request then needs the access token)")
    assert ui_main(["--port", "70000", "--no-browser"]) == 4
    assert capsys.readouterr().err.strip() == "tdrun ui: --port must be from 0 to 65535, not 70000"
    with pytest.raises(SystemExit) as exc:
        ui_main(["--bogus"])
    assert exc.value.code == 4


def test_missing_extras_is_a_friendly_exit_4():
    code = ("import sys; sys.modules['starlette'] = None; "
            "from thread_order.web.server import main; sys.exit(main(['--no-browser']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 4
    assert proc.stderr.strip() == ("tdrun ui: the web UI needs its extras (starlette is not installed): "
                                   "pip install \"thread-order[ui]\"")


def test_tdrun_ui_subprocess_serves_records_and_cancels_the_run_on_ctrl_c(tmp_path):
    history = tmp_path / "h.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("TDRUN_HISTORY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "thread_order", "ui", "--no-browser", "--port", "0",
         "--history", str(history), module_path("web_lifecycle")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("thread-order UI: http://127.0.0.1:"), first
        url = first.split(": ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=10) as http:
            page = http.get("/")
            token = page.text.split('name="tdrun-token" content="')[1].split('"')[0]
            http.headers["X-Tdrun-Token"] = token
            assert [t["name"] for t in http.get("/api/module").json()["tasks"]][-1] == "teardown"
            http.put("/api/state", json={"values": {"delay": "0.3"}})
            run_id = http.post("/api/runs", json={"workers": 1}).json()["id"]
            with http.stream("GET", f"/api/runs/{run_id}/events") as r:
                for kind, data in sse_events(r.iter_lines()):
                    if data.get("lanes"):
                        break  # the first task is running
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "cancelling the run in progress; teardown tasks still run" in err
    store = HistoryStore(history)
    try:
        run = store.get_run("last")
    finally:
        store.close()
    assert run["status"] == "interrupted"
    rows = {t["name"]: t["status"] for t in run["tasks"]}
    assert rows["create_network"] == "PASSED" and rows["teardown"] == "PASSED"
    assert rows["verify"] == "CANCELLED"


# --------------------------------------------------------------------------- suites


def test_a_directory_loads_as_a_suite_and_runs_with_module_names(client, tmp_path):
    suite = tmp_path / "suite"
    (suite / "compute").mkdir(parents=True)
    (suite / "network.py").write_text(
        "from thread_order import mark\n\n@mark()\ndef create_network(state):\n    return 'net'\n")
    (suite / "compute" / "vms.py").write_text(
        "from thread_order import mark\n\n"
        "def setup_state(state):\n    state['zone'] = 'z1'\n\n"
        "@mark(after=['create_network'], params={'region': ['eu', 'us']})\n"
        "def create_vm(state, region):\n    '''One VM per region.'''\n    return region\n")
    r = client.post("/api/module", json={"path": str(suite)})
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["module"] == str(suite) and info["has_setup_state"] is True
    assert info["modules"] == [{"name": "compute/vms", "path": str(suite / "compute" / "vms.py")},
                               {"name": "network", "path": str(suite / "network.py")}]
    rows = {t["name"]: t for t in info["tasks"]}
    vm = rows["compute/vms::create_vm[eu]"]
    assert (vm["module"], vm["case"], vm["after"], vm["doc"]) == (
        "compute/vms", {"region": "eu"}, ["network::create_network"], "One VM per region.")
    _, _, final = run_to_end(client, workers=2)
    assert final["counts"]["PASSED"] == 3, final
    run = client.get("/api/history/last").json()
    assert {t["name"] for t in run["tasks"]} == set(rows)
    bad = client.post("/api/module", json={"path": str(tmp_path / "nowhere")})
    assert bad.status_code == 400 and "no such file" in bad.json()["error"]
