"""Task contexts: front-end code entered on the worker thread around each attempt of a task.

Events reach subscribers on the dispatcher thread, which is the right place to
count and record, but not to set anything a task should see *while it runs*
(a tracing span made current, a context variable, a log prefix): that has to
happen on the worker thread, right around the call. ``Scheduler.add_task_context``
registers a factory ``factory(name, attempt)`` returning a context manager (or
None); the worker enters it just before calling the task and leaves it just
after, with the task's exception if it raised.

A context is front-end code, not the user's task: if its factory or
``__enter__`` raises, the error is logged and the task runs without it; if its
``__exit__`` raises, that is logged too and the task's outcome stands. A
context never swallows the task's exception. With no context registered the
worker does not call anything extra.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, ContextManager

__all__ = ["TaskContexts", "TaskContextFactory"]

log = logging.getLogger("thread_order")

TaskContextFactory = Callable[[str, int], "ContextManager[Any] | None"]


class _Entered:
    """The contexts entered around one attempt, left in reverse order."""

    __slots__ = ("managers",)

    def __init__(self, factories: tuple[TaskContextFactory, ...], name: str, attempt: int) -> None:
        self.managers: list[Any] = []
        for factory in factories:
            try:
                manager = factory(name, attempt)
                if manager is None:
                    continue
                type(manager).__enter__(manager)
            except Exception:  # a broken context must not fail the task it surrounds
                log.exception("task context %r failed to enter for task %r", factory, name)
                continue
            self.managers.append(manager)

    def __enter__(self) -> "_Entered":
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        for manager in reversed(self.managers):
            try:
                type(manager).__exit__(manager, kind, value, tb)
            except Exception:
                log.exception("task context %r failed to exit", manager)
        return False  # the task's exception, if any, is the task's outcome


class TaskContexts:
    """The task-context factories of one scheduler."""

    def __init__(self) -> None:
        # guards _factories; a run takes a snapshot (see `combined`) when it starts
        self._lock = threading.Lock()
        self._factories: tuple[TaskContextFactory, ...] = ()

    def add(self, factory: TaskContextFactory) -> Callable[[], None]:
        """Register ``factory``; returns a function that removes it (for the next run)."""
        if not callable(factory):
            raise TypeError(f"add_task_context: {factory!r} is not callable")
        with self._lock:
            self._factories = self._factories + (factory,)

        def remove() -> None:
            with self._lock:
                items = list(self._factories)
                if factory in items:
                    items.remove(factory)
                self._factories = tuple(items)

        return remove

    def combined(self) -> Callable[[str, int], _Entered] | None:
        """What a run's workers call around each attempt, or None when nobody registered one."""
        factories = self._factories
        if not factories:
            return None

        def enter(name: str, attempt: int) -> _Entered:
            return _Entered(factories, name, attempt)

        return enter
