"""The run summary: the dict that ``Scheduler.start()`` returns and RUN_FINISHED carries."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from .model import TaskStatus

__all__ = ["build_summary"]

_PASSED, _FAILED, _SKIPPED, _CANCELLED = (
    TaskStatus.PASSED, TaskStatus.FAILED, TaskStatus.SKIPPED, TaskStatus.CANCELLED,
)


def build_summary(run: Any) -> dict:
    """The summary of a finished ``dispatch.Run``: lists of names per status, counts, timings."""
    finished_at = time.time()
    duration = time.perf_counter() - run.t0
    records = run.records
    failures = {}
    failure_counts: Counter = Counter()
    tasks = {}
    for rec in records:
        if rec is None:  # unreachable unless forced; kept defensive for summaries
            continue
        tasks[rec.name] = {
            "status": rec.status, "thread": rec.thread, "started_at": rec.started_at,
            "finished_at": rec.finished_at, "duration": rec.duration, "attempts": rec.attempts,
            "error_type": rec.error_type, "error": rec.error, "traceback": rec.traceback,
            "output": rec.output, "reason": rec.reason,
        }
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
    return {
        "run_id": run.run_id,
        "ran": [r.name for r in run.finish_order if r.attempts],
        "passed": list(passed),
        "failed": list(failed),
        "skipped": list(skipped),
        "cancelled": list(cancelled),
        "failures": failures,
        "failure_counts": dict(failure_counts),
        "started_at": run.started_at,
        "finished_at": finished_at,
        "duration": duration,
        "interrupted": run.interrupted,
        "workers": run.s.workers,
        "text": text,
        "tasks": tasks,
    }
