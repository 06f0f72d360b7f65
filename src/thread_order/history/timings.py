"""What the history knows of how long tasks take: the input of ``--order critical-path``."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ..engine.errors import HistoryError
from .db import decode_batch
from .store import HistoryStore

__all__ = ["recent_durations"]

#: how many passed durations of a task make its estimate, and how many runs are looked at
LAST = 5
MAX_RUNS = 50


def recent_durations(path: str | Path | None, module: str | None, last: int = LAST,
                     max_runs: int = MAX_RUNS) -> dict[str, float]:
    """Per task name, the median of its last ``last`` passed durations in runs of ``module``.

    Runs are read newest first, at most ``max_runs`` of them. An absent or
    unreadable file knows nothing: ``{}``.
    """
    if path is None or not Path(path).is_file():
        return {}
    seen: dict[str, list[float]] = {}
    try:
        with HistoryStore(path) as store:
            where = "WHERE module = ?" if module is not None else ""
            params = (module,) if module is not None else ()
            runs = store._query(f"SELECT id FROM runs {where} ORDER BY id DESC LIMIT {int(max_runs)}", params)
            for row in runs:
                for name, duration in _passed(store, row["id"]):
                    got = seen.setdefault(name, [])
                    if len(got) < last and isinstance(duration, (int, float)) and duration >= 0:
                        got.append(float(duration))
    except HistoryError:
        return {}
    return {name: statistics.median(values) for name, values in seen.items() if values}


def _passed(store: HistoryStore, run_id: int) -> list[tuple[str, Any]]:
    rows = [(r["name"], r["duration"]) for r in store._query(
        "SELECT name, duration FROM tasks WHERE run_id = ? AND status = 'PASSED'", (run_id,))]
    if store._columns["task_batches"]:
        for batch in store._query("SELECT tasks, names, threads, times, numbers FROM task_batches "
                                  "WHERE run_id = ?", (run_id,)):
            decoded = decode_batch(*batch.values())
            rows.extend((t["name"], t["duration"]) for t in decoded or ())
    return rows
