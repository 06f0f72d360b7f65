"""Exceptions raised by thread_order.

The tree::

    ThreadOrderError                 base of everything we raise on purpose
     +-- GraphError (ValueError)     the task graph is not a valid DAG
     |    +-- DuplicateTaskError     a name registered twice      (.name)
     |    +-- UnknownDependencyError a dependency nobody defined  (.task, .dependency)
     |    +-- CycleError             a dependency cycle           (.cycle)
     +-- UsageError                  bad input to a front-end (file, option, target)
     +-- HistoryError                the run history cannot be read or written
     +-- WorkerStartError (RuntimeError) no thread to run on; nothing ran

Front-ends turn these into one line and an exit code; anything else is a bug.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "ThreadOrderError",
    "GraphError",
    "DuplicateTaskError",
    "UnknownDependencyError",
    "CycleError",
    "UsageError",
    "HistoryError",
    "WorkerStartError",
    "did_you_mean",
]


def did_you_mean(name: str, candidates: Iterable[str], limit: int = 3) -> str:
    """``"; did you mean 'create_vm'?"`` for the real names closest to ``name``, or ``""``."""
    pool = list(candidates)
    near = difflib.get_close_matches(name, pool, n=limit, cutoff=0.8)
    folded = name.lower().replace("-", "_")
    near += [c for c in pool if c not in near and c.lower().replace("-", "_") == folded]
    if not near:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in near[:limit]) + "?"


class ThreadOrderError(Exception):
    """Base class of every error thread_order raises on purpose."""


class GraphError(ThreadOrderError, ValueError):
    """The registered tasks do not form a valid dependency graph."""


class DuplicateTaskError(GraphError):
    """A task name was registered twice."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} is already registered")
        self.name = name


class UnknownDependencyError(GraphError):
    """A task depends on a name that was never registered."""

    def __init__(self, task: str, dependency: str, known: Iterable[str] = ()) -> None:
        super().__init__(f"task {task!r} depends on unknown task {dependency!r}"
                         + did_you_mean(dependency, known))
        self.task = task
        self.dependency = dependency


class CycleError(GraphError):
    """The dependencies form a cycle; ``cycle`` lists it, first name repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = list(cycle)


class UsageError(ThreadOrderError):
    """Bad input to a front-end: a missing file, a bad option value, an unknown target."""


class HistoryError(ThreadOrderError):
    """The run history file is missing, corrupt, or written by a newer version."""


class WorkerStartError(ThreadOrderError, RuntimeError):
    """``start()`` could not start its worker threads (near the process's thread limit).

    Raised before anything ran or was announced; the threads already started are stopped.
    """
