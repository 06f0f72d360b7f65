"""tdrun's live view: lanes per worker thread, a progress bar, counters, pinned failures, the latest completions.

The model is the shared :class:`~thread_order.runview.RunView` (the web UI
draws the same one), updated from the event stream on the scheduler's
dispatcher thread. A separate refresh thread takes a snapshot at most ten
times a second and redraws it with rich, so drawing never slows the
scheduler down; this module only renders.
"""

from __future__ import annotations

import io
import logging
import math
import queue
import re
import sys
import threading
import time
from typing import Callable, Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..runview import LOOP_THREAD, RunSnapshot, RunView, first_line

try:
    import termios
except ImportError:  # not a POSIX system: the view works, keys are echoed
    termios = None
from .plain import COLORS, TaskLogFormat, interrupt_message, log_text, teardown_heading

__all__ = ["LiveView", "QueueLogHandler", "render_view", "render_bar"]

#: redraws per second, at most
REFRESH_HZ = 10
#: the most latest completions shown (the model keeps runview.RECENT)
RECENT_SHOW = 8
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ICONS = {"PASSED": "✔", "FAILED": "✘", "SKIPPED": "↷", "CANCELLED": "⊘", "RETRY": "↻"}


# ---------------------------------------------------------------------------- rendering


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _eta(snap: RunSnapshot) -> tuple[float, str]:
    elapsed = snap.elapsed
    rate = snap.finished / elapsed if elapsed > 0 and snap.finished else 0.0
    if snap.done or snap.finished >= snap.total:
        return rate, "done"
    if not rate:
        return rate, "ETA --:--"
    left = (snap.total - snap.finished) / rate
    minutes, sec = divmod(int(math.ceil(left)), 60)
    return rate, f"ETA {minutes:d}:{sec:02d}"


def _counters(snap: RunSnapshot, final: bool = False, compact: bool = False, width: int | None = None) -> Text:
    """The counters on one line; given a ``width``, zeros, then ``waiting`` and ``retries`` make
    room, so the failed, skipped and cancelled counts are never the ones cut off."""
    parts = [] if final else [
        ("waiting", snap.waiting, COLORS["WAITING"]),
        ("running", snap.in_flight, COLORS["RUNNING"]),
    ]
    parts += [
        ("passed", snap.counts["PASSED"], COLORS["PASSED"]),
        ("failed", snap.counts["FAILED"], COLORS["FAILED"]),
        ("skipped", snap.counts["SKIPPED"], COLORS["SKIPPED"]),
    ]
    if snap.counts["CANCELLED"]:
        parts.append(("cancelled", snap.counts["CANCELLED"], COLORS["CANCELLED"]))
    if snap.retries:
        parts.append(("retries", snap.retries, COLORS["SKIPPED"]))
    if final or compact:  # the one-line forms: only what is there
        parts = [p for p in parts if p[1] or p[0] == "passed"]
    text = _counter_text(parts)
    for drop in ("zeros", "waiting", "retries", "running"):
        if width is None or text.cell_len <= width:
            break
        parts = [p for p in parts if (p[1] or p[0] == "passed") if drop == "zeros" or p[0] != drop]
        text = _counter_text(parts)
    return text


def _counter_text(parts: list[tuple[str, int, str]]) -> Text:
    text = Text()
    for i, (label, n, color) in enumerate(parts):
        if i:
            text.append("  ")
        text.append(f"{n} ", style=f"bold {color}" if n else "dim")
        text.append(label, style=color if n else "dim")
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


#: only measures text (wrapping needs a console); never prints
_MEASURE = Console(file=io.StringIO(), width=200)

#: the narrowest bar drawn; below it, the numbers have the line to themselves
BAR_MIN = 10


def render_bar(snap: RunSnapshot, width: int, counters: bool = False) -> Table:
    """One line: the bar, done/total, percent, rate and ETA (and the counters, for ``--progress``).

    When the line is too narrow, the bar shrinks first, then the rate and the ETA
    go; the counters stay whole (at 120 columns they used to lose failed/skipped).
    """
    rate, eta = _eta(snap)
    total = max(snap.total, 1)
    pct = int(snap.finished * 100 / total)
    rate_text = f"{rate:,.1f} tasks/s" if rate < 100 else f"{rate:,.0f} tasks/s"
    counts = _counters(snap, final=snap.done, compact=True) if counters else None
    for extras in ((rate_text, eta), (eta,), ()):
        stats = Text()
        stats.append(f"{snap.finished}/{snap.total}", style="bold")
        stats.append(f" {pct:3d}%")
        for extra in extras:
            stats.append("  ")
            stats.append(extra, style="dim")
        if counts is not None:
            stats.append("  ")
            stats.append_text(counts)
        if width - stats.cell_len - 1 >= BAR_MIN:
            break
    if counts is not None and width - stats.cell_len - 1 < BAR_MIN:  # still too long: shed counters
        stats = Text.assemble((f"{snap.finished}/{snap.total}", "bold"), f" {pct:3d}%  ")
        stats.append_text(_counters(snap, final=snap.done, compact=True, width=width - stats.cell_len))
    complete = COLORS["FAILED"] if snap.counts["FAILED"] else COLORS["PASSED"]
    room = width - stats.cell_len - 1
    grid = Table.grid(padding=(0, 1))
    if room < BAR_MIN:
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row(stats)
        return grid
    bar_width = min(60, room)
    grid.add_column(width=bar_width, no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    grid.add_row(
        ProgressBar(total=total, completed=snap.finished, width=bar_width, style=COLORS["WAITING"],
                    complete_style=complete, finished_style=complete),
        stats,
    )
    return grid


def _lanes(snap: RunSnapshot, width: int, max_rows: int) -> Table:
    lanes = snap.lanes
    columns = max(1, math.ceil(len(lanes) / max(max_rows, 1)))
    rows = math.ceil(len(lanes) / columns) if lanes else 0
    lane_w = len(lanes[-1]) if lanes else 8
    cell_w = max(24, (width - 4) // columns)
    grid = Table.grid(padding=(0, 1), expand=False)
    for _ in range(columns):
        grid.add_column(width=lane_w, no_wrap=True, style="dim")
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(width=6, no_wrap=True, justify="right")
        grid.add_column(width=max(cell_w - lane_w - 11, 8), no_wrap=True, overflow="ellipsis")
    frame = SPINNER[int(snap.now * REFRESH_HZ) % len(SPINNER)]
    for r in range(rows):
        cells: list = []
        for c in range(columns):
            i = c * rows + r
            if i >= len(lanes):
                cells += ["", "", "", ""]
                continue
            lane = lanes[i]
            held = snap.running.get(lane)
            if held is None:
                last = snap.last.get(lane)
                note = Text()
                if last is not None:
                    note.append(f"last: {last[0]} ", style="dim")
                    note.append(ICONS.get(last[1], ""), style=COLORS.get(last[1], ""))
                cells += [lane, Text("·", style="dim"), Text("idle", style="dim"), note]
            else:
                name, since, attempt = held
                label = Text(name, style=f"bold {COLORS['RUNNING']}")
                if attempt > 1:  # a retry: say which attempt this is
                    label.append(f" {ICONS['RETRY']} attempt {attempt}", style=COLORS["SKIPPED"])
                cells += [lane, Text(frame, style=COLORS["RUNNING"]),
                          Text(_duration(max(snap.now - since, 0.0)), style="bold"), label]
        grid.add_row(*cells)
    return grid


def has_loop_lane(snap: RunSnapshot) -> bool:
    """Whether the run has shown async tasks: its event loop gets a lane group of its own."""
    return bool(snap.coroutines) or LOOP_THREAD in snap.last


def _loop_lane(snap: RunSnapshot, width: int) -> Text:
    """The event loop's lane group on one line: how many coroutines run, and which (oldest first)."""
    running = sorted((snap.coroutines or {}).values(), key=lambda r: r.since)
    line = Text(f"{LOOP_THREAD} ", style="dim")
    if not running:
        line.append("· idle", style="dim")
        last = snap.last.get(LOOP_THREAD)
        if last is not None:
            line.append(f"  last: {last[0]} ", style="dim")
            line.append(ICONS.get(last[1], ""), style=COLORS.get(last[1], ""))
        return line
    frame = SPINNER[int(snap.now * REFRESH_HZ) % len(SPINNER)]
    line.append(f"{frame} ", style=COLORS["RUNNING"])
    line.append(f"{len(running)} coroutine{'s' if len(running) != 1 else ''}", style="bold")
    line.append(": ")
    for i, held in enumerate(running):
        if i:
            line.append(", ")
        line.append(held.task, style=f"bold {COLORS['RUNNING']}")
        line.append(f" {_duration(max(snap.now - held.since, 0.0))}", style="dim")
        if line.cell_len > width:
            break
    line.truncate(width, overflow="ellipsis")
    return line


def _recent(rows: tuple, width: int) -> Table:
    name_w = max(8, min(max((len(r[0]) for r in rows), default=8), 36, width // 3))
    detail_w = max(width - name_w - 1 - 9 - 6 - 4, 0)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=1, no_wrap=True)
    grid.add_column(width=name_w, no_wrap=True, overflow="ellipsis")
    grid.add_column(width=9, no_wrap=True)
    grid.add_column(width=6, no_wrap=True, justify="right")
    grid.add_column(width=detail_w, no_wrap=True, overflow="ellipsis")
    for name, status, thread, duration, detail, _, _ in rows:
        color = COLORS.get(status, COLORS["SKIPPED"])
        ran = thread is not None
        grid.add_row(
            Text(ICONS.get(status, "?"), style=color),
            Text(name, style="bold" if status == "FAILED" else ""),
            Text(status, style=color),
            Text(_duration(duration) if ran else "", style="dim"),
            Text(detail or (thread or ""), style=COLORS["FAILED"] if status == "FAILED" else "dim"),
        )
    return grid


def _failures(snap: RunSnapshot, limit: int, width: int) -> RenderableType:
    """The pinned failures, oldest first; the last row says how many did not fit."""
    failures = snap.failures
    shown = failures if len(failures) <= limit else failures[: max(limit - 1, 0)]
    name_w = max(8, min(max((len(r.name) for r in shown), default=8), 36, width // 3))
    # on a narrow view the error needs the room more than the thread (its lane says it too)
    with_thread = width >= 90
    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=1, no_wrap=True)
    grid.add_column(width=name_w, no_wrap=True, overflow="ellipsis")
    if with_thread:
        grid.add_column(width=8, no_wrap=True, style="dim")
    grid.add_column(width=6, no_wrap=True, justify="right", style="dim")
    grid.add_column(width=max(width - name_w - (9 if with_thread else 0) - 6 - 4, 0), no_wrap=True,
                    overflow="ellipsis")
    for rec in shown:
        where = [rec.thread or ""] if with_thread else []
        grid.add_row(Text(ICONS["FAILED"], style=COLORS["FAILED"]), Text(rec.name, style="bold"), *where,
                     _duration(rec.duration) if rec.thread else "",
                     Text(first_line(rec.error_type, rec.error), style=COLORS["FAILED"]))
    if len(shown) < len(failures):
        more = Text(f"  ... and {len(failures) - len(shown)} more (listed at the end)", style="dim")
        return Group(grid, more)
    return grid


def pool_waiting_text(waiting: dict[str, int]) -> Text:
    """``waiting for pools: api 3 · quota 0``: how many tasks wait for each pool."""
    text = Text("waiting for pools: ", style="dim")
    for i, (name, n) in enumerate(waiting.items()):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{name} ")
        text.append(str(n), style=f"bold {COLORS['WAITING']}" if n else "dim")
    return text


def render_view(snap: RunSnapshot, width: int, height: int) -> RenderableType:
    """The whole live view for a console of ``width`` x ``height``.

    Below the lanes, the bar and the counters, the failures so far are pinned
    (they used to scroll out of the latest completions a second later, once
    teardown started); the latest completions get the rows that are left.
    """
    inner = width - 4
    notes: list[Text] = []
    if snap.interrupted:
        notes.append(Text(interrupt_message(snap.interrupted == 2), style=f"bold {COLORS['SKIPPED']}"))
    if snap.teardown_not_run:
        notes.append(Text(teardown_heading(snap.teardown_not_run), style=f"bold {COLORS['FAILED']}"))
    for task, text in snap.warnings[:2]:  # a coroutine that blocked the event loop
        notes.append(Text(f"warning: {task}: {text}", style=COLORS["SKIPPED"]))
    if len(snap.warnings) > 2:
        notes.append(Text(f"... and {len(snap.warnings) - 2} more warnings (listed at the end)", style="dim"))
    if snap.pool_waiting and not snap.done:
        notes.append(pool_waiting_text(snap.pool_waiting))
    # notes wrap rather than lose their end ("Ctrl-C again stops waiting" at 80 columns)
    note_rows = sum(len(note.wrap(_MEASURE, inner)) for note in notes)
    fixed = 2 + 1 + 1 + 1 + note_rows  # borders, separator, bar, counters, notes
    lane_rows = max(1, min(len(snap.lanes), height - fixed - 4))
    lanes = _lanes(snap, inner, lane_rows)
    room = height - fixed - lanes.row_count - 1
    parts: list[RenderableType] = [lanes]
    if has_loop_lane(snap):
        parts.append(_loop_lane(snap, inner))
        room -= 1
    parts += [Text(""), render_bar(snap, inner), _counters(snap, width=inner)]
    parts += notes
    if snap.failures and room >= 2:
        rows = min(len(snap.failures), room - 1, max(RECENT_SHOW, room - 1 - 3))
        parts.append(Text(f"failed ({len(snap.failures)})", style=COLORS["FAILED"]))
        parts.append(_failures(snap, rows, inner))
        room -= rows + 1
    # the failures are above already: the latest completions show the rest
    recent = tuple(c for c in snap.recent if c.status != "FAILED") if snap.failures else snap.recent
    show = max(0, min(RECENT_SHOW, room - 1, len(recent)))
    if show:
        parts.append(Text("latest", style="dim"))
        parts.append(_recent(recent[:show], inner))
    title = Text.assemble(("tdrun ", "bold"), (snap.title, ""), (f" · {snap.total} tasks", "dim"))
    keys = {0: "Ctrl-C stops", 1: "Ctrl-C again stops waiting", 2: "stopping"}[snap.interrupted]
    loop = " + event loop" if has_loop_lane(snap) else ""
    subtitle = Text(f"{len(snap.lanes)} threads{loop} · {_duration(snap.elapsed)} · {keys}", style="dim")
    return Panel(Group(*parts), title=title, title_align="left", subtitle=subtitle,
                 subtitle_align="right", border_style="dim", width=width, padding=(0, 1))


# ---------------------------------------------------------------------------- the display


class QueueLogHandler(logging.Handler):
    """Hands formatted log records to the refresh thread, which prints them above the view."""

    def __init__(self, sink: queue.SimpleQueue, specs: Iterable = ()) -> None:
        super().__init__(logging.NOTSET)
        self.sink = sink
        self.setFormatter(TaskLogFormat(specs))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.put((self.format(record), record.levelname))
        except Exception:
            self.handleError(record)


class LiveView:
    """The live display of one run; ``attach``/``finish`` bracket ``scheduler.start()``.

    ``mode`` is ``"live"`` (lanes, bar, counters, latest) or ``"progress"``
    (the bar alone). ``finish`` is idempotent and always restores the terminal.
    """

    def __init__(self, console: Console, *, mode: str = "live", title: str = "", total: int = 0,
                 lanes: int = 1, highlights: Iterable[tuple[re.Pattern, str]] = ()) -> None:
        self.console = console
        self.mode = mode
        self.model = RunView(total, min(lanes, max(total, 1)), title)
        self.highlights = list(highlights)
        self.logs: queue.SimpleQueue = queue.SimpleQueue()
        self._undo: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self._tty: tuple[int, list] | None = None
        self.redraws = 0

    def log_handler(self, specs: Iterable = ()) -> logging.Handler:
        """A handler printing log records above the view; ``specs`` name the task beside the thread."""
        return QueueLogHandler(self.logs, specs)

    def render(self, snap: RunSnapshot | None = None) -> RenderableType:
        snap = snap or self.model.snapshot()
        width, height = self.console.size
        if self.mode == "progress":
            return render_bar(snap, width, counters=True)
        return render_view(snap, min(width, 120), height)

    def _quiet_keyboard(self) -> None:
        """Stop the terminal echoing keys (``^C`` above all) into the middle of the view."""
        if termios is None:
            return
        try:
            fd = sys.stdin.fileno()
            if not self.console.is_terminal or not sys.stdin.isatty():
                return
            saved = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
            self._tty = (fd, saved)
        except (AttributeError, OSError, ValueError, termios.error):  # stdin is closed or replaced
            self._tty = None

    def _restore_keyboard(self) -> None:
        tty, self._tty = self._tty, None
        if tty is not None:
            try:
                termios.tcsetattr(tty[0], termios.TCSADRAIN, tty[1])
            except (OSError, termios.error):
                pass

    def attach(self, scheduler, run_info: dict | None = None) -> None:
        try:
            self._undo = self.model.subscribe(scheduler)
            self._quiet_keyboard()
            self._live = Live(console=self.console, auto_refresh=False, transient=False,
                              redirect_stdout=False, redirect_stderr=False, vertical_overflow="crop")
            self._live.start()
            self._redraw()
            self._thread = threading.Thread(target=self._loop, name="tdrun-live", daemon=True)
            self._thread.start()
        except BaseException:  # noqa: B902 - Ctrl-C half way through must not leave the terminal muted
            self.finish()
            raise

    def _loop(self) -> None:
        while not self._stop.wait(1 / REFRESH_HZ):
            try:
                self._redraw()
            except Exception:  # never let drawing kill the refresh thread mid-run
                logging.getLogger("thread_order").debug("live view redraw failed", exc_info=True)

    def _drain_logs(self) -> None:
        texts = []
        while True:
            try:
                line, level = self.logs.get_nowait()
            except queue.Empty:
                break
            texts.append(log_text(line, level, self.highlights))
        if texts:
            self.console.print(Group(*texts), soft_wrap=True)

    def _redraw(self) -> None:
        live = self._live
        if live is None:
            return
        self._drain_logs()
        live.update(self.render(), refresh=True)
        self.redraws += 1

    def finish(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for undo in self._undo:
            undo()
        self._undo = []
        live, self._live = self._live, None
        if live is None:
            self._restore_keyboard()
            return
        try:
            self._drain_logs()
            snap = self.model.snapshot()
            width = self.console.size.width
            final: RenderableType = render_bar(snap, width if self.mode == "progress" else min(width, 120),
                                               counters=True)
            if snap.teardown_not_run:  # a forced stop left teardown undone: the last frame says so
                final = Group(final, Text(teardown_heading(snap.teardown_not_run),
                                          style=f"bold {COLORS['FAILED']}"))
            live.update(final, refresh=True)
        finally:
            try:
                live.stop()  # shows the cursor again, even after Ctrl-C or an error
            finally:
                self._restore_keyboard()
