"""tdrun --last-failed and --failed-first: the tasks the last recorded run of the same target
did not pass (failed, skipped, cancelled), read from the history.

``--last-failed`` keeps those tasks, everything they need upstream and the ``always`` tasks
downstream of them (their teardown); dependencies on tasks left out are dropped, as ``--tags``
drops them. ``--failed-first`` keeps everything and has the scheduler start those tasks first
whenever several are ready.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable

from ..engine.errors import HistoryError, UsageError
from ..engine.model import TaskSpec

__all__ = ["not_passed_last_time", "select_last_failed"]


def not_passed_last_time(history: str | None, target: str, option: str,
                         say: Callable[[str], None]) -> list[str] | None:
    """The tasks the newest run of ``target`` recorded in ``history`` did not pass.

    None (after saying why) when there is nothing to go on: no history file, no run of this
    target, or a run in which every task passed; the caller then runs everything.

    Raises:
        UsageError: the history file exists but cannot be read.
    """
    from ..history import DEFAULT_HISTORY, HistoryStore

    path = Path(history).expanduser() if history else DEFAULT_HISTORY
    if not path.is_file():
        say(f"tdrun: {option}: no history at {path}: running every task")
        return None
    try:
        with HistoryStore(path) as store:
            run_id = store.last_run_of(target)
            run = store.get_run(run_id) if run_id is not None else None
    except HistoryError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if run is None:
        say(f"tdrun: {option}: no run of {target} recorded in {path}: running every task")
        return None
    names = [t["name"] for t in run["tasks"] if t["status"] != "PASSED"]
    if not names:
        say(f"tdrun: {option}: every task of run {run['id']} passed: running every task")
        return None
    return names


def _reach(starts: Iterable[str], links: Any) -> set[str]:
    seen = set(starts)
    stack = list(seen)
    while stack:
        for nxt in links[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def select_last_failed(specs: list[TaskSpec], graph: Any, names: list[str]) -> tuple[list[TaskSpec], str]:
    """The specs ``--last-failed`` runs, and a line saying what they are.

    ``names`` are the tasks that did not pass last time; those no longer collected are
    ignored. Returns ``specs`` unchanged (and says so) when none of them is left.
    """
    wanted = [n for n in graph.nodes if n in set(names)]
    if not wanted:
        return specs, "none of the tasks that did not pass is collected now: running every task"
    upstream = _reach(wanted, graph.parents) - set(wanted)
    always = {s.name for s in specs if s.always}
    teardown = (_reach(wanted, graph.children) & always) - set(wanted) - upstream
    keep = set(wanted) | upstream | teardown
    chosen = []
    for spec in specs:
        if spec.name in keep:
            after = tuple(d for d in spec.after if d in keep)
            chosen.append(spec if after == spec.after else replace(spec, after=after))
    line = (f"rerunning {len(wanted)} task{'s' if len(wanted) != 1 else ''} that did not pass"
            f" ({', '.join(wanted[:5])}{', ...' if len(wanted) > 5 else ''}), "
            f"{len(upstream)} upstream, {len(teardown)} teardown: {len(chosen)} of {len(specs)}")
    return chosen, line
