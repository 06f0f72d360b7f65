"""The web UI's history shows a run's start order, its lower bound and the link between a replay
and the run it replays: through the JSON API and in a real browser."""

from __future__ import annotations

import textwrap
import warnings

import pytest

from thread_order.cli.main import main as tdrun_main
from thread_order.web.api import create_app
from web_support import LiveServer, make_ui

with warnings.catch_warnings():
    # as in test_api.py: starlette 1.x points to an httpx fork for its TestClient
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

MODULE = """
from thread_order import mark

@mark(with_state=False)
def first():
    pass

@mark(after=["first"], with_state=False)
def second():
    pass

@mark(with_state=False)
def other():
    pass
"""


@pytest.fixture
def recorded(tmp_path, monkeypatch, capsys):
    """A shuffled run (1) and two replays of it (2, 3), recorded where the UI reads."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tasks.py").write_text(textwrap.dedent(MODULE))
    ui = make_ui(tmp_path)
    history = str(ui.history_path)
    assert tdrun_main(["tasks.py", "--shuffle=11", "--workers", "2", "--history", history]) == 0
    assert tdrun_main(["replay", "1", "--history", history]) == 0
    assert tdrun_main(["replay", "1", "--serial", "--history", history]) == 0
    capsys.readouterr()
    return ui


def test_history_api_carries_order_bound_and_replay_links(recorded):
    with TestClient(create_app(recorded), base_url="http://127.0.0.1:8000",
                    headers={"X-Tdrun-Token": recorded.token}) as client:
        runs = client.get("/api/history").json()["runs"]
        assert [(r["id"], r["replay_of"]) for r in runs] == [(3, 1), (2, 1), (1, None)]
        original = client.get("/api/history/1").json()
        assert original["ordering"]["order"] == "shuffle" and original["ordering"]["seed"] == 11
        assert original["replays"] == [2, 3]
        assert original["lower_bound"]["workers"] == 2
        assert original["lower_bound"]["lower_bound"] <= original["duration"]
        replay = client.get("/api/history/3").json()
        assert replay["ordering"]["order"] == "replay" and replay["ordering"]["serial"] is True
        cmp = client.get("/api/compare?a=1&b=2").json()
        assert cmp["replay"] is True
        assert [row["a"] for row in cmp["start_order"]] == [row["b"] for row in cmp["start_order"]]
        assert len(cmp["start_order"]) == 3
        assert client.get("/api/compare?a=2&b=3").json()["start_order"] is None  # two replays


playwright_api = pytest.importorskip("playwright.sync_api")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
def test_history_page_links_a_replay_and_its_recording(recorded, chromium):
    with LiveServer(recorded) as server, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(15_000)
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(server.url + "/#history")
            page.wait_for_selector("#history-table tbody tr:nth-child(3)")
            assert page.locator("#history-table tbody tr").first.locator("a.replay-of").inner_text() == " ↻ #1"
            page.goto(server.url + "/#history/2")
            page.wait_for_selector("#history-replay-links")
            assert page.inner_text("#history-replay-links") == "a replay of run #1"
            assert "replay of run 1" in page.inner_text("#history-detail .meta-grid")
            page.click("#history-replay-links a")
            page.wait_for_function("() => location.hash === '#history/1'")
            page.wait_for_function("() => (document.querySelector('#history-replay-links') || {}).textContent"
                                   " === 'replayed by run #2, run #3'")
            grid = page.inner_text("#history-detail .meta-grid")
            assert "shuffled, seed 11 (repeat: --shuffle=11)" in grid
            assert "critical path" in grid and "/ 2 workers" in grid
            assert errors == []
        finally:
            browser.close()
