"""A recorded run as one self-contained HTML file: timeline, graph, failures, skips, metadata.

Everything is inline (styles, a few lines of script, SVG); the page loads
nothing from anywhere, so it can be attached to a ticket or archived by CI.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from html import escape
from pathlib import Path
from typing import Any, Mapping

from ..engine.errors import UsageError
from .svg import STATUS_COLORS, attempt_bars, critical_path, format_seconds, graph_svg, timeline_svg
from ..theme import bound_text, order_text

__all__ = ["render_report", "teardown_heading", "write_report"]

RUN_COLORS = {
    "passed": STATUS_COLORS["PASSED"],
    "failed": STATUS_COLORS["FAILED"],
    "interrupted": STATUS_COLORS["CANCELLED"],
    "running": STATUS_COLORS["RUNNING"],
}

_DOT = " \u00b7 "
_MORE = " \u2026"

_CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--bg:#f6f8fa;--card:#fff;--mono:ui-monospace,
SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,'Segoe UI',
Roboto,'Helvetica Neue',Arial,sans-serif}
header{background:#24292f;color:#fff;padding:20px 32px 16px}
header h1{margin:0 0 4px;font-size:20px;font-weight:600;display:flex;gap:12px;align-items:center;
flex-wrap:wrap}
header .target{font-family:var(--mono);font-size:15px;color:#d0d7de;word-break:break-all}
header .meta{color:#afb8c1;font-size:13px;display:flex;gap:18px;flex-wrap:wrap;margin-top:6px}
.badge{display:inline-block;border-radius:999px;padding:2px 12px;font-size:13px;font-weight:600;
color:#fff;text-transform:uppercase;letter-spacing:.04em}
.pill{display:inline-block;border-radius:4px;padding:0 7px;font-size:12px;font-weight:600;color:#fff}
.pill.SKIPPED,.pill.WAITING{color:#1f2328}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);
padding:8px 32px;display:flex;gap:18px;flex-wrap:wrap}
nav a{color:var(--fg);text-decoration:none;font-weight:500}nav a:hover{color:#0969da}
main{padding:16px 32px 48px;max-width:1600px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin:16px 0;
padding:16px 20px}
section h2{margin:0 0 12px;font-size:16px;display:flex;align-items:center;gap:10px}
.counts{display:flex;gap:10px;flex-wrap:wrap;margin-top:12px}
.count{background:#32383f;border-radius:6px;padding:6px 14px;min-width:92px}
.count b{display:block;font-size:20px;line-height:1.2}
.count span{font-size:12px;color:#afb8c1;text-transform:uppercase;letter-spacing:.04em}
.count.failed b{color:#ff8182}.count.passed b{color:#6fdd8b}.count.skipped b{color:#eac54f}
.scroll{overflow:auto;max-height:75vh;border:1px solid var(--line);border-radius:6px;background:#fff}
.scroll svg{display:block}
.tools{margin-left:auto;display:flex;gap:6px;font-weight:400}
button{font:inherit;font-size:12px;border:1px solid var(--line);background:#f6f8fa;border-radius:6px;
padding:2px 10px;cursor:pointer}button[aria-pressed=true]{background:#24292f;color:#fff}
.hint{color:var(--muted);font-size:12px;margin:6px 0 0}
.failure{border-left:4px solid #d64545;padding:4px 0 4px 14px;margin:14px 0}
.failure h3{margin:0;font-size:15px;font-family:var(--mono);word-break:break-all}
.failure .err{margin:4px 0;font-family:var(--mono);color:#b42318;white-space:pre-wrap;
word-break:break-word}
.failure .sub{color:var(--muted);font-size:12px}
pre{background:#0d1117;color:#e6edf3;border-radius:6px;padding:12px 14px;overflow:auto;
max-height:420px;font:12px/1.45 var(--mono);margin:6px 0;white-space:pre-wrap;word-break:break-word}
details>summary{cursor:pointer;color:#0969da;font-size:13px;margin-top:6px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:5px 10px;border-bottom:1px solid #eaeef2;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0;cursor:pointer;user-select:none;white-space:nowrap}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.name{font-family:var(--mono);word-break:break-all}td.num{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}
td.detail{color:var(--muted);max-width:520px;word-break:break-word}
input[type=search]{font:inherit;font-size:13px;padding:4px 8px;border:1px solid var(--line);
border-radius:6px;width:260px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}
dt{color:var(--muted)}dd{margin:0;font-family:var(--mono);word-break:break-all}
.empty{color:var(--muted);font-style:italic}
section.alarm{border:2px solid #d64545;background:#fff5f5}section.alarm h2{color:#b42318}
section.alarm p{margin:0}
footer{color:var(--muted);font-size:12px;padding:0 32px 24px}
"""

_JS = """
(function(){
  var MIN_PX=10;
  document.querySelectorAll('[data-zoom]').forEach(function(box){
    var svg=box.querySelector('svg'); if(!svg) return;
    var w=svg.getAttribute('width'), h=svg.getAttribute('height');
    var buttons=document.querySelectorAll('button[data-zoom-for="'+box.id+'"]');
    // fit width never shrinks the text below MIN_PX: past that the pane scrolls instead
    var text=svg.querySelector('text');
    var minScale=MIN_PX/((text&&parseFloat(getComputedStyle(text).fontSize))||12);
    function set(mode){
      if(mode==='fit'){svg.setAttribute('width','100%');svg.removeAttribute('height');
        svg.style.minWidth=Math.ceil(parseFloat(w)*minScale)+'px';}
      else{svg.setAttribute('width',w);svg.setAttribute('height',h);svg.style.minWidth='';}
      buttons.forEach(function(b){b.setAttribute('aria-pressed',b.dataset.mode===mode);});
    }
    buttons.forEach(function(b){b.addEventListener('click',function(){set(b.dataset.mode);});});
    // small enough to read when shrunk to the page: show it whole; else actual size, scrolled
    // to where the drawing starts
    var scale=box.clientWidth/parseFloat(w);
    if(scale<1&&scale>=minScale){set('fit');}
    else{
      set('actual');
      var first=svg.querySelector('.node,.bar');
      if(first){var r=first.getBoundingClientRect(),b=box.getBoundingClientRect();
        box.scrollTop=Math.max(0,r.top-b.top-box.clientHeight/3);}
    }
  });
  var table=document.getElementById('tasks-table');
  if(table){
    var body=table.tBodies[0];
    table.querySelectorAll('th').forEach(function(th,col){
      th.addEventListener('click',function(){
        var asc=!th.classList.contains('sorted-asc');
        table.querySelectorAll('th').forEach(function(o){o.classList.remove('sorted-asc','sorted-desc');});
        th.classList.add(asc?'sorted-asc':'sorted-desc');
        var rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){
          var x=a.cells[col].dataset.sort||a.cells[col].textContent,
              y=b.cells[col].dataset.sort||b.cells[col].textContent;
          var nx=parseFloat(x),ny=parseFloat(y);
          var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
          return asc?c:-c;
        });
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
    var filter=document.getElementById('task-filter');
    if(filter) filter.addEventListener('input',function(){
      var q=filter.value.toLowerCase();
      Array.prototype.forEach.call(body.rows,function(r){
        r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';
      });
    });
  }
})();
"""


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "\u2014"
    return _dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


def _pill(status: str) -> str:
    color = STATUS_COLORS.get(status, STATUS_COLORS["WAITING"])
    return f'<span class="pill {escape(status)}" style="background:{color}">{escape(status.lower())}</span>'


def _pre(text: str | None) -> str:
    return f"<pre>{escape(text)}</pre>" if text else ""


def _failure(task: Mapping[str, Any], t0: float | None) -> str:
    sub = [f"thread {escape(str(task.get('thread') or '-'))}",
           f"took {format_seconds(task.get('duration'))}"]
    if (task.get("attempts") or 0) > 1:
        sub.append(f"{task['attempts']} attempts")
    if t0 is not None and task.get("started_at") is not None:
        sub.append(f"started +{format_seconds(task['started_at'] - t0)}")
    if task.get("reason"):
        sub.append(escape(task["reason"]))
    parts = [
        f'<div class="failure" id="fail-{escape(task["name"])}"><h3>{escape(task["name"])}</h3>',
        f'<div class="err">{escape(str(task.get("error_type") or "error"))}: '
        f'{escape(str(task.get("error") or ""))}</div>',
        f'<div class="sub">{_DOT.join(sub)}</div>',
    ]
    if task.get("traceback"):
        tb = task["traceback"]
        parts.append(f"<details open><summary>traceback</summary>{_pre(tb)}</details>")
    if task.get("output"):
        parts.append(f"<details open><summary>captured output</summary>{_pre(task['output'])}</details>")
    parts.append(_earlier_attempts(task, t0))
    parts.append("</div>")
    return "".join(parts)


def _earlier_attempts(task: Mapping[str, Any], t0: float | None) -> str:
    """The failed attempts before a retried task's last, each with its error and traceback."""
    parts = []
    for a in task.get("earlier_attempts") or ():
        sub = [f"thread {escape(str(a.get('thread') or '-'))}", f"took {format_seconds(a.get('duration'))}"]
        if t0 is not None and a.get("started_at") is not None:
            sub.append(f"started +{format_seconds(a['started_at'] - t0)}")
        parts.append(
            f'<details class=attempt><summary>attempt {int(a["attempt"])} {_pill(str(a.get("status")))} '
            f'{escape(str(a.get("error_type") or "error"))}: {escape(str(a.get("error") or ""))}</summary>'
            f'<div class="sub">{_DOT.join(sub)}</div>{_pre(a.get("traceback"))}'
            + (f"<details><summary>captured output</summary>{_pre(a['output'])}</details>"
               if a.get("output") else "") + "</details>")
    return "".join(parts)


def _task_rows(tasks: list[Mapping[str, Any]], t0: float | None) -> str:
    rows = []
    for i, t in enumerate(tasks, 1):
        start = t.get("started_at")
        offset = (start - t0) if (start is not None and t0 is not None) else None
        detail = ""
        if t.get("error_type") or t.get("error"):
            detail = f"{t.get('error_type') or 'error'}: {t.get('error') or ''}"
        elif t.get("reason"):
            detail = t["reason"]
        output = ""
        if t.get("output") and t.get("status") != "FAILED":
            output = f"<details><summary>output</summary>{_pre(t['output'])}</details>"
        if t.get("status") != "FAILED":  # a failed task's earlier attempts are under Failures
            output += _earlier_attempts(t, t0)
        status = str(t.get("status"))
        rows.append(
            f"<tr><td class=num>{i}</td><td class=name>{escape(t['name'])}</td>"
            f'<td data-sort="{escape(status)}">{_pill(status)}</td>'
            f"<td>{escape(str(t.get('thread') or ''))}</td>"
            f'<td class=num data-sort="{offset if offset is not None else -1}">'
            f"{'+' + format_seconds(offset) if offset is not None else ''}</td>"
            f'<td class=num data-sort="{t.get("duration") or 0}">'
            f"{format_seconds(t.get('duration')) if start is not None else ''}</td>"
            f"<td class=num>{t.get('attempts') or 0}</td>"
            f"<td class=detail>{escape(detail[:500])}{output}</td></tr>"
        )
    return "".join(rows)


def teardown_heading(names: list[str]) -> str:
    """The words every front-end uses for teardown tasks a forced stop left behind."""
    return f"teardown did not run: {', '.join(names)} \u2014 resources they clean up may remain"


def render_report(run: Mapping[str, Any]) -> str:
    """The HTML page for one run (a ``HistoryStore.get_run`` dict)."""
    tasks = list(run.get("tasks") or [])
    graph = run.get("graph") or {}
    nodes = list(graph.get("nodes") or [])
    edges = [tuple(e) for e in graph.get("edges") or []]
    for t in tasks:
        if t["name"] not in nodes:
            nodes.append(t["name"])
    by_name = {t["name"]: t for t in tasks}
    statuses = {name: by_name[name]["status"] if name in by_name else "WAITING" for name in nodes}
    crit = critical_path(tasks, edges)
    starts = [t["started_at"] for t in tasks if t.get("started_at") is not None]
    t0 = min(starts) if starts else run.get("started_at")
    failed = [t for t in tasks if t.get("status") == "FAILED"]
    not_run = [t for t in tasks if t.get("status") in ("SKIPPED", "CANCELLED")]
    missing = [name for name in nodes if name not in by_name]
    status = str(run.get("status") or "unknown")
    module = str(run.get("module") or "")
    target = str(run.get("target") or module)
    counts = [("passed", run.get("passed")), ("failed", run.get("failed")),
              ("skipped", run.get("skipped")), ("cancelled", run.get("cancelled")),
              ("tasks", run.get("total"))]
    title = f"run {run.get('id')} \u00b7 {status} \u00b7 {target or 'thread-order'}"

    out = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        '<meta name=viewport content="width=device-width,initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        "<header><h1>",
        f"<span>thread-order run #{escape(str(run.get('id')))}</span>",
        f'<span class=badge style="background:{RUN_COLORS.get(status, "#8a8f98")}">{escape(status)}</span>',
        "</h1>",
        f"<div class=target>{escape(target) if target else '<em>no module</em>'}</div>",
        "<div class=meta>",
        f"<span>started {escape(_when(run.get('started_at')))}</span>",
        f"<span>took {escape(format_seconds(run.get('duration')))}</span>",
        f"<span>{escape(str(run.get('workers') or '?'))} workers</span>",
        f"<span>on {escape(str(run.get('host') or '?'))}</span>",
        "</div><div class=counts>",
        *(f'<div class="count {k}"><b>{v if v is not None else 0}</b><span>{k}</span></div>' for k, v in counts),
        "</div></header>",
        "<nav><a href=#timeline>Timeline</a><a href=#graph>Graph</a>",
        f"<a href=#failures>Failures ({len(failed)})</a>",
        f"<a href=#skipped>Skipped and cancelled ({len(not_run)})</a>",
        "<a href=#tasks>All tasks</a><a href=#details>Run details</a></nav><main>",
    ]
    left_behind = list(run.get("teardown_not_run") or [])
    if left_behind:
        out.append(
            "<section id=teardown-not-run class=alarm><h2>"
            f"{escape(teardown_heading(left_behind))}</h2><p>The run was stopped without "
            "waiting: these <code>always</code> tasks never started or were cut short.</p></section>"
        )
    findings = run.get("state_findings")
    if findings:  # recorded with --check-state
        out.append(
            f"<section id=state-check class=alarm><h2>State check: {len(findings)} finding"
            f"{'s' if len(findings) != 1 else ''}</h2><p>Tasks that touch the same state key "
            "without a declared order: the run's outcome depends on timing.</p><table><thead><tr>"
            "<th>finding</th><th>key</th><th>tasks</th><th>what to do</th></tr></thead><tbody>"
            + "".join(f"<tr><td>{escape(f['kind'])}</td><td class=name>{escape(f['key'])}</td>"
                      f"<td class=name>{escape(' / '.join(f['tasks']))}</td>"
                      f"<td class=detail>{escape(f['message'])}</td></tr>" for f in findings)
            + "</tbody></table></section>"
        )
    elif findings is not None:
        out.append("<section id=state-check><h2>State check</h2>"
                   "<p class=empty>No findings: no two unordered tasks touched the same state key.</p></section>")
    if status == "interrupted" and missing:
        out.append(
            '<section id=interrupted><h2>Interrupted</h2><p>The run stopped before these '
            f"{len(missing)} tasks were recorded; they are grey in the graph.</p>"
            f'<p class=hint>{escape(", ".join(missing[:200]))}{_MORE if len(missing) > 200 else ""}</p>'
            "</section>"
        )
    out += [
        "<section id=timeline><h2>Timeline<span class=tools>"
        '<button data-zoom-for="timeline-box" data-mode="fit" aria-pressed="false">fit width</button>'
        '<button data-zoom-for="timeline-box" data-mode="actual" aria-pressed="true">actual size</button>'
        "</span></h2>",
        f'<div class=scroll id="timeline-box" data-zoom>{timeline_svg(attempt_bars(tasks), critical=crit)}</div>',
        "<p class=hint>One lane per worker thread; hover a bar for details. "
        "Outlined bars are the critical path: the chain of dependencies that decided when the run ended."
        "</p></section>",
        "<section id=graph><h2>Graph<span class=tools>"
        '<button data-zoom-for="graph-box" data-mode="fit" aria-pressed="false">fit width</button>'
        '<button data-zoom-for="graph-box" data-mode="actual" aria-pressed="true">actual size</button>'
        "</span></h2>",
        f'<div class=scroll id="graph-box" data-zoom>{graph_svg(nodes, edges, statuses, critical=crit)}</div>',
        f"<p class=hint>{len(nodes)} tasks, {len(edges)} dependencies, laid out left to right by "
        "dependency depth. Hover a node for its full name.</p></section>",
        f"<section id=failures><h2>Failures {_pill('FAILED') if failed else ''}</h2>",
    ]
    if failed:
        out.extend(_failure(t, t0) for t in failed)
    else:
        out.append("<p class=empty>No task failed.</p>")
    out.append("</section><section id=skipped><h2>Skipped and cancelled</h2>")
    if not_run:
        out.append("<table><thead><tr><th>task</th><th>status</th><th>reason</th></tr></thead><tbody>")
        out.extend(f"<tr><td class=name>{escape(t['name'])}</td><td>{_pill(str(t['status']))}</td>"
                   f"<td class=detail>{escape(str(t.get('reason') or ''))}</td></tr>" for t in not_run)
        out.append("</tbody></table>")
    else:
        out.append("<p class=empty>Every task ran.</p>")
    warned = [t for t in tasks if t.get("warning")]
    if warned:  # async tasks whose coroutine blocked the event loop
        out.append("</section><section id=warnings><h2>Warnings</h2><table><thead><tr><th>task</th>"
                   "<th>warning</th></tr></thead><tbody>")
        out.extend(f"<tr><td class=name>{escape(t['name'])}</td>"
                   f"<td class=detail>{escape(str(t['warning']))}</td></tr>" for t in warned)
        out.append("</tbody></table>")
    out += [
        "</section><section id=tasks><h2>All tasks, in start order"
        '<span class=tools><input type=search id=task-filter placeholder="filter tasks" '
        'aria-label="filter tasks"></span></h2>',
        '<div class=scroll><table id=tasks-table><thead><tr><th>#</th><th>task</th><th>status</th>'
        "<th>thread</th><th>start</th><th>duration</th><th>attempts</th><th>error or reason</th>"
        f"</tr></thead><tbody>{_task_rows(tasks, t0)}</tbody></table></div></section>",
        "<section id=details><h2>Run details</h2><dl>",
    ]
    details = [
        ("run", run.get("id")), ("run uuid", run.get("run_uuid")), ("module", module or None),
        ("target", run.get("target")), ("status", status),
        ("started", _when(run.get("started_at"))), ("finished", _when(run.get("finished_at"))),
        ("duration", format_seconds(run.get("duration"))), ("workers", run.get("workers")),
        ("host", run.get("host")), ("command line", " ".join(run.get("argv") or []) or None),
        ("tags", ", ".join(run.get("tags") or []) or None),
        ("start order", order_text(run.get("ordering")) or None),
        ("replayed by", ", ".join(f"run {i}" for i in run.get("replays") or []) or None),
        ("makespan and lower bound", bound_text(run.get("duration"), run.get("lower_bound")) or None),
    ]
    out.extend(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in details if v is not None)
    out.append("</dl>")
    state = run.get("state") or {}
    out.append("<h2 style=\"margin-top:16px\">Initial state</h2>")
    out.append(_pre(json.dumps(state, indent=2, sort_keys=True, default=str)) if state
               else "<p class=empty>No initial state.</p>")
    out.append("<p class=hint>Values under keys that look like secrets are stored redacted; "
               "values JSON cannot hold are shown by type only.</p>")
    out += [
        "</section></main>",
        f"<footer>Generated {escape(_dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S'))} by thread-order. "
        "This file is self-contained.</footer>",
        f"<script>{_JS}</script></body></html>",
    ]
    return "".join(out)


def write_report(path: str | os.PathLike, run: Mapping[str, Any]) -> None:
    """Write :func:`render_report` to ``path`` (UTF-8).

    Raises:
        UsageError: the file cannot be written.
    """
    target = Path(path)
    text = render_report(run)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write report {path}: {exc.strerror or exc}") from None
