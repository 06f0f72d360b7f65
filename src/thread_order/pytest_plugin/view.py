"""What ordinary pytest tests see of a tdrun run: a read-only view of its final state and results.

The ``tdrun_state`` fixture returns a :class:`TdrunState`. Its containers are
frozen copies taken when the run ended (dicts become read-only mappings,
lists tuples, sets frozensets), so a follow-up assertion cannot change what
the next one reads; other objects (a client, a model instance) are the
tasks' own.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Iterator, Mapping

__all__ = ["TdrunState", "freeze"]


def freeze(value: Any, depth: int = 0) -> Any:
    """``value`` with its dicts, lists and sets made read-only, recursively (100 levels deep at most)."""
    if depth > 100:
        return value
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v, depth + 1) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v, depth + 1) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    return value


class TdrunState(Mapping):
    """The final state of the session's tdrun run, as a read-only mapping (``results`` apart).

    - ``tdrun_state["key"]``: a state value (what ``setup_state``, ``--tdrun-set`` and the tasks put there);
    - ``results``: each task's return value by full task name (``create_network``, or
      ``network::create_network`` in a run of several modules);
    - ``records``: each task's ``TaskRecord`` (status, thread, duration, error, reason, output...);
    - ``status(name)``: ``"PASSED"``, ``"FAILED"``, ``"SKIPPED"`` or ``"CANCELLED"``;
    - ``summary``: the run summary (counts, ``interrupted``, ``text``...).
    """

    def __init__(self, state: Mapping[str, Any], records: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
        state = dict(state)
        results = state.pop("results", {}) or {}
        self._state = freeze(state)
        self.results: Mapping[str, Any] = freeze(results)
        self.records: Mapping[str, Any] = MappingProxyType(dict(records))
        self.summary: Mapping[str, Any] = MappingProxyType(
            {k: v for k, v in summary.items() if k != "tasks"})

    def __getitem__(self, key: str) -> Any:
        return self._state[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __repr__(self) -> str:
        return f"TdrunState({dict(self._state)!r})"

    def status(self, name: str) -> str:
        """The final status of task ``name``.

        Raises:
            KeyError: no task of the run is called ``name`` (the message lists close names).
        """
        record = self.records.get(name)
        if record is None:
            import difflib

            close = difflib.get_close_matches(name, list(self.records), n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise KeyError(f"no task {name!r} in the tdrun run{hint}")
        return record.status.value
