"""Pool waits in every front-end: the JUnit XML, the trace export, --list and --graph.

A real tdrun process records a run with a pool of 1 (two coroutines, a retried thread
task, a task in no pool) into a real SQLite history; the reports it wrote and the trace
``tdrun trace`` exports are parsed.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from thread_order.history import HistoryStore

POOLED = """
import asyncio
import time
from thread_order import mark

POOLS = {"api": 1, "quota": {"size": 3, "rate": "50/s"}}
CALLS = {"n": 0}


@mark(pool="api", params={"i": [1, 2]})
async def call(state, i):
    await asyncio.sleep(0.05)


@mark(pool=["api", "quota"], retries=1)
def flaky(state):
    CALLS["n"] += 1
    time.sleep(0.05)
    if CALLS["n"] == 1:
        raise ConnectionError("not yet")


@mark(after=["flaky"])
def free(state):
    pass
"""


@pytest.fixture
def recorded(tmp_path, write_module, tdrun_proc):
    """tasks.py run once by a real tdrun: (the run as the history returns it, junit path, history)."""
    write_module(POOLED)
    db, junit = tmp_path / "h.db", tmp_path / "out" / "junit.xml"
    res = tdrun_proc(tmp_path / "tasks.py", "--plain", "--workers", "4", "--history", db,
                     "--junit-xml", junit, TDRUN_HISTORY="on")
    assert res.code == 0, res.out + res.err
    with HistoryStore(db, readonly=True) as store:
        run = store.get_run("last")
    return run, junit, db


def test_junit_testcases_carry_the_pool_and_the_wait(recorded):
    junitparser = pytest.importorskip("junitparser")
    run, junit, _ = recorded
    waits = {t["name"]: (t["waited"], t["waited_for"]) for t in run["tasks"]}
    waited = [name for name, (_, pool) in waits.items() if pool]
    assert set(waited) <= {"call[1]", "call[2]", "flaky"}
    assert max(seconds for seconds, _ in waits.values()) > 0.02  # a pool of 1 under four workers
    (suite,) = list(junitparser.JUnitXml.fromfile(str(junit)))
    props = {}
    for case in suite:
        found = case.child(junitparser.Properties)
        props[case.name] = {p.name: p.value for p in found} if found is not None else {}
    assert set(props) == {"call[1]", "call[2]", "flaky", "free"}
    for name, (seconds, pool) in waits.items():
        if pool is None:
            assert props[name] == {}
        else:
            assert props[name] == {"tdrun_pool": pool, "tdrun_waited": f"{seconds:.3f}"}
    # properties come first in the testcase, as JUnit readers expect
    for case in ET.parse(junit).getroot().iter("testcase"):
        tags = [child.tag for child in case]
        assert "properties" not in tags or tags[0] == "properties"


def test_the_trace_draws_the_wait_for_the_pool_before_the_last_attempt(recorded, tdrun_main, tmp_path):
    run, _, db = recorded
    out = tmp_path / "trace.json"
    res = tdrun_main("trace", "last", "--history", db, "-o", out)
    assert res.code == 0, res.err
    events = json.loads(out.read_text(encoding="utf-8"))["traceEvents"]
    last = {e["name"]: e for e in events if e["ph"] == "X" and e["cat"] == "task"}
    begins = {e["id"]: e for e in events if e["ph"] == "b"}
    ends = {e["id"]: e for e in events if e["ph"] == "e"}
    assert set(begins) == set(ends)
    pool_waits = {b["name"]: (b, ends[i]) for i, b in begins.items() if b["cat"] == "wait,pool"}
    expected = {t["name"]: t for t in run["tasks"] if t["waited_for"] and t["waited"] > 0}
    assert expected  # a pool of 1 under four workers: someone waited
    assert set(pool_waits) == {f"waiting for pool {t['waited_for']}: {n}" for n, t in expected.items()}
    for name, t in expected.items():
        b, e = pool_waits[f"waiting for pool {t['waited_for']}: {name}"]
        assert e["name"] == b["name"] and e["cat"] == "wait,pool" and b["tid"] == last[name]["tid"]
        assert e["ts"] == last[name]["ts"]  # it ends where the task's last attempt begins
        assert b["args"]["pool"] == t["waited_for"]
        assert b["args"]["waited_ms"] == pytest.approx(t["waited"] * 1000, abs=0.01)
        assert e["ts"] - b["ts"] == pytest.approx(min(t["waited"] * 1e6, e["ts"]), abs=1.0)
        # the wait before it (its dependencies, or a retry) ends where the wait for the pool begins
        before = [begins[i] for i in begins if begins[i]["cat"] == "wait" and ends[i]["ts"] == b["ts"]
                  and begins[i]["name"] in (f"wait: {name}", f"retry: {name}")]
        if b["ts"] > 0:
            assert before, name
    # nothing crosses: every wait begins no later than it ends
    assert all(begins[i]["ts"] <= ends[i]["ts"] for i in begins)


def test_list_shows_each_tasks_pools_and_the_pools(write_module, tdrun_main):
    path = write_module(POOLED)
    res = tdrun_main(path, "--list", "--pool", "burst=10/min")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    row = {line.split()[1]: line for line in lines if line.strip()[:1].isdigit()}
    assert row["call[1]"].endswith("pool: api") and "async" in row["call[1]"]
    assert row["flaky"].endswith("pools: api,quota")
    assert "pool" not in row["free"]
    tail = lines[lines.index("pools:"):]
    assert tail == ["pools:",
                    "  api (size 1): 3 tasks: call[1], call[2], flaky",
                    "  quota (size 3, rate 50/s): 1 task: flaky",
                    "  burst (rate 10/min): 0 tasks"]


@pytest.mark.parametrize("fmt, lead", [("text", ""), ("dot", "// "), ("mermaid", "%% ")])
def test_graph_ends_with_the_pools_in_each_format(write_module, tdrun_main, fmt, lead):
    path = write_module(POOLED)
    res = tdrun_main(path, "--graph", "--graph-format", fmt)
    assert res.code == 0, res.err
    assert res.out.endswith(f"{lead}pools:\n{lead}  api (size 1): 3 tasks: call[1], call[2], flaky\n"
                            f"{lead}  quota (size 3, rate 50/s): 1 task: flaky\n")


def test_list_without_pools_says_nothing_of_them(write_module, tdrun_main):
    path = write_module("""
        from thread_order import mark

        @mark()
        def one(state):
            pass
    """)
    res = tdrun_main(path, "--list")
    assert res.code == 0 and res.out.endswith(" worker\n  1. one\n")


def test_list_with_an_unknown_pool_is_one_line_and_exit_4(write_module, tdrun_main):
    path = write_module("""
        from thread_order import mark

        @mark(pool="nope")
        async def one(state):
            pass
    """)
    res = tdrun_main(path, "--list")
    assert res.code == 4
    assert res.err == "tdrun: error: task 'one' is in unknown pool 'nope' (declared: none)\n"
