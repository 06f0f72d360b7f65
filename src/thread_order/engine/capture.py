"""Per-task capture of stdout, stderr and log records, and thread-aware logging."""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import threading
from typing import Any, Iterable

from .compat import HighlightFormatter, colors_wanted
from .events import EventKind

__all__ = ["OutputCapture", "ThreadProxyLogger", "configure_logging", "in_task", "log_task_failures"]

_get_ident = threading.get_ident

#: the capture buffer of the coroutine running now (engine/aio.py sets it in each task's own
#: context); consulted only when the thread has no buffer, so thread tasks never pay for it
task_buffer: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "thread_order_task_buffer", default=None)
_task_buffer_get = task_buffer.get


class _Router:
    """Stands in for sys.stdout/sys.stderr: writes from a capturing thread go to
    that thread's buffer, everything else to the stream it replaced."""

    def __init__(self, original: Any, buffers: dict[int, list[str]]) -> None:
        self._original = original
        self._buffers = buffers

    def write(self, text: str) -> int:
        buf = self._buffers.get(_get_ident())
        if buf is None:
            buf = _task_buffer_get()
            if buf is None:
                return self._original.write(text)
        if not isinstance(text, str):  # as a real text stream would
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        buf.append(text)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._buffers.get(_get_ident()) is None and _task_buffer_get() is None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


class _LogToBuffer(logging.Handler):
    """Root-logger handler copying records emitted on a capturing thread into its buffer."""

    def __init__(self, buffers: dict[int, list[str]]) -> None:
        super().__init__(logging.NOTSET)
        self._buffers = buffers
        self.setFormatter(
            logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )

    def emit(self, record: logging.LogRecord) -> None:
        buf = self._buffers.get(record.thread)
        if buf is None:
            # a coroutine's record is emitted on the loop thread, in the coroutine's context
            buf = _task_buffer_get() if record.thread == _get_ident() else None
            if buf is None:
                self._last_resort(record)
                return
        try:
            buf.append(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def _last_resort(self, record: logging.LogRecord) -> None:
        """Being a handler, we would stop logging's last resort (warnings to stderr when
        nothing is configured) for records outside tasks: stand in for it then."""
        resort = logging.lastResort
        if resort is None or record.levelno < resort.level:
            return
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(h is not self for h in logger.handlers):
                return  # someone else handles it
            logger = logger.parent if logger.propagate else None
        resort.handle(record)


class OutputCapture:
    """Routes what each capturing thread (or coroutine) prints or logs into its own buffer.

    Installed process-wide for the duration of a run (nested runs share one
    installation through a reference count). A worker brackets each task by
    setting and popping ``buffers[its thread ident]``; it touches only its own
    slot, so tasks running at the same moment never see each other's output.
    Coroutines share the loop thread: each sets ``task_buffer`` in its own
    context instead, which the streams and the log handler read when the
    thread has no buffer of its own.
    """

    # guards _installs, _saved and the sys.stdout/sys.stderr swap
    _lock = threading.Lock()
    _installs = 0
    _saved: tuple[Any, Any, logging.Handler] | None = None
    # ident -> list of text pieces; written only by its own thread (or the installer)
    buffers: dict[int, list[str]] = {}

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            cls._installs += 1
            if cls._installs > 1:
                return
            handler = _LogToBuffer(cls.buffers)
            cls._saved = (sys.stdout, sys.stderr, handler)
            sys.stdout = _Router(sys.stdout, cls.buffers)
            sys.stderr = _Router(sys.stderr, cls.buffers)
            logging.getLogger().addHandler(handler)

    @classmethod
    def uninstall(cls) -> None:
        with cls._lock:
            if cls._installs == 0:
                return
            cls._installs -= 1
            if cls._installs or cls._saved is None:
                return
            out, err, handler = cls._saved
            cls._saved = None
            # restore only what is still ours: someone may have swapped the stream since
            if isinstance(sys.stdout, _Router) and sys.stdout._original is out:
                sys.stdout = out
            if isinstance(sys.stderr, _Router) and sys.stderr._original is err:
                sys.stderr = err
            logging.getLogger().removeHandler(handler)


def in_task(record: logging.LogRecord) -> bool:
    """Whether ``record`` comes from a task whose output is captured: a worker's, or a
    coroutine's (emitted on the event loop's thread, in the coroutine's own context)."""
    return record.thread in OutputCapture.buffers or (
        record.thread == _get_ident() and _task_buffer_get() is not None)


class ThreadProxyLogger:
    """A logger that resolves, at each call, to the logger named after the current thread.

    ``logger = ThreadProxyLogger(); logger.info("x")`` inside a task logs to
    ``logging.getLogger("thread_3")`` when the task runs on ``thread_3``.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(logging.getLogger(threading.current_thread().name), name)


_HANDLER_FLAG = "_thread_order_handler"


def configure_logging(verbose: bool = False, stream: Any = None,
                      highlights: Iterable[tuple[re.Pattern, str]] = ()) -> logging.Handler:
    """Send log records to ``stream`` (stderr) as ``time LEVEL [thread] message``.

    Sets the root level to DEBUG when ``verbose`` else INFO, and the handler's too (a
    logger set to DEBUG itself, such as a per-thread file's, stays quiet here). On a
    terminal, what each ``(regex, colour)`` of ``highlights`` matches is coloured (ANSI
    escapes, as colorama gives them, or names such as ``"bold red"``). Idempotent: a
    second call replaces the handler the first one added.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_FLAG, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.__stderr__)
    setattr(handler, _HANDLER_FLAG, True)
    fmt, datefmt = "%(asctime)s %(levelname)-7s [%(threadName)s] %(message)s", "%H:%M:%S"
    highlights = list(highlights)
    if highlights and colors_wanted(handler.stream):
        handler.setFormatter(HighlightFormatter(fmt, datefmt, highlights))
    else:
        handler.setFormatter(logging.Formatter(fmt, datefmt))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def log_task_failures(events: Any) -> Any:
    """Log every failed attempt of a run on ``events`` (an EventStream); returns the undo function.

    What ``setup_logging=True`` adds besides the handler: a failing task is one ERROR line
    naming the task, the thread it ran on and the error; a failed attempt followed by a
    retry is a WARNING saying so.
    """
    log = logging.getLogger("thread_order.tasks")

    def say(level: int, thread: str | None, message: str, *args: Any) -> None:
        if not log.isEnabledFor(level):
            return
        # logged on the dispatcher thread, but about a worker's task: name the worker
        entry = log.makeRecord(log.name, level, __file__, 0, message, args, None)
        entry.threadName = thread or "-"
        log.handle(entry)

    def on_event(event: Any) -> None:
        record = event.record
        if record is None or record.error_type is None:
            return
        if event.kind is EventKind.TASK_RETRYING:
            delay = (event.data or {}).get("delay") or 0
            say(logging.WARNING, record.thread, "%s: attempt %d failed, retrying%s: %s: %s",
                event.name, event.attempt, f" in {delay:g}s" if delay else "",
                record.error_type, record.error)
        elif record.status == "FAILED":
            say(logging.ERROR, record.thread, "%s: FAILED: %s: %s", event.name,
                record.error_type, record.error)

    return events.subscribe(on_event, (EventKind.TASK_RETRYING, EventKind.TASK_FINISHED))
