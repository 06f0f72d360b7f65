"""Parametrized tasks: checking ``params``/``ids``, expanding cases, pairing their dependencies.

``params={"cidr": ["10.0.1.0/24", "10.0.2.0/24"]}`` makes one task per value,
named ``create_subnet[10.0.1.0/24]``; several keys give their cartesian product
in key order, ids joined with ``-`` (as pytest names its cases). A dependency
on the base name means every case, except between two parametrized tasks that
share parameter names: each case then waits only for the cases having the same
values for the shared names, so a teardown pairs with what it tears down.

Used by ``Scheduler.register(..., params=)``, by ``mark(params=)`` and by the
collection of task modules, so all three name and pair cases the same way.
"""

from __future__ import annotations

import enum
import functools
from functools import partial
import inspect
import itertools
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from .errors import DuplicateTaskError, UnpairedCaseError

__all__ = ["Case", "Group", "expand", "case_name", "bind", "pair", "resolve_groups", "register_cases"]

_SCALARS = (str, int, float, bool, complex, type(None))
_PLAIN = frozenset(_SCALARS)
_INJECTIVE = frozenset((str, int))  # types whose str() of distinct values differ


class Case(NamedTuple):
    """One case of a parametrized task: its full name, id and parameter values."""

    name: str
    id: str
    values: dict[str, Any]


class Group(NamedTuple):
    """The cases of one parametrized task, in order; ``keys`` are its parameter names.

    Kept as parallel tuples (names, ids, values, and ``calls``: the function bound to
    each case's values, whose keywords *are* the values): a thousand cases are a
    thousand tasks to register, and an object per case was most of what expanding cost.
    """

    base: str
    keys: tuple[str, ...]
    names: tuple[str, ...]
    ids: Sequence[str]
    values: tuple[dict[str, Any], ...]
    calls: tuple[Callable, ...]

    @property
    def cases(self) -> list[Case]:
        return [Case(*c) for c in zip(self.names, self.ids, self.values)]


def case_name(base: str, case_id: str) -> str:
    """``create_subnet`` + ``10.0.1.0/24`` -> ``create_subnet[10.0.1.0/24]``."""
    return f"{base}[{case_id}]"


def _auto_id(key: str, value: Any, index: int) -> str:
    if type(value) in _PLAIN:
        return str(value)
    if isinstance(value, enum.Enum):
        return str(value)
    if isinstance(value, _SCALARS):
        return str(value)
    if isinstance(value, type) or inspect.isfunction(value):
        return getattr(value, "__name__", f"{key}{index}")
    return f"{key}{index}"


def _check_params(task: str, params: Any) -> dict[str, list[Any]]:
    if not isinstance(params, Mapping):
        raise TypeError(f"task {task!r}: params must be a dict of lists, "
                        f"such as {{'cidr': ['10.0.1.0/24']}}, not {type(params).__name__}")
    if not params:
        raise ValueError(f"task {task!r}: params is empty; give at least one parameter")
    out: dict[str, list[Any]] = {}
    for key, values in params.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise TypeError(f"task {task!r}: params keys must be parameter names, not {key!r}")
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (list, tuple, range)):
            raise TypeError(f"task {task!r}: params[{key!r}] must be a list of values, "
                            f"not {type(values).__name__}")
        if not values:
            raise ValueError(f"task {task!r}: params[{key!r}] is an empty list; give at least one value")
        out[key] = list(values)
    return out


def _check_signature(task: str, fn: Callable, keys: Iterable[str], with_state: bool) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    accepted = set()
    positional = []
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            accepted.add(p.name)
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional.append(p.name)
    if with_state and positional:
        accepted.discard(positional[0])  # that one receives the state
    for key in keys:
        if key not in accepted:
            raise TypeError(f"task {task!r}: the function does not accept a parameter {key!r} "
                            f"(give it one: def {getattr(fn, '__name__', task)}(..., {key}))")


def _ids_of(task: str, params: dict[str, list[Any]], ids: Any) -> list[tuple[str, dict[str, Any]]]:
    keys = list(params)
    combos = list(itertools.product(*(list(enumerate(params[k])) for k in keys)))
    if ids is not None and not callable(ids) and (isinstance(ids, (str, bytes, Mapping))
                                                  or not isinstance(ids, (list, tuple))):
        raise TypeError(f"task {task!r}: ids must be a list of strings or a function of a value, "
                        f"not {type(ids).__name__}")
    if isinstance(ids, (list, tuple)) and len(ids) != len(combos):
        raise ValueError(f"task {task!r}: ids has {len(ids)} entries for {len(combos)} cases")
    out = []
    for n, combo in enumerate(combos):
        values = {k: v for k, (_, v) in zip(keys, combo)}
        given = ids[n] if isinstance(ids, (list, tuple)) else None
        if given is not None:
            if not isinstance(given, str) or not given:
                raise TypeError(f"task {task!r}: ids[{n}] must be a non-empty string, not {given!r}")
            out.append((given, values))
            continue
        parts = []
        for k, (i, v) in zip(keys, combo):
            part = None
            if callable(ids):
                part = ids(v)
                if part is not None and (not isinstance(part, str) or not part):
                    raise TypeError(f"task {task!r}: ids({v!r}) must return a non-empty string or None, "
                                    f"not {part!r}")
            parts.append(part if part is not None else _auto_id(k, v, i))
        out.append(("-".join(parts), values))
    _check_unique(task, [case_id for case_id, _ in out])
    return out


class _Ids(Sequence):
    """The ids of many cases, cut from their names when read (most runs never read them)."""

    __slots__ = ("_cut", "_names")

    def __init__(self, base: str, names: tuple[str, ...]) -> None:
        self._cut, self._names = len(base) + 1, names

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [n[self._cut:-1] for n in self._names[i]]
        return self._names[i][self._cut:-1]

    def __iter__(self):
        cut = self._cut
        return (n[cut:-1] for n in self._names)


def _check_unique(task: str, case_ids: Sequence[str]) -> None:
    if len(set(case_ids)) == len(case_ids):
        return
    seen: dict[str, int] = {}
    for case_id in case_ids:
        seen[case_id] = seen.get(case_id, 0) + 1
    dupes = [case_id for case_id, count in seen.items() if count > 1]
    raise ValueError(f"task {task!r}: duplicate case ids {', '.join(map(repr, dupes))}; "
                     "give distinct ids=")


def expand(fn: Callable, name: str, params: Any, ids: Any = None, with_state: bool = False) -> Group:
    """Check ``params`` and ``ids`` for task ``name`` and list its cases.

    Raises:
        TypeError: ``params`` is not a dict of lists, ``ids`` has a wrong type, or
            the function does not accept a parameter.
        ValueError: an empty value list, duplicate ids, or as many ids as cases.
    """
    checked = _check_params(name, params)
    _check_signature(name, fn, checked, with_state)
    if ids is None and len(checked) == 1:  # the common case, without the general machinery
        ((key, values),) = checked.items()
        types = set(map(type, values))
        if types <= _PLAIN:
            names = tuple([f"{name}[{v}]" for v in values])  # the id is str(value)
            case_ids = tuple([n[len(name) + 1:-1] for n in names]) if len(names) < 64 else _Ids(name, names)
        else:
            case_ids = tuple([_auto_id(key, v, i) for i, v in enumerate(values)])
            names = tuple([f"{name}[{case_id}]" for case_id in case_ids])
        # names are unique exactly when ids are; for values all str or all int, when values are
        distinct = len(set(values)) if len(types) == 1 and types <= _INJECTIVE else len(set(names))
        if distinct != len(names):
            _check_unique(name, list(case_ids))
        calls = tuple([partial(fn, **{key: v}) for v in values])
        return Group(name, (key,), names, case_ids, tuple([call.keywords for call in calls]), calls)
    else:
        pairs = _ids_of(name, checked, ids)
        case_ids = tuple([case_id for case_id, _ in pairs])
        calls = tuple([partial(fn, **values) for _, values in pairs])
    return Group(name, tuple(checked), tuple([f"{name}[{case_id}]" for case_id in case_ids]), case_ids,
                 tuple([call.keywords for call in calls]), calls)


def bind(fn: Callable, values: dict[str, Any]) -> Callable:
    """``fn`` called with ``values`` as keyword arguments (a C-level partial: no extra frame
    in the task's traceback)."""
    return functools.partial(fn, **values)


def unbound(fn: Callable) -> Callable:
    """The user's function behind a case's callable (for its docstring)."""
    return fn.func if isinstance(fn, functools.partial) else fn


def _key(values: dict[str, Any], shared: Sequence[str]) -> Any:
    return tuple(values[k] for k in shared)


def pair(task: str, values: dict[str, Any] | None, group: Group) -> list[str]:
    """The cases of ``group`` that ``task`` (a case with ``values``, or a plain task) waits for.

    Raises:
        UnpairedCaseError: ``task`` shares parameter names with the group but no case
            of the group has its values.
    """
    if not values:
        return list(group.names)
    shared = [k for k in group.keys if k in values]
    if not shared:
        return list(group.names)
    want = _key(values, shared)
    found = [n for n, v in zip(group.names, group.values) if _key(v, shared) == want]
    if not found:
        wanted = ", ".join(f"{k}={values[k]!r}" for k in shared)
        raise UnpairedCaseError(task, group.base, wanted)
    return found


def resolve_groups(
    names: Mapping[str, int],
    afters: Sequence[tuple[str, ...]],
    groups: Mapping[str, Group],
    values_of: Mapping[str, dict[str, Any]] | None = None,
) -> list[tuple[str, ...]]:
    """``afters`` with every group name replaced by the cases each task waits for.

    ``names`` maps task names to positions (in order), ``values_of`` maps the
    name of each case to its values (default: the cases of ``groups``).

    Raises:
        DuplicateTaskError: a task is named like a parametrized task.
        UnpairedCaseError: see :func:`pair`.
    """
    taken = groups.keys() & names.keys()
    if taken:
        raise DuplicateTaskError(next(iter(taken)))
    if not groups.keys() & set(itertools.chain.from_iterable(afters)):
        return list(afters)  # nothing depends on a parametrized task by its name
    if values_of is None:
        values_of = {n: v for g in groups.values() for n, v in zip(g.names, g.values)}
    out = list(afters)
    cache: dict[tuple, tuple[str, ...]] = {}
    for name, i in names.items():
        deps = afters[i]
        if not any(d in groups for d in deps):
            continue
        values = values_of.get(name)
        resolved: list[str] = []
        for d in deps:
            group = groups.get(d)
            if group is None:
                resolved.append(d)
                continue
            if values:
                resolved.extend(pair(name, values, group))
            else:
                hit = cache.get((d,))
                if hit is None:
                    hit = cache[(d,)] = group.names
                resolved.extend(hit)
        out[i] = tuple(dict.fromkeys(resolved))
    return out


def register_cases(scheduler: Any, fn: Callable, name: str, after: Any, with_state: bool,
                   params: Any, ids: Any, options: dict[str, Any]) -> None:
    """``Scheduler.register(..., params=...)``: register one task per case.

    Each case is a plain registration (so it is a task in every respect); the
    group is remembered so that dependencies on ``name`` resolve to its cases
    when the graph is built.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"task name must be a non-empty string, not {name!r}")
    if not callable(fn):
        raise TypeError(f"task {name!r}: {fn!r} is not callable")
    groups: dict[str, Group] = scheduler._groups
    if name in groups or name in scheduler._names:
        raise DuplicateTaskError(name)
    group = expand(fn, name, params, ids, with_state)
    taken = scheduler._names.keys() & set(group.names)
    if taken:
        raise DuplicateTaskError(next(n for n in group.names if n in taken))
    register = scheduler.register
    plain = not any(options.get(k) for k in ("tags", "always", "retries", "retry_delay", "timeout", "pool"))
    if plain:  # no keywords when there are none: register's fast path
        for case, call in zip(group.names, group.calls):
            register(call, case, after, with_state)
    else:
        for case, call in zip(group.names, group.calls):
            register(call, case, after, with_state, **options)
    groups[name] = group
