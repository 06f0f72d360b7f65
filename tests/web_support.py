"""Helpers for the web UI tests: a real uvicorn server on 127.0.0.1 and an SSE reader."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from thread_order.web.server import _bind, build_server
from thread_order.web.api import UiServer
from thread_order.web.security import new_token

MODULES = Path(__file__).resolve().parent / "modules"


def module_path(name: str) -> str:
    return str(MODULES / f"{name}.py")


def make_ui(tmp_path: Path, history: bool = True, remote: bool = False) -> UiServer:
    return UiServer(token=new_token(), remote=remote,
                    history_path=(tmp_path / "history.db") if history else None)


def loaded(ui: UiServer):
    """The module object the UI imported last (to reach a test module's Events)."""
    return ui.workspace.loaded()[1].module


class LiveServer:
    """``tdrun ui``'s own server (same uvicorn subclass) on a free loopback port, in a thread."""

    def __init__(self, ui: UiServer) -> None:
        self.ui = ui
        self.sock = _bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._started = threading.Event()
        self.server = build_server(ui, self.sock, self._started.set)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="test-uvicorn", daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the UI server did not start within 10 s")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError("the UI server did not stop within 30 s")

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Tdrun-Token": self.ui.token}


def sse_events(lines):
    """Parse ``text/event-stream`` lines into ``(event, data)`` pairs (comments skipped)."""
    kind, data = None, []
    for line in lines:
        if line == "":
            if data:
                yield kind or "message", json.loads("\n".join(data))
            kind, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


# ---------------------------------------------------------------- browser fixtures
# one headless Chromium per test module, a UI server and a page per test; a test module
# imports them by name

#: flags for Chromium in a sandboxed, offline CI machine
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser(chromium):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def server(tmp_path):
    with LiveServer(make_ui(tmp_path)) as srv:
        yield srv


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    yield page
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"
