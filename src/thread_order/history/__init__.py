"""The run history: a SQLite file that records every run, and the commands that read it."""

from .commands import history_observer
from .db import SCHEMA_VERSION, snapshot_state
from .recorder import HistoryRecorder
from .store import DEFAULT_HISTORY, HistoryStore, compare_runs, differs_text, resolve_history_path
from .timings import recent_durations

__all__ = [
    "DEFAULT_HISTORY",
    "SCHEMA_VERSION",
    "HistoryRecorder",
    "HistoryStore",
    "compare_runs",
    "differs_text",
    "history_observer",
    "recent_durations",
    "resolve_history_path",
    "snapshot_state",
]
