"""The pytest nodes of a tdrun module: the file (a collector) and one item per task or case.

A file is imported and its tasks collected by the engine's own collection
(``collect``), so names, cases and refusals are tdrun's. Items do not run
their task themselves: the whole selected graph runs once, on the Scheduler
(``session.py``), and each item then reports what its task ended as.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

__all__ = ["TaskFailure", "TaskItem", "TdrunFile", "outcome_of"]


#: pytest's own markers, whose presence changes how an item runs: a task tagged ``skip`` must not
#: be skipped by pytest after it ran, so such tags are not made markers
PYTEST_MARKERS = frozenset({"skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings",
                            "tryfirst", "trylast", "timeout"})


def _shown_path(path: Path, base: Path) -> str:
    """``path`` as the user would type it: relative to where pytest was started, when inside
    (and still the current directory, which the loader resolves it against)."""
    try:
        if path.is_relative_to(base) and Path.cwd() == base:
            return os.path.relpath(path, base)
    except (ValueError, OSError):
        pass
    return str(path)


class TdrunFile(pytest.File):
    """A tdrun module: imported once, its marked functions (and their cases) become items."""

    module: Any = None

    def collect(self) -> Iterator[pytest.Item]:
        from ..engine.collect import ModuleLoadError, collect, load_module
        from ..engine.errors import GraphError, UsageError
        from .session import session_run

        shown = _shown_path(self.path, Path(self.config.invocation_params.dir))
        try:
            module = load_module(shown)
            collection = collect(shown, module=module)
        except ModuleLoadError as exc:
            raise self.CollectError(f"{exc.user_traceback.rstrip()}\ntdrun: {exc}") from None
        except (UsageError, GraphError) as exc:
            raise self.CollectError(f"tdrun: {exc}") from None
        self.module = module
        self.shown = shown
        run = session_run(self.config)
        run.add_file(self)
        for spec in collection.specs:
            item = TaskItem.from_parent(self, name=spec.name, spec=spec,
                                        case=collection.cases.get(spec.name))
            item.add_marker("tdrun")  # -m tdrun / -m "not tdrun": all the tasks, or none
            for tag in spec.tags:
                if tag not in PYTEST_MARKERS and tag != "tdrun":
                    run.register_marker(tag)
                    item.add_marker(tag)
            yield item


class TaskItem(pytest.Item):
    """One task (or one case of a parametrized task) of a tdrun module."""

    def __init__(self, *, spec: Any, case: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.case = case

    @property
    def line(self) -> int:
        fn = self.spec.fn
        while isinstance(fn, functools.partial):
            fn = fn.func
        code = getattr(fn, "__code__", None)
        return code.co_firstlineno - 1 if code is not None else 0

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.line, self.name

    def runtest(self) -> None:
        # the task ran with the whole graph; its outcome is put in the report by the plugin
        from .session import session_run

        if session_run(self.config).record_of(self) is None:
            raise TaskNotRun(f"task {self.name!r} did not run: the tdrun run did not take place")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, TaskNotRun):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)


class TaskNotRun(Exception):
    """An item whose task has no record (the run never happened)."""


class _Crash:
    """What pytest's short summary and JUnit's ``message`` read from a failure: ``.message``."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.message = message


class TaskFailure:
    """A failed task as pytest shows it: the task's own traceback (from the user's frame)."""

    def __init__(self, record: Any, path: str, lineno: int) -> None:
        self.record = record
        message = f"{record.error_type}: {record.error}" if record.error_type else (record.error or "failed")
        self.reprcrash = _Crash(path, lineno, message)

    def __str__(self) -> str:
        text = (self.record.traceback or self.reprcrash.message).rstrip("\n")
        if self.record.attempts > 1:
            text += f"\n(failed after {self.record.attempts} attempts)"
        return text

    def toterminal(self, tw: Any) -> None:
        for line in str(self).split("\n"):
            tw.line(line, red=line.startswith(("E ", self.record.error_type or "\0")))


def outcome_of(item: TaskItem, record: Any) -> tuple[str, Any]:
    """``(outcome, longrepr)`` of the report of ``item``'s call, from its task's record."""
    status = record.status.value
    if status == "PASSED":
        return "passed", None
    if status == "FAILED":
        return "failed", TaskFailure(record, str(item.path), item.line + 1)
    reason = record.reason or status.lower()
    if status == "CANCELLED" and not reason.startswith("cancelled"):
        reason = f"cancelled: {reason}"
    return "skipped", (str(item.path), item.line + 1, reason)
