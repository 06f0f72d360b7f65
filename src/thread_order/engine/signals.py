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
    the previous handlers. Does nothing off the main thread (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum, frame):
        request_stop()

    replaced: list[tuple[int, object]] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous = signal.getsignal(signum)
            if not _taken(signum, previous):
                continue
            signal.signal(signum, on_signal)
        except (ValueError, OSError):  # not settable here (embedded interpreter...)
            continue
        replaced.append((signum, previous))

    def restore() -> None:
        for signum, previous in reversed(replaced):
            signal.signal(signum, previous)

    return restore
