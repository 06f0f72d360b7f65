"""The shared run-view model: unit tests on real runs, and a property that tdrun's live view and
the web UI, fed the same event stream of a real run, show the same counts, lanes, recents and
failures as an independent reading of that stream."""

from __future__ import annotations

import io
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from thread_order import Event, EventKind, Scheduler
from thread_order.cli.live import LiveView, render_view
from thread_order.runview import RECENT, RunView
from thread_order.web.runs import LiveRun, RunOptions

WAIT = 10.0


def record_run(sched: Scheduler) -> list[Event]:
    events: list[Event] = []
    sched.subscribe(events.append)
    sched.start()
    return events


def text_of(renderable, width: int = 100, height: int = 30) -> str:
    console = Console(file=io.StringIO(), record=True, width=width, height=height, force_terminal=True)
    console.print(renderable)
    return console.export_text()


def test_a_failure_stays_pinned_after_the_latest_completions_scroll_past_it():
    sched = Scheduler(workers=2)

    def boom():
        raise ValueError("bad gateway id")

    sched.register(boom, "boom")
    for i in range(RECENT + 10):
        sched.register(lambda: None, f"after_{i:02d}", after=["boom"], always=True)
    view = RunView()
    view.subscribe(sched)
    sched.start()
    snap = view.snapshot()
    assert "boom" not in [c.name for c in snap.recent]  # scrolled out of the latest
    assert [(r.name, r.error) for r in snap.failures] == [("boom", "bad gateway id")]
    assert snap.counts == {"PASSED": RECENT + 10, "FAILED": 1, "SKIPPED": 0, "CANCELLED": 0}
    assert len(snap.recent) == RECENT and snap.done and snap.phase == "finished"


def test_lanes_remember_the_task_they_finished_last():
    sched = Scheduler(workers=1)
    sched.register(lambda: None, "first")
    sched.register(lambda: None, "second", after=["first"])
    view = RunView()
    view.subscribe(sched)
    sched.start()
    snap = view.snapshot()
    assert snap.lanes == ("thread_0",) and snap.running == {}
    assert snap.last == {"thread_0": ("second", "PASSED")}


def test_a_retried_attempt_is_a_retry_line_and_counted_once():
    sched = Scheduler(workers=1)
    tries = []

    def flaky():
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("reset by peer")

    sched.register(flaky, "flaky", retries=1)
    view = RunView()
    view.subscribe(sched)
    sched.start()
    snap = view.snapshot()
    assert [(c.name, c.status, c.detail) for c in snap.recent] == [
        ("flaky", "PASSED", ""), ("flaky", "RETRY", "attempt 1 failed: ConnectionError: reset by peer")]
    assert snap.retries == 1 and snap.counts["PASSED"] == 1 and snap.failures == ()


def test_phases_of_a_run_stopped_twice():
    sched = Scheduler(workers=1)
    release = threading.Event()
    view = RunView()
    phases = []

    def hold():
        release.wait(WAIT)

    sched.register(hold, "hold")
    sched.register(lambda: None, "cleanup", after=["hold"], always=True)
    view.subscribe(sched)

    def stop_twice(event):  # subscribed after the view: it has seen the event
        phases.append(view.snapshot().phase)
        if event.kind is EventKind.TASK_RUNNING:
            sched.cancel()
        elif not (event.data or {}).get("force"):
            sched.cancel(force=True)

    sched.subscribe(stop_twice, EventKind.TASK_RUNNING, EventKind.RUN_INTERRUPTED)
    phases.append(view.snapshot().phase)
    try:
        sched.start()
    finally:
        release.set()
    snap = view.snapshot()
    assert phases == ["starting", "running", "interrupting", "forced"]
    assert snap.phase == "finished" and snap.interrupted == 2
    assert snap.counts["CANCELLED"] == 2


def test_teardown_not_run_comes_from_the_summary():
    view = RunView()
    view.feed(Event(EventKind.RUN_STARTED, 1, 0.0, data={"total_tasks": 2, "workers": 1, "tasks": ["a", "b"]}))
    view.feed(Event(EventKind.RUN_INTERRUPTED, 2, 0.1, data={"force": True}))
    assert view.snapshot().teardown_not_run == ()
    view.feed(Event(EventKind.RUN_FINISHED, 3, 0.2, data={"interrupted": True, "teardown_not_run": ["b"]}))
    snap = view.snapshot()
    assert snap.teardown_not_run == ("b",) and snap.interrupted == 2
    # a summary from before the engine knew the key
    view.feed(Event(EventKind.RUN_FINISHED, 4, 0.3, data={"interrupted": False}))
    assert view.snapshot().teardown_not_run == ()


def test_only_a_journaled_view_reads_changes():
    with pytest.raises(RuntimeError, match=r"^read_since: this RunView keeps no journal$"):
        RunView().read_since(0)


def test_the_journal_hands_out_each_change_once_and_rings_after_each_event():
    sched = Scheduler(workers=2)
    sched.register(lambda: None, "a")
    sched.register(lambda: None, "b", after=["a"])
    rings = []
    view = RunView(journal=True, on_change=lambda: rings.append(1))
    view.subscribe(sched)
    _, statuses, cursor = view.snapshot_with_cursor()
    assert statuses == {} and cursor == 0
    sched.start()
    batch, cursor = view.read_since(cursor)
    assert batch["changes"] == {"PASSED": ["a", "b"]}
    assert [c["name"] for c in batch["completed"]] == ["a", "b"]
    assert batch["counts"]["PASSED"] == 2 and batch["run_phase"] == "finished"
    assert len(rings) == 6  # started, 2 x (running, finished), run finished
    again, _ = view.read_since(cursor)
    assert again["changes"] == {} and again["completed"] == [] and again["new_failures"] == []


# --------------------------------------------------------------------------- the property


@st.composite
def runs(draw):
    n = draw(st.integers(1, 10))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 3)))) if i else [] for i in range(n)]
    failing = draw(st.sets(st.integers(0, n - 1)))
    flaky = draw(st.sets(st.integers(0, n - 1)))
    always = draw(st.sets(st.integers(0, n - 1)))
    stop_after = draw(st.one_of(st.none(), st.integers(1, n)))
    force = draw(st.booleans())
    return deps, failing, flaky, always, draw(st.integers(1, 4)), stop_after, force


def real_events(deps, failing, flaky, always, workers, stop_after, force) -> list[Event]:
    sched = Scheduler(workers=workers)
    tries: dict[int, int] = {}
    lock = threading.Lock()

    def task(i):
        def fn():
            with lock:
                tries[i] = tries.get(i, 0) + 1
                attempt = tries[i]
            if i in failing:
                raise RuntimeError(f"t{i} failed\nsecond line")
            if i in flaky and attempt == 1:
                raise ConnectionError(f"t{i} flaked")
        return fn

    for i, ds in enumerate(deps):
        sched.register(task(i), f"t{i}", after=[f"t{d}" for d in ds], always=i in always,
                       retries=1 if i in flaky else 0)
    if stop_after is not None:
        def stop(event):
            if event.count == stop_after:
                sched.cancel(force=force)
        sched.subscribe(stop, EventKind.TASK_FINISHED)
    return record_run(sched)


def oracle(events: list[Event]) -> dict:
    """What the stream says, read here without the model."""
    counts = {"PASSED": 0, "FAILED": 0, "SKIPPED": 0, "CANCELLED": 0}
    running: dict[str, str] = {}
    last: dict[str, tuple[str, str]] = {}
    failures: list[str] = []
    recent: list[tuple[str, str]] = []
    for e in events:
        if e.kind is EventKind.TASK_RUNNING:
            running[e.thread] = e.name
        elif e.kind in (EventKind.TASK_FINISHED, EventKind.TASK_RETRYING):
            rec = e.record
            if rec.thread is not None and running.get(rec.thread) == rec.name:
                del running[rec.thread]
            if e.kind is EventKind.TASK_RETRYING:
                recent.insert(0, (rec.name, "RETRY"))
                continue
            counts[rec.status.value] += 1
            if rec.thread is not None:
                last[rec.thread] = (rec.name, rec.status.value)
            if rec.status.value == "FAILED":
                failures.append(rec.name)
            recent.insert(0, (rec.name, rec.status.value))
        elif e.kind is EventKind.RUN_FINISHED:
            running.clear()
    return {"counts": counts, "running": running, "last": last, "failures": failures,
            "recent": recent[:RECENT]}


def web_run(total: int, workers: int) -> LiveRun:
    tasks = [{"name": f"t{i}", "after": []} for i in range(total)]
    return LiveRun("prop", "m.py", "m.py", tasks, RunOptions(workers=workers))


@settings(max_examples=60, deadline=None)
@given(runs(), st.data())
def test_the_live_view_and_the_web_ui_agree_with_the_stream(case, data):
    deps, failing, flaky, always, workers, stop_after, force = case
    events = real_events(*case)
    # the cuts are drawn as fractions: a real run's event count varies with timing, and
    # hypothesis needs the same draws to mean the same thing when it replays a case
    a = data.draw(st.integers(0, 1000), label="first cut")
    b = data.draw(st.integers(0, 1000), label="second cut")
    first, cut = sorted((len(events) * a // 1000, len(events) * b // 1000))
    live = LiveView(Console(file=io.StringIO()), total=len(deps), lanes=workers)
    web = web_run(len(deps), workers)
    ring = threading.Event()
    for e in events[:first]:
        live.model.feed(e)
        web.view.feed(e)
    waiter, start = web.add_waiter(ring.set)
    for e in events[first:cut]:
        live.model.feed(e)
        web.view.feed(e)
    shown = {EventKind.RUN_STARTED, EventKind.TASK_RUNNING, EventKind.TASK_RETRYING,
             EventKind.TASK_FINISHED, EventKind.RUN_INTERRUPTED, EventKind.RUN_FINISHED}
    assert ring.is_set() == any(e.kind in shown for e in events[first:cut])
    want = oracle(events[:cut])
    snap = live.model.snapshot()
    page = web.snapshot()

    # the terminal's model
    assert snap.counts == want["counts"]
    assert {lane: r.task for lane, r in snap.running.items()} == want["running"]
    assert snap.last == want["last"]
    assert [r.name for r in snap.failures] == want["failures"]
    assert [(c.name, c.status) for c in snap.recent] == want["recent"]
    # the page's snapshot
    assert page["counts"] == want["counts"] and page["running"] == len(want["running"])
    assert {lane["thread"]: lane["task"] for lane in page["lanes"]} == want["running"]
    assert {t: (v["task"], v["status"]) for t, v in page["lane_last"].items()} == want["last"]
    assert [f["name"] for f in page["failures"]] == want["failures"]
    assert [(c["name"], c["status"]) for c in reversed(page["recent"])] == want["recent"]
    # what a page that connected at the first cut has after one batch
    batch = web.read(waiter)
    assert batch["counts"] == want["counts"]
    assert [f["name"] for f in start["failures"] + batch["new_failures"]] == want["failures"]
    recent = (start["recent"] + batch["completed"])[-RECENT:]
    assert [(c["name"], c["status"]) for c in reversed(recent)] == want["recent"]
    statuses = dict(start["statuses"])
    statuses.update({name: status for status, names in batch["changes"].items() for name in names})
    assert statuses == page["statuses"]
    # and the terminal draws those numbers
    text = text_of(render_view(snap, 100, 40), 100, 40)
    for status, n in want["counts"].items():
        if n or status != "CANCELLED":
            assert f"{n} {status.lower()}" in text, text


def test_the_live_view_and_the_web_ui_show_who_waits_for_which_pool():
    # a holds the one slot of api while b and c wait for it; the views see the counts mid-run
    holding = threading.Event()
    release = threading.Event()
    sched = Scheduler(workers=3, pools={"api": 1, "db": 2})

    def a():
        holding.set()
        release.wait(WAIT)

    sched.register(a, "a", pool="api")
    sched.register(lambda: None, "b", pool="api")
    sched.register(lambda: None, "c", pool=["api", "db"])
    view = RunView(journal=True)
    view.subscribe(sched)
    counted = threading.Event()  # set after the view has had the event (subscribers run in order)
    sched.subscribe(lambda e: e.data["waiting"]["api"] == 2 and counted.set(), EventKind.POOL_WAITING)
    seen = {}

    def look():
        if holding.wait(WAIT) and counted.wait(WAIT):
            seen["snap"] = view.snapshot()
            seen["text"] = text_of(render_view(seen["snap"], 100, 30))
            seen["json"] = view.read_since(0)[0]
        release.set()

    threading.Thread(target=look, daemon=True).start()
    sched.start()
    assert seen["snap"].pool_waiting == {"api": 2, "db": 1}
    assert "waiting for pools: api 2 · db 1" in seen["text"]
    assert seen["json"]["pool_waiting"] == {"api": 2, "db": 1}
    final = view.snapshot()
    assert final.pool_waiting == {"api": 0, "db": 0} and final.to_dict()["pool_waiting"] == {"api": 0, "db": 0}
    assert "waiting for pools" not in text_of(render_view(final, 100, 30))  # over: not shown


def test_an_executor_names_the_lanes_and_a_worker_joining_later_gets_one():
    view = RunView(total=2, lanes=4)
    lanes = ["127.0.0.1:4001/thread_0", "127.0.0.1:4001/thread_1"]
    view.feed(Event(EventKind.RUN_STARTED, 1, 0.0,
                    data={"total_tasks": 2, "workers": 4, "tasks": ["a", "b"], "lanes": lanes}))
    view.feed(Event(EventKind.TASK_RUNNING, 2, 0.1, name="a", thread="127.0.0.1:4001/thread_1", attempt=1))
    view.feed(Event(EventKind.TASK_RUNNING, 3, 0.2, name="b", thread="127.0.0.1:4002/thread_0", attempt=1))
    snap = view.snapshot()
    assert snap.lanes == (*lanes, "127.0.0.1:4002/thread_0")
    assert snap.running["127.0.0.1:4001/thread_1"][0] == "a"
    text = text_of(render_view(snap, 120, 30), width=120)
    assert "127.0.0.1:4001/thread_1" in text and "127.0.0.1:4002/thread_0" in text
