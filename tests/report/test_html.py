"""The HTML run report: parsed as HTML, its SVG parsed as XML, and opened in a real browser."""

from __future__ import annotations

import random
import re
import threading
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from thread_order import Scheduler, UsageError
from thread_order.history import HistoryRecorder, HistoryStore
from thread_order.report.html import render_report, write_report

SVG = "{http://www.w3.org/2000/svg}"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "report"


class Page(HTMLParser):
    """Every tag with its attributes, the text of each section, and the inline SVG sources."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.sections: dict[str, str] = {}
        self._section: list[str] = []
        self.feed(html)
        self.svgs = [ET.fromstring(m) for m in re.findall(r"<svg\b.*?</svg>", html, flags=re.S)]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "section":
            self._section.append(attrs.get("id", ""))
            self.sections.setdefault(self._section[-1], "")

    def handle_endtag(self, tag):
        if tag == "section" and self._section:
            self._section.pop()

    def handle_data(self, data):
        if self._section:
            self.sections[self._section[-1]] += data


def recorded_run(tmp_path: Path, sched: Scheduler, **info) -> dict:
    path = tmp_path / "h.db"
    recorder = HistoryRecorder(path)
    recorder.attach(sched, info)
    sched.start()
    run_id = recorder.finish()
    with HistoryStore(path) as store:
        return store.get_run(run_id)


def lifecycle(workers: int = 2) -> Scheduler:
    gate = threading.Barrier(2, timeout=10)
    sched = Scheduler(workers=workers, state={"base_url": "http://127.0.0.1:9", "api_token": "tok-123"})

    def create_a():
        gate.wait()  # both creates overlap: two lanes for certain
        print("POST /things -> 201")

    def create_b():
        gate.wait()
        print("POST /things <b>&amp;</b>")
        raise KeyError("id")

    sched.register(lambda: None, "login")
    sched.register(create_a, "create_a", after=["login"])
    sched.register(create_b, "create_b", after=["login"])
    sched.register(lambda: None, "verify", after=["create_a", "create_b"])
    sched.register(lambda: None, "teardown", after=["verify"], always=True)
    return sched


def test_the_report_has_timeline_graph_failures_skips_and_metadata(tmp_path):
    run = recorded_run(tmp_path, lifecycle(), module="api.py", target="api.py",
                       argv=["api.py", "--api_token=tok-123"], tags="smoke")
    html = render_report(run)
    page = Page(html)

    graph, timeline = (next(s for s in page.svgs if s.get("class") == c) for c in ("tdo-graph", "tdo-timeline"))
    nodes = [g for g in graph.iter(SVG + "g") if g.get("data-task") is not None]
    assert sorted(g.get("data-task") for g in nodes) == sorted(run["graph"]["nodes"])
    assert {g.get("data-task"): g.get("data-status") for g in nodes} == {
        "login": "PASSED", "create_a": "PASSED", "create_b": "FAILED", "verify": "SKIPPED", "teardown": "PASSED"}
    lanes = [g.get("data-thread") for g in timeline.iter(SVG + "g") if g.get("class") == "lane"]
    threads = sorted({t["thread"] for t in run["tasks"] if t["thread"]})
    assert lanes == threads and len(lanes) == 2
    bars = [r.get("data-task") for r in timeline.iter(SVG + "rect") if r.get("data-task")]
    assert sorted(bars) == sorted(t["name"] for t in run["tasks"] if t["started_at"] is not None)

    failures = page.sections["failures"]
    assert "create_b" in failures and "KeyError: 'id'" in failures
    assert 'raise KeyError("id")' in failures  # the traceback, the user's frame kept
    assert "_scheduler.py" not in failures  # the engine's own frame dropped
    assert "POST /things <b>&amp;</b>" in failures  # captured output, shown as text
    assert "<b>&amp;</b>" not in html  # ... because it was escaped
    assert "dependency 'create_b' failed" in page.sections["skipped"]
    details = page.sections["details"]
    for text in ("api.py", "smoke", "--api_token=***redacted***", '"api_token": "***redacted***"',
                 run["run_uuid"], run["host"]):
        assert text in details
    assert "tok-123" not in html
    assert f"thread-order run #{run['id']}" in html and ">failed<" in html


def test_the_report_is_self_contained(tmp_path):
    html = render_report(recorded_run(tmp_path, lifecycle()))
    page = Page(html)
    for tag, attrs in page.tags:
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
        for name in ("src", "href"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
    assert "@import" not in html and "url(http" not in html and "@font-face" not in html
    assert re.findall(r"https?://", html.replace('xmlns="http://www.w3.org/2000/svg"', "")) == [
        "http://"]  # only the state value base_url, as text


def test_an_interrupted_run_lists_the_tasks_it_never_recorded(tmp_path):
    run = {
        "id": 7, "status": "interrupted", "module": "m.py", "target": "m.py", "started_at": 1000.0,
        "finished_at": None, "duration": None, "workers": 2, "host": "box", "passed": 1, "failed": 0,
        "skipped": 0, "cancelled": 0, "total": 3, "argv": [], "tags": [], "state": {},
        "graph": {"nodes": ["a", "b", "c"], "edges": [["a", "b"], ["b", "c"]]},
        "tasks": [{"name": "a", "status": "PASSED", "thread": "thread_0", "attempts": 1,
                   "started_at": 1000.0, "finished_at": 1001.0, "duration": 1.0, "error_type": None,
                   "error": None, "traceback": None, "reason": None, "output": ""}],
    }
    page = Page(render_report(run))
    assert "b, c" in page.sections["interrupted"]
    graph = next(s for s in page.svgs if s.get("class") == "tdo-graph")
    assert {g.get("data-task"): g.get("data-status") for g in graph.iter(SVG + "g")
            if g.get("data-task")} == {"a": "PASSED", "b": "WAITING", "c": "WAITING"}


def test_teardown_a_forced_stop_left_behind_is_named_at_the_top(tmp_path):
    run = recorded_run(tmp_path, lifecycle())
    assert "teardown-not-run" not in Page(render_report(run)).sections  # nothing left behind
    # as the history gives it after a second Ctrl-C (the summary's teardown_not_run)
    run = {**run, "status": "interrupted", "teardown_not_run": ["delete_subnet", "delete_network"]}
    html = render_report(run)
    page = Page(html)
    assert page.sections["teardown-not-run"].startswith(
        "teardown did not run: delete_subnet, delete_network \u2014 resources they clean up may remain")
    assert html.index("id=teardown-not-run") < html.index("id=timeline")  # before everything else


def test_write_report_says_which_file_it_cannot_write(tmp_path):
    run = recorded_run(tmp_path, lifecycle())
    target = tmp_path / "out.html"
    write_report(target, run)
    assert target.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    missing = tmp_path / "no" / "such" / "dir" / "r.html"
    with pytest.raises(UsageError, match=rf"^cannot write report {re.escape(str(missing))}: "
                                         r"No such file or directory$"):
        write_report(missing, run)


def big_run(tmp_path: Path, n: int = 500) -> dict:
    rng = random.Random(5)
    sched = Scheduler(workers=8)
    per = 25
    names = [f"step_{i:03d}_{rng.choice(['create', 'update', 'verify'])}_{rng.choice(['user', 'order'])}"
             for i in range(n)]
    for i, name in enumerate(names):
        layer = i // per
        deps = sorted({names[rng.randrange(max(0, (layer - 2) * per), layer * per)]
                       for _ in range(rng.randint(1, 3))}) if layer else []
        fail = rng.random() < 0.01
        sched.register((lambda: 1 / 0) if fail else (lambda: None), name, after=deps)
    return recorded_run(tmp_path, sched, module="big.py")


def test_five_hundred_tasks_render_quickly_with_every_shape(tmp_path):
    run = big_run(tmp_path)
    t0 = time.perf_counter()
    html = render_report(run)
    assert time.perf_counter() - t0 < 5
    assert len(html) < 3_000_000
    page = Page(html)
    graph, timeline = (next(s for s in page.svgs if s.get("class") == c) for c in ("tdo-graph", "tdo-timeline"))
    assert len([g for g in graph.iter(SVG + "g") if g.get("data-task")]) == 500
    ran = [t for t in run["tasks"] if t["started_at"] is not None]
    assert len([r for r in timeline.iter(SVG + "rect") if r.get("data-task")]) == len(ran)
    assert len([g for g in timeline.iter(SVG + "g") if g.get("class") == "lane"]) == len(
        {t["thread"] for t in ran})
    assert len(re.findall(r"<tr><td class=num>", html)) == 500  # the task table


# --------------------------------------------------------------------------- in a browser

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.mark.browser
def test_the_report_opens_offline_in_a_browser_and_its_controls_work(tmp_path, chromium):
    sync_api = pytest.importorskip("playwright.sync_api")
    run = big_run(tmp_path)
    report = tmp_path / "report.html"
    write_report(report, run)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(15_000)
            requests, errors = [], []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(report.as_uri())
            assert requests == [report.as_uri()]  # nothing fetched but the file itself
            assert errors == []
            assert page.locator("#graph-box g.node").count() == 500
            # 500 tasks do not fit the page: actual size, scrolled to where the drawing starts
            assert page.locator('button[data-zoom-for="graph-box"][data-mode="actual"]').get_attribute(
                "aria-pressed") == "true"
            first = page.locator("#graph-box g.node").first
            assert first.is_visible()
            page.click('button[data-zoom-for="graph-box"][data-mode="fit"]')
            # fit width shrinks, but never below readable text: 500 tasks then scroll
            svg = page.locator("#graph-box svg").bounding_box()
            drawn = float(page.get_attribute("#graph-box svg", "viewBox").split()[2])
            assert svg["width"] < drawn
            assert 12 * svg["width"] / drawn >= 10 - 0.01
            assert page.eval_on_selector("#graph-box", "b => b.scrollWidth > b.clientWidth")
            # the task table sorts by duration and filters by name
            page.click("#tasks-table th:nth-child(6)")
            page.click("#tasks-table th:nth-child(6)")
            durations = page.eval_on_selector_all(
                "#tasks-table tbody tr", "rows => rows.map(r => parseFloat(r.cells[5].dataset.sort))")
            assert durations == sorted(durations, reverse=True)
            page.fill("#task-filter", "step_007_")
            visible = page.eval_on_selector_all(
                "#tasks-table tbody tr", "rows => rows.filter(r => r.style.display !== 'none').length")
            assert visible == 1
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.fill("#task-filter", "")
            page.goto(report.as_uri())
            page.screenshot(path=str(SHOTS / "report-500-tasks.png"), full_page=False)
            assert errors == []
        finally:
            browser.close()
