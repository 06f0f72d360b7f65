"""Ctrl-C during a run: SIGINT becomes a request to stop, while start() owns the main thread."""

from __future__ import annotations

import signal
import threading
from typing import Callable

__all__ = ["install_interrupt_handler"]


def install_interrupt_handler(request_stop: Callable[[], None]) -> Callable[[], None]:
    """Turn SIGINT into an inbox message while we run, when we own the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        previous = signal.getsignal(signal.SIGINT)
    except (ValueError, OSError):
        return lambda: None
    if previous in (signal.SIG_IGN, signal.SIG_DFL, None):
        return lambda: None  # Ctrl-C ignored, or meant to kill the process: leave it so
    # Any Python handler (the default raises KeyboardInterrupt) is replaced for the run:
    # an exception landing mid-bookkeeping could lose a message or a release.

    def on_sigint(signum, frame):
        request_stop()

    signal.signal(signal.SIGINT, on_sigint)

    def restore() -> None:
        signal.signal(signal.SIGINT, previous)

    return restore
