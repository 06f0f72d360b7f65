"""Async tasks in every front-end: the run-view model and the live view (the event loop's lane
group), the web UI's snapshot, the history (is_async, warnings, tdrun show) and the HTML timeline."""

from __future__ import annotations

import asyncio
import io
import re
import sqlite3
import threading
import time

from rich.console import Console

from thread_order import Scheduler
from thread_order.cli.live import render_view
from thread_order.history import SCHEMA_VERSION, HistoryStore
from thread_order.report.svg import timeline_svg
from thread_order.runview import RunView

WAIT = 10.0


def text_of(renderable, width: int = 100, height: int = 30) -> str:
    console = Console(file=io.StringIO(), record=True, width=width, height=height, force_terminal=True)
    console.print(renderable)
    return console.export_text()


def held_coroutines(sched: Scheduler, names: list[str], release: threading.Event) -> None:
    async def hold():
        while not release.is_set():  # the task's own polling: the test waits on events
            await asyncio.sleep(0.005)

    for name in names:
        sched.register(hold, name)


def test_the_event_loop_is_a_lane_group_with_its_running_coroutines():
    sched = Scheduler(workers=2)
    release = threading.Event()
    three = threading.Event()
    view = RunView(0, 2, "mixed", journal=True,
                   on_change=lambda: three.set() if len(view.coroutines) == 3 and view.running else None)
    view.subscribe(sched)
    held_coroutines(sched, ["fetch_a", "fetch_b", "fetch_c"], release)
    sched.register(lambda: release.wait(WAIT), "thread_task")
    runner = threading.Thread(target=sched.start)
    runner.start()
    try:
        assert three.wait(WAIT)
        snap = view.snapshot()
        assert sorted(snap.coroutines) == ["fetch_a", "fetch_b", "fetch_c"]
        assert [r.task for r in snap.running.values()] == ["thread_task"]
        assert snap.in_flight == 4 and snap.waiting == 0
        text = text_of(render_view(snap, 100, 30))
        assert re.search(r"event_loop . 3 coroutines: fetch_a \S+, fetch_b \S+, fetch_c", text), text
        assert "1 threads + event loop" in text  # only the thread task has a worker lane
        assert "4 running" in text
        data = snap.to_dict(full=False)
        assert data["running"] == 4
        assert data["loop"]["thread"] == "event_loop" and data["loop"]["running"] == 3
        assert sorted(t["task"] for t in data["loop"]["tasks"]) == ["fetch_a", "fetch_b", "fetch_c"]
    finally:
        release.set()
        runner.join(WAIT)
    snap = view.snapshot()
    assert snap.coroutines == {} and snap.counts["PASSED"] == 4
    text = text_of(render_view(snap, 100, 30))
    assert re.search(r"event_loop · idle  last: fetch_\w ", text), text


def test_a_warning_reaches_the_view_and_the_live_screen():
    sched = Scheduler(async_block_threshold=0.05)
    view = RunView(0, 1, "warn")
    view.subscribe(sched)

    async def sync_call():
        time.sleep(0.08)

    sched.register(sync_call, "sync_call")
    sched.start()
    snap = view.snapshot()
    assert [task for task, _ in snap.warnings] == ["sync_call"]
    assert snap.to_dict()["warnings"][0]["task"] == "sync_call"
    text = text_of(render_view(snap, 120, 30), width=120)
    assert re.search(r"warning: sync_call: blocked the event loop for \d+ms in one step", text), text


def test_a_thread_only_view_shows_no_loop_lane():
    sched = Scheduler(workers=1)
    view = RunView(0, 1, "threads")
    view.subscribe(sched)
    sched.register(lambda: None, "a")
    sched.start()
    snap = view.snapshot()
    text = text_of(render_view(snap, 100, 20))
    assert "event_loop" not in text and "1 threads · " in text
    assert snap.to_dict()["loop"] == {"thread": "event_loop", "running": 0, "tasks": []}


def test_the_history_keeps_which_tasks_were_async_and_their_warnings(tmp_path, tdrun_main, write_module):
    module = write_module("""
        import asyncio
        import time
        from thread_order import mark

        @mark()
        async def quiet(state):
            await asyncio.sleep(0)

        @mark()
        async def chatty(state):
            print("hello")

        @mark(after=["quiet"])
        def threaded(state):
            pass

        @mark(after=["quiet"])
        async def blocking(state):
            time.sleep(0.08)

        @mark(after=["missing_dep_fails"])
        async def never(state):
            pass

        @mark()
        def missing_dep_fails(state):
            raise RuntimeError("no")
    """)
    db = tmp_path / "h.db"
    result = tdrun_main(module, "--plain", "--history", db, "--async-block-threshold", "0.05")
    assert result.code == 1, result.err
    with HistoryStore(db) as store:
        run = store.get_run("last")
    tasks = {t["name"]: t for t in run["tasks"]}
    # a passed coroutine with nothing to say is stored in a batch: still known as async
    assert {n: t["is_async"] for n, t in tasks.items()} == {
        "quiet": True, "chatty": True, "threaded": False, "blocking": True, "never": True,
        "missing_dep_fails": False}
    assert tasks["never"]["status"] == "SKIPPED"
    assert re.match(r"^blocked the event loop for \d+ms in one step \(threshold 50ms\)", tasks["blocking"]["warning"])
    assert tasks["quiet"]["warning"] is None
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # is_async came in 6
    shown = tdrun_main("show", "last", "--history", db)
    assert shown.code == 0, shown.err
    assert "async tasks (4): " in shown.out
    assert re.search(r"^warning: blocking: blocked the event loop for \d+ms", shown.out, re.M)
    html = tmp_path / "r.html"
    assert tdrun_main("report", "last", "--history", db, "-o", html).code == 0
    page = html.read_text()
    assert re.search(r"<section id=warnings><h2>Warnings</h2>.*<td class=name>blocking</td>"
                     r"<td class=detail>blocked the event loop for \d+ms", page)
    # the timeline: the thread tasks' lanes, then the event loop's rows
    assert re.findall(r'<g class="lane" data-thread="([^"]+)"', page)[-1].startswith("event_loop")


def test_the_html_timeline_gives_overlapping_coroutines_rows_of_their_own():
    def task(name, thread, start, end):
        return {"name": name, "status": "PASSED", "thread": thread, "started_at": 100 + start,
                "finished_at": 100 + end, "duration": end - start, "attempts": 1}

    svg = timeline_svg([
        task("t", "thread_0", 0.0, 1.0),
        task("a", "event_loop", 0.0, 0.6),
        task("b", "event_loop", 0.1, 0.5),  # overlaps a: a second row
        task("c", "event_loop", 0.2, 0.3),  # overlaps both: a third row
        task("d", "event_loop", 0.6, 0.9),  # after a: back on the first row
    ])
    rows = re.findall(r'<g class="lane" data-thread="([^"]+)"', svg)
    assert rows == ["thread_0", "event_loop", "event_loop ·2", "event_loop ·3"]

    def row_of(name):
        y = float(re.search(rf'data-task="{name}"[^>]* y="([\d.]+)"', svg).group(1))
        return y

    assert row_of("a") == row_of("d") < row_of("b") < row_of("c")
    assert "event_loop (async)" in svg


def test_the_trace_gives_overlapping_coroutines_tracks_of_their_own():
    from thread_order.trace.chrome import chrome_trace

    def task(name, thread, start, end, seq):
        return {"name": name, "status": "PASSED", "thread": thread, "started_at": 100 + start,
                "finished_at": 100 + end, "duration": end - start, "attempts": 1, "seq": seq}

    run = {"id": 3, "started_at": 100.0, "graph": {"nodes": ["t", "a", "b"], "edges": []}, "tasks": [
        task("t", "thread_0", 0.0, 1.0, 1), task("a", "event_loop", 0.0, 0.6, 2),
        task("b", "event_loop", 0.1, 0.5, 3)]}
    events = chrome_trace(run)["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    slices = {e["name"]: e for e in events if e.get("ph") == "X"}
    assert sorted(names.values()) == ["event_loop", "event_loop ·2", "thread_0"]
    assert names[slices["a"]["tid"]] == "event_loop" and names[slices["b"]["tid"]] == "event_loop ·2"
    # each keeps its own start: overlapping coroutines are not pushed after one another
    assert (slices["a"]["ts"], slices["b"]["ts"]) == (0.0, 100000.0)


def test_tdrun_list_marks_async_tasks(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark()
        async def fetch(state): pass

        @mark(after=["fetch"])
        def store(state): pass
    """)
    result = tdrun_main(module, "--list")
    assert result.code == 0, result.err
    assert re.search(r"^  1\. fetch +async$", result.out, re.M), result.out
    assert re.search(r"^  2\. store +after: fetch$", result.out, re.M), result.out
