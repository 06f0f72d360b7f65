"""The state checker in the web UI: the run option, the run's summary and a history run."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from thread_order.web.api import create_app
from web_support import loaded, make_ui, module_path, sse_events

LOCAL = "http://127.0.0.1:8000"
MESSAGE = ("verify_subnet reads state['subnet_id'] written by create_subnet, but does not run after it: "
           "add after=['create_subnet']")


@pytest.fixture
def ui(tmp_path):
    return make_ui(tmp_path)


@pytest.fixture
def client(ui):
    with TestClient(create_app(ui), base_url=LOCAL, headers={"X-Tdrun-Token": ui.token}) as c:
        yield c


def _run(client, ui, **options):
    assert client.post("/api/module", json={"path": module_path("web_missing_after")}).status_code == 200
    loaded(ui).written.clear()
    r = client.post("/api/runs", json={"workers": 2, **options})
    assert r.status_code == 202, r.text
    with client.stream("GET", f"/api/runs/{r.json()['id']}/events") as stream:
        events = list(sse_events(stream.iter_lines()))
    final = events[-1][1]
    assert final["phase"] == "finished"
    return final


def test_a_checked_run_reports_its_findings_live_and_in_the_history(client, ui):
    final = _run(client, ui, check_state=True)
    assert final["counts"]["PASSED"] == 2
    assert [f["message"] for f in final["summary"]["state_findings"]] == [MESSAGE]
    detail = client.get(f"/api/history/{final['history_id']}").json()
    assert [f["message"] for f in detail["state_findings"]] == [MESSAGE]
    assert "--check-state" in detail["argv"]
    report = client.get(f"/api/history/{final['history_id']}/report").text
    assert "State check: 1 finding" in report


def test_an_unchecked_run_has_no_findings(client, ui):
    final = _run(client, ui)
    assert final["summary"]["state_findings"] is None
    assert client.get(f"/api/history/{final['history_id']}").json()["state_findings"] is None


def test_a_bad_check_state_option_is_400(client):
    assert client.post("/api/module", json={"path": module_path("web_missing_after")}).status_code == 200
    r = client.post("/api/runs", json={"check_state": "yes"})
    assert (r.status_code, r.json()["error"]) == (400, "check_state must be true or false, not 'yes'")


# ---------------------------------------------------------------------------- in a browser


playwright_api = pytest.importorskip("playwright.sync_api")
from test_browser import browser, load_and_wait, page, server, wait_finished  # noqa: E402,F401


@pytest.mark.browser
def test_the_page_shows_the_findings_of_a_checked_run(page, server):
    load_and_wait(page, module_path("web_missing_after"))
    page.click("a[data-tab=run]")
    page.check("#run-check-state")
    page.click("#run-button")
    wait_finished(page)
    findings = page.locator("#run-summary #run-state-findings")
    assert findings.locator(".error-message").inner_text() == "state check: 1 finding"
    assert findings.locator("li").all_inner_texts() == [f"undeclared dependency: {MESSAGE}"]
    assert "bad" in page.get_attribute("#run-summary", "class")
    page.click("#run-summary a")
    page.wait_for_selector("#history-state-findings")
    assert page.locator("#history-state-findings li").all_inner_texts() == [f"undeclared dependency: {MESSAGE}"]
    # without the option: nothing about the state check
    loaded(server.ui).written.clear()
    page.click("a[data-tab=run]")
    page.uncheck("#run-check-state")
    before = page.inner_text("#run-summary")
    page.click("#run-button")
    page.wait_for_function("(b) => !document.querySelector('#run-summary').hidden"
                           " && document.querySelector('#run-summary').innerText !== b", arg=before)
    assert page.locator("#run-state-findings").count() == 0
