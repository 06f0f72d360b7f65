"""The live view: rendered by a recording console of fixed size, and once under a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
from rich.console import Console

from conftest import MODULES, tdrun_env
from thread_order import Event, EventKind, Scheduler
from thread_order.cli.live import LiveView, render_bar, render_view
from thread_order.runview import RunView
from thread_order.cli.plain import log_text

WAIT = 10.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\r")


def recording_console(width: int = 100, height: int = 30) -> Console:
    return Console(file=io.StringIO(), record=True, width=width, height=height, force_terminal=True,
                   color_system="truecolor", legacy_windows=False)


def text_of(renderable, width: int = 100, height: int = 30) -> str:
    console = recording_console(width, height)
    console.print(renderable)
    return console.export_text()


class HeldRun:
    """A real scheduler whose tasks ``slow_*`` block until released; runs start() on a thread."""

    def __init__(self, workers: int, model: RunView, running_needed: int, finished_needed: int) -> None:
        self.release = threading.Event()
        self.running = threading.Event()
        self.sched = Scheduler(workers=workers)
        seen = []

        def hold():
            assert self.release.wait(WAIT)

        def boom():
            raise ValueError("bad gateway id")

        self.sched.register(boom, "boom")
        self.sched.register(lambda: None, "skipped_child", after=["boom"])
        self.sched.register(hold, "slow_a")
        self.sched.register(hold, "slow_b")
        self.sched.register(lambda: None, "last", after=["slow_a", "slow_b"])
        model.subscribe(self.sched)

        def on_event(event):  # subscribed after the model: the model is up to date when this fires
            seen.append((event.kind, event.name))
            slow = sum(1 for k, n in seen if k is EventKind.TASK_RUNNING and n.startswith("slow"))
            final = sum(1 for k, _ in seen if k is EventKind.TASK_FINISHED)
            if slow == running_needed and final == finished_needed:
                self.running.set()

        self.sched.subscribe(on_event, EventKind.TASK_RUNNING, EventKind.TASK_FINISHED)
        self.thread = threading.Thread(target=self.sched.start, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.running.wait(WAIT), "the run never reached the expected point"
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


def test_view_mid_run_shows_lanes_idle_lanes_counters_and_latest():
    model = RunView(total=0, lanes=3, title="tasks.py")
    with HeldRun(workers=3, model=model, running_needed=2, finished_needed=2):
        # boom and skipped_child are final; slow_a and slow_b hold two lanes, one lane is idle
        snap = model.snapshot()
        text = text_of(render_view(snap, 100, 30))
    assert snap.total == 5 and snap.lanes == ("thread_0", "thread_1", "thread_2")
    running = {task for task, _, _ in snap.running.values()}
    assert running == {"slow_a", "slow_b"}
    lines = text.splitlines()
    assert "tdrun tasks.py · 5 tasks" in lines[0]
    for lane, (task, _, _) in snap.running.items():
        assert re.search(rf"│ {lane} . +\d+\.\ds {task} ", text), text
    idle = [lane for lane in snap.lanes if lane not in snap.running]
    assert len(idle) == 1 and re.search(rf"│ {idle[0]} · +idle", text)
    if idle[0] in snap.last:  # it ran boom or skipped_child's neighbour before going idle
        assert re.search(rf"│ {idle[0]} · +idle last: {snap.last[idle[0]][0]} [✔✘]", text)
    assert re.search(r"2/5 +40%", text)
    assert "1 waiting  2 running  0 passed  1 failed  1 skipped" in text
    # the failure is pinned above the latest completions, which do not repeat it
    assert re.search(r"failed \(1\)\s+│\n│ ✘ boom +thread_\d +\d+\.\ds ValueError: bad gateway id", text), text
    assert re.search(r"latest\s+│\n│ ↷ skipped_child +SKIPPED +dependency 'boom' failed", text), text
    assert text.count("✘ boom") == 1
    assert "3 threads" in lines[-1] and "Ctrl-C stops" in lines[-1]


def test_view_after_the_run_counts_everything():
    model = RunView(total=0, lanes=2)
    sched = Scheduler(workers=2)
    for i in range(6):
        sched.register(lambda: None, f"t{i}")
    model.subscribe(sched)
    sched.start()
    snap = model.snapshot()
    assert (snap.finished, snap.counts["PASSED"], snap.running, snap.done) == (6, 6, {}, True)
    text = text_of(render_bar(snap, 100, counters=True))
    assert re.search(r"6/6 100% .* done  6 passed$", text.rstrip())


def test_many_lanes_fold_into_columns_on_a_short_terminal():
    model = RunView(total=40, lanes=32, title="big.py")
    snap = model.snapshot()
    text = text_of(render_view(snap, 120, 20), 120, 20)
    assert len(text.splitlines()) <= 20
    for i in range(32):
        assert f"thread_{i} " in text
    # the lanes are side by side, not one per row
    assert any(line.count("thread_") > 1 for line in text.splitlines())


def test_latest_completions_are_cut_to_fit_the_height():
    model = RunView(total=30, lanes=2)
    sched = Scheduler(workers=2)
    for i in range(30):
        sched.register(lambda: None, f"task_{i:02d}")
    model.subscribe(sched)
    sched.start()
    snap = model.snapshot()
    tall = text_of(render_view(snap, 100, 40), 100, 40)
    short = text_of(render_view(snap, 100, 12), 100, 12)
    assert tall.count("PASSED") == 8  # at most RECENT_SHOW lines
    assert len(short.splitlines()) <= 12
    assert short.count("PASSED") < tall.count("PASSED")


def test_log_lines_are_coloured_by_level_and_highlights():
    line = "12:00:00 WARNING [thread_1] POST /networks -> 500 (12 ms)"
    text = log_text(line, "WARNING", [(re.compile(r"-> 5\d\d"), "bold red")])
    styles = {(line[s.start:s.end], str(s.style)) for s in text.spans}
    assert ("-> 500", "bold red") in styles
    assert ("WARNING", "#d9a21b") in styles


def test_live_view_prints_logs_above_redraws_at_most_10_hz_and_restores_the_cursor():
    console = recording_console()
    sched = Scheduler(workers=2)
    release = threading.Event()
    sched.register(lambda: release.wait(WAIT), "wait")
    sched.register(lambda: None, "after", after=["wait"])
    view = LiveView(console, title="t.py", total=2, lanes=2, highlights=[(re.compile("hello"), "magenta")])
    handler = view.log_handler()
    import logging

    logger = logging.getLogger("test_live")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        view.attach(sched, {})
        started = time.monotonic()
        timer = threading.Timer(0.6, release.set)
        timer.start()
        logger.info("hello from the test")
        sched.start()
        view.finish()
        elapsed = time.monotonic() - started
        view.finish()  # idempotent
    finally:
        logger.removeHandler(handler)
    assert 2 <= view.redraws <= elapsed * 10 + 2
    raw = console.file.getvalue()
    assert raw.startswith("\x1b[?25l") and raw.rstrip().endswith("\x1b[?25h")
    assert raw.count("\x1b[?25h") == 1
    plain = ANSI.sub("", raw)
    assert "hello from the test" in plain
    assert "2/2 100%" in plain


def test_finish_restores_the_terminal_when_the_run_raises():
    console = recording_console()
    sched = Scheduler(workers=1)
    sched.register(lambda: None, "a", after=["missing"])
    view = LiveView(console, total=1, lanes=1)
    view.attach(sched, {})
    try:
        with pytest.raises(Exception, match=r"^task 'a' depends on unknown task 'missing'$"):
            sched.start()
    finally:
        view.finish()
    assert console.file.getvalue().endswith("\x1b[?25h")


# ---------------------------------------------------------------------------- a real terminal


class Pty:
    """tdrun on a pseudo-terminal of 100x30; the master side is read on a thread."""

    def __init__(self, *argv: str, **env: str) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        self.master = master
        self.proc = subprocess.Popen([sys.executable, "-m", "thread_order", *argv],
                                     stdin=slave, stdout=slave, stderr=slave, close_fds=True,
                                     env=tdrun_env(TERM="xterm-256color", **env))
        os.close(slave)
        self.chunks: list[bytes] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], WAIT)
            if not ready:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                data = b""
            with self.changed:
                if data:
                    self.chunks.append(data)
                self.changed.notify_all()
            if not data:
                return

    @property
    def raw(self) -> str:
        with self.changed:
            return b"".join(self.chunks).decode("utf-8", "replace")

    @property
    def screen_text(self) -> str:
        return ANSI.sub("", self.raw)

    def wait_for(self, pattern: str, timeout: float = WAIT) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while not regex.search(ANSI.sub("", b"".join(self.chunks).decode("utf-8", "replace"))):
                left = deadline - time.monotonic()
                assert left > 0, f"{pattern!r} never showed on the terminal:\n{self.screen_text[-2000:]}"
                self.changed.wait(left)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            code = self.proc.wait(WAIT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(WAIT)
            os.close(self.master)
        return code


LANE_RUNNING_HOLD = r"thread_\d [⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] +\d+\.\ds hold "


def test_live_view_on_a_real_terminal():
    term = Pty(str(MODULES / "cli_hold.py"), "--workers", "3")
    try:
        term.wait_for(LANE_RUNNING_HOLD)
        term.wait_for(r"1/4 +25%")
        term.type("go\n")
    finally:
        code = term.close()
    assert code == 0
    raw, text = term.raw, term.screen_text
    assert "\x1b[?25l" in raw and raw.rindex("\x1b[?25h") > raw.rindex("\x1b[?25l")  # cursor back
    assert re.search(r"thread_2 · +idle", text)  # idle lanes are visible
    assert re.search(r"4/4 100% .*4 passed", text)
    assert re.search(r"=+ 4 passed, 0 failed, 0 skipped in \d+\.\d\ds =+", text)
    assert "\x1b[38;" in raw or "\x1b[3" in raw  # coloured


def test_ctrl_c_on_a_real_terminal_restores_it_and_exits_2():
    term = Pty(str(MODULES / "cli_hold.py"), "--workers", "2")
    try:
        term.wait_for(LANE_RUNNING_HOLD)
        term.proc.send_signal(signal.SIGINT)
        term.wait_for(r"interrupted: running tasks may finish, teardown tasks still run")
        term.type("go\n")
    finally:
        code = term.close()
    assert code == 2
    raw, text = term.raw, term.screen_text
    assert raw.rindex("\x1b[?25h") > raw.rindex("\x1b[?25l")
    assert re.search(r"CANCELLED +after_hold +cancelled: the run was interrupted", text)
    assert re.search(r"=+ 3 passed, 0 failed, 0 skipped, 1 cancelled in \d+\.\d\ds =+", text)


def test_ci_environment_means_plain_lines_even_on_a_terminal():
    term = Pty(str(MODULES / "cli_ok.py"), CI="true")
    code = term.close()
    assert code == 0
    assert "\x1b[?25l" not in term.raw  # no live display
    assert re.search(r"\[thread_\d\] first \.+ .*PASSED.* \[ 25%\]", term.screen_text)


# ---------------------------------------------------------------------------- what must stay in view


def finished_view(sched: Scheduler) -> RunView:
    model = RunView()
    model.subscribe(sched)
    sched.start()
    return model


def test_a_failure_stays_pinned_at_80x24_while_teardown_scrolls_the_latest():
    sched = Scheduler(workers=6)

    def boom():
        raise ValueError("bad gateway id")

    sched.register(boom, "create_subnet_a")
    for i in range(20):  # the teardown that used to push the FAILED line out of the latest
        sched.register(lambda: None, f"delete_{i:02d}", after=["create_subnet_a"], always=True)
    text = text_of(render_view(finished_view(sched).snapshot(), 80, 24), 80, 24)
    assert len(text.splitlines()) <= 24
    assert re.search(r"│ failed \(1\) +│\n│ ✘ create_subnet_a +\d+\.\ds ValueError: bad gateway id",
                     text), text
    assert "latest" in text and "delete_19" in text  # the latest completions still show below


def test_failures_that_do_not_fit_say_how_many_more_there_are():
    sched = Scheduler(workers=2)
    first_reported = threading.Event()
    finished: list[str] = []  # the order the run reported them in: the pinned list's order
    sched.subscribe(lambda e: finished.append(e.name), EventKind.TASK_FINISHED)
    # bad_00 is reported first whatever the machine's load: the others fail only after it is
    sched.subscribe(lambda e: e.name == "bad_00" and first_reported.set(), EventKind.TASK_FINISHED)

    def later():
        assert first_reported.wait(WAIT)
        return 1 / 0

    sched.register(lambda: 1 / 0, "bad_00")
    for i in range(1, 30):
        sched.register(later, f"bad_{i:02d}")
    text = text_of(render_view(finished_view(sched).snapshot(), 80, 24), 80, 24)
    assert len(text.splitlines()) <= 24
    assert "failed (30)" in text and "✘ bad_00" in text
    shown = text.count("ZeroDivisionError: division by zero")
    assert shown >= 5 and re.search(rf"\.\.\. and {30 - shown} more \(listed at the end\)", text), text
    assert re.findall(r"✘ (bad_\d\d) ", text) == finished[:shown], text  # oldest first


def test_progress_at_120_columns_keeps_every_counter():
    # many of everything: a real run stopped part way, read at the first cancelled task
    sched = Scheduler(workers=8)
    for i in range(3000):
        sched.register((lambda: 1 / 0) if i % 3 == 0 else (lambda: None), f"t{i}")
        sched.register(lambda: None, f"c{i}", after=[f"t{i}"])
    events = []
    sched.subscribe(events.append)
    sched.subscribe(lambda e: e.count == 3000 and sched.cancel(), EventKind.TASK_FINISHED)
    sched.start()
    cut = next(i for i, e in enumerate(events)
               if e.kind is EventKind.TASK_FINISHED and e.record.status.value == "CANCELLED")
    model = RunView()
    for event in events[: cut + 1]:
        model.feed(event)
    snap = model.snapshot()
    assert snap.waiting and all(snap.counts.values())
    for width in (120, 100, 80):
        line = text_of(render_bar(snap, width, counters=True), width).rstrip("\n")
        assert "\n" not in line and "…" not in line, line
        for status, n in snap.counts.items():
            assert f"{n} {status.lower()}" in line, (width, line)


def test_the_interrupt_note_wraps_rather_than_losing_its_end():
    sched = Scheduler(workers=1)
    release = threading.Event()
    sched.register(lambda: release.wait(WAIT), "hold")
    model = RunView(title="m.py")
    model.subscribe(sched)
    seen = []

    def on_running(event):
        sched.cancel()
        seen.append(text_of(render_view(model.snapshot(), 80, 24), 80, 24))
        release.set()

    sched.subscribe(on_running, EventKind.RUN_INTERRUPTED)
    sched.subscribe(lambda e: sched.cancel() if e.kind is EventKind.TASK_RUNNING else None,
                    EventKind.TASK_RUNNING)
    sched.start()
    text = seen[0]
    assert "teardown tasks still run (Ctrl-C" in text and re.search(r"│ again stops waiting\) +│", text), text
    assert "· Ctrl-C again stops waiting ─╯" in text


def test_teardown_not_run_is_shown_by_the_live_view_and_its_last_frame():
    model = RunView(title="m.py")
    model.feed(Event(EventKind.RUN_STARTED, 1, 0.0, data={"total_tasks": 2, "workers": 1,
                                                           "tasks": ["make", "clean"]}))
    model.feed(Event(EventKind.RUN_INTERRUPTED, 2, 0.1, data={"force": True}))
    model.feed(Event(EventKind.RUN_FINISHED, 3, 0.2, data={"interrupted": True,
                                                            "teardown_not_run": ["clean", "drop_db"]}))
    heading = "teardown did not run: clean, drop_db — resources they clean up may remain"
    assert heading in text_of(render_view(model.snapshot(), 100, 30))
    console = recording_console()
    view = LiveView(console, title="m.py", total=2, lanes=1)
    view.model = model
    view.attach(Scheduler(workers=1), {})
    view.finish()
    assert heading in ANSI.sub("", console.file.getvalue())
