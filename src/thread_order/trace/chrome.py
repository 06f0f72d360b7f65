"""A recorded run as a Chrome Trace Event file, the JSON that Perfetto and chrome://tracing open.

Built from a run as :meth:`thread_order.history.HistoryStore.get_run` returns
it. What the file holds (times in microseconds from the earliest moment the
run knows of, ``pid`` is the run id):

- metadata (``ph: "M"``): ``process_name`` for the run, and a ``thread_name``
  and ``thread_sort_index`` for each worker thread and for the "not run" track
  (async tasks, which overlap on the event loop's thread, get a track per row
  of attempts that do not: ``event_loop``, ``event_loop ·2``...);
- a complete slice (``ph: "X"``) per attempt of each task that ran, on the
  track of the worker thread that ran it, with its status, attempt number,
  attempts, error type and error in ``args``; an attempt that failed and was
  retried has ``args.retried`` and category ``task,retried``. A file recorded
  before the history kept every attempt (schema 5) has the last one only;
- the wait before each task started, as an async slice (``ph: "b"``/``"e"``,
  category ``wait``): from the moment its last dependency finished (the run's
  start for a task with none) to its start. The history does not record when a
  task became ready, so this is derived from the dependencies' end times; between
  two attempts of a retried task, a ``retry:`` wait from the end of one to the
  start of the next. A task a pool kept waiting (its record's ``waited`` and
  ``waited_for``, its last attempt) has a ``waiting for pool NAME:`` slice
  (category ``wait,pool``) for that long before its last attempt, and the wait
  before it ends where that one begins;
- a flow arrow (``ph: "s"`` then ``"f"`` with ``bp: "e"``, one ``id`` per
  edge, category ``dependency``) along every dependency edge whose two tasks ran,
  from the dependency's last attempt to the task's first;
- an instant event (``ph: "i"``) on the "not run" track for each skipped or
  cancelled task, at the moment that was decided, with the reason in ``args``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..runview import loop_rows

__all__ = ["chrome_trace", "trace_json"]

#: tid of the track that holds tasks which never ran; worker threads count up from 1
_NOT_RUN_LABEL = "not run (skipped, cancelled)"
#: how far inside a slice an arrow's end sits, so the viewer binds it to that slice (µs)
_INSIDE = 1.0


def _us(seconds: float) -> float:
    return round(seconds * 1_000_000, 3)


def _thread_key(name: str) -> list[Any]:
    """thread_2 before thread_10: digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def chrome_trace(run: dict[str, Any]) -> dict[str, Any]:
    """The trace of ``run`` (a :meth:`HistoryStore.get_run` dict) as a JSON-ready dict."""
    pid = int(run["id"])
    tasks = list(run.get("tasks") or [])
    ran = [t for t in tasks if _number(t.get("started_at")) is not None]
    not_run = [t for t in tasks if _number(t.get("started_at")) is None]

    # every attempt of each task that ran: the earlier (failed, retried) ones, then its record
    tries: list[tuple[dict[str, Any], dict[str, Any], bool]] = []  # (task, attempt, is_last)
    for t in ran:
        for earlier in t.get("earlier_attempts") or ():
            if _number(earlier.get("started_at")) is not None:
                tries.append((t, earlier, False))
        tries.append((t, t, True))

    known = [_number(run.get("started_at"))]
    for t in tasks:
        known += [_number(t.get("started_at")), _number(t.get("finished_at"))]
    for _, a, _ in tries:
        known += [_number(a.get("started_at")), _number(a.get("finished_at"))]
    times = [x for x in known if x is not None]
    origin = min(times) if times else 0.0
    run_end = max(times) if times else 0.0
    run_start = _number(run.get("started_at"))
    run_start = origin if run_start is None else run_start

    # async tasks overlap on the event loop's thread: a track per row of them (event_loop ·2...)
    attempts = [a for _, a, _ in tries]
    track = loop_rows(attempts, lambda a: _number(a.get("finished_at")) or a["started_at"])
    track_of = [track.get(i, str(a.get("thread") or "?")) for i, a in enumerate(attempts)]
    threads = sorted({name for name in track_of if name not in track.values()}, key=_thread_key)
    threads += sorted(set(track.values()), key=_thread_key)
    tids = {name: i for i, name in enumerate(threads, 1)}
    not_run_tid = len(threads) + 1

    label = str(run.get("target") or run.get("module") or "")
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "ts": 0,
         "args": {"name": f"tdrun run {pid}" + (f": {label}" if label else "")}},
    ]
    for name, tid in tids.items():
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "ts": 0,
                       "args": {"name": name}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid, "ts": 0,
                       "args": {"sort_index": tid}})
    if not_run:
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": not_run_tid, "ts": 0,
                       "args": {"name": _NOT_RUN_LABEL}})
        events.append({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": not_run_tid,
                       "ts": 0, "args": {"sort_index": not_run_tid}})

    # ---- one slice per attempt of each task that ran, in start order per thread, never overlapping
    slices: dict[str, dict[str, Any]] = {}  # task -> the slice of its last attempt
    firsts: dict[str, dict[str, Any]] = {}  # task -> the slice of its first attempt
    retries: dict[str, list[dict[str, Any]]] = {}  # task -> its slices, in attempt order
    thread_end: dict[int, float] = {}
    order = sorted(range(len(tries)),
                   key=lambda k: (tries[k][1]["started_at"], tries[k][0].get("seq") or 0, tries[k][2]))
    for k in order:
        t, a, last = tries[k]
        tid = tids[track_of[k]]
        start = _us(a["started_at"] - origin)
        finished = _number(a.get("finished_at"))
        end = _us((finished if finished is not None else run_end) - origin)
        start = max(start, thread_end.get(tid, start))  # a damaged file must not cross slices
        end = max(end, start)
        thread_end[tid] = end
        attempt = t.get("attempts") if last else a.get("attempt")
        args: dict[str, Any] = {"status": a.get("status"), "attempt": attempt,
                                "attempts": t.get("attempts"), "thread": a.get("thread")}
        if not last:
            args["retried"] = True
        if a.get("error_type") or a.get("error"):
            args["error_type"] = a.get("error_type")
            args["error"] = a.get("error")
        if last and t.get("reason"):
            args["reason"] = t.get("reason")
        if t.get("tags"):
            args["tags"] = list(t["tags"])
        if finished is None:
            args["unfinished"] = "the history has no end time for this task"
        name = str(t["name"])
        event = {"name": name, "cat": "task" if last else "task,retried", "ph": "X", "pid": pid,
                 "tid": tid, "ts": start, "dur": round(end - start, 3), "args": args}
        events.append(event)
        firsts.setdefault(name, event)
        retries.setdefault(name, []).append(event)
        if last:
            slices[name] = event

    # ---- the waits before starting, derived from the dependencies' end times
    edges = [(str(a), str(b)) for a, b in (run.get("graph") or {}).get("edges", [])]
    upstream: dict[str, list[str]] = {}
    for dep, task in edges:
        upstream.setdefault(task, []).append(dep)
    ends = {str(t["name"]): _number(t.get("finished_at")) for t in tasks}
    n = 0
    pool_at: dict[str, float] = {}  # task -> where the wait for its pool began (its last attempt)
    for t in ran:
        name, waited = str(t["name"]), _number(t.get("waited"))
        if t.get("waited_for") and waited is not None and waited > 0 and name in slices:
            last = slices[name]
            pool_at[name] = max(round(last["ts"] - _us(waited), 3), 0.0)
            n += 1
            common = {"name": f"waiting for pool {t['waited_for']}: {name}", "cat": "wait,pool",
                      "id": n, "pid": pid, "tid": last["tid"]}
            events.append({**common, "ph": "b", "ts": pool_at[name],
                           "args": {"pool": t["waited_for"], "waited_ms": round(waited * 1000, 3)}})
            events.append({**common, "ph": "e", "ts": last["ts"]})
    for name in slices:
        event = firsts[name]
        deps = upstream.get(name, [])
        # a dependency that ran ends where its slice ends (its record's finished_at is taken
        # by the dispatcher, a little later): the wait starts where the arrow leaves
        dep_ends = [(slices[d]["ts"] + slices[d]["dur"]) if d in slices else _us(ends[d] - origin)
                    for d in deps if d in slices or ends.get(d) is not None]
        ready_ts = min(round(max(dep_ends), 3) if dep_ends else _us(run_start - origin), event["ts"])
        args = {"from": "the end of its last dependency" if dep_ends else "the start of the run",
                "waited_ms": round((event["ts"] - ready_ts) / 1000, 3)}
        if (event["args"].get("attempts") or 0) > 1 and len(retries[name]) == 1:
            # a file from before the history kept every attempt: only the last one is known
            args["note"] = "includes the earlier attempts and retry delays"
        end_ts = event["ts"]
        if event is slices[name] and name in pool_at:  # then it waited for its pool
            end_ts = max(min(pool_at[name], end_ts), ready_ts)
            args["waited_ms"] = round((end_ts - ready_ts) / 1000, 3)
        n += 1
        common = {"name": f"wait: {name}", "cat": "wait", "id": n, "pid": pid, "tid": event["tid"]}
        events.append({**common, "ph": "b", "ts": ready_ts, "args": args})
        events.append({**common, "ph": "e", "ts": end_ts})
        # between two attempts: the retry delay (and the wait for a free worker)
        for before, after in zip(retries[name], retries[name][1:]):
            n += 1
            end_before = round(before["ts"] + before["dur"], 3)
            begin = min(end_before, after["ts"])
            end_ts = after["ts"]
            if after is slices[name] and name in pool_at:  # then it waited for its pool
                end_ts = max(min(pool_at[name], end_ts), begin)
            common = {"name": f"retry: {name}", "cat": "wait", "id": n, "pid": pid, "tid": after["tid"]}
            events.append({**common, "ph": "b", "ts": begin,
                           "args": {"from": f"the end of attempt {before['args']['attempt']}",
                                    "waited_ms": round((end_ts - begin) / 1000, 3)}})
            events.append({**common, "ph": "e", "ts": end_ts})

    # ---- an arrow along every dependency edge whose two tasks ran
    for n, (dep, task) in enumerate(edges, 1):
        if dep not in slices or task not in slices:
            continue
        a, b = slices[dep], firsts[task]
        out_ts = a["ts"] + a["dur"] - min(_INSIDE, a["dur"] / 2)
        in_ts = b["ts"] + min(_INSIDE, b["dur"] / 2)
        common = {"name": "after", "cat": "dependency", "id": n, "pid": pid}
        events.append({**common, "ph": "s", "tid": a["tid"], "ts": round(out_ts, 3),
                       "args": {"from": dep, "to": task}})
        events.append({**common, "ph": "f", "bp": "e", "tid": b["tid"], "ts": round(in_ts, 3),
                       "args": {"from": dep, "to": task}})

    # ---- tasks that never ran, at the moment that was decided
    for t in not_run:
        decided = _number(t.get("finished_at"))
        events.append({"name": str(t["name"]), "cat": "not run", "ph": "i", "s": "t", "pid": pid,
                       "tid": not_run_tid, "ts": _us((decided if decided is not None else run_start) - origin),
                       "args": {"status": t.get("status"), "reason": t.get("reason")}})

    recorded = {str(t["name"]) for t in tasks}
    other = {
        "tool": "tdrun", "run_id": str(pid), "module": label, "status": str(run.get("status")),
        "started_at": str(run.get("started_at")), "workers": str(run.get("workers")),
        "host": str(run.get("host") or ""),
        "time_origin": f"{origin} (epoch seconds at ts 0)",
    }
    missing = [n for n in (run.get("graph") or {}).get("nodes", []) if n not in recorded]
    if missing:
        other["not_recorded"] = ", ".join(missing)
    if run.get("teardown_not_run"):
        other["teardown_not_run"] = ", ".join(run["teardown_not_run"])
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def trace_json(run: dict[str, Any]) -> str:
    """:func:`chrome_trace` as the text of a ``.json`` file, one event a line."""
    trace = chrome_trace(run)
    lines = ",\n".join(json.dumps(e, default=str, ensure_ascii=False) for e in trace["traceEvents"])
    rest = json.dumps({k: v for k, v in trace.items() if k != "traceEvents"}, default=str,
                      ensure_ascii=False)[1:-1]
    return '{"traceEvents": [\n' + lines + "\n],\n" + rest + "}\n"
