"""tdrun's line output: one line per finished task, live log lines, and the end-of-run report."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import textwrap
import threading
from typing import Any, Callable, Iterable, TextIO

from rich.console import Console
from rich.rule import Rule
from rich.style import Style
from rich.text import Text

from ..engine.events import Event, EventKind
from ..engine.model import TaskRecord, TaskStatus
from ..theme import STATUS_COLORS, format_seconds

__all__ = [
    "COLORS", "make_console", "PlainReporter", "LineLogHandler", "log_text", "print_end_of_run",
    "teardown_heading", "TaskLogFormat", "display_mode",
]

COLORS = STATUS_COLORS
LEVEL_STYLES = {"DEBUG": "dim", "INFO": "", "WARNING": COLORS["SKIPPED"], "ERROR": COLORS["FAILED"],
                "CRITICAL": f"bold {COLORS['FAILED']}"}
#: at most this many skipped (and cancelled) tasks are listed at the end of a run
LIST_LIMIT = 100
#: width of a plain task line when the output is not a terminal
PLAIN_WIDTH = 80


class TaskLogFormat(logging.Formatter):
    """``12:00:01 INFO    [thread_2 create_subnet] message``: the task is named beside its thread.

    The task is found on the logging thread's own stack, at format time (a
    handler formats on the thread that logged): the outermost frame running a
    registered task function. Reading the stack rather than the run's events
    is what makes it right: the dispatcher may not yet have announced the task
    a worker already runs. A function registered under several names (one
    factory's closures) names none; records outside tasks show the thread alone.
    """

    def __init__(self, specs: Iterable[Any] = ()) -> None:
        super().__init__("%(asctime)s %(levelname)-7s [%(threadName)s%(task_label)s] %(message)s", "%H:%M:%S")
        codes: dict[Any, str | None] = {}
        for spec in specs:
            code = getattr(spec.fn, "__code__", None)
            if code is not None:
                codes[code] = spec.name if codes.get(code, spec.name) == spec.name else None
        self._codes = codes

    def task_of_caller(self) -> str | None:
        found = None
        codes = self._codes
        frame = sys._getframe(1)
        while frame is not None:
            code = frame.f_code
            if code in codes:
                found = codes[code]
            frame = frame.f_back
        return found

    def format(self, record: logging.LogRecord) -> str:
        task = self.task_of_caller() if self._codes else None
        record.task_label = f" {task}" if task else ""
        return super().format(record)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits with status 1 here; tdrun's caller decides the exit code instead
        self.quiet = True
        raise BrokenPipeError("the output stream was closed")


def make_console(file: TextIO, *, color: bool = True, force_terminal: bool | None = None,
                 width: int | None = None) -> Console:
    """A rich console on ``file``; ``color=False`` (``--no-color``) and ``NO_COLOR`` turn colour off."""
    no_color = not color or bool(os.environ.get("NO_COLOR"))
    return _Console(file=file, force_terminal=force_terminal, no_color=no_color, highlight=False,
                   width=width, soft_wrap=False)


def _ansi(console: Console, text: str, style: str) -> str:
    """``text`` wrapped in the escape codes ``console`` would use for ``style`` (none without colour)."""
    if not style or console.no_color or console.color_system is None:
        return text
    with console.capture() as cap:
        console.print(Text(text, style=style), end="")
    return cap.get()


def display_mode(args: Any, out: TextIO) -> str:
    """What tdrun draws: "live", "progress" or "plain" (options first, then whether ``out`` is a terminal)."""
    if args.plain:
        return "plain"
    if args.viewer:
        return "live"
    if args.progress:
        return "progress"
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and not os.environ.get("CI") and os.environ.get("TERM") != "dumb":
        return "live"
    return "plain"


def lane_width(lanes: int) -> int:
    return len(f"thread_{max(lanes - 1, 0)}")


class PlainReporter:
    """Prints ``[thread_3] create_subnet_a ........ PASSED [ 44%]`` as each task finishes.

    Subscribes to the scheduler's event stream; lines are written straight to
    the output stream, so the cost per task is one formatted write.
    """

    def __init__(self, console: Console, total: int, lanes: int, *, err: Callable[[str], Any] | None = None) -> None:
        self.console = console
        self.stream = console.file
        self.total = max(total, 1)
        self.lane_width = lane_width(lanes)
        self.width = console.width if console.is_terminal else PLAIN_WIDTH
        self.err = err
        self._styled = {s.value: _ansi(console, s.value, COLORS[s.value]) for s in TaskStatus}
        self._styled["RETRY"] = _ansi(console, "RETRY", COLORS["SKIPPED"])
        self._undo: list[Callable[[], None]] = []
        self._broken = False

    def attach(self, scheduler, run_info: dict | None = None) -> None:
        self._undo.append(scheduler.subscribe(self._on_finished, EventKind.TASK_FINISHED))
        self._undo.append(scheduler.subscribe(self._on_retrying, EventKind.TASK_RETRYING))
        self._undo.append(scheduler.subscribe(self._on_interrupted, EventKind.RUN_INTERRUPTED))
        self._undo.append(scheduler.subscribe(self._on_started, EventKind.RUN_STARTED))

    def _on_started(self, event: Event) -> None:
        lanes = (event.data or {}).get("lanes")
        if lanes:  # named by an executor (a Dask cluster's worker-address/thread_N)
            self.lane_width = max(map(len, lanes))

    def finish(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()
        self._flush()

    def _flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def _write(self, text: str) -> None:
        if self._broken:
            return
        try:
            self.stream.write(text)
        except (OSError, ValueError):  # closed pipe (tdrun | head): keep running, stop printing
            self._broken = True

    def line(self, name: str, thread: str | None, status: str, count: int) -> str:
        lane = f"[{thread}]".ljust(self.lane_width + 2) if thread else " " * (self.lane_width + 2)
        pct = f" [{int(count * 100 / self.total):3d}%]"
        base = f"{lane} {name} "
        dots = "." * max(3, self.width - len(base) - len(status) - len(pct) - 1)
        return f"{base}{dots} {self._styled.get(status, status)}{pct}\n"

    def _on_finished(self, event: Event) -> None:
        rec = event.record
        self._write(self.line(rec.name, rec.thread, rec.status.value, event.count))

    def _on_retrying(self, event: Event) -> None:
        rec = event.record
        delay = (event.data or {}).get("delay", 0)
        note = f" (attempt {event.attempt} failed: {rec.error_type}; retrying"
        note += f" in {delay:g}s)" if delay else ")"
        line = self.line(rec.name, rec.thread, "RETRY", 0)
        self._write(line[: line.rindex(" [")] + note + "\n")

    def _on_interrupted(self, event: Event) -> None:
        self._flush()
        if self.err is not None:
            self.err(interrupt_message(bool((event.data or {}).get("force"))))


def teardown_heading(names) -> str:
    """The shared heading for the ``always`` tasks a forced stop left undone."""
    return f"teardown did not run: {', '.join(names)} — resources they clean up may remain"


def interrupt_message(force: bool) -> str:
    if force:
        return "interrupted again: stopped waiting for running tasks"
    return ("interrupted: running tasks may finish, teardown tasks still run "
            "(Ctrl-C again stops waiting)")


def log_text(line: str, levelname: str, highlights: Iterable[tuple[re.Pattern, str]] = ()) -> Text:
    """A formatted log line with its level coloured and the module's highlights applied."""
    text = Text(line)
    style = LEVEL_STYLES.get(levelname, "")
    if style:
        start = line.find(levelname)
        if start >= 0:
            text.stylize(style, start, start + len(levelname))
    for pattern, color in highlights:
        text.highlight_regex(pattern, style=highlight_style(color))
    return text


@functools.lru_cache(maxsize=256)
def highlight_style(color: str) -> Style | str:
    """A highlight colour as rich draws it: ANSI escapes (what colorama's ``Fore.RED +
    Style.BRIGHT`` gives, as thread-order 1.x modules return them) become the style they
    set; anything else is a rich style already (``"bold red"``)."""
    if "\x1b" not in color:
        return color
    spans = Text.from_ansi(color + " ").spans
    return Style.combine(span.style if isinstance(span.style, Style) else Style.parse(span.style)
                         for span in spans) if spans else ""


class LineLogHandler(logging.Handler):
    """Prints log records as lines while tasks run (``--log``), through the console's lock."""

    def __init__(self, console: Console, highlights: Iterable[tuple[re.Pattern, str]] = (),
                 specs: Iterable[Any] = ()) -> None:
        super().__init__(logging.NOTSET)
        self.console = console
        self.highlights = list(highlights)
        self.setFormatter(TaskLogFormat(specs))
        self._plain = console.no_color or console.color_system is None
        # one line at a time: worker threads log concurrently
        self._lock_out = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            if self._plain:
                with self._lock_out:
                    self.console.file.write(line + "\n")
            else:
                self.console.print(log_text(line, record.levelname, self.highlights), soft_wrap=True)
        except Exception:
            self.handleError(record)


# ---------------------------------------------------------------------------- end of run


def _section(console: Console, title: str, style: str = "", char: str = "=") -> None:
    console.print(Rule(Text(title, style=style) if title else "", characters=char, style=style or "dim"))


def summary_style(summary: dict) -> str:
    if summary.get("failed") or summary.get("state_findings"):
        return f"bold {COLORS['FAILED']}"
    if summary.get("interrupted") or summary.get("cancelled"):
        return f"bold {COLORS['SKIPPED']}"
    return f"bold {COLORS['PASSED']}"


def print_end_of_run(console: Console, summary: dict, records: Iterable[TaskRecord], *,
                     show_output: bool = True, notes: Iterable[str] = ()) -> None:
    """The failures section (error, traceback, captured output), then skips with reasons, then the tally."""
    by_name = {rec.name: rec for rec in records}
    failed = [by_name[n] for n in summary.get("failed", ()) if n in by_name]
    if failed:
        _section(console, "FAILURES", f"bold {COLORS['FAILED']}")
        for rec in failed:
            _section(console, rec.name, COLORS["FAILED"], "_")
            where = f"{rec.thread} · " if rec.thread else ""
            console.print(Text(f"{where}attempt {rec.attempts} · {rec.duration:.2f}s", style="dim"))
            tb = (rec.traceback or f"{rec.error_type}: {rec.error}\n").rstrip("\n")
            lines = tb.split("\n")
            body = Text("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""))
            body.append(lines[-1], style=f"bold {COLORS['FAILED']}")
            console.print(body, soft_wrap=True)
            if show_output and rec.output:
                _section(console, "captured output", "dim", "-")
                console.print(Text(rec.output.rstrip("\n")), soft_wrap=True)
    _list_section(console, "SKIPPED", [by_name[n] for n in summary.get("skipped", ()) if n in by_name])
    _list_section(console, "CANCELLED", [by_name[n] for n in summary.get("cancelled", ()) if n in by_name])
    _warning_section(console, summary.get("warnings") or {})
    if summary.get("interrupted"):
        teardown_note = "teardown tasks ran" if not _forced(by_name) else "stopped waiting"
        console.print(Text(f"!!! interrupted: {teardown_note}, "
                           f"{len(summary.get('cancelled', ()))} cancelled !!!", style=COLORS["SKIPPED"]))
    left_behind = summary.get("teardown_not_run", [])
    if left_behind:
        console.print(Text(teardown_heading(left_behind), style=f"bold {COLORS['FAILED']}"), soft_wrap=True)
    findings = summary.get("state_findings") or []
    if findings:
        print_state_findings(console, findings)
    for line in pool_lines(summary.get("pools") or {}):
        console.print(Text(line, style="dim"), soft_wrap=True)
    for note in notes:
        console.print(Text(note, style="dim"), soft_wrap=True)
    title = summary["text"]
    if findings:  # "1 passed, 0 failed, 0 skipped, 2 state findings in 0.01s"
        head, sep, tail = title.rpartition(" in ")
        count = f"{len(findings)} state finding{'s' if len(findings) != 1 else ''}"
        title = f"{head}, {count}{sep}{tail}" if sep else f"{title}, {count}"
    _section(console, title, summary_style(summary))


def print_state_findings(console: Console, findings: list[dict]) -> None:
    """The state checker's findings (tdrun --check-state, or a cluster's write conflicts), one per
    line, with what to do."""
    _section(console, f"state check ({len(findings)})", f"bold {COLORS['FAILED']}")
    for finding in findings:
        line = Text(f"{finding['kind'].upper()}: ", style=f"bold {COLORS['FAILED']}")
        line.append(finding["message"])
        console.print(line, soft_wrap=True)



def _warning_section(console: Console, warnings: dict[str, str]) -> None:
    """Tasks that ran with a warning (a coroutine that blocked the event loop), one line each."""
    if not warnings:
        return
    _section(console, f"warnings ({len(warnings)})", COLORS["SKIPPED"])
    for name, text in warnings.items():
        line = Text("WARNING   ", style=COLORS["SKIPPED"])
        line.append(f"{name}  ")
        line.append(text, style="dim")
        console.print(line, soft_wrap=True)


def pool_lines(pools: dict) -> list[str]:
    """``pool api (size 2): 3 tasks waited, longest 1.20s, 2.10s in all``, for pools with waits."""
    out = []
    for name, row in pools.items():
        if not row.get("waited"):
            continue
        limits = ", ".join(x for x in (row.get("size") and f"size {row['size']}",
                                       row.get("rate") and f"rate {row['rate']}") if x)
        n = row["waited"]
        out.append(f"pool {name} ({limits}): {n} task{'s' if n != 1 else ''} waited, longest "
                   f"{format_seconds(row['longest'])}, {format_seconds(row['total'])} in all")
    return out


def _forced(by_name: dict[str, TaskRecord]) -> bool:
    return any((r.reason or "").startswith(("abandoned", "cancelled: the run was stopped"))
               for r in by_name.values())


def _list_section(console: Console, status: str, recs: list[TaskRecord]) -> None:
    if not recs:
        return
    _section(console, f"{status.lower()} ({len(recs)})", COLORS[status])
    width = min(max(len(r.name) for r in recs[:LIST_LIMIT]), 40)
    indent = 9 + 1 + width + 2
    # on a terminal a long reason wraps at words under itself; in a file or a pipe it stays one line
    room = console.width - indent if console.is_terminal and console.width - indent >= 20 else None
    for rec in recs[:LIST_LIMIT]:
        line = Text(f"{status:<9} ", style=COLORS[status])
        line.append(f"{rec.name:<{width}}  ")
        reason = rec.reason or ""
        if room is not None and len(reason) > room:
            reason = ("\n" + " " * indent).join(textwrap.wrap(reason, room, break_on_hyphens=False))
        line.append(reason, style="dim")
        console.print(line, soft_wrap=True)
    if len(recs) > LIST_LIMIT:
        console.print(Text(f"... and {len(recs) - LIST_LIMIT} more (--json-report has them all)", style="dim"))
