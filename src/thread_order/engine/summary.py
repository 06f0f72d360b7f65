"""The run summary: the dict that ``Scheduler.start()`` returns and RUN_FINISHED carries."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import ItemsView, Mapping, ValuesView
from typing import Any

from .model import TaskRecord, TaskStatus
from .order import bound_of

__all__ = ["TaskTable", "build_summary"]

_PASSED, _FAILED, _SKIPPED, _CANCELLED = (
    TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED,
)


def _row(rec: TaskRecord) -> dict:
    return {
        "status": rec.status, "thread": rec.thread, "started_at": rec.started_at,
        "finished_at": rec.finished_at, "duration": rec.duration, "attempts": rec.attempts,
        "error_type": rec.error_type, "error": rec.error, "traceback": rec.traceback,
        "output": rec.output, "reason": rec.reason, "is_async": rec.is_async, "warning": rec.warning,
        "waited": rec.waited, "waited_for": rec.waited_for,
    }


class TaskTable(dict):
    """``summary["tasks"]``: ``{name: {status, thread, ...}}``, each task's dict built on first read.

    A dict of 11 keys per task was most of a 100,000-task run's memory, and
    most summaries are never read task by task. Until it is read, an entry
    holds the task's TaskRecord; every way of reading (indexing, ``get``,
    ``items``, ``values``, iteration, ``==``, ``dict(...)``, ``json.dumps``,
    pickling) sees the plain dicts, and a dict once built is kept, so changes
    to it stay.
    """

    __slots__ = ()

    def __getitem__(self, name: str) -> dict:
        row = dict.__getitem__(self, name)
        if type(row) is TaskRecord:
            row = _row(row)
            dict.__setitem__(self, name, row)
        return row

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def __iter__(self):  # defined so that dict(table) and {**table} read through __getitem__
        return iter(self.keys())

    def items(self) -> ItemsView:  # type: ignore[override]
        return ItemsView(self)

    def values(self) -> ValuesView:  # type: ignore[override]
        return ValuesView(self)

    def copy(self) -> dict:
        return dict(self.items())

    def pop(self, name: str, *default: Any) -> Any:
        if name not in self and default:
            return default[0]
        row = self[name]
        del self[name]
        return row

    def popitem(self) -> tuple[str, dict]:
        name = next(reversed(self.keys()))
        return name, self.pop(name)

    def setdefault(self, name: str, default: Any = None) -> Any:
        if name in self:
            return self[name]
        self[name] = default
        return default

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict:
        return dict(self.items()) | other

    def __ror__(self, other: Any) -> dict:
        return other | dict(self.items())

    def __repr__(self) -> str:
        return repr(dict(self.items()))

    def __reduce_ex__(self, protocol: int) -> tuple:
        return dict, (dict(self.items()),)


def build_summary(run: Any) -> dict:
    """The summary of a finished ``dispatch.Run``: lists of names per status, counts, timings."""
    finished_at = time.time()
    duration = time.perf_counter() - run.t0
    records = run.records
    failures = {}
    failure_counts: Counter = Counter()
    # a record is missing only if a forced stop left it so; kept defensive for summaries
    if None in records:
        tasks = TaskTable((rec.name, rec) for rec in records if rec is not None)
    else:  # (records[i] is the record of names[i])
        tasks = TaskTable(zip(run.names, records))
    for name in run.order[_FAILED]:
        rec = records[run.index[name]]
        failures[name] = {"error_type": rec.error_type, "error": rec.error}
        failure_counts[rec.error_type] += 1
    passed, failed = run.order[_PASSED], run.order[_FAILED]
    skipped, cancelled = run.order[_SKIPPED], run.order[_CANCELLED]
    text = f"{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped"
    if cancelled:
        text += f", {len(cancelled)} cancelled"
    text += f" in {duration:.2f}s"
    # teardown a forced stop left behind: `always` tasks that never started or were cut
    # short; a graceful stop still runs them, so this is empty unless the run was forced
    options = run.options
    teardown_not_run = [rec.name for i, rec in enumerate(records)
                        if rec is not None and rec.status is _CANCELLED and options[i].always] if cancelled else []
    # only a run with async tasks (engine/aio.py) has any: {task: its blocking-loop warning}
    warned = getattr(run, "warnings", None)
    warnings = {run.names[i]: text for i, text in sorted(warned.items())} if warned else {}
    return {
        "run_id": run.run_id,
        # the run's own lists, not copies: the run ends here
        "ran": run.ran,
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "cancelled": cancelled,
        "failures": failures,
        "failure_counts": dict(failure_counts),
        "started_at": run.started_at,
        "finished_at": finished_at,
        "duration": duration,
        "interrupted": run.interrupted,
        "workers": run.s.workers,
        "text": text,
        "teardown_not_run": teardown_not_run,
        "tasks": tasks,
        "warnings": warnings,
        **_order_fields(run, records),
        # per pool: size, rate, how many tasks waited for it, the longest and total wait
        "pools": run.pool_gate.summary(records) if run.pool_gate is not None else {},
    }


def _order_fields(run: Any, records: list) -> dict:
    """The start order of the run and, for critical-path order, its lower bound (see order.py).

    Other orders pay nothing here: their bound, where a front-end shows it, is
    worked out from the records after the run.
    """
    plan = getattr(run, "plan", None)
    if plan is None or plan.info["order"] != "critical-path":
        return {"order": dict(plan.info) if plan is not None else {"order": "declared"}}
    weights = [rec.duration if rec is not None and rec.attempts else 0.0 for rec in records]
    return {"order": dict(plan.info), "lower_bound": bound_of(run.graph, weights, run.s.workers)}
