"""The look every front-end shares: status colours, how a duration is written, how a start order is."""

from __future__ import annotations

__all__ = ["STATUS_COLORS", "bound_text", "format_seconds", "order_text"]

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


def order_text(order: dict | None) -> str:
    """How a run's start order is named: ``shuffled, seed 4242``, ``replay of run 12``...

    Empty for the declared order (registration order, the default).
    """
    if not isinstance(order, dict):
        return ""
    kind = order.get("order")
    if kind == "shuffle":
        return f"shuffled, seed {order.get('seed')}"
    if kind == "critical-path":
        return "critical-path order"
    if kind == "replay":
        of = order.get("replay_of")
        text = f"replay of run {of}" if of is not None else "replay"
        return text + (", serial" if order.get("serial") else "")
    return ""


def bound_text(makespan: float | None, bound: dict | None) -> str:
    """``makespan 1.23s, lower bound 1.10s (critical path 1.10s; work 4.40s / 4 workers)``."""
    numbers = [bound.get(k) for k in ("lower_bound", "critical_path", "total_work")] \
        if isinstance(bound, dict) else [None]
    if not all(isinstance(v, (int, float)) and 0 <= v < float("inf") for v in numbers):
        return ""  # nothing, or a damaged record
    head = f"makespan {format_seconds(makespan)}, " if isinstance(makespan, (int, float)) \
        and 0 <= makespan < float("inf") else ""
    return (f"{head}lower bound {format_seconds(bound['lower_bound'])} (critical path "
            f"{format_seconds(bound.get('critical_path'))}; work {format_seconds(bound.get('total_work'))}"
            f" / {bound.get('workers')} worker{'' if bound.get('workers') == 1 else 's'})")
