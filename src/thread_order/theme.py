"""The look every front-end shares: status colours and how a duration is written."""

from __future__ import annotations

__all__ = ["STATUS_COLORS", "format_seconds"]

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


def format_seconds(seconds: float | None) -> str:
    """``0.0042`` -> ``4.2ms``, ``0.05`` -> ``50ms``, ``1.5`` -> ``1.50s``, ``95`` -> ``1m35s``."""
    if seconds is None:
        return "\u2014"
    if seconds == 0:
        return "0s"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}\u00b5s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.1f}ms" if ms < 10 and ms != int(ms) else f"{ms:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
