"""Pools and rate limits, as declared: a pool's size and rate, and checking what names them.

A pool caps how many of its tasks hold a slot at once (``size``) and how many
start in any window of its period (``rate``, ``"10/s"``). A task may be in
several pools and starts only when all of them have room. Declared with
``Scheduler(pools=...)``, ``add_pool``, a module's ``POOLS``, ``[tool.tdrun]
pools`` and ``tdrun --pool``; gate.py enforces them during a run.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from .errors import PoolError

__all__ = ["Pool", "parse_rate", "pool_of", "parse_pools", "parse_pool_option",
           "pool_names", "check_task_pools", "module_pools", "pool_summary", "RATE_UNITS"]

#: the periods a rate may be given in, in seconds
RATE_UNITS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|min|h)\s*$")
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


class Pool(NamedTuple):
    """One declared pool: at most ``size`` tasks at once (None: no cap), at most ``rate[0]``
    starts in any ``rate[1]`` seconds (None: no rate)."""

    name: str
    size: int | None = None
    rate: tuple[int, float] | None = None

    @property
    def rate_text(self) -> str | None:
        """The rate as it is written (``"10/s"``), or None."""
        if self.rate is None:
            return None
        n, period = self.rate
        unit = next(u for u, s in RATE_UNITS.items() if s == period)
        return f"{n}/{unit}"

    def describe(self) -> str:
        """``"2"``, ``"4,10/s"``, ``"10/s"``: what ``--pool NAME=...`` takes."""
        parts = [str(self.size)] if self.size is not None else []
        if self.rate is not None:
            parts.append(self.rate_text)
        return ",".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "rate": self.rate_text}


def parse_rate(text: Any, where: str) -> tuple[int, float]:
    """``"10/s"`` -> ``(10, 1.0)``; ``N/s``, ``N/min``, ``N/h`` with N >= 1.

    Raises:
        PoolError: naming ``where`` (the pool) and what is allowed.
    """
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None or int(m.group(1)) < 1:
        raise PoolError(f"{where}: bad rate {text!r}; expected N/s, N/min or N/h with N >= 1")
    return int(m.group(1)), RATE_UNITS[m.group(2)]


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PoolError(f"{where}: size must be a whole number >= 1, not {value!r}")
    if value < 1:
        raise PoolError(f"{where}: size must be at least 1, not {value!r}")
    return value


def pool_of(name: Any, value: Any = None, *, size: Any = None, rate: Any = None,
            where: str = "") -> Pool:
    """A checked :class:`Pool` from ``value`` (a size, or ``{"size": .., "rate": ..}``) or
    from ``size=``/``rate=``.

    Raises:
        PoolError: a bad name, a size below 1, a bad rate, neither size nor rate.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, Pool) and value.name == name:
        return value
    if not isinstance(name, str) or not _NAME.match(name):
        raise PoolError(f"{prefix}bad pool name {name!r}; use letters, digits, '_', '.' or '-'")
    label = f"{prefix}pool {name!r}"
    if value is not None:
        if isinstance(value, Mapping):
            unknown = set(value) - {"size", "rate"}
            if unknown:
                raise PoolError(f"{label}: unknown key {sorted(unknown)[0]!r}; allowed: size, rate")
            size, rate = value.get("size"), value.get("rate")
        elif isinstance(value, str):
            return parse_pool_option(f"{name}={value}", where=where)[1]
        else:
            size = value
    if size is None and rate is None:
        raise PoolError(f"{label}: give a size, a rate or both")
    return Pool(name, None if size is None else _size(size, label),
                None if rate is None else parse_rate(rate, label))


def parse_pools(pools: Any, where: str = "") -> dict[str, Pool]:
    """``{"api": 2, "quota": {"size": 4, "rate": "10/s"}}`` -> ``{name: Pool}``.

    Raises:
        PoolError: not a dict, or a bad pool in it (naming ``where`` and the pool).
    """
    if pools is None:
        return {}
    if not isinstance(pools, Mapping):
        prefix = f"{where}: " if where else ""
        raise PoolError(f"{prefix}pools must be a dict of pool name -> size or "
                        f"{{'size': N, 'rate': 'N/s'}}, not {type(pools).__name__}")
    return {name: pool_of(name, value, where=where) for name, value in pools.items()}


def parse_pool_option(text: str, where: str = "--pool") -> tuple[str, Pool]:
    """``"api=2"``, ``"quota=4,10/s"``, ``"burst=10/s"`` -> ``(name, Pool)``.

    Raises:
        PoolError: naming ``where`` and the text.
    """
    label = f"{where} {text!r}" if where else repr(text)
    name, eq, spec = text.partition("=")
    name = name.strip()
    if not eq or not name or not spec.strip():
        raise PoolError(f"{label}: expected NAME=SIZE, NAME=SIZE,RATE or NAME=RATE "
                        "(api=2, quota=4,10/s)")
    size = rate = None
    for part in (p.strip() for p in spec.split(",")):
        if "/" in part and rate is None:
            rate = part
        elif part.isdigit() and size is None and rate is None:
            size = int(part)
        else:
            raise PoolError(f"{label}: expected NAME=SIZE, NAME=SIZE,RATE or NAME=RATE "
                            "(api=2, quota=4,10/s)")
    return name, pool_of(name, size=size, rate=rate, where=label)


def module_pools(modules: Iterable[tuple[str, Any]]) -> dict[str, Pool]:
    """The ``POOLS = {...}`` of each module of a suite, combined; a pool two modules declare
    must be declared alike.

    Raises:
        PoolError: a bad ``POOLS`` (naming the file), or two modules declaring one pool
            differently (naming both).
    """
    out: dict[str, Pool] = {}
    where: dict[str, str] = {}
    for path, module in modules:
        declared = getattr(module, "POOLS", None)
        if declared is None:
            continue
        for name, pool in parse_pools(declared, f"{path}: POOLS").items():
            if name in out and out[name] != pool:
                raise PoolError(f"{path}: POOLS: pool {name!r} is {pool.describe()} here but "
                                f"{out[name].describe()} in {where[name]}")
            out.setdefault(name, pool)
            where.setdefault(name, path)
    return out


def pool_summary(pools: Mapping[str, Pool], records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Per pool: its ``size`` and ``rate``, how many tasks ``waited`` for it, the ``longest``
    wait and the ``total`` (seconds) — the summary's and the reports' ``pools``."""
    out = {name: {**pool.to_dict(), "waited": 0, "longest": 0.0, "total": 0.0}
           for name, pool in pools.items()}
    for rec in records:
        if rec is not None and rec.waited_for in out:
            row = out[rec.waited_for]
            row["waited"] += 1
            row["total"] += rec.waited
            row["longest"] = max(row["longest"], rec.waited)
    return out


def pool_names(pool: Any, task: str) -> tuple[str, ...]:
    """``pool=`` of a task (a name or a list of names) as a tuple of distinct names.

    Raises:
        TypeError: not a string or a list of non-empty strings, naming the task.
    """
    if pool is None:
        return ()
    items = [pool] if isinstance(pool, str) else pool
    try:
        names = list(items)
    except TypeError:
        raise TypeError(f"task {task!r}: pool must be a pool name or a list of them, not {pool!r}") from None
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"task {task!r}: pool must hold pool names, got {name!r}")
    return tuple(dict.fromkeys(names))


def check_task_pools(pools: Mapping[str, Pool], task_pools: Sequence[tuple[str, ...]],
                     names: Iterable[str]) -> None:
    """Every pool a task names is declared (``task_pools`` and ``names`` by task position).

    Raises:
        PoolError: ``task 'x' is in unknown pool 'api' (declared: quota)``.
    """
    unknown = {name for group in set(task_pools) for name in group if name not in pools}
    if not unknown:
        return
    for task, group in zip(names, task_pools):
        for name in group:
            if name in unknown:
                declared = ", ".join(sorted(pools)) or "none"
                raise PoolError(f"task {task!r} is in unknown pool {name!r} (declared: {declared})")
