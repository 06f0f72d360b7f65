"""Exceptions raised by thread_order.

The tree::

    ThreadOrderError                 base of everything we raise on purpose
     +-- GraphError (ValueError)     the task graph is not a valid DAG
     |    +-- DuplicateTaskError     a name registered twice      (.name)
     |    +-- UnknownDependencyError a dependency nobody defined  (.task, .dependency, .candidates)
     |    +-- AmbiguousDependencyError a name several modules define (.task, .dependency, .candidates)
     |    +-- UnpairedCaseError      no case of a parametrized dependency has a case's values
     |    +-- CycleError             a dependency cycle           (.cycle)
     +-- PoolError (ValueError)      a bad pool, or a task in a pool nobody declared
 +-- UsageError                  bad input to a front-end (file, option, target)
     +-- HistoryError                the run history cannot be read or written
     +-- WorkerStartError (RuntimeError) no thread to run on; nothing ran
     +-- ExecutorError (RuntimeError) an executor cannot run the tasks; nothing ran

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
    "AmbiguousDependencyError",
    "UnpairedCaseError",
    "ExecutorError",
    "CycleError",
    "PoolError",
    "UsageError",
    "HistoryError",
    "WorkerStartError",
    "close_names",
    "did_you_mean",
    "edit_distance",
]


def close_names(word: str, names: Iterable[str], n: int = 3) -> list[str]:
    """The (at most ``n``) names most like ``word``, best first, ties in the order given.

    A name counts if difflib's ratio is at least 0.6 and within 0.15 of the best one, so a
    clear winner is not diluted by names that merely share a prefix.
    """
    matcher = difflib.SequenceMatcher(b=word)
    scored = []
    for i, name in enumerate(names):
        matcher.set_seq1(name)
        if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
            ratio = matcher.ratio()
            if ratio >= 0.6:
                scored.append((-ratio, i, name))
    scored.sort()
    if not scored:
        return []
    best = -scored[0][0]
    return [name for ratio, _, name in scored[:n] if -ratio >= best - 0.15]


def edit_distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbours as one edit (optimal string alignment);
    3 for any two names whose lengths differ by more than 2 (tdrun's mistyped options)."""
    if abs(len(a) - len(b)) > 2:
        return 3
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            row.append(cost)
        prev2, prev = prev, row
    return prev[-1]


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """``"; did you mean 'create_vm'?"`` for the real names closest to ``name``, or ``""``."""
    close = close_names(name, names)
    return "; did you mean " + " or ".join(map(repr, close)) + "?" if close else ""


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

    def __init__(self, task: str, dependency: str, candidates: tuple[str, ...] = ()) -> None:
        message = f"task {task!r} depends on unknown task {dependency!r}"
        if candidates:
            message += "; did you mean " + " or ".join(map(repr, candidates)) + "?"
        super().__init__(message)
        self.task = task
        self.dependency = dependency
        self.candidates = tuple(candidates)


class AmbiguousDependencyError(GraphError):
    """A dependency names a task that several modules of a suite define, none of them its own."""

    def __init__(self, task: str, dependency: str, candidates: tuple[str, ...]) -> None:
        super().__init__(f"task {task!r} depends on {dependency!r}, which several modules define: "
                         + ", ".join(candidates) + "; name one as MODULE::TASK")
        self.task = task
        self.dependency = dependency
        self.candidates = tuple(candidates)


class UnpairedCaseError(GraphError):
    """A case of a parametrized task depends on a parametrized task sharing parameter names,
    and no case of that task has the same values."""

    def __init__(self, task: str, dependency: str, values: str) -> None:
        super().__init__(f"task {task!r} depends on {dependency!r}, which has no case with {values}")
        self.task = task
        self.dependency = dependency


class CycleError(GraphError):
    """The dependencies form a cycle; ``cycle`` lists it, first name repeated last."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = list(cycle)


class PoolError(ThreadOrderError, ValueError):
    """A pool with a bad name, size or rate, or a task in a pool that is not declared."""


class UsageError(ThreadOrderError):
    """Bad input to a front-end: a missing file, a bad option value, an unknown target."""


class HistoryError(ThreadOrderError):
    """The run history file is missing, corrupt, or written by a newer version."""


class WorkerStartError(ThreadOrderError, RuntimeError):
    """``start()`` could not start its worker threads (near the process's thread limit).

    Raised before anything ran or was announced; the threads already started are stopped.
    """


class ExecutorError(ThreadOrderError, RuntimeError):
    """An executor cannot run the tasks: its extra is missing, its cluster cannot be reached,
    or a task or state value cannot be sent to it. Raised before anything ran or was announced.
    """
