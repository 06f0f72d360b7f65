"""Ctrl-C and SIGTERM during a run: each becomes a request to stop, while start() owns the main thread.

The first SIGINT or SIGTERM is the first Ctrl-C (running tasks may finish,
``always`` tasks run, the rest is CANCELLED); a second one of either is the
second Ctrl-C (stop waiting). The two signals follow different rules about
whom we take them from:

- SIGINT: Python installs ``default_int_handler`` by itself, so ``SIG_DFL`` or
  ``SIG_IGN`` there is somebody's choice (kill the process on Ctrl-C, or
  ignore it), and we leave it alone.
- SIGTERM: ``SIG_DFL`` is what every process starts with, not a choice, and it
  kills the process with no teardown, no summary and no history, which is
  what ``timeout``, CI cancellations, Kubernetes and systemd would get. So we
  take SIGTERM unless it is ignored (``SIG_IGN``: somebody asked for that).

A Python handler installed by someone else is set aside for the run and
restored after, for both: an exception it raised landing mid-bookkeeping could
lose a message or a release. A disposition set outside Python (``getsignal``
returns None) is left alone: we could not restore it.
"""

from __future__ import annotations

import _thread
import os
import signal
import threading
from typing import Callable

__all__ = ["install_interrupt_handler"]


def _taken(signum: int, previous: object) -> bool:
    """Whether the run replaces ``previous``, the current disposition of ``signum``."""
    if previous is None or previous is signal.SIG_IGN:
        return False
    if previous is signal.SIG_DFL:
        return signum != signal.SIGINT
    return True


def install_interrupt_handler(request_stop: Callable[[], None]) -> Callable[[], None]:
    """Turn SIGINT and SIGTERM into stop requests while we run; returns the function restoring
    the previous handlers. Does nothing off the main thread (Python delivers signals there).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    # Python runs a handler only on the main thread, between bytecodes; but the kernel may
    # deliver the signal to any thread, and then nothing wakes a main thread blocked waiting
    # for its inbox: the interrupt would wait for the next task to end (forever, for a stuck
    # one). The byte the C-level handler writes to the wakeup fd, on whichever thread it
    # runs, wakes a reader instead, and that reader makes the stop request.
    taken = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            if _taken(signum, signal.getsignal(signum)):
                taken.append(signum)
        except (ValueError, OSError):
            continue
    if not taken:
        return lambda: None
    wakeup = _Wakeup.open(request_stop, taken)

    def on_signal(signum, frame):
        if wakeup is None:  # no wakeup fd here: the handler itself asks
            request_stop()

    replaced: list[tuple[int, object]] = []
    for signum in taken:
        try:
            replaced.append((signum, signal.signal(signum, on_signal)))
        except (ValueError, OSError):  # not settable here (embedded interpreter...)
            continue

    def restore() -> None:
        for signum, previous in reversed(replaced):
            signal.signal(signum, previous)
        if wakeup is not None:
            wakeup.close()

    return restore


class _Wakeup:
    """The wakeup fd of the run (``signal.set_wakeup_fd``) and the thread reading it.

    The reader is a thread of its own, never the run's event loop: a coroutine
    blocking the loop must not keep a Ctrl-C from being heard. It is not waited
    for, neither when it starts (the pipe keeps what is written before it reads)
    nor when the run ends (it closes the read end itself): a run pays no thread
    hand-off for it.
    """

    _STOP = b"\0"  # no signal has number 0: the reader's cue to end

    def __init__(self, read_fd: int, write_fd: int, previous_fd: int,
                 request_stop: Callable[[], None], signals: list[int]) -> None:
        self.read_fd, self.write_fd, self.previous_fd = read_fd, write_fd, previous_fd
        self.request_stop = request_stop
        self.signals = frozenset(signals)
        _thread.start_new_thread(self._read, ())

    @classmethod
    def open(cls, request_stop: Callable[[], None], signals: list[int]) -> "_Wakeup | None":
        """Set the wakeup fd for the run; None where that cannot be done (then handlers ask)."""
        try:
            read_fd, write_fd = os.pipe()
        except OSError:
            return None
        try:
            os.set_blocking(write_fd, False)  # the C handler must never block on it
            previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except (ValueError, OSError):  # e.g. Windows wants a socket there
            os.close(read_fd)
            os.close(write_fd)
            return None
        try:
            return cls(read_fd, write_fd, previous_fd, request_stop, signals)
        except RuntimeError:  # no thread to spare for the reader: the handlers ask themselves
            signal.set_wakeup_fd(previous_fd)
            os.close(read_fd)
            os.close(write_fd)
            return None

    def _read(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self.read_fd, 64)
                except InterruptedError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                for signum in data:
                    if signum == 0:
                        return
                    if signum in self.signals:
                        self.request_stop()  # one request per signal: the second one forces
        finally:
            os.close(self.read_fd)

    def close(self) -> None:
        """Give the wakeup fd back, then let the reader go (signals after this are not ours)."""
        signal.set_wakeup_fd(self.previous_fd)
        try:
            os.write(self.write_fd, self._STOP)  # (a full pipe: the reader ends at EOF)
        except OSError:
            pass
        os.close(self.write_fd)
