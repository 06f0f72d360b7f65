"""tdrun trace: a recorded run written as a Chrome Trace Event file, checked against the format.

A real tdrun process records a run (two workers side by side, a retry, a
failure, a skip, a teardown) into a real SQLite history; ``tdrun trace`` is
then run through ``main(argv)`` and as a process, and the file it writes is
parsed and checked against the fields the Trace Event Format documents.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from conftest import MODULES, tdrun_env
from thread_order.history import HistoryStore
from thread_order.trace import chrome_trace

RUN = MODULES / "trace_run.py"
WAIT = 60.0
#: the phases the Trace Event Format documents (duration, complete, instant, counter, async,
#: flow, sample, object, metadata, memory dump, mark, clock sync, context)
PHASES = set("BEXiIbnePCstfSTFMNODvVRc()")


def tdrun(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thread_order", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=WAIT, env=tdrun_env(),
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, dict]:
    """The history file with one run of trace_run.py, and that run as the history returns it."""
    history = tmp_path_factory.mktemp("trace") / "h.db"
    proc = tdrun(RUN, "--plain", "--workers", "2", "--history", history)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # 'broken' fails
    with HistoryStore(history, readonly=True) as store:
        run = store.get_run("last")
    return history, run


@pytest.fixture(scope="module")
def trace(recorded, tmp_path_factory) -> dict:
    history, _ = recorded
    out = tmp_path_factory.mktemp("out") / "run.json"
    proc = tdrun("trace", "last", "--history", history, "-o", out)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"trace of run 1 written to {out}")
    return json.loads(out.read_text(encoding="utf-8"))


def events(trace, ph):
    return [e for e in trace["traceEvents"] if e["ph"] == ph]


def slices_by_name(trace):
    """Each task's slice of its last attempt."""
    return {e["name"]: e for e in events(trace, "X") if e["cat"] == "task"}


def first_slices(trace):
    """Each task's slice of its first attempt."""
    out = {}
    for e in sorted(events(trace, "X"), key=lambda e: e["args"]["attempt"], reverse=True):
        out[e["name"]] = e
    return out


# --------------------------------------------------------------------------- the format


def test_every_event_has_the_documented_fields(trace):
    assert set(trace) >= {"traceEvents", "displayTimeUnit"}
    assert trace["displayTimeUnit"] in ("ms", "ns")
    assert trace["traceEvents"]
    for e in trace["traceEvents"]:
        assert {"name", "ph", "pid", "tid", "ts"} <= set(e), e
        assert isinstance(e["name"], str) and e["name"]
        assert e["ph"] in PHASES, e
        assert type(e["pid"]) is int and type(e["tid"]) is int, e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
        if e["ph"] == "i":
            assert e["s"] in ("g", "p", "t"), e
        if "args" in e:
            assert isinstance(e["args"], dict), e
    assert {e["pid"] for e in trace["traceEvents"]} == {1}  # the run id


def test_one_named_track_per_worker_thread_and_a_named_process(trace, recorded):
    _, run = recorded
    names = events(trace, "M")
    process = [e for e in names if e["name"] == "process_name"]
    assert len(process) == 1 and process[0]["args"]["name"] == f"tdrun run 1: {RUN}"
    threads = [e for e in names if e["name"] == "thread_name"]
    per_tid = Counter(e["tid"] for e in threads)
    assert all(n == 1 for n in per_tid.values()), per_tid
    by_tid = {e["tid"]: e["args"]["name"] for e in threads}
    workers = {t["thread"] for t in run["tasks"] if t["thread"]}
    assert len(workers) == 2  # the two roots met at a barrier, so both threads ran
    assert set(by_tid.values()) == workers | {"not run (skipped, cancelled)"}
    # every event sits on a named track (metadata of the process itself on tid 0)
    assert {e["tid"] for e in trace["traceEvents"] if e["ph"] != "M"} <= set(by_tid)
    for e in events(trace, "X"):
        assert by_tid[e["tid"]] == e["args"]["thread"]


def test_a_slice_per_task_that_ran_with_its_status_attempts_and_error(trace, recorded):
    _, run = recorded
    slices = slices_by_name(trace)
    assert set(slices) == {"left", "right", "flaky", "broken", "joined", "teardown"}
    assert slices["broken"]["args"] == {"status": "FAILED", "attempt": 1, "attempts": 1,
                                        "thread": slices["broken"]["args"]["thread"],
                                        "error_type": "RuntimeError", "error": "broken on purpose"}
    assert slices["flaky"]["args"]["status"] == "PASSED" and slices["flaky"]["args"]["attempts"] == 2
    assert slices["flaky"]["args"]["attempt"] == 2
    assert slices["teardown"]["args"]["status"] == "PASSED"
    tasks = {t["name"]: t for t in run["tasks"]}
    origin = min(t["started_at"] for t in run["tasks"] if t["started_at"]) - slices["left"]["ts"] / 1e6
    for name, e in slices.items():
        assert e["cat"] == "task"
        assert e["dur"] == pytest.approx(tasks[name]["duration"] * 1e6, abs=50)
        assert e["ts"] == pytest.approx((tasks[name]["started_at"] - origin) * 1e6, abs=1)


def test_a_slice_per_attempt_of_a_retried_task(trace, recorded):
    _, run = recorded
    flaky = sorted((e for e in events(trace, "X") if e["name"] == "flaky"), key=lambda e: e["ts"])
    assert [e["args"]["attempt"] for e in flaky] == [1, 2]
    first, last = flaky
    assert first["cat"] == "task,retried" and last["cat"] == "task"
    assert first["args"] == {"status": "FAILED", "attempt": 1, "attempts": 2, "retried": True,
                             "thread": first["args"]["thread"], "error_type": "ConnectionError",
                             "error": "try 1 refused"}
    assert first["ts"] + first["dur"] <= last["ts"]
    (earlier,) = next(t for t in run["tasks"] if t["name"] == "flaky")["earlier_attempts"]
    assert earlier["attempt"] == 1 and earlier["error"] == "try 1 refused"
    assert "ConnectionError: try 1 refused" in earlier["traceback"]
    assert first["dur"] == pytest.approx(earlier["duration"] * 1e6, abs=50)
    # between the two: the retry's wait, on the track of the attempt it ends at
    (begin,) = [e for e in events(trace, "b") if e["name"] == "retry: flaky"]
    (end,) = [e for e in events(trace, "e") if e["name"] == "retry: flaky" and e["id"] == begin["id"]]
    assert begin["ts"] == pytest.approx(first["ts"] + first["dur"], abs=0.002)
    assert end["ts"] == last["ts"] and end["tid"] == begin["tid"] == last["tid"]
    assert begin["args"]["from"] == "the end of attempt 1"


def test_skipped_tasks_are_instants_on_the_not_run_track_with_their_reason(trace):
    (never,) = events(trace, "i")
    assert never["name"] == "never" and never["s"] == "t"
    assert never["args"] == {"status": "SKIPPED", "reason": "dependency 'broken' failed"}
    # decided after its failed dependency ended
    broken = slices_by_name(trace)["broken"]
    assert never["ts"] >= broken["ts"] + broken["dur"]


def test_slices_of_one_thread_do_not_overlap(trace):
    per_thread = defaultdict(list)
    for e in events(trace, "X"):
        per_thread[e["tid"]].append((e["ts"], e["ts"] + e["dur"]))
    assert len(per_thread) == 2
    for spans in per_thread.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end


def test_flow_arrows_pair_up_along_the_dependency_edges(trace, recorded):
    _, run = recorded
    slices = slices_by_name(trace)
    starts = {e["id"]: e for e in events(trace, "s")}
    ends = {e["id"]: e for e in events(trace, "f")}
    assert len(starts) == len(events(trace, "s")) and len(ends) == len(events(trace, "f"))
    assert set(starts) == set(ends)
    ran_edges = {(a, b) for a, b in run["graph"]["edges"] if a in slices and b in slices}
    assert ran_edges == {("left", "flaky"), ("right", "broken"), ("flaky", "joined"),
                         ("right", "joined"), ("joined", "teardown")}
    seen = set()
    for flow_id, s in starts.items():
        f = ends[flow_id]
        assert s["name"] == f["name"] and s["cat"] == f["cat"] == "dependency"
        assert f["bp"] == "e"
        dep, task = s["args"]["from"], s["args"]["to"]
        seen.add((dep, task))
        a, b = slices[dep], first_slices(trace)[task]
        # each end lies (the arrow ends at the first attempt of the task it released) inside its slice, on that slice's track, so the viewer binds it there
        assert s["tid"] == a["tid"] and a["ts"] <= s["ts"] <= a["ts"] + a["dur"]
        assert f["tid"] == b["tid"] and b["ts"] <= f["ts"] <= b["ts"] + b["dur"]
        assert s["ts"] <= f["ts"]
    assert seen == ran_edges


def test_the_wait_before_each_task_ends_at_its_start(trace, recorded):
    _, run = recorded
    slices = first_slices(trace)
    begins = {e["id"]: e for e in events(trace, "b") if e["name"].startswith("wait: ")}
    finishes = {e["id"]: e for e in events(trace, "e") if e["name"].startswith("wait: ")}
    assert set(begins) == set(finishes) and len(begins) == len(slices)
    upstream = defaultdict(list)
    for a, b in run["graph"]["edges"]:
        upstream[b].append(a)
    for wait_id, b in begins.items():
        e = finishes[wait_id]
        assert b["cat"] == e["cat"] == "wait" and b["name"] == e["name"]
        task = b["name"].removeprefix("wait: ")
        assert e["ts"] == slices[task]["ts"] and b["ts"] <= e["ts"]
        assert b["args"]["waited_ms"] == pytest.approx((e["ts"] - b["ts"]) / 1000, abs=0.002)
        # a dependency that ran ends with its last slice; one that never ran (skipped) at the
        # moment that was decided, its instant on the "not run" track
        decided = {e["name"]: e["ts"] for e in events(trace, "i")}
        dep_ends = [slices_by_name(trace)[d]["ts"] + slices_by_name(trace)[d]["dur"] if d in slices
                    else decided[d] for d in upstream[task] if d in slices or d in decided]
        if dep_ends:
            assert b["ts"] == pytest.approx(min(max(dep_ends), e["ts"]), abs=0.002)
        else:
            assert b["args"]["from"] == "the start of the run"
    flaky = next(b for b in begins.values() if b["name"] == "wait: flaky")
    assert "note" not in flaky["args"]  # it ends at the first attempt now the history has it


# --------------------------------------------------------------------------- the command


def test_without_o_it_writes_tdrun_trace_id_json_here_and_says_so(recorded, tdrun_main, tmp_path, monkeypatch):
    history, run = recorded
    monkeypatch.chdir(tmp_path)
    r = tdrun_main("trace", str(run["id"]), "--history", history)
    assert r.code == 0 and r.err == ""
    assert r.out.startswith(f"trace of run {run['id']} written to tdrun-trace-{run['id']}.json")
    written = json.loads((tmp_path / f"tdrun-trace-{run['id']}.json").read_text(encoding="utf-8"))
    assert written == chrome_trace(run)
    assert [p.name for p in tmp_path.iterdir()] == [f"tdrun-trace-{run['id']}.json"]  # no temp file left


@pytest.mark.parametrize("argv, message", [
    (["trace", "7"], "no run 7"),
    (["trace", "lastt"], "run id must be a number or 'last', not 'lastt'"),
    (["trace"], "the following arguments are required: RUN"),
    (["trace", "last", "--colour"], "unrecognized arguments: --colour"),
])
def test_bad_runs_and_arguments_are_one_line_and_exit_4(recorded, tdrun_main, tmp_path, argv, message):
    history, _ = recorded
    r = tdrun_main(*argv, "--history", history, "-o", tmp_path / "x.json")
    assert r.code == 4 and r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith("tdrun: error: ") and message in r.err
    assert not (tmp_path / "x.json").exists()


def test_a_missing_history_file_is_one_line_and_exit_4(tdrun_main, tmp_path):
    r = tdrun_main("trace", "last", "--history", tmp_path / "none.db", "-o", tmp_path / "x.json")
    assert r.code == 4 and r.err == f"tdrun: error: history file {tmp_path / 'none.db'}: no such file\n"
    assert not (tmp_path / "none.db").exists()  # read-only: never created


def test_unwritable_outputs_are_one_line_and_exit_4(recorded, tdrun_main, tmp_path):
    history, _ = recorded
    (tmp_path / "a_file").write_text("")
    cases = {
        tmp_path / "a_file" / "x.json": "does not exist",  # its folder is a file
        tmp_path / "no" / "x.json": f"folder {tmp_path / 'no'} does not exist",
        tmp_path: "is a directory, expected a file path",
        tmp_path / ("x" * 300 + ".json"): "cannot write: File name too long",
    }
    for path, message in cases.items():
        r = tdrun_main("trace", "last", "--history", history, "-o", path)
        assert r.code == 4 and r.out == "", path
        assert r.err == f"tdrun: error: -o {path}: {message}\n" or (
            r.err.count("\n") == 1 and message in r.err and str(path) in r.err), r.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_an_existing_file_is_replaced_whole(recorded, tdrun_main, tmp_path):
    history, run = recorded
    out = tmp_path / "t.json"
    out.write_text("old")
    assert tdrun_main("trace", "last", "--history", history, "-o", out).code == 0
    assert json.loads(out.read_text(encoding="utf-8")) == chrome_trace(run)


def test_help_names_the_viewers(tdrun_main):
    r = tdrun_main("trace", "--help")
    assert r.code == 0 and "Perfetto" in r.out and "-o FILE.json" in r.out


# --------------------------------------------------------------------------- odd records


def test_a_damaged_record_still_gives_slices_that_do_not_cross():
    """Two tasks on one thread whose recorded times overlap, one with no end, one never started."""
    run = {"id": 3, "started_at": 100.0, "status": "failed", "module": "m.py",
           "graph": {"nodes": ["a", "b", "c", "d"], "edges": [["a", "b"], ["b", "c"]]},
           "teardown_not_run": ["c"],
           "tasks": [
               {"name": "a", "status": "PASSED", "thread": "thread_0", "attempts": 1,
                "started_at": 100.0, "finished_at": 100.5, "duration": 0.5},
               {"name": "b", "status": "RUNNING", "thread": "thread_0", "attempts": 1,
                "started_at": 100.2, "finished_at": None, "duration": 0.0},
               {"name": "c", "status": "CANCELLED", "thread": None, "attempts": 0,
                "started_at": None, "finished_at": None, "duration": 0.0, "reason": "interrupted"},
           ]}
    trace = chrome_trace(run)
    json.dumps(trace)  # JSON-ready
    a, b = sorted(events(trace, "X"), key=lambda e: e["ts"])
    assert a["ts"] + a["dur"] <= b["ts"] and b["dur"] >= 0
    assert "unfinished" in b["args"]
    (c,) = events(trace, "i")
    assert c["name"] == "c" and c["ts"] == 0 and c["args"]["reason"] == "interrupted"
    assert trace["otherData"]["not_recorded"] == "d"
    assert trace["otherData"]["teardown_not_run"] == "c"


def test_a_run_with_no_tasks_is_still_a_trace():
    trace = chrome_trace({"id": 9, "started_at": 5.0, "status": "interrupted", "graph": {}, "tasks": []})
    assert [e["name"] for e in trace["traceEvents"]] == ["process_name"]
