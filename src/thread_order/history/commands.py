"""``tdrun history | show | report | compare``: the run history from the command line.

Every command only reads: the history file is opened read-only and never
created, migrated or modified. Bad input (an unknown run, a missing, corrupt
or newer file) is one line on stderr and exit code 4.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from ..engine.errors import HistoryError, UsageError
from ..theme import STATUS_COLORS, bound_text, format_seconds, order_text
from .db import RUN_STATUSES
from .recorder import HistoryRecorder
from .store import DEFAULT_HISTORY, HistoryStore, compare_runs, differs_text, resolve_history_path

__all__ = ["main", "COMMANDS", "HistoryObserver", "history_observer"]

EXIT_OK, EXIT_USAGE = 0, 4

RUN_STYLES = {"passed": STATUS_COLORS["PASSED"], "failed": STATUS_COLORS["FAILED"],
              "interrupted": STATUS_COLORS["CANCELLED"], "running": STATUS_COLORS["RUNNING"]}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 4) instead of printing usage and exiting 2."""

    def error(self, message: str):  # noqa: D401 - argparse's name
        raise UsageError(message)


def _limit(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of runs >= 1, got {text!r}")
    return int(text)


def _parser(name: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--history", metavar="PATH",
                        help=f"the history file (default: {DEFAULT_HISTORY})")
    if name == "history":
        p = _Parser(prog="tdrun history", parents=[common], allow_abbrev=False,
                    description="Recorded runs, newest first.")
        p.add_argument("--limit", type=_limit, default=20, metavar="N", help="show N runs (default: 20)")
        p.add_argument("--module", metavar="PATH", help="only runs of this module")
        p.add_argument("--status", choices=RUN_STATUSES, help="only runs with this outcome")
        p.add_argument("--json", action="store_true", help="print the runs as JSON")
    elif name == "show":
        p = _Parser(prog="tdrun show", parents=[common], allow_abbrev=False,
                    description="One run's tasks in start order, with errors and skip reasons.")
        p.add_argument("run", metavar="RUN", help="a run id, or 'last'")
        p.add_argument("--json", action="store_true",
                       help="print the whole record, captured output and tracebacks included")
    elif name == "report":
        p = _Parser(prog="tdrun report", parents=[common], allow_abbrev=False,
                    description="Write one run as a self-contained HTML page.")
        p.add_argument("run", metavar="RUN", help="a run id, or 'last'")
        p.add_argument("-o", "--output", metavar="FILE.html",
                       help="where to write it (default: tdrun-report-<id>.html in the current folder)")
    else:
        p = _Parser(prog="tdrun compare", parents=[common], allow_abbrev=False,
                    description="What changed between two runs: statuses, tasks, durations.")
        p.add_argument("run_a", metavar="RUN_A", help="the earlier run: an id, or 'last'")
        p.add_argument("run_b", metavar="RUN_B", nargs="?",
                       help="the later run: an id, or 'last' (omitted: RUN_A is a replay, compared "
                            "with the run it replays)")
        p.add_argument("--top", type=_limit, default=10, metavar="N",
                       help="show the N largest duration changes (default: 10)")
        p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    return p


# ---------------------------------------------------------------------------- output


class _Out:
    """Tables through rich on a terminal; plain aligned text otherwise (pipes, files, CI)."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        try:
            self.tty = file.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.console = None
        if self.tty:
            from rich.console import Console

            self.console = Console(file=file, highlight=False, soft_wrap=False,
                                   no_color=bool(os.environ.get("NO_COLOR")))

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text, style=style or ""))
        else:
            self.file.write(text + "\n")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]],
              styles: Sequence[str | None] | None = None, right: Sequence[int] = ()) -> None:
        """``styles[i]`` colours row i (its status column is the one named 'status')."""
        status_col = list(headers).index("status") if "status" in headers else None
        if self.console is not None:
            from rich.table import Table
            from rich.text import Text

            table = Table(box=None, header_style="bold", pad_edge=False, show_edge=False)
            for i, header in enumerate(headers):
                table.add_column(header, justify="right" if i in right else "left",
                                 overflow="fold")
            for r, row in enumerate(rows):
                cells = [Text(str(c)) for c in row]
                if status_col is not None and styles and styles[r]:
                    cells[status_col].stylize(f"bold {styles[r]}")
                table.add_row(*cells)
            self.console.print(table)
            return
        widths = [len(h) for h in headers]
        for row in rows:
            for i, cell in enumerate(row[:-1]):  # the last column is not padded
                widths[i] = max(widths[i], len(str(cell)))

        def fmt(row):
            cells = []
            for i, cell in enumerate(row):
                text = str(cell)
                if i == len(row) - 1:
                    cells.append(text.rjust(widths[i]) if i in right else text)
                else:
                    cells.append(text.rjust(widths[i]) if i in right else text.ljust(widths[i]))
            return "  ".join(cells).rstrip()

        self.file.write(fmt(headers) + "\n")
        for row in rows:
            self.file.write(fmt(row) + "\n")


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    try:
        return _dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):  # a time no calendar holds: a damaged file
        return "?"


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_seconds(seconds)


def _one_line(text: str | None, limit: int = 160) -> str:
    if not text:
        return ""
    first = " ".join(str(text).split())
    return first if len(first) <= limit else first[: limit - 1] + "\u2026"


def _names(names: Sequence[str], limit: int = 30) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" \u2026 and {more} more" if more > 0 else "")


def _module(run: dict[str, Any]) -> str:
    """What ran: the target as typed (``mod.py`` or ``mod.py::task``), else the module."""
    return str(run.get("target") or run.get("module") or "-")


# ---------------------------------------------------------------------------- commands


def _cmd_history(args, store: HistoryStore, out: _Out) -> int:
    runs = store.list_runs(limit=args.limit, module=args.module, status=args.status)
    if args.json:
        out.file.write(json.dumps(runs, indent=2) + "\n")
        return EXIT_OK
    if not runs:
        out.line(f"no runs recorded in {store.path}" + (" match" if args.module or args.status else ""))
        return EXIT_OK
    rows = [[r["id"], _when(r["started_at"]), _module(r), r["status"], r["passed"], r["failed"],
             r["skipped"], r["cancelled"], _duration(r["duration"]), differs_text(r["differs"])] for r in runs]
    out.table(["id", "when", "module", "status", "passed", "failed", "skipped", "cancelled", "duration",
               "differs"], rows, [RUN_STYLES.get(r["status"]) for r in runs], right=(0, 4, 5, 6, 7, 8))
    return EXIT_OK


def _cmd_show(args, store: HistoryStore, out: _Out) -> int:
    run = store.get_run(args.run)
    if args.json:
        out.file.write(json.dumps(run, indent=2) + "\n")
        return EXIT_OK
    counts = (f"{run['passed']} passed, {run['failed']} failed, {run['skipped']} skipped"
              + (f", {run['cancelled']} cancelled" if run["cancelled"] else "")
              + f" of {run['total']}")
    out.line(f"run {run['id']}  {_module(run)}", "bold")
    out.line(f"  status    {run['status']}", RUN_STYLES.get(run["status"]))
    out.line(f"  started   {_when(run['started_at'])}   took {_duration(run['duration'])}   "
             f"{run['workers'] or '?'} workers on {run['host'] or '?'}")
    out.line(f"  tasks     {counts}")
    if run["argv"]:
        out.line(f"  command   {' '.join(run['argv'])}")
    if run["tags"]:
        out.line(f"  tags      {', '.join(run['tags'])}")
    _order_lines(run, out)
    for name, pool in run.get("pools", {}).items():
        limits = ", ".join(x for x in (pool.get("size") and f"size {pool['size']}",
                                       pool.get("rate") and f"rate {pool['rate']}") if x)
        waited = (f"{pool.get('waited', 0)} waited, longest {_duration(pool.get('longest'))}, "
                  f"{_duration(pool.get('total'))} in all") if pool.get("waited") else "no task waited"
        out.line(f"  pool      {name} ({limits}): {waited}")
    if run["teardown_not_run"]:
        out.line(f"  teardown did not run: {', '.join(run['teardown_not_run'])} "
                 "\u2014 resources they clean up may remain", f"bold {STATUS_COLORS['FAILED']}")
    findings = run.get("state_findings")
    if findings is not None:  # recorded with --check-state, or a cluster's write conflicts
        how = " (--check-state)" if "--check-state" in (run["argv"] or ()) else ""
        if not findings:
            out.line("  state     checked: no findings", STATUS_COLORS["PASSED"])
        else:
            out.line(f"  state     {len(findings)} finding{'s' if len(findings) != 1 else ''}{how}",
                     f"bold {STATUS_COLORS['FAILED']}")
            for f in findings:
                out.line(f"    {f['kind']}: {f['message']}", STATUS_COLORS["FAILED"])
    out.line()
    tasks = run["tasks"]
    starts = [t["started_at"] for t in tasks if t["started_at"] is not None]
    starts += [a["started_at"] for t in tasks for a in t.get("earlier_attempts") or ()
               if a["started_at"] is not None]
    t0 = min(starts) if starts else None
    rows, styles = [], []
    waits = any(t.get("waited_for") for t in tasks)  # a column only for runs where a pool held one
    for i, t in enumerate(tasks, 1):
        if t["error_type"] or t["error"]:
            detail = f"{t['error_type'] or 'error'}: {t['error'] or ''}"
        else:
            detail = t["reason"] or ""
        ran = t["started_at"] is not None
        rows.append([i, t["name"], t["status"], t["thread"] or "-",
                     f"+{format_seconds(t['started_at'] - t0)}" if ran and t0 is not None else "-",
                     _duration(t["duration"]) if ran else "-", t["attempts"], _one_line(detail)])
        if waits:
            rows[-1].insert(5, f"{_duration(t['waited'])} {t['waited_for']}" if t.get("waited_for") else "-")
        styles.append(STATUS_COLORS.get(t["status"]))
        for a in t.get("earlier_attempts") or ():  # a retried task: each attempt before its last
            when = a["started_at"]
            rows.append(["", f"  attempt {a['attempt']}", a["status"], a["thread"] or "-",
                         f"+{format_seconds(when - t0)}" if when is not None and t0 is not None else "-",
                         _duration(a["duration"]), "",
                         _one_line(f"{a['error_type'] or 'error'}: {a['error'] or ''}")])
            styles.append(STATUS_COLORS.get(a["status"]))
    if rows:
        headers = ["#", "task", "status", "thread", "start", "duration", "attempts", "error or reason"]
        if waits:
            headers.insert(5, "waited for pool")
        out.table(headers, rows, styles, right=(0, 4, 5, 6, 7) if waits else (0, 4, 5, 6))
    async_tasks = [t["name"] for t in tasks if t.get("is_async")]
    if async_tasks:  # their thread is the run's event loop; a skipped one says so only here
        out.line()
        out.line(f"async tasks ({len(async_tasks)}): {_names(async_tasks)}")
    warned = [t for t in tasks if t.get("warning")]
    for t in warned:
        out.line(f"warning: {t['name']}: {t['warning']}", STATUS_COLORS["SKIPPED"])
    recorded = {t["name"] for t in tasks}
    missing = [n for n in run["graph"]["nodes"] if n not in recorded]
    if missing:
        out.line()
        out.line(f"not recorded ({len(missing)}): {_names(missing)}", STATUS_COLORS["CANCELLED"])
    failed = [t for t in tasks if t["status"] == "FAILED" and t["traceback"]]
    if failed:
        out.line()
        out.line(f"tracebacks and output: tdrun show {run['id']} --json, "
                 f"or tdrun report {run['id']} -o run-{run['id']}.html")
    return EXIT_OK


def _order_lines(run: dict[str, Any], out: _Out) -> None:
    """tdrun show: the start order (seed, replay links) and the makespan beside its lower bound."""
    ordering = run.get("ordering") or {}
    text = order_text(ordering)
    if ordering.get("order") == "shuffle":
        text += f" (repeat: --shuffle={ordering.get('seed')})"
    if text:
        out.line(f"  order     {text}")
    if run.get("replays"):
        out.line(f"  replayed  by run {', '.join(map(str, run['replays']))}")
    bound = bound_text(run["duration"], run.get("lower_bound"))
    if bound:
        out.line(f"  bound     {bound}")


def _cmd_report(args, store: HistoryStore, out: _Out) -> int:
    from ..report import write_report

    run = store.get_run(args.run)
    output = Path(args.output if args.output else f"tdrun-report-{run['id']}.html")
    if output.is_dir():
        raise UsageError(f"-o {args.output}: is a directory, expected a file path")
    write_report(output, run)
    out.line(f"report of run {run['id']} written to {output}")
    return EXIT_OK


def _cmd_compare(args, store: HistoryStore, out: _Out) -> int:
    if args.run_b is None:
        b = store.get_run(args.run_a)
        if b["replay_of"] is None:
            raise UsageError(f"compare: run {b['id']} is not a replay: give two runs (RUN_A RUN_B)")
        a = store.get_run(b["replay_of"])
    else:
        a, b = store.get_run(args.run_a), store.get_run(args.run_b)
    diff = compare_runs(a, b, top=args.top)
    if args.json:
        out.file.write(json.dumps(diff, indent=2) + "\n")
        return EXIT_OK
    if not diff["same_module"]:
        sys.stderr.write(f"tdrun: note: run {a['id']} is of {_module(a)} and run {b['id']} of "
                         f"{_module(b)}; comparing tasks by name\n")
    for label, run in (("A", a), ("B", b)):
        out.line(f"{label}: run {run['id']}  {_when(run['started_at'])}  {run['status']}  "
                 f"{run['passed']} passed, {run['failed']} failed, {run['skipped']} skipped"
                 + (f", {run['cancelled']} cancelled" if run["cancelled"] else "") + "  "
                 f"in {_duration(run['duration'])}  ({_module(run)})"
                 + (f"  {order_text(run.get('ordering'))}" if order_text(run.get("ordering")) else ""))
    out.line()
    if diff["start_order"] is not None:
        _side_by_side(diff["start_order"], args.top, out)
    changes = diff["status_changes"]
    if changes:
        out.line(f"status changed ({len(changes)}):", "bold")
        out.table(["task", "A", "B"],
                  [[c["name"], c["a"] or "not recorded", c["b"] or "not recorded"] for c in changes])
    else:
        out.line("no task changed status")
    for key, label in (("added", "tasks only in B"), ("removed", "tasks only in A")):
        if diff[key]:
            out.line()
            out.line(f"{label} ({len(diff[key])}): {_names(diff[key])}")
    durations = [d for d in diff["duration_changes"] if d["delta"]]
    if durations:
        out.line()
        out.line(f"largest duration changes (top {len(durations)}):", "bold")
        rows = []
        for d in durations:
            sign = "+" if d["delta"] >= 0 else "-"
            ratio = f"{d['ratio']:.2f}x" if d["ratio"] is not None else "-"
            rows.append([d["name"], format_seconds(d["a"]), format_seconds(d["b"]),
                         f"{sign}{format_seconds(abs(d['delta']))}", ratio])
        out.table(["task", "A", "B", "change", "ratio"], rows, right=(1, 2, 3, 4))
    return EXIT_OK


def _side_by_side(rows: list[dict[str, Any]], top: int, out: _Out) -> None:
    """A replay beside its recording: the start orders, where they differ first."""
    differ = [r for r in rows if r["a"] != r["b"]]
    out.line(f"start order (a replay beside its recording): "
             + (f"{len(differ)} of {len(rows)} positions differ" if differ else f"the same {len(rows)} starts"),
             "bold")
    shown = rows[: max(top, 1) * 2]
    out.table(["#", "A", "B", ""], [[r["position"], r["a"] or "-", r["b"] or "-",
                                    "" if r["a"] == r["b"] else "differs"] for r in shown], right=(0,))
    if len(rows) > len(shown):
        out.line(f"... {len(rows) - len(shown)} more (--top N shows 2N, --json all)")
    out.line()


# ---------------------------------------------------------------------------- a tdrun run


class HistoryObserver:
    """tdrun's run observer: records the run and writes ``--html-report``.

    With history off but a report asked for, the run is recorded into a
    throwaway file, so the report is drawn from exactly what a recorded run
    holds. Problems after the run become ``notes`` (printed with the summary)
    rather than errors: the run's own outcome and exit code stand.
    """

    def __init__(self, path: Path | None, html_report: str | None) -> None:
        self.path = path
        self.html_report = html_report
        self.notes: list[str] = []
        self.run_id: int | None = None
        self._recorder: HistoryRecorder | None = None
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._file: Path | None = None

    def attach(self, scheduler: Any, run_info: dict[str, Any]) -> None:
        info = dict(run_info)
        target = str(info.get("target") or "")
        if target:  # the module's path, as the web UI records it, not just its name
            from ..engine.collect import split_target

            info["module"] = split_target(target)[0]
        if self.path is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="tdrun-report-")
            self._file = Path(self._scratch.name) / "run.db"
        else:
            self._file = self.path
        recorder = HistoryRecorder(self._file)
        try:
            recorder.attach(scheduler, info)
        except HistoryError as exc:
            self._cleanup()
            raise UsageError(f"{exc} (--no-history runs without recording)") from None
        self._recorder = recorder
        self.run_id = recorder.run_id

    def finish(self) -> None:
        if self._recorder is None:
            return
        recorder, self._recorder = self._recorder, None
        try:
            run_id = recorder.finish()
            if run_id is None:  # the run never started
                return
            if self._scratch is None:
                hint = "" if self.path == DEFAULT_HISTORY else f" --history {self.path}"
                self.notes.append(f"run {run_id} recorded in {self.path} (tdrun show {run_id}{hint})")
            if self.html_report:
                from ..report import write_report

                with HistoryStore(self._file) as store:
                    write_report(self.html_report, store.get_run(run_id))
                self.notes.append(f"html report written to {self.html_report}")
        except (HistoryError, UsageError) as exc:
            self.notes.append(f"warning: {exc}")
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None


def history_observer(history: str | None, no_history: bool, html_report: str | None) -> HistoryObserver | None:
    """The observer for tdrun's ``--history``/``--no-history``/``--html-report`` (None: nothing to do).

    Raises:
        UsageError: the folder of ``--html-report`` does not exist.
    """
    path = resolve_history_path(history, no_history)
    if html_report:
        folder = Path(html_report).expanduser().parent
        if not folder.is_dir():
            raise UsageError(f"--html-report {html_report}: folder {folder} does not exist")
    if path is None and not html_report:
        return None
    return HistoryObserver(path, html_report)


COMMANDS: dict[str, Callable[[argparse.Namespace, HistoryStore, _Out], int]] = {
    "history": _cmd_history,
    "show": _cmd_show,
    "report": _cmd_report,
    "compare": _cmd_compare,
}


def main(argv: Sequence[str]) -> int:
    """Run ``tdrun NAME ...`` where ``argv[0]`` is NAME; returns the exit code."""
    argv = [str(a) for a in argv]
    err = sys.stderr
    if not argv or argv[0] not in COMMANDS:
        got = repr(argv[0]) if argv else "nothing"
        err.write(f"tdrun: error: expected one of {', '.join(COMMANDS)}, got {got}\n")
        return EXIT_USAGE
    name = argv[0]
    try:
        try:
            args = _parser(name).parse_args(argv[1:])
        except SystemExit as exc:  # --help printed its text
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        path = Path(args.history) if args.history else DEFAULT_HISTORY
        with HistoryStore(path, readonly=True) as store:
            return COMMANDS[name](args, store, _Out(sys.stdout))
    except (HistoryError, UsageError) as exc:
        err.write(f"tdrun: error: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # `tdrun history | head`: the reader has all it wanted
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter exit quiet
        except OSError:
            pass
        return EXIT_OK
