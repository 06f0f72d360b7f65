"""The engine's single ordered event stream, and the subscriber list behind it."""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping, NamedTuple

from .model import TaskRecord

__all__ = ["EventKind", "Event", "EventStream"]

log = logging.getLogger("thread_order")


class EventKind(str, enum.Enum):
    """What happened. Task events carry ``name``; run events carry ``data``."""

    RUN_STARTED = "run_started"  # data: meta (run_id, total_tasks, workers, start_time, tasks)
    TASK_READY = "task_ready"  # every dependency is final and the task will run
    TASK_STARTED = "task_started"  # handed to a worker (attempt)
    TASK_RUNNING = "task_running"  # a worker thread began executing it (thread, attempt)
    TASK_RETRYING = "task_retrying"  # an attempt failed, another follows (data: delay, error)
    TASK_FINISHED = "task_finished"  # final state reached (record, count)
    RUN_INTERRUPTED = "run_interrupted"  # Ctrl-C or cancel(); data: {"force": bool}
    RUN_FINISHED = "run_finished"  # data: the summary
    TASK_WARNING = "task_warning"  # e.g. a coroutine blocked the event loop (data: {"warning"})
    POOL_WAITING = "pool_waiting"  # data: {"waiting": {pool: tasks waiting for it}}

    def __str__(self) -> str:
        return self.value


class Event(NamedTuple):
    """One thing that happened during a run, in the order it happened.

    ``seq`` numbers the events of a run from 1; ``time`` is epoch seconds.
    Immutable; a named tuple because one is built per event on the hot path.
    """

    kind: EventKind
    seq: int
    time: float
    name: str | None = None
    thread: str | None = None
    attempt: int = 0
    record: TaskRecord | None = None
    count: int = 0
    data: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; omits fields that are empty for this kind."""
        out: dict[str, Any] = {"kind": self.kind.value, "seq": self.seq, "time": self.time}
        if self.name is not None:
            out["name"] = self.name
        if self.thread is not None:
            out["thread"] = self.thread
        if self.attempt:
            out["attempt"] = self.attempt
        if self.record is not None:
            out["record"] = self.record.to_dict()
        if self.kind is EventKind.TASK_FINISHED:
            out["count"] = self.count
        if self.data is not None:
            out["data"] = dict(self.data)
        return out


Subscriber = Callable[[Event], Any]

_TASK_KINDS = tuple(k for k in EventKind if k.value.startswith("task_"))


class EventStream:
    """Subscribers per event kind; ``emit`` builds an event only if someone listens.

    Events are emitted by the scheduler on the thread that called ``start()``,
    so subscribers see one ordered stream and never run concurrently with each
    other. A subscriber that raises is logged and the run goes on.
    """

    def __init__(self) -> None:
        # guards _subs; emit reads a snapshot tuple, so it never holds the lock
        self._lock = threading.Lock()
        self._subs: dict[EventKind, tuple[Subscriber, ...]] = {k: () for k in EventKind}
        self._seq = 0
        #: True while nobody listens to any task event: a worker may then start a task
        #: itself without the dispatcher's say (see lanes.py); rewritten under _lock
        self.task_quiet = True
        #: called when a subscriber raises KeyboardInterrupt (Ctrl-C landing inside it):
        #: the run turns it into an interrupt request instead of losing its bookkeeping
        self.on_keyboard_interrupt: Callable[[], None] | None = None

    def subscribe(self, fn: Subscriber, kinds: Iterable[EventKind] | None = None) -> Callable[[], None]:
        """Call ``fn(event)`` for every event of ``kinds`` (all when None); returns an undo function."""
        if not callable(fn):
            raise TypeError(f"subscribe: {fn!r} is not callable")
        wanted = tuple(EventKind) if kinds is None else tuple(EventKind(k) for k in kinds)
        with self._lock:
            for kind in wanted:
                self._subs[kind] = self._subs[kind] + (fn,)
            self.task_quiet = not any(self._subs[k] for k in _TASK_KINDS)

        def unsubscribe() -> None:
            with self._lock:
                for kind in wanted:
                    subs = list(self._subs[kind])
                    if fn in subs:
                        subs.remove(fn)
                    self._subs[kind] = tuple(subs)
                self.task_quiet = not any(self._subs[k] for k in _TASK_KINDS)

        return unsubscribe

    def wants(self, kind: EventKind) -> bool:
        """True when at least one subscriber listens for ``kind``."""
        return bool(self._subs[kind])

    def reset(self) -> None:
        """Restart sequence numbers for a new run."""
        self._seq = 0

    def emit(self, kind: EventKind, **fields: Any) -> None:
        """Deliver one event to the subscribers of its kind, in subscription order."""
        subs = self._subs[kind]
        if not subs:
            return
        self._seq += 1
        self._deliver(subs, Event(kind, self._seq, time.time(), **fields))

    def emit_task(self, kind: EventKind, name: str, thread: str | None = None, attempt: int = 0,
                  record: TaskRecord | None = None, count: int = 0) -> None:
        """:meth:`emit` for the per-task kinds, positionally: the dispatcher's hot path.

        Builds the tuple directly (what ``Event(...)`` does, less the keyword
        handling), which is most of what an event costs when someone listens.
        """
        subs = self._subs[kind]
        if not subs:
            return
        seq = self._seq = self._seq + 1
        event = _new_event(Event, (kind, seq, _now(), name, thread, attempt, record, count, None))
        if len(subs) > 1:
            self._deliver(subs, event)
            return
        try:  # one subscriber (the common case): what _deliver does, without the call
            subs[0](event)
        except KeyboardInterrupt:
            if self.on_keyboard_interrupt is None:
                raise
            self.on_keyboard_interrupt()
        except BaseException:  # noqa: B902 - even SystemExit from a callback must not end the run
            log.exception("event subscriber %r failed on %s", subs[0], kind.value)

    def _deliver(self, subs: tuple[Subscriber, ...], event: Event) -> None:
        for fn in subs:
            try:
                fn(event)
            except KeyboardInterrupt:
                if self.on_keyboard_interrupt is None:
                    raise
                self.on_keyboard_interrupt()
            except BaseException:  # noqa: B902 - even SystemExit from a callback must not end the run
                log.exception("event subscriber %r failed on %s", fn, event.kind.value)


_new_event = tuple.__new__
_now = time.time
