"""The Dask executor on an in-process LocalCluster shared by this module: state, fates, events, output."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from dask_support import WAIT, Gate, dask_client, gate  # noqa: F401 - fixtures

from thread_order import EventKind, ExecutorError, Scheduler, TaskStatus
from thread_order.executors.dask import DaskExecutor

LANE = re.compile(r"^inproc/\d+/thread_\d+$")


def scheduler(client, **kw) -> Scheduler:
    return Scheduler(executor=DaskExecutor(client=client), **kw)


# ---------------------------------------------------------------------------- state across machines


def create(state):
    state["network"] = {"id": "net-1"}
    state["subnets"] = []
    return "net-1"


def add_subnet(state, cidr):
    net = state["results"]["create"]
    with state["_state_lock"]:  # guards this task's copy only
        state["subnets"].append(f"{net}/{cidr}")
    return sorted(state["results"])


def forget(state):
    del state["network"]
    return state["results"].get("add[a]")


def test_a_task_sees_a_copy_with_its_upstream_results_and_its_changes_are_merged(dask_client):
    s = scheduler(dask_client, state={"region": "eu"})
    s.register(create, "create", with_state=True)
    s.register(add_subnet, "add", after="create", with_state=True, params={"cidr": ["a"]})
    s.register(forget, "forget", after="add", with_state=True)
    summary = s.start()
    assert summary["text"].startswith("3 passed"), summary["failures"]
    assert s.state["subnets"] == ["net-1/a"] and "network" not in s.state and s.state["region"] == "eu"
    # results of upstream tasks are in the copy; the task's own is not there yet
    assert s.state["results"] == {"create": "net-1", "add[a]": ["create"], "forget": ["create"]}
    assert "state_findings" not in summary and summary["executor"].startswith("dask://")
    assert summary["workers"] == 4  # the cluster's threads
    assert isinstance(s.state["_state_lock"], type(threading.RLock()))


def only_a_result(state):
    return dict(state["results"])


def test_mocked_results_reach_every_task_and_store_results_false_keeps_none(dask_client):
    s = scheduler(dask_client, state={"results": {"given": 41}}, clear_results_on_start=False)
    s.register(only_a_result, "b", with_state=True)
    s.start()
    assert s.state["results"]["b"] == {"given": 41}
    s = scheduler(dask_client, store_results=False)
    s.register(create, "create", with_state=True)
    s.register(only_a_result, "b", after="create", with_state=True)
    summary = s.start()
    assert summary["tasks"]["b"]["status"] == TaskStatus.FAILED  # no results at all, as on threads
    assert summary["tasks"]["b"]["error_type"] == "KeyError"


class Setter:
    """A task setting state[key] (a class: picklable however it is defined)."""

    def __init__(self, key, value):
        self.key, self.value = key, value

    def __call__(self, state):
        state[self.key] = self.value


def test_unordered_tasks_changing_one_key_are_reported_and_finish_order_wins(dask_client):
    s = scheduler(dask_client)
    s.register(Setter("region", "eu"), "a", with_state=True)
    s.register(Setter("region", "us"), "b", with_state=True)
    s.register(Setter("zone", 1), "c", with_state=True)
    s.register(Setter("zone", 2), "d", after="c", with_state=True)  # ordered: no conflict
    summary = s.start()
    [finding] = summary["state_findings"]  # the state checker's record, as --check-state makes it
    assert finding["kind"] == "write conflict" and finding["key"] == "state['region']"
    assert finding["tasks"] == ["a", "b"] and finding["locked"] is False
    assert finding["message"].startswith("a and b both write state['region'] and neither runs after the other")
    last = max((r for r in s.last_records if r.name in ("a", "b")), key=lambda r: r.finished_at).name
    assert s.state["region"] == {"a": "eu", "b": "us"}[last]  # the last to finish won
    assert s.state["zone"] == 2


def test_what_cannot_be_sent_is_named_in_one_error_before_anything_runs(dask_client):
    lock = threading.Lock()
    sock = socket.socket()
    try:
        s = scheduler(dask_client, state={"sock": sock, "fine": [1]})
        s.register(lambda: lock.locked(), "uses_lock")
        s.register(create, "create", with_state=True)
        events = []
        s.subscribe(events.append)
        with pytest.raises(ExecutorError) as info:
            s.start()
    finally:
        sock.close()
    message = str(info.value)
    assert re.fullmatch(r"cannot run on dask://inproc/\d+: these cannot be sent to its workers: "
                        r"task 'uses_lock' \(TypeError: cannot pickle '_thread.lock' object\); "
                        r"state\['sock'\] \(socket: cannot pickle 'socket' object\)", message), message
    assert events == [] and s.running is False


def returns_a_lock():
    return threading.Lock()


def test_a_result_that_cannot_come_back_fails_the_attempt(dask_client):
    s = scheduler(dask_client)
    s.register(returns_a_lock, "lock")
    rec = s.start()["tasks"]["lock"]
    assert rec["status"] == TaskStatus.FAILED
    assert rec["error"].startswith("task 'lock' returned a value that cannot be sent back to the client (lock)")


# ---------------------------------------------------------------------------- fates, events, keys


def own_key():
    """The Dask key of this submission (None on threads: the same module runs on both)."""
    from distributed import get_worker

    try:
        return get_worker().get_current_task()
    except ValueError:  # not on a Dask worker
        return None


class FailTimes:
    """Fails its first ``n`` attempts, counting them in the state it is given."""

    def __init__(self, n):
        self.n = n

    def __call__(self, state):
        state["tries"] = state.get("tries", 0) + 1
        if state["tries"] <= self.n:
            raise ValueError(f"attempt {state['tries']}")
        return own_key()


def boom():
    raise RuntimeError("boom")


def lifecycle(s):
    s.register(FailTimes(2), "flaky", with_state=True, retries=2)
    s.register(boom, "broken", after="flaky")
    s.register(own_key, "skipped", after="broken")
    s.register(own_key, "teardown", after="skipped", always=True)
    s.register(case, "case", params={"i": [1, 2]})
    return s


def case(i):
    return i


def per_task(events):
    kinds: dict = {}
    for e in events:
        if e.name:
            kinds.setdefault(e.name, []).append(e.kind)
    return kinds


def test_fates_retries_and_events_are_the_same_as_on_threads(dask_client):
    runs = []
    for s in (lifecycle(Scheduler(workers=4)), lifecycle(scheduler(dask_client, workers=4))):
        events = []
        s.subscribe(events.append)
        summary = s.start()
        runs.append((summary, events))
    (local, local_events), (remote, remote_events) = runs
    for key in ("passed", "failed", "skipped", "cancelled"):
        assert sorted(remote[key]) == sorted(local[key]), key
    assert {n: r["attempts"] for n, r in remote["tasks"].items()} == {
        n: r["attempts"] for n, r in local["tasks"].items()}
    assert per_task(remote_events) == per_task(local_events)
    assert remote["tasks"]["skipped"]["reason"] == "dependency 'broken' failed"
    assert remote["tasks"]["broken"]["traceback"].rstrip().endswith("RuntimeError: boom")
    assert 'in boom\n    raise RuntimeError("boom")' in remote["tasks"]["broken"]["traceback"]
    started = [e for e in remote_events if e.kind is EventKind.RUN_STARTED][0]
    assert started.data["executor"].startswith("dask://") and len(started.data["lanes"]) == 4
    running = [e.thread for e in remote_events if e.kind is EventKind.TASK_RUNNING]
    assert running and all(LANE.match(t) and t in started.data["lanes"] for t in running)


def test_each_submission_has_its_own_key_per_run_task_and_attempt(dask_client):
    keys = []
    for _ in range(2):
        s = scheduler(dask_client)
        s.register(FailTimes(1), "flaky", with_state=True, retries=1)
        s.register(own_key, "plain")
        summary = s.start()
        keys += [s.state["results"]["flaky"], s.state["results"]["plain"]]
        assert summary["tasks"]["flaky"]["attempts"] == 2
    assert len(set(keys)) == 4
    assert re.fullmatch(r"flaky-2-[0-9a-f]{32}", keys[0]) and re.fullmatch(r"plain-1-[0-9a-f]{32}", keys[1])


def chatty():
    print("to stdout")
    import sys

    print("to stderr", file=sys.stderr)
    logging.getLogger("chatty").info("a record")
    return 1


def test_output_and_log_records_come_back_into_the_record(dask_client):
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.INFO)
    try:
        s = scheduler(dask_client)
        s.register(chatty, "chatty")
        s.start()
    finally:
        root.setLevel(old)
    rec = s.last_records[0]
    assert LANE.match(rec.thread)
    assert rec.output.startswith("to stdout\nto stderr\n")
    assert re.search(r"INFO +chatty: a record\n$", rec.output)


# ---------------------------------------------------------------------------- timeouts, Ctrl-C


def sleeper(state):
    time.sleep(float(state["sleep"]))


def test_a_running_task_past_its_timeout_is_abandoned_and_one_not_started_is_cancelled():
    # one worker thread: the second task waits in Dask's queue behind the first, abandoned one
    s = Scheduler(workers=1, state={"sleep": 1.5}, executor="dask")
    s.register(sleeper, "stuck", with_state=True, timeout=0.3)
    s.register(sleeper, "queued", with_state=True, timeout=0.3)
    s.register(own_key, "after", after="stuck")
    t0 = time.monotonic()
    summary = s.start()
    assert time.monotonic() - t0 < 1.4  # nobody waited for the abandoned attempt
    stuck, queued = summary["tasks"]["stuck"], summary["tasks"]["queued"]
    assert (stuck["status"], stuck["error_type"], stuck["error"]) == (
        TaskStatus.FAILED, "TimeoutError", "task 'stuck' still running after 0.3s")
    assert LANE.match(stuck["thread"])
    assert (queued["status"], queued["error_type"], queued["thread"]) == (TaskStatus.FAILED, "TimeoutError", None)
    assert summary["tasks"]["after"]["reason"] == "dependency 'stuck' failed"


def hold(state):
    with socket.create_connection(("127.0.0.1", state["port"]), timeout=60) as conn:
        conn.sendall(b"running\n")
        return conn.recv(64).decode().strip()


def teardown():
    return "cleaned"


def held_run(client, gate):
    s = scheduler(client, state={"port": gate.port})
    s.register(hold, "hold", with_state=True)
    s.register(own_key, "after", after="hold")
    s.register(teardown, "teardown", after=["hold", "after"], always=True)
    box = {}
    thread = threading.Thread(target=lambda: box.update(summary=s.start()))
    thread.start()
    assert gate.arrived() == "running"
    return s, thread, box


def test_cancel_lets_the_running_task_finish_cancels_the_rest_and_runs_teardown(dask_client, gate):
    s, thread, box = held_run(dask_client, gate)
    assert s.cancel() is True
    gate.answer("done")
    thread.join(WAIT)
    summary = box["summary"]
    assert summary["interrupted"] is True
    assert summary["tasks"]["hold"]["status"] == TaskStatus.PASSED and s.state["results"]["hold"] == "done"
    assert summary["tasks"]["after"]["status"] == TaskStatus.CANCELLED
    assert summary["tasks"]["teardown"]["status"] == TaskStatus.PASSED


def test_a_second_cancel_returns_at_once_with_the_running_task_cancelled(dask_client, gate):
    s, thread, box = held_run(dask_client, gate)
    s.cancel()
    s.cancel(force=True)
    thread.join(WAIT)
    assert not thread.is_alive()
    summary = box["summary"]
    assert summary["tasks"]["hold"]["status"] == TaskStatus.CANCELLED
    assert summary["tasks"]["hold"]["reason"] == "abandoned: still running when the run was stopped"
    assert summary["teardown_not_run"] == ["teardown"]
    gate.answer("late")  # the abandoned attempt ends; nothing of it is kept
    assert "hold" not in s.state["results"]


# ---------------------------------------------------------------------------- tdrun, history


CONFLICT = ("a and b both write state['region'] and neither runs after the other, so the final "
            "value depends on timing: add after=['a'] to b, or the reverse")


def test_tdrun_records_the_worker_of_each_task_and_a_write_conflict_is_a_finding_everywhere(
        tdrun_main, write_module, tmp_path):
    module = write_module("""
        from thread_order import mark

        @mark()
        def a(state):
            state["region"] = "eu"

        @mark()
        def b(state):
            state["region"] = "us"

        @mark(after=["a", "b"])
        def c(state):
            print("region", state["region"])
    """)
    history, js, html = tmp_path / "h.db", tmp_path / "r.json", tmp_path / "r.html"
    result = tdrun_main(module, "--executor", "dask", "--plain", "--history", history, "--workers", "2",
                        "--json-report", js, "--html-report", html, "--junit-xml", tmp_path / "r.xml")
    # every task passed, but the final state depends on timing: the run fails, as --check-state's would
    assert result.code == 1, result.err
    assert re.search(r"^=+ state check \(1\) =+$", result.out, re.M)
    assert f"WRITE CONFLICT: {CONFLICT}" in result.out
    assert re.search(r"^=+ 3 passed, 0 failed, 0 skipped, 1 state finding in [\d.]+s =+$", result.out, re.M)
    assert "warning:" not in result.out
    assert re.search(r"^\[inproc/\d+/thread_[01]\] c \.+ PASSED", result.out, re.M)
    data = json.loads(js.read_text())
    assert data["exit_code"] == 1 and "write_conflicts" not in data
    assert data["state_findings"] == [{"kind": "write conflict", "key": "state['region']", "tasks": ["a", "b"],
                                       "locked": False, "static": False, "message": CONFLICT}]
    case = [c for c in ET.parse(tmp_path / "r.xml").getroot().iter("testcase") if c.get("name") == "state check"]
    assert case and CONFLICT in case[0].find("failure").text
    shown = tdrun_main("show", "last", "--history", history, "--json")
    assert shown.code == 0, shown.err
    run = json.loads(shown.out)
    assert run["state_findings"] == data["state_findings"]
    tasks = {t["name"]: t for t in run["tasks"]}
    assert all(LANE.match(t["thread"]) for t in tasks.values())
    assert re.fullmatch(r"region (eu|us)\n", tasks["c"]["output"])
    text = tdrun_main("show", "last", "--history", history).out
    assert "  state     1 finding\n" in text and f"    write conflict: {CONFLICT}" in text
    later = tmp_path / "later.html"  # the report of the run as the history has it
    assert tdrun_main("report", "last", "--history", history, "-o", later).code == 0
    for page in (html.read_text(), later.read_text()):
        assert "<section id=state-check class=alarm><h2>State check: 1 finding</h2>" in page
        assert "add after=[&#x27;a&#x27;] to b, or the reverse" in page


def test_tdrun_on_dask_without_a_write_conflict_exits_0_and_claims_no_check(tdrun_main, write_module, tmp_path):
    module = write_module("""
        from thread_order import mark

        @mark()
        def a(state):
            state["region"] = "eu"

        @mark(after="a")
        def b(state):
            state["region"] = state["region"] + "-1"
    """)
    history, js = tmp_path / "h.db", tmp_path / "r.json"
    result = tdrun_main(module, "--executor", "dask", "--plain", "--history", history, "--json-report", js)
    assert result.code == 0, result.out
    assert "state check" not in result.out and "finding" not in result.out
    assert json.loads(js.read_text())["state_findings"] is None  # reads are not known on a cluster
    assert "state " not in tdrun_main("show", "last", "--history", history).out


def test_a_task_queued_on_the_cluster_when_the_run_is_stopped_never_begins(gate):
    # one worker thread: `queued` waits on the worker behind `hold`, sent ahead as a lane queues ahead
    s = Scheduler(workers=1, state={"port": gate.port}, executor="dask")
    s.register(hold, "hold", with_state=True)
    s.register(Setter("ran", True), "queued", with_state=True)
    s.register(teardown, "teardown", after=["hold", "queued"], always=True)
    interrupted = threading.Event()
    s.subscribe(lambda e: interrupted.set(), EventKind.RUN_INTERRUPTED)
    box = {}
    thread = threading.Thread(target=lambda: box.update(summary=s.start()))
    thread.start()
    assert gate.arrived() == "running"
    s.cancel()
    assert interrupted.wait(WAIT)  # the workers know by now
    gate.answer("done")
    thread.join(WAIT)
    tasks = box["summary"]["tasks"]
    assert (tasks["queued"]["status"], tasks["queued"]["attempts"]) == (TaskStatus.CANCELLED, 0)
    assert tasks["queued"]["reason"] == "cancelled: the run was interrupted"
    assert "ran" not in s.state
    assert tasks["hold"]["status"] == tasks["teardown"]["status"] == TaskStatus.PASSED


def test_executor_names_resolve_through_the_entry_point_and_bad_ones_are_refused():
    s = Scheduler(executor="dask://127.0.0.1:8786")  # connects only when a run starts
    assert isinstance(s.executor, DaskExecutor) and s.executor.name == "dask://127.0.0.1:8786"
    assert s.executor.address == "tcp://127.0.0.1:8786"
    assert Scheduler(executor="dask").executor.name == "dask"
    with pytest.raises(ExecutorError, match=r"^executor 'dask://nohost': expected dask://HOST:PORT, "
                                            r"such as dask://127.0.0.1:8786$"):
        Scheduler(executor="dask://nohost")
    from thread_order.engine.executor import executor_from_spec

    with pytest.raises(ExecutorError, match=r"^executor 'dask://127.0.0.1:1': --dask-processes is for the "
                                            r"embedded cluster \(--executor dask\); a running scheduler "
                                            r"has the workers it has$"):
        executor_from_spec("dask://127.0.0.1:1", processes=2)


def test_tdrun_refuses_dask_processes_without_the_embedded_cluster(tdrun_main, write_module):
    module = write_module("from thread_order import mark\n\n@mark()\ndef a(state):\n    pass\n")
    result = tdrun_main(module, "--dask-processes", "2")
    assert (result.code, result.err) == (
        4, "tdrun: error: --dask-processes needs --executor dask (the cluster tdrun starts), not --executor local\n")
    result = tdrun_main(module, "--executor", "ray")
    assert (result.code, result.err) == (
        4, "tdrun: error: argument --executor: expected local, dask or dask://HOST:PORT, got 'ray'\n")


def test_the_state_checker_needs_the_local_executor(tdrun_main, write_module):
    module = write_module("from thread_order import mark\n\n@mark()\ndef a(state):\n    pass\n")
    result = tdrun_main(module, "--check-state", "--executor", "dask")
    assert (result.code, result.err) == (4, "tdrun: error: --check-state needs --executor local, not --executor "
                                            "dask: a task on a cluster reads and writes a copy of the state\n")
    with pytest.raises(ValueError, match=r"^check_state=True needs the local executor, not 'dask': "):
        Scheduler(check_state=True, executor="dask")


def test_a_shuffled_start_order_is_decided_on_the_client_as_on_threads(dask_client):
    started = []
    for executor in ("local", DaskExecutor(client=dask_client)):
        s = Scheduler(workers=4, shuffle=7, executor=executor)
        for i in range(12):
            s.register(teardown, f"t{i}")
        order = []
        s.subscribe(lambda e: order.append(e.name), EventKind.TASK_STARTED)
        assert s.start()["text"].startswith("12 passed")
        started.append(order)
    assert started[0] == started[1] and started[0] != sorted(started[0], key=lambda n: int(n[1:]))


def test_a_replay_needs_the_local_executor():
    from thread_order.engine.order import ReplayOrder

    with pytest.raises(ValueError, match=r"^a replay needs the local executor, not 'dask'$"):
        Scheduler(order=ReplayOrder(run_id=1, starts={}), executor="dask")


# ---------------------------------------------------------------------------- pools on a cluster


def _spans(records):
    return sorted((r.started_at, r.finished_at) for r in records)


def test_pools_and_rates_hold_on_a_cluster(dask_client):
    # the gate is the dispatcher's: a pool of 1 serializes its tasks on the cluster's 4 threads,
    # and a rate counts the hand-overs to the cluster (its workers report no start of their own)
    s = scheduler(dask_client, pools={"api": 1, "burst": {"rate": "20/s"}})
    for i in range(3):
        s.register(lambda: time.sleep(0.05), f"call{i}", pool="api")
    for i in range(25):
        s.register(lambda: None, f"r{i}", pool="burst")
    handed = []  # when each task was handed to the cluster: what the rate counts there
    s.subscribe(lambda e: e.name.startswith("r") and handed.append(e.time), EventKind.TASK_STARTED)
    summary = s.start()
    assert summary["text"].startswith("28 passed"), summary["failures"]
    calls = [r for r in s.last_records if r.name.startswith("call")]
    spans = _spans(calls)
    assert all(a[1] <= b[0] + 1e-3 for a, b in zip(spans, spans[1:]))  # one at a time
    assert sum(1 for r in calls if r.waited_for == "api") == 2
    assert summary["pools"]["api"]["waited"] == 2
    assert len(handed) == 25 and handed[-1] - handed[0] >= 24 / 20 * 0.95  # paced, not a burst
    # (the events come a little after the hand-overs the gate counted, by a varying delay)
    assert all(sum(1 for t in handed if h <= t < h + 0.95) <= 20 for h in handed)
