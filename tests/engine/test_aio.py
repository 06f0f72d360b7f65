"""Async tasks (engine/aio.py): one event loop per run, async_limit, real cancellation, capture per coroutine."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_properties import cases, expected_statuses, name
from thread_order import Scheduler, TaskStatus
from thread_order.history import HistoryStore

WAIT = 10.0
PASSED, FAILED, SKIPPED, CANCELLED = (TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED,
                                      TaskStatus.CANCELLED)


def records(s: Scheduler) -> dict:
    return {r.name: r for r in s.last_records}


def loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "event_loop"]


# ------------------------------------------------------------------ async and thread tasks in one DAG

def test_async_and_thread_tasks_mix_in_one_dag():
    s = Scheduler(workers=2)
    seen = {}

    async def create(state):
        await asyncio.sleep(0.01)
        seen["loop"] = asyncio.get_running_loop()
        return {"id": "net-1"}

    def attach(state):  # a thread task between two coroutines
        seen["attach_thread"] = threading.current_thread().name
        return state["results"]["create"]["id"] + "/attached"

    async def verify(state):
        seen["same_loop"] = asyncio.get_running_loop() is seen["loop"]
        return state["results"]["attach"]

    async def fail(state):
        raise ValueError("boom")

    async def skipped(state):
        return "never"

    async def teardown(state):
        return "deleted"

    s.register(create, "create", with_state=True)
    s.register(attach, "attach", after=["create"], with_state=True)
    s.register(verify, "verify", after=["attach"], with_state=True)
    s.register(fail, "fail", after=["create"], with_state=True)
    s.register(skipped, "skipped", after=["fail"], with_state=True)
    s.register(teardown, "teardown", after=["verify", "skipped"], with_state=True, always=True)
    summary = s.start()
    recs = records(s)
    assert {n: r.status for n, r in recs.items()} == {
        "create": PASSED, "attach": PASSED, "verify": PASSED, "fail": FAILED, "skipped": SKIPPED,
        "teardown": PASSED}
    assert s.state["results"]["verify"] == "net-1/attached"
    assert seen["attach_thread"].startswith("thread_") and seen["same_loop"]
    assert {n: (r.thread, r.is_async) for n, r in recs.items() if r.status is not SKIPPED} == {
        "create": ("event_loop", True), "attach": (seen["attach_thread"], False),
        "verify": ("event_loop", True), "fail": ("event_loop", True), "teardown": ("event_loop", True)}
    assert recs["skipped"].is_async and recs["skipped"].reason == "dependency 'fail' failed"
    assert recs["fail"].error_type == "ValueError" and recs["fail"].error == "boom"
    # the traceback starts at the task's own frame, not the loop's machinery
    assert recs["fail"].traceback.splitlines()[1].strip().startswith('File "') and \
        "in fail" in recs["fail"].traceback.splitlines()[1]
    assert "engine/aio.py" not in recs["fail"].traceback
    assert summary["text"].startswith("4 passed, 1 failed, 1 skipped")
    assert summary["tasks"]["create"]["thread"] == "event_loop"
    assert loop_threads() == []  # the loop thread is gone once start() returns


def test_retries_and_events_for_a_coroutine():
    s = Scheduler()
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)}")
        return "ok"

    kinds = []
    s.subscribe(lambda e: kinds.append((e.kind.value, e.name, e.thread)))
    s.register(flaky, "flaky", retries=2)
    summary = s.start()
    assert summary["passed"] == ["flaky"]
    assert records(s)["flaky"].attempts == 3
    task_kinds = [k for k in kinds if k[1] == "flaky"]
    assert task_kinds.count(("task_running", "flaky", "event_loop")) == 3
    assert task_kinds.count(("task_retrying", "flaky", "event_loop")) == 2
    assert task_kinds[-1] == ("task_finished", "flaky", None)


def test_a_client_made_by_one_task_is_used_by_later_ones_on_the_same_loop():
    s = Scheduler()

    async def open_client(state):
        state["queue"] = asyncio.Queue()  # bound to the loop it is first used on
        await state["queue"].put("hello")

    async def use_client(state):
        return await asyncio.wait_for(state["queue"].get(), WAIT)

    s.register(open_client, "open_client", with_state=True)
    s.register(use_client, "use_client", after=["open_client"], with_state=True)
    assert s.start()["passed"] == ["open_client", "use_client"]
    assert s.state["results"]["use_client"] == "hello"


def test_a_thread_only_run_starts_no_event_loop():
    s = Scheduler(workers=2)
    seen = []
    s.register(lambda: seen.append(loop_threads()), "a")
    s.register(lambda: seen.append(type(s._run).__name__), "b")
    s.start()
    assert sorted(map(str, seen)) == ["Run", "[]"]
    assert "_async_lock" not in s.state


def test_a_sync_task_returning_a_coroutine_still_fails_in_a_run_with_async_tasks():
    s = Scheduler()

    async def fetch():
        return 1

    s.register(fetch, "fetch")
    s.register(lambda: fetch(), "forgot_await")
    summary = s.start()
    assert summary["passed"] == ["fetch"]
    assert summary["tasks"]["forgot_await"]["error_type"] == "TypeError"


def test_tdrun_runs_a_mixed_module(tdrun_main, write_module, tmp_path):
    module = write_module("""
        import asyncio
        import logging
        from thread_order import mark

        @mark()
        async def create(state):
            await asyncio.sleep(0.01)
            logging.getLogger("create").info("created")
            return 1

        @mark(after=["create"])
        def update(state):
            return state["results"]["create"] + 1

        @mark(after=["update"], params={"n": [1, 2]})
        async def attach(state, n):
            await asyncio.sleep(0)
            return state["results"]["update"] + n

        @mark(after=["attach"], always=True)
        async def teardown(state):
            print("torn down", sorted(k for k in state["results"] if k.startswith("attach")))
    """)
    report = tmp_path / "r.json"
    result = tdrun_main(module, "--plain", "--log", "--async-limit", "2", "--json-report", report)
    assert result.code == 0, result.out + result.err
    assert re.search(r"\[event_loop create\] created$", result.out, re.M)
    for name in ("create", r"attach\[1\]", r"attach\[2\]", "teardown"):
        assert re.search(rf"^\[event_loop\] {name} \.+ PASSED", result.out, re.M), name
    assert re.search(r"^\[thread_0\] +update \.+ PASSED", result.out, re.M)
    import json

    tasks = {t["name"]: t for t in json.loads(report.read_text())["tasks"]}
    assert tasks["teardown"]["output"] == "torn down ['attach[1]', 'attach[2]']\n"
    assert [tasks[n]["is_async"] for n in ("create", "update", "attach[1]", "teardown")] == [
        True, False, True, True]


# ------------------------------------------------------------------ async_limit

def test_async_limit_caps_the_coroutines_running_at_once_and_they_hold_no_worker():
    s = Scheduler(workers=1, async_limit=3)
    running = [0]
    peak = [0]
    all_started = threading.Event()
    started = [0]

    def hold_the_only_worker():
        # the single worker thread waits for coroutines: they must run without it
        assert all_started.wait(WAIT), "coroutines did not run while the worker was busy"

    async def coro():
        running[0] += 1
        started[0] += 1
        peak[0] = max(peak[0], running[0])
        if started[0] == 10:
            all_started.set()
        await asyncio.sleep(0.01)
        running[0] -= 1

    s.register(hold_the_only_worker, "hold")
    for i in range(10):
        s.register(coro, f"c{i}")
    summary = s.start()
    assert len(summary["passed"]) == 11
    assert peak[0] == 3


@pytest.mark.parametrize("kwargs, error, message", [
    ({"async_limit": 0}, ValueError, "async_limit must be at least 1, not 0"),
    ({"async_limit": -5}, ValueError, "async_limit must be at least 1, not -5"),
    ({"async_limit": 2.5}, TypeError, "async_limit must be an integer, not 2.5"),
    ({"async_limit": True}, TypeError, "async_limit must be an integer, not True"),
    ({"async_block_threshold": 0}, ValueError,
     "async_block_threshold must be a finite number > 0 or None, not 0"),
    ({"async_block_threshold": float("inf")}, ValueError,
     "async_block_threshold must be a finite number > 0 or None, not inf"),
    ({"async_block_threshold": "1"}, ValueError,
     "async_block_threshold must be a finite number > 0 or None, not '1'"),
])
def test_bad_async_options(kwargs, error, message):
    with pytest.raises(error, match=rf"^{re.escape(message)}$"):
        Scheduler(**kwargs)


@pytest.mark.parametrize("argv, message", [
    (["--async-limit=0"], "argument --async-limit: must be at least 1, got '0'"),
    (["--async-limit", "many"], "argument --async-limit: expected a whole number of coroutines, got 'many'"),
    (["--async-block-threshold=-1"], "argument --async-block-threshold: expected a number of seconds > 0, got '-1'"),
    (["--async-block-threshold=nan"], "argument --async-block-threshold: expected a number of seconds > 0, got 'nan'"),
])
def test_tdrun_refuses_bad_async_options(tdrun_main, write_module, argv, message):
    module = write_module("""
        from thread_order import mark

        @mark()
        async def a(state): pass
    """)
    result = tdrun_main(module, *argv)
    assert (result.code, result.out, result.err) == (4, "", f"tdrun: error: {message}\n")


# ------------------------------------------------------------------ real cancellation

class _Closed:
    """A TCP server on 127.0.0.1 that sets ``closed`` when its one client hangs up."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(WAIT)
        conn, _ = self.sock.accept()
        self.accepted.set()
        with conn:
            conn.settimeout(WAIT)
            if conn.recv(1024) == b"":  # the client closed its end
                self.closed.set()

    def close(self) -> None:
        self.sock.close()


class _Connection:
    """An async context manager around a real connection: its exit closes it."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __aenter__(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc):
        self.writer.close()
        await self.writer.wait_closed()


def test_a_timed_out_coroutine_is_cancelled_and_its_cleanup_runs():
    server = _Closed()
    cleanup = []
    try:
        s = Scheduler()

        async def stuck():
            try:
                async with _Connection(server.port) as conn:
                    await conn.reader.read()  # the server never answers
            finally:
                cleanup.append("finally ran")

        async def after():
            return "never"

        s.register(stuck, "stuck", timeout=0.3)
        s.register(after, "after", after=["stuck"])
        summary = s.start()
        # the connection was closed by `async with` before start() returned
        assert server.closed.wait(WAIT)
        assert cleanup == ["finally ran"]
        rec = records(s)["stuck"]
        assert (rec.status, rec.error_type) == (FAILED, "TimeoutError")
        assert rec.error == ("task 'stuck' still running after 0.3s; its coroutine was cancelled "
                             "(its cleanup ran)")
        assert summary["skipped"] == ["after"]
        assert not [t for t in threading.enumerate() if t.name.endswith("-abandoned")]
    finally:
        server.close()


def test_a_timeout_is_retried_like_any_failure():
    s = Scheduler()
    attempts = []

    async def slow_then_fast():
        attempts.append(1)
        if len(attempts) == 1:
            await asyncio.sleep(WAIT)
        return "fast"

    s.register(slow_then_fast, "t", timeout=0.2, retries=1)
    assert s.start()["passed"] == ["t"]
    assert records(s)["t"].attempts == 2


def test_first_cancel_lets_running_coroutines_finish_and_runs_async_teardown():
    s = Scheduler()
    started = threading.Event()
    release = threading.Event()

    async def running():
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return "finished"

    async def next_one():
        return "never"

    async def teardown():
        return "cleaned"

    s.register(running, "running")
    s.register(next_one, "next_one", after=["running"])
    s.register(teardown, "teardown", after=["next_one"], always=True)

    def stop():
        assert started.wait(WAIT)
        s.cancel()
        release.set()

    threading.Thread(target=stop, daemon=True).start()
    summary = s.start()
    assert summary["interrupted"]
    assert {n: r.status for n, r in records(s).items()} == {
        "running": PASSED, "next_one": CANCELLED, "teardown": PASSED}


def test_a_forced_stop_cancels_running_coroutines_and_their_cleanup_runs_before_start_returns():
    s = Scheduler(workers=1)
    started = threading.Event()
    cleanup = []

    async def slow():
        started.set()
        try:
            await asyncio.sleep(WAIT * 10)
        finally:
            await asyncio.sleep(0)  # cleanup may await too
            cleanup.append("slow")

    async def teardown():
        cleanup.append("teardown")

    s.register(slow, "slow")
    s.register(teardown, "teardown", after=["slow"], always=True)

    def stop():
        assert started.wait(WAIT)
        s.cancel(force=True)

    threading.Thread(target=stop, daemon=True).start()
    t0 = time.monotonic()
    summary = s.start()
    assert time.monotonic() - t0 < WAIT
    assert cleanup == ["slow"]  # ran before start() returned; the teardown never started
    recs = records(s)
    assert recs["slow"].status is CANCELLED
    assert recs["slow"].reason == ("cancelled: still running when the run was stopped; "
                                   "its coroutine was cancelled")
    assert recs["teardown"].reason == "cancelled: the run was stopped"
    assert summary["teardown_not_run"] == ["teardown"]
    assert loop_threads() == []


# ------------------------------------------------------------------ capture per coroutine

@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3)), min_size=50, max_size=50))
def test_concurrent_coroutines_never_mix_their_output(plan):
    """50 coroutines print and log lines, yielding to each other in between: each record holds
    exactly its own lines, in order."""
    s = Scheduler(async_limit=50)
    log = logging.getLogger("aio.capture")

    def make(i, lines, yields):
        async def task():
            for n in range(lines):
                print(f"task {i} line {n}")
                for _ in range(yields):
                    await asyncio.sleep(0)
                log.warning("task %d log %d", i, n)
                sys_err_line = f"task {i} err {n}\n"
                import sys

                sys.stderr.write(sys_err_line)
                await asyncio.sleep(0)
        return task

    for i, (lines, yields) in enumerate(plan):
        s.register(make(i, lines, yields), f"t{i}")
    summary = s.start()
    assert len(summary["passed"]) == 50
    for i, (lines, _) in enumerate(plan):
        out = records(s)[f"t{i}"].output.splitlines()
        expected = []
        for n in range(lines):
            expected += [f"task {i} line {n}", f"WARNING aio.capture: task {i} log {n}", f"task {i} err {n}"]
        assert [re.sub(r"^\d\d:\d\d:\d\d\.\d{3} (WARNING) +", r"\1 ", line) for line in out] == expected


# ------------------------------------------------------------------ a coroutine blocking the loop

def test_a_coroutine_blocking_the_loop_is_warned_about_once_naming_the_task():
    s = Scheduler(async_block_threshold=0.05)
    warnings = []
    s.subscribe(lambda e: warnings.append((e.name, e.thread, dict(e.data))), "task_warning")

    async def blocker():
        time.sleep(0.12)  # a sync call inside a coroutine
        await asyncio.sleep(0)
        time.sleep(0.12)  # a second blocking step: still one warning

    async def polite():
        await asyncio.sleep(0.05)

    s.register(blocker, "blocker")
    s.register(polite, "polite")
    summary = s.start()
    assert [(name, thread) for name, thread, _ in warnings] == [("blocker", "event_loop")]
    text = warnings[0][2]["warning"]
    held = int(re.match(r"^blocked the event loop for (\d+)ms in one step \(threshold 50ms\)", text).group(1))
    assert 110 <= held < 2000
    assert summary["warnings"] == {"blocker": text}
    assert records(s)["blocker"].warning == text and records(s)["polite"].warning is None


def test_tdrun_names_the_blocking_task_in_its_summary(tdrun_main, write_module):
    module = write_module("""
        import time
        from thread_order import mark

        @mark()
        async def sync_http_call(state):
            time.sleep(0.15)
    """)
    junit, report = module.parent / "r.xml", module.parent / "r.json"
    result = tdrun_main(module, "--plain", "--junit-xml", junit, "--json-report", report)
    assert result.code == 0, result.err
    assert re.search(r"^WARNING +sync_http_call  blocked the event loop for \d+ms in one step "
                     r"\(threshold 100ms\)", result.out, re.M), result.out
    import json
    import xml.etree.ElementTree as ET

    case = ET.parse(junit).getroot().find("testsuite").find("testcase")
    assert case.find("system-err").text.startswith("warning: blocked the event loop for ")
    data = json.loads(report.read_text())
    assert list(data["warnings"]) == ["sync_http_call"]
    assert data["tasks"][0]["warning"] == data["warnings"]["sync_http_call"]


# ------------------------------------------------------------------ shared state

def test_the_async_lock_guards_a_read_modify_write_across_awaits():
    s = Scheduler(async_limit=20, state={"count": 0})

    async def bump(state):
        async with state["_async_lock"]:
            value = state["count"]
            await asyncio.sleep(0)  # another coroutine runs here: without the lock it would lose
            state["count"] = value + 1

    for i in range(20):
        s.register(bump, f"bump{i}", with_state=True)
    s.start()
    assert s.state["count"] == 20
    assert "_async_lock" not in s.state  # the run's own: gone with its loop


def test_a_coroutine_ignoring_cancellation_is_left_behind_with_a_warning(monkeypatch, caplog):
    from thread_order.engine import aioloop as aio

    monkeypatch.setattr(aio, "CANCEL_GRACE", 0.5)
    s = Scheduler()
    started = threading.Event()
    stop = threading.Event()

    async def stubborn():
        started.set()
        while not stop.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass  # refuses to stop

    s.register(stubborn, "stubborn")
    threading.Thread(target=lambda: started.wait(WAIT) and s.cancel(force=True), daemon=True).start()
    try:
        t0 = time.monotonic()
        summary = s.start()
        assert time.monotonic() - t0 < WAIT
        assert summary["cancelled"] == ["stubborn"]
        assert ("the event loop did not stop (TimeoutError): a coroutine ignores cancellation; "
                "left running, among: stubborn") in caplog.text
    finally:
        stop.set()  # let it end, so the test leaves no loop behind


# ------------------------------------------------------------------ a property over mixed DAGs

@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mixed_async_and_thread_dags_keep_every_invariant(data):
    """Random DAGs whose tasks are coroutines or thread functions at random, with failures,
    always-tasks and a random async_limit: the statuses follow the model, a task starts only
    after every dependency has returned, and the loop never runs more than async_limit."""
    case = data.draw(cases())
    kinds = data.draw(st.lists(st.booleans(), min_size=case.n, max_size=case.n))  # True: async
    limit = data.draw(st.integers(1, 4))
    lock = threading.Lock()  # guards the three below
    returned: set[int] = set()
    early: list[int] = []  # tasks that started before a dependency had returned
    running = [0, 0]  # coroutines running now, and the peak

    expected = expected_statuses(case)

    def check_start(i):
        with lock:  # every dependency that runs at all has returned
            if not {p for p in case.deps[i] if expected[p] is not SKIPPED} <= returned:
                early.append(i)

    def finish(i):
        with lock:
            returned.add(i)
        if i in case.failing:
            raise RuntimeError(f"t{i} fails")

    def make(i):
        if kinds[i]:
            async def coro():
                check_start(i)
                running[0] += 1  # the loop's one thread: no lock needed among coroutines
                running[1] = max(running[1], running[0])
                await asyncio.sleep(0)
                running[0] -= 1
                finish(i)
            return coro

        def fn():
            check_start(i)
            finish(i)
        return fn

    s = Scheduler(workers=case.workers, async_limit=limit)
    for i in case.register_order:
        s.register(make(i), name(i), [name(p) for p in case.deps[i]], always=i in case.always)
    s.start()
    recs = records(s)
    assert {i: recs[name(i)].status for i in range(case.n)} == expected
    assert early == []
    assert running[1] <= limit
    for i in range(case.n):
        rec = recs[name(i)]
        assert rec.is_async is kinds[i]
        if rec.status is not SKIPPED:
            assert (rec.thread == "event_loop") is kinds[i]


def test_first_starts_the_named_coroutines_before_the_others():
    started = []

    def make(i):
        async def coro():
            started.append(i)
        return coro

    s = Scheduler(async_limit=1, first=["c3", "c1"])
    for i in range(5):
        s.register(make(i), f"c{i}")
    s.start()
    assert started == [1, 3, 0, 2, 4]  # the named ones first, each group in registration order


def test_task_contexts_surround_each_coroutine_attempt_in_its_own_context():
    import contextlib
    import contextvars

    current = contextvars.ContextVar("current", default=None)
    exits = []

    @contextlib.contextmanager
    def around(name, attempt):
        token = current.set(f"{name}#{attempt}")
        try:
            yield
        except BaseException as exc:
            exits.append((name, attempt, type(exc).__name__))
            raise
        else:
            exits.append((name, attempt, None))
        finally:
            current.reset(token)

    s = Scheduler(async_limit=10)
    s.add_task_context(around)
    calls = []

    def make(name, fail_once):
        async def coro():
            await asyncio.sleep(0.01)  # the others run meanwhile: each keeps its own value
            calls.append(name)
            seen = current.get()
            if fail_once and calls.count(name) == 1:
                raise ValueError("first try")
            return seen
        return coro

    for i in range(3):
        s.register(make(f"c{i}", i == 1), f"c{i}", retries=1)
    s.start()
    assert s.state["results"] == {"c0": "c0#1", "c1": "c1#2", "c2": "c2#1"}
    assert sorted(exits) == [("c0", 1, None), ("c1", 1, "ValueError"), ("c1", 2, None), ("c2", 1, None)]


@pytest.mark.parametrize("order", [{"shuffle": 7}, {"order": "critical-path", "durations": {"a0": 5.0}}])
def test_coroutines_follow_a_start_order_plan_and_stay_on_the_loop(order):
    s = Scheduler(workers=2, async_limit=2, **order)
    threads = {}

    def make(name, is_async):
        if is_async:
            async def coro():
                threads[name] = threading.current_thread().name
                await asyncio.sleep(0)
            return coro

        def fn():
            threads[name] = threading.current_thread().name
        return fn

    for i in range(6):
        s.register(make(f"a{i}", True), f"a{i}")
        s.register(make(f"t{i}", False), f"t{i}", after=[f"a{i}"])
    summary = s.start()
    assert len(summary["passed"]) == 12
    assert all(threads[f"a{i}"] == "event_loop" and threads[f"t{i}"].startswith("thread_") for i in range(6))


def test_tdrun_replay_reruns_a_mixed_run(tdrun_main, write_module, tmp_path):
    module = write_module("""
        import asyncio
        from thread_order import mark

        @mark()
        async def fetch(state):
            await asyncio.sleep(0.01)

        @mark()
        def compute(state):
            pass

        @mark(after=["fetch", "compute"])
        async def store(state):
            await asyncio.sleep(0)
    """)
    db = tmp_path / "h.db"
    assert tdrun_main(module, "--plain", "--history", db).code == 0
    result = tdrun_main("replay", "last", "--history", db)
    assert result.code == 0, result.out + result.err
    assert "3 passed, 0 failed" in result.out
    with HistoryStore(db) as store:
        run = store.get_run("last")
    assert {t["name"]: t["thread"] == "event_loop" for t in run["tasks"]} == {
        "fetch": True, "compute": False, "store": True}


def test_async_tasks_need_the_local_executor():
    pytest.importorskip("distributed")
    s = Scheduler(executor="dask")

    async def fetch():
        return 1

    s.register(lambda: 1, "plain")
    s.register(fetch, "fetch")
    with pytest.raises(ValueError, match=r"^task 'fetch' is an async def: async tasks need the local "
                                         r"executor, not 'dask'$"):
        s.start()


# ------------------------------------------------------------------ the loop's own shutdown after the last coroutine

def test_background_coroutines_are_cancelled_and_cleaned_up_before_start_returns_in_an_all_async_run():
    """A run of coroutines only: the loop shuts itself down once the last one ends; a background
    task one of them started is still cancelled, and its cleanup runs, before start() returns."""
    s = Scheduler()
    cleaned = threading.Event()
    spawned = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    async def spawner():
        spawned.append(asyncio.get_running_loop().create_task(forever()))
        await asyncio.sleep(0)

    async def last():
        await asyncio.sleep(0.01)

    s.register(spawner, "spawner")
    s.register(last, "last", ["spawner"])
    summary = s.start()
    assert summary["passed"] == ["spawner", "last"]
    assert cleaned.is_set()
    assert spawned[0].cancelled()
    assert loop_threads() == []


def test_a_retry_of_the_last_coroutine_still_runs_on_the_loop():
    """The loop may shut itself down only after a hand-over no retry can follow: a last
    coroutine that fails once is retried on the same loop."""
    s = Scheduler()
    attempts = []
    loops = []

    async def flaky():
        loops.append(asyncio.get_running_loop())
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")

    async def first():
        loops.append(asyncio.get_running_loop())

    s.register(first, "first")
    s.register(flaky, "flaky", ["first"], retries=1)
    summary = s.start()
    assert summary["passed"] == ["first", "flaky"]
    assert records(s)["flaky"].attempts == 2
    assert len(set(map(id, loops))) == 1
    assert loop_threads() == []


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_all_async_dags_with_retries_keep_every_invariant(data):
    """Random DAGs of coroutines only (the loop shuts itself down after the last hand-over),
    some failing once then passing on their retry: statuses follow the model, every attempt
    ran on the one loop, nothing ran after its dependencies failed, no loop thread is left."""
    case = data.draw(cases())
    flaky = set(data.draw(st.lists(st.integers(0, case.n - 1), max_size=case.n)))
    limit = data.draw(st.integers(1, 4))
    expected = expected_statuses(case)
    loops: set[int] = set()
    tries: dict[int, int] = {}

    def make(i):
        async def coro():
            loops.add(id(asyncio.get_running_loop()))
            tries[i] = tries.get(i, 0) + 1
            await asyncio.sleep(0)
            if i in flaky and tries[i] == 1:
                raise RuntimeError(f"t{i} fails once")
            if i in case.failing:
                raise RuntimeError(f"t{i} fails")
        return coro

    s = Scheduler(workers=case.workers, async_limit=limit)
    for i in case.register_order:
        s.register(make(i), name(i), [name(p) for p in case.deps[i]], always=i in case.always,
                   retries=1 if i in flaky else 0)
    s.start()
    recs = records(s)
    assert {i: recs[name(i)].status for i in range(case.n)} == expected
    assert len(loops) <= 1
    for i in range(case.n):
        if recs[name(i)].status is not SKIPPED:
            assert tries[i] == (2 if i in flaky else 1)
    assert loop_threads() == []


def test_an_async_generator_a_task_left_open_is_closed_when_the_run_ends():
    """The loop's shutdown closes async generators left suspended (their finally runs on the
    run's loop, before start() returns), whether or not coroutines were still running."""
    closed = []

    async def numbers():
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(threading.current_thread().name)

    async def take_one(state):
        gen = numbers()
        state["gen"] = gen  # kept alive past the task: only the loop's shutdown closes it
        return await gen.__anext__()

    s = Scheduler()
    s.register(take_one, "take_one", with_state=True)
    summary = s.start()
    assert summary["passed"] == ["take_one"]
    assert s.state["results"]["take_one"] == 0
    assert closed == ["event_loop"]


def test_a_subscriber_added_while_a_batch_of_coroutines_is_recorded_hears_every_later_finish():
    # a subscriber that subscribes another, mid-run: the finished coroutines recorded after that
    # point (the rest of the loop's batch included) are announced to it, each with its count
    from thread_order import EventKind

    s = Scheduler(workers=1)

    async def noop():
        return None

    for i in range(20):
        s.register(noop, f"a{i}")
    s.register(noop, "child", after=["a0"])
    counts: list[int] = []

    def on_ready(event):
        if event.name == "child" and not counts:
            counts.append(0)  # (once)
            s.subscribe(lambda e: counts.append(e.count), EventKind.TASK_FINISHED)

    s.subscribe(on_ready, EventKind.TASK_READY)
    summary = s.start()
    assert len(summary["passed"]) == 21
    # a0 is the first to finish (the loop starts the roots in order; none awaits), and releasing
    # it is what subscribed: every other task's finish, 2nd to 21st, comes after
    assert counts[1:] == list(range(2, 22)), counts
