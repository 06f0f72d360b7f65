"""The web UI in a real browser, for a run with async tasks: the event loop's lane group and
the blocking-loop warning."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from web_support import browser, loaded, module_path, page, server  # noqa: F401 - fixtures

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "web"


def test_the_event_loop_lane_group_shows_the_running_coroutines_and_warnings(page, server):
    page.fill("#module-path", module_path("web_async_gate"))
    page.click("#load-button")
    page.wait_for_selector("#module-view:not([hidden])")
    # the task list says which tasks are async
    row = page.locator("#task-table tbody tr", has=page.locator("td.name", has_text="fetch_a"))
    assert "async" in row.inner_text()
    thread_row = page.locator("#task-table tbody tr", has=page.locator("td.name", has_text="on_a_thread"))
    assert "async" not in thread_row.inner_text()
    gate = loaded(server.ui)
    page.click("a[data-tab=run]")
    page.click("#run-button")
    try:
        loop_lane = page.locator("#lanes .lane.loop.busy")
        loop_lane.wait_for()
        page.wait_for_function("() => /2 coroutines: fetch_a, fetch_b/.test("
                               "document.querySelector('#lanes .lane.loop .task').textContent)")
        assert loop_lane.locator(".thread").inner_text() == "event_loop"
        assert page.locator("#lanes .lane.busy:not(.loop)").inner_text().startswith("thread_0")
        assert page.inner_text("#lanes-note") == "1 threads + event loop"
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "async-loop-lane.png"), full_page=True)
    finally:
        gate.GATE.set()
    page.wait_for_selector("#run-summary:not([hidden])", timeout=30_000)
    warning = page.locator("#lanes .lane-warning").inner_text()
    assert re.match(r"^warning: sync_call_inside: blocked the event loop for \d+ms in one step", warning)
    assert "idle · last" in page.locator("#lanes .lane.loop").inner_text() or \
        "done · last" in page.locator("#lanes .lane.loop").inner_text()
