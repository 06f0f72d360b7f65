"""Status colours shared by every front-end: terminal, HTML report and web UI."""

from __future__ import annotations

__all__ = ["STATUS_COLORS"]

#: one colour per task status (and the two live states), the same everywhere;
#: the web UI's stylesheet repeats them as CSS variables
STATUS_COLORS: dict[str, str] = {
    "PASSED": "#2e9d4f",
    "FAILED": "#d64545",
    "SKIPPED": "#d9a21b",
    "CANCELLED": "#8a8f98",
    "RUNNING": "#3b82f6",
    "WAITING": "#c9ced6",
}
