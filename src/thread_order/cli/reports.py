"""Machine-readable reports of a finished run: JUnit XML for CI, and a JSON document.

The JSON report (``tdrun --json-report PATH``) is one object with these keys,
all always present (``null`` where a value does not apply); new keys may be
added, existing ones keep their meaning while ``format_version`` stays 1:

- ``format_version`` (int): 1.
- ``tool`` (str): ``"tdrun"``; ``version`` (str): the thread-order version.
- ``module`` (str): the module's name (its file stem), or for a suite of several modules the
  paths given; ``path`` (str): the (first) file as given.
- ``modules`` (list): every module of the run, ``{"name", "path"}``, in collection order;
  ``name`` is the MODULE of the ``MODULE::TASK`` names of a suite.
- ``target`` (str | null): the ``::task`` part of TARGET.
- ``argv`` (list of str): the command-line arguments; the value of a ``--key=value`` (or
  ``--set key=value``) whose key looks secret (password, token, secret, key, auth, credential)
  reads ``***redacted***``.
- ``outcome`` (str): ``"passed"``, ``"failed"`` or ``"interrupted"``.
- ``exit_code`` (int): tdrun's exit code for the run.
- ``run_id`` (str), ``started_at``/``finished_at`` (epoch seconds), ``duration`` (seconds),
  ``workers`` (int, pool size), ``interrupted`` (bool).
- ``counts``: ``{"total", "passed", "failed", "skipped", "cancelled"}`` (ints).
- ``summary`` (str): the closing line, e.g. ``"3 passed, 1 failed, 2 skipped in 1.20s"``.
- ``failure_counts``: error type -> number of tasks that failed with it.
- ``teardown_not_run`` (list of str): after a forced stop (a second Ctrl-C), the ``always``
  tasks that never ran or were cut short, in registration order; empty otherwise.
- ``state_keys``: initial state key -> where it came from (``"state file"``,
  ``"typed in"``, ``"setup_state"``); values are left out, they may be secrets.
- ``tasks`` (list, registration order), each with: ``name``, ``status``
  (PASSED/FAILED/SKIPPED/CANCELLED), ``thread`` (null if it never ran),
  ``started_at``, ``finished_at``, ``duration``, ``attempts``, ``error_type``,
  ``error``, ``traceback``, ``output`` (captured stdout, stderr and logs),
  ``reason`` (why it was skipped or cancelled), ``tags``, ``after`` (its
  dependencies in this run), ``always`` (a teardown task), ``level`` (its depth
  in the graph), ``module`` (its module's name), ``case`` (the parameter values of a
  case of a parametrized task, ``{"cidr": "10.0.1.0/24"}``, or null), ``is_async``
  (an ``async def`` task, run on the event loop), ``warning`` (str or null: a
  coroutine that blocked the event loop), ``waited`` (seconds between becoming ready
  and starting, for a task a pool kept waiting; 0 otherwise) and ``waited_for``
  (that pool, or null).
- ``warnings``: task -> its warning, for every task that has one.
- ``pools``: pool name -> ``{"size", "rate", "waited", "longest", "total"}``: its
  size (null: no cap) and rate (``"10/s"`` or null), how many tasks waited for it,
  the longest wait and their sum in seconds; ``{}`` when no task is in a pool.
- ``graph``: ``{"nodes": [...], "edges": [[task, dependent], ...], "levels":
  [[...], ...], "roots": [...], "leaves": [...]}``.
- ``state_findings`` (list | null): with ``--check-state``, the state checker's findings, each
  ``{"kind", "key", "tasks", "locked", "static", "message"}``: ``kind`` is ``"undeclared
  dependency"`` (``tasks`` = [writer, reader]) or ``"write conflict"``; ``key`` as written in
  Python (``state['subnet_id']``, ``state['results']['create_subnet']``); ``locked``: both
  writes held ``_state_lock``; ``static``: seen in the task's source. Null without the option;
  on a cluster executor (which cannot take it), the write conflicts of tasks that may overlap,
  and null when there were none.
- ``order``: the start order, ``{"order": "declared"}``, ``{"order": "shuffle", "seed": N}``,
  ``{"order": "critical-path", ...}`` or ``{"order": "replay", "replay_of": RUN, "serial": bool}``.
- ``lower_bound``: ``{"lower_bound", "critical_path", "total_work", "workers"}`` (seconds): no
  schedule of the durations the tasks had could end sooner than ``lower_bound`` =
  max(critical path, total work / workers); compare it with ``duration``.
- ``executor`` (str): where the tasks ran, ``"local"``, ``"dask"`` or ``"dask://HOST:PORT"``.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from ..engine.graph import Graph
from ..engine.model import TaskRecord, TaskSpec, TaskStatus

__all__ = ["RunData", "json_report", "write_json_report", "junit_xml", "write_junit_xml"]

FORMAT_VERSION = 1


@dataclass
class RunData:
    """Everything a report needs about one finished run."""

    module: str
    path: str
    summary: dict
    records: list[TaskRecord]
    graph: Graph
    specs: list[TaskSpec]
    target: str | None = None
    argv: list[str] = field(default_factory=list)
    exit_code: int = 0
    state_sources: dict[str, str] = field(default_factory=dict)
    #: every task's module name, every case's parameter values, the modules (name, path)
    module_of: dict[str, str] = field(default_factory=dict)
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    modules: list[tuple[str, str]] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        if self.summary.get("interrupted"):
            return "interrupted"
        return "failed" if self.summary.get("failed") else "passed"


# ---------------------------------------------------------------------------- JSON


_SECRET_KEY = re.compile(r"password|passwd|token|secret|key|auth|credential", re.I)
_KEY_VALUE = re.compile(r"^(--[^=]+)=(.*)$", re.S)


def redact_argv(argv: list[str]) -> list[str]:
    """``argv`` with the values of secret-looking ``--key=value`` and ``--set key=value`` replaced."""
    out = []
    after_set = False
    for item in argv:
        item = str(item)
        if after_set:  # the KEY=VALUE of "--set KEY=VALUE"
            key, eq, _ = item.partition("=")
            if eq and _SECRET_KEY.search(key):
                item = f"{key}=***redacted***"
            after_set = False
        elif item == "--set":
            after_set = True
        elif item.startswith("--set="):
            key, eq, _ = item[len("--set="):].partition("=")
            if eq and _SECRET_KEY.search(key):
                item = f"--set={key}=***redacted***"
        else:
            m = _KEY_VALUE.match(item)
            if m and _SECRET_KEY.search(m.group(1)):
                item = f"{m.group(1)}=***redacted***"
        out.append(item)
    return out


def json_report(run: RunData) -> dict[str, Any]:
    """The JSON report as a dict (see the module docstring for the keys)."""
    from .. import __version__
    from .ordering import run_bound

    summary = run.summary
    specs = {s.name: s for s in run.specs}
    graph = run.graph
    tasks = []
    for rec in run.records:
        item = rec.to_dict()
        spec = specs.get(rec.name)
        item["after"] = list(spec.after) if spec else []
        item["always"] = bool(spec and spec.always)
        item["level"] = graph.level_of.get(rec.name)
        item["module"] = run.module_of.get(rec.name, run.module)
        values = run.cases.get(rec.name)
        item["case"] = None if values is None else {k: _json_value(v) for k, v in values.items()}
        tasks.append(item)
    counts = {
        "total": len(run.records),
        "passed": len(summary["passed"]),
        "failed": len(summary["failed"]),
        "skipped": len(summary["skipped"]),
        "cancelled": len(summary["cancelled"]),
    }
    return {
        "format_version": FORMAT_VERSION,
        "tool": "tdrun",
        "version": __version__,
        "module": run.module,
        "path": run.path,
        "modules": [{"name": name, "path": path} for name, path in run.modules]
        or [{"name": run.module, "path": run.path}],
        "target": run.target,
        "argv": redact_argv(run.argv),
        "outcome": run.outcome,
        "exit_code": run.exit_code,
        "run_id": summary["run_id"],
        "started_at": summary["started_at"],
        "finished_at": summary["finished_at"],
        "duration": summary["duration"],
        "workers": summary["workers"],
        "interrupted": bool(summary["interrupted"]),
        "counts": counts,
        "summary": summary["text"],
        "failure_counts": dict(summary.get("failure_counts") or {}),
        "teardown_not_run": list(summary.get("teardown_not_run", [])),
        "state_keys": dict(run.state_sources),
        "warnings": dict(summary.get("warnings") or {}),
        "tasks": tasks,
        "pools": dict(summary.get("pools") or {}),
        "graph": {
            "nodes": list(graph.nodes),
            "edges": [list(edge) for edge in graph.edges],
            "levels": [list(level) for level in graph.levels],
            "roots": list(graph.roots),
            "leaves": list(graph.leaves),
        },
        "state_findings": (None if summary.get("state_findings") is None
                           else [dict(f) for f in summary["state_findings"]]),
        # the start order (shuffle seed, critical path, replay) and max(critical path, work / workers)
        "order": dict(summary.get("order") or {"order": "declared"}),
        "lower_bound": run_bound(summary, run.records, graph),
        "executor": summary.get("executor", "local"),
    }


def _json_value(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return {"__not_json__": type(value).__name__}
    return value


def write_json_report(path: str | Path, run: RunData) -> None:
    """Write :func:`json_report` to ``path`` (parent folders are created)."""
    data = json_report(run)
    _write(path, json.dumps(data, indent=2, default=repr) + "\n")


# ---------------------------------------------------------------------------- JUnit XML

# XML 1.0 cannot carry these code points at all, not even as character references
_ILLEGAL_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _xml_text(text: str | None) -> str:
    """Strip terminal colour codes and make the rest legal XML (``\\x07`` stays visible)."""
    if not text:
        return ""
    text = _ANSI.sub("", text)
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _timestamp(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch or 0).strftime("%Y-%m-%dT%H:%M:%S")


def junit_xml(run: RunData) -> str:
    """One ``<testsuite>`` named after the module inside ``<testsuites>``, a ``<testcase>`` per task.

    Failed tasks carry ``<failure message type>`` with the traceback; skipped
    and cancelled ones ``<skipped message>`` with the reason; a teardown task a
    forced stop left undone says so in its message (and the suite's
    ``teardown_not_run`` property lists them); captured output goes to ``<system-out>``. A
    task a pool kept waiting has the properties ``tdrun_pool`` (the pool) and ``tdrun_waited``
    (seconds).
    """
    summary = run.summary
    left_behind = set(summary.get("teardown_not_run", []))
    findings = summary.get("state_findings")
    failed = len(summary["failed"]) + (1 if findings else 0)
    tests = len(run.records) + (0 if findings is None else 1)
    skipped = len(summary["skipped"]) + len(summary["cancelled"])
    duration = f"{summary['duration']:.3f}"
    root = ET.Element("testsuites", {
        "name": "tdrun", "tests": str(tests), "failures": str(failed),
        "errors": "0", "skipped": str(skipped), "time": duration,
    })
    suite = ET.SubElement(root, "testsuite", {
        "name": run.module, "tests": str(tests), "failures": str(failed),
        "errors": "0", "skipped": str(skipped), "time": duration,
        "timestamp": _timestamp(summary["started_at"]), "hostname": socket.gethostname(),
    })
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("path", run.path), ("target", run.target or ""), ("workers", summary["workers"]),
        ("run_id", summary["run_id"]), ("interrupted", str(bool(summary["interrupted"])).lower()),
        ("teardown_not_run", ",".join(summary.get("teardown_not_run", []))),
        # the start order, so a shuffled run's seed is in the CI artefact: {"order": "shuffle", "seed": N}
        ("order", json.dumps(summary.get("order") or {"order": "declared"}, sort_keys=True)),
    ):
        ET.SubElement(props, "property", {"name": name, "value": _xml_text(str(value))})
    for rec in run.records:
        # classname = the task's module (dotted, as JUnit readers group by package), name = the
        # task within it
        label = run.module_of.get(rec.name)
        name = rec.name
        if label is not None and name.startswith(label + "::"):
            name = name[len(label) + 2:]
        case = ET.SubElement(suite, "testcase", {
            "classname": _xml_text((label or run.module).replace("/", ".")), "name": _xml_text(name),
            "time": f"{rec.duration:.3f}",
        })
        if rec.waited_for:  # a pool kept it waiting: which, and how long (its last attempt)
            case_props = ET.SubElement(case, "properties")
            for key, value in (("tdrun_pool", rec.waited_for), ("tdrun_waited", f"{rec.waited:.3f}")):
                ET.SubElement(case_props, "property", {"name": key, "value": _xml_text(value)})
        if rec.status is TaskStatus.FAILED:
            error_type = rec.error_type or "Exception"
            message = f"{error_type}: {rec.error}" if rec.error else error_type
            failure = ET.SubElement(case, "failure", {"message": _xml_text(message), "type": _xml_text(error_type)})
            failure.text = _xml_text(rec.traceback or message)
        elif rec.status in (TaskStatus.SKIPPED, TaskStatus.CANCELLED):
            message = rec.reason or rec.status.value.lower()
            if rec.name in left_behind:
                message = f"teardown did not run ({message}) — resources it cleans up may remain"
            ET.SubElement(case, "skipped", {"message": _xml_text(message)})
        if rec.output:
            ET.SubElement(case, "system-out").text = _xml_text(rec.output)
        if rec.warning:
            ET.SubElement(case, "system-err").text = _xml_text(f"warning: {rec.warning}\n")
    if findings is not None:  # --check-state: one pseudo-case, failing when anything was found
        case = ET.SubElement(suite, "testcase", {"classname": "tdrun", "name": "state check", "time": "0.000"})
        if findings:
            count = f"{len(findings)} state finding{'s' if len(findings) != 1 else ''}"
            failure = ET.SubElement(case, "failure", {"message": count, "type": "StateFinding"})
            failure.text = _xml_text("\n".join(f"{f['kind']}: {f['message']}" for f in findings))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + body + "\n"


def write_junit_xml(path: str | Path, run: RunData) -> None:
    """Write :func:`junit_xml` to ``path`` (parent folders are created)."""
    _write(path, junit_xml(run))


def _write(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
