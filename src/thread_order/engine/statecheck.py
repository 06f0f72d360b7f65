"""The state checker (``check_state=True``): which task reads and writes which state key, and
the ordering bugs that follow from it.

Each task registered ``with_state`` is handed its own view of the shared dict for the run
(a ``dict`` subclass that forwards every operation to the real state and notes, for that one
task, the top-level keys it reads and writes and the ``state['results']`` entries it reads).
A list, dict or set fetched from a top-level key comes wrapped, so that changing it in place
(``state['subnets'].append(...)``) counts as a write of that key. The view is bound to the
task with ``functools.partial``, so nothing runs per task in the engine when the checker is
off, and a task's traceback still starts at its own frame. The analysis after the run and
the static look at the tasks' source live in statefind.py.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Iterable, Sequence

__all__ = ["Access", "StateChecker", "StateView", "tracked"]

#: keys the engine owns: never findings (results entries are tracked one by one instead)
ENGINE_KEYS = frozenset(("_state_lock", "results"))


_READ, _WRITE, _UNLOCKED = 1, 2, 4


class Access:
    """The record of what one task did to the state: keys read and written, results entries
    read. ``StateView`` is one (a task's view records its own accesses); the containers it
    hands out report back to it.

    The keys are one small dict of flags (key -> read, written, written without the lock)
    rather than a set each: a dict of strings and ints is not tracked by the garbage
    collector, and a checked run of 10,000 tasks would otherwise make it work hard.
    """

    __slots__ = ()
    touched: dict
    results_read: Any
    _owned: Callable[[], bool] | None

    def read(self, key: Any) -> None:
        if key not in ENGINE_KEYS:
            keys = self.touched
            keys[key] = keys.get(key, 0) | _READ

    def write(self, key: Any) -> None:
        if key in ENGINE_KEYS:
            return
        keys = self.touched
        owned = self._owned
        flags = _WRITE if owned is not None and owned() else _WRITE | _UNLOCKED
        keys[key] = keys.get(key, 0) | flags

    def result(self, task: Any) -> None:
        if not self.results_read:
            self.results_read = set()
        self.results_read.add(task)

    @property
    def reads(self) -> set:
        return {k for k, f in self.touched.items() if f & _READ}

    @property
    def writes(self) -> set:
        return {k for k, f in self.touched.items() if f & _WRITE}

    @property
    def unlocked(self) -> set:
        """Keys written at least once without holding ``_state_lock``."""
        return {k for k, f in self.touched.items() if f & _UNLOCKED}


def lock_owned(lock: Any) -> Callable[[], bool] | None:
    """Whether the calling thread holds ``lock``, for the locks that can tell (RLock)."""
    owned = getattr(lock, "_is_owned", None)
    return owned if callable(owned) else None


def _unwrap(value: Any) -> Any:
    return value._obj if type(value) in _WRAPPERS else value


def tracked(value: Any, key: Any, acc: Access) -> Any:
    """``value`` (stored at top-level ``key``), wrapped if it is a list, dict or set."""
    wrapper = _WRAPS.get(type(value))
    return value if wrapper is None else wrapper(value, key, acc)


class StateView(dict, Access):
    """One task's view of the shared state: the real dict's contents, each access noted.

    Its own dict storage stays empty; every operation goes to the shared dict, so two
    tasks see each other's changes exactly as they would without the checker.
    """

    __slots__ = ("_d", "_acc", "_results", "touched", "results_read", "_owned")

    def __init__(self, state: dict, owned: Callable[[], bool] | None = None) -> None:
        """``owned()`` says whether the calling thread holds ``_state_lock`` (see lock_owned)."""
        # no dict.__init__: this dict's own storage stays empty
        self._d = state
        self._acc: Access = self  # what the containers it hands out report to
        self._results: tuple[Any, ResultsView] | None = None
        self.touched: dict = {}
        self.results_read: set | frozenset = frozenset()  # a set once a results entry is read
        self._owned = owned

    def _value(self, key: Any, value: Any) -> Any:
        if key == "results" and type(value) is dict:
            cached = self._results
            if cached is None or cached[0] is not value:
                cached = self._results = (value, ResultsView(value, self._acc))
            return cached[1]
        return tracked(value, key, self._acc)

    # reads
    def __getitem__(self, key: Any) -> Any:
        self._acc.read(key)
        return self._value(key, self._d[key])

    def get(self, key: Any, default: Any = None) -> Any:
        self._acc.read(key)
        d = self._d
        return self._value(key, d[key]) if key in d else default

    def __contains__(self, key: Any) -> bool:
        self._acc.read(key)
        return key in self._d

    def _read_all(self) -> None:
        read = self._acc.read
        for key in list(self._d):
            read(key)

    def __iter__(self):
        self._read_all()
        return iter(self._d)

    def keys(self):
        self._read_all()
        return self._d.keys()

    def items(self):
        self._read_all()
        return self._d.items()

    def values(self):
        self._read_all()
        return self._d.values()

    def __reversed__(self):
        self._read_all()
        return reversed(self._d)

    def copy(self) -> dict:
        self._read_all()
        return self._d.copy()

    def __len__(self) -> int:
        return len(self._d)

    def __eq__(self, other: Any) -> bool:
        self._read_all()
        return self._d == (other._d if isinstance(other, StateView) else other)

    def __ne__(self, other: Any) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        self._read_all()
        return repr(self._d)

    def __or__(self, other: Any) -> dict:
        self._read_all()
        return self._d | other

    def __ror__(self, other: Any) -> dict:
        self._read_all()
        return other | self._d

    def __reduce_ex__(self, protocol: int) -> tuple:  # copy, deepcopy, pickle: a plain dict
        self._read_all()
        return dict, (dict(self._d),)

    # writes
    def __setitem__(self, key: Any, value: Any) -> None:
        self._acc.write(key)
        self._d[key] = _unwrap(value)

    def __delitem__(self, key: Any) -> None:
        self._acc.write(key)
        del self._d[key]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        d = self._d
        acc = self._acc
        acc.read(key)
        if key not in d:
            acc.write(key)
        return self._value(key, d.setdefault(key, _unwrap(default)))

    def pop(self, key: Any, *default: Any) -> Any:
        self._acc.read(key)
        if key in self._d:
            self._acc.write(key)
        return self._d.pop(key, *default)

    def popitem(self) -> tuple:
        key, value = self._d.popitem()
        self._acc.write(key)
        return key, value

    def clear(self) -> None:
        write = self._acc.write
        for key in list(self._d):
            write(key)
        self._d.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        new = dict(*args, **kwargs)
        write = self._acc.write
        for key in new:
            write(key)
        d = self._d
        for key, value in new.items():
            d[key] = _unwrap(value)

    def __ior__(self, other: Any) -> "StateView":
        self.update(other)
        return self


class ResultsView(dict):
    """``state['results']`` as a task sees it: each entry it names is a read of that result."""

    __slots__ = ("_obj", "_acc")

    def __init__(self, results: dict, acc: Access) -> None:
        super().__init__()
        self._obj = results
        self._acc = acc

    def __getitem__(self, key: Any) -> Any:
        self._acc.result(key)
        return self._obj[key]

    def get(self, key: Any, default: Any = None) -> Any:
        self._acc.result(key)
        return self._obj.get(key, default)

    def __contains__(self, key: Any) -> bool:
        self._acc.result(key)
        return key in self._obj

    def __iter__(self):
        return iter(self._obj)

    def keys(self):
        return self._obj.keys()

    def items(self):
        return self._obj.items()

    def values(self):
        return self._obj.values()

    def __len__(self) -> int:
        return len(self._obj)

    def __eq__(self, other: Any) -> bool:
        return self._obj == _unwrap(other)

    def __ne__(self, other: Any) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._obj)

    def copy(self) -> dict:
        return self._obj.copy()

    def __reduce_ex__(self, protocol: int) -> tuple:
        return dict, (dict(self._obj),)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._obj[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._obj[key]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._acc.result(key)
        return self._obj.setdefault(key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        return self._obj.pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._obj.update(*args, **kwargs)

    def clear(self) -> None:
        self._obj.clear()


class _Tracked:
    """A list, dict or set stored at a top-level key, as a task sees it: changes are writes.

    It reports the wrapped object's type as its ``__class__``, so ``isinstance(x, list)``
    holds; code that needs the object itself (``json.dumps``) can take ``list(x)``.
    """

    __slots__ = ("_obj", "_key", "_acc")
    _MUTATORS: frozenset = frozenset()

    def __init__(self, obj: Any, key: Any, acc: Access) -> None:
        self._obj = obj
        self._key = key
        self._acc = acc

    @property  # type: ignore[misc]
    def __class__(self):  # noqa: D401 - what isinstance() asks
        return type(self._obj)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._obj, name)
        if name in self._MUTATORS:
            acc, key = self._acc, self._key

            def mutate(*args: Any, **kwargs: Any) -> Any:
                acc.write(key)
                return attr(*args, **kwargs)

            return mutate
        return attr

    def _changed(self) -> None:
        self._acc.write(self._key)

    def __len__(self) -> int:
        return len(self._obj)

    def __iter__(self):
        return iter(self._obj)

    def __contains__(self, item: Any) -> bool:
        return item in self._obj

    def __getitem__(self, index: Any) -> Any:
        return tracked(self._obj[index], self._key, self._acc)

    def __setitem__(self, index: Any, value: Any) -> None:
        self._changed()
        self._obj[index] = _unwrap(value)

    def __delitem__(self, index: Any) -> None:
        self._changed()
        del self._obj[index]

    def __bool__(self) -> bool:
        return bool(self._obj)

    def __repr__(self) -> str:
        return repr(self._obj)

    def __str__(self) -> str:
        return str(self._obj)

    def __format__(self, spec: str) -> str:
        return format(self._obj, spec)

    def __eq__(self, other: Any) -> bool:
        return self._obj == _unwrap(other)

    def __ne__(self, other: Any) -> bool:
        return self._obj != _unwrap(other)

    def __lt__(self, other: Any) -> bool:
        return self._obj < _unwrap(other)

    def __le__(self, other: Any) -> bool:
        return self._obj <= _unwrap(other)

    def __gt__(self, other: Any) -> bool:
        return self._obj > _unwrap(other)

    def __ge__(self, other: Any) -> bool:
        return self._obj >= _unwrap(other)

    __hash__ = None  # type: ignore[assignment]

    def __reversed__(self):
        return reversed(self._obj)

    def __copy__(self) -> Any:
        return self._obj.copy()

    def __deepcopy__(self, memo: dict) -> Any:
        import copy

        return copy.deepcopy(self._obj, memo)

    def __reduce_ex__(self, protocol: int) -> Any:
        return self._obj.__reduce_ex__(protocol)

    # operators that make a new object, and the in-place ones that change this one
    def __add__(self, other: Any) -> Any:
        return self._obj + _unwrap(other)

    def __radd__(self, other: Any) -> Any:
        return _unwrap(other) + self._obj

    def __mul__(self, other: Any) -> Any:
        return self._obj * other

    __rmul__ = __mul__

    def __or__(self, other: Any) -> Any:
        return self._obj | _unwrap(other)

    def __ror__(self, other: Any) -> Any:
        return _unwrap(other) | self._obj

    def __and__(self, other: Any) -> Any:
        return self._obj & _unwrap(other)

    def __rand__(self, other: Any) -> Any:
        return _unwrap(other) & self._obj

    def __sub__(self, other: Any) -> Any:
        return self._obj - _unwrap(other)

    def __rsub__(self, other: Any) -> Any:
        return _unwrap(other) - self._obj

    def __xor__(self, other: Any) -> Any:
        return self._obj ^ _unwrap(other)

    def __rxor__(self, other: Any) -> Any:
        return _unwrap(other) ^ self._obj

    def __iadd__(self, other: Any) -> Any:
        self._changed()
        self._obj += _unwrap(other)
        return self

    def __imul__(self, other: Any) -> Any:
        self._changed()
        self._obj *= other
        return self

    def __ior__(self, other: Any) -> Any:
        self._changed()
        self._obj |= _unwrap(other)
        return self

    def __iand__(self, other: Any) -> Any:
        self._changed()
        self._obj &= _unwrap(other)
        return self

    def __isub__(self, other: Any) -> Any:
        self._changed()
        self._obj -= _unwrap(other)
        return self

    def __ixor__(self, other: Any) -> Any:
        self._changed()
        self._obj ^= _unwrap(other)
        return self


class _TrackedList(_Tracked):
    __slots__ = ()
    _MUTATORS = frozenset(("append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse"))


class _TrackedDict(_Tracked):
    __slots__ = ()
    _MUTATORS = frozenset(("pop", "popitem", "setdefault", "update", "clear"))

    def get(self, key: Any, default: Any = None) -> Any:
        return tracked(self._obj.get(key, default), self._key, self._acc)


class _TrackedSet(_Tracked):
    __slots__ = ()
    _MUTATORS = frozenset(("add", "discard", "remove", "pop", "clear", "update", "difference_update",
                           "intersection_update", "symmetric_difference_update"))


_WRAPS: dict[type, type] = {list: _TrackedList, dict: _TrackedDict, set: _TrackedSet}
_WRAPPERS = frozenset(_WRAPS.values())


class StateChecker:
    """The accesses of one run's tasks, and the findings drawn from them afterwards.

    ``instrument`` hands each stateful task its own ``StateView``; ``findings`` (after the
    run) compares what each task touched with the dependency graph.
    """

    def __init__(self, state: dict, lock: Any) -> None:
        self.state = state
        self.lock = lock
        self.initial_keys = frozenset(k for k in state if k not in ENGINE_KEYS)
        self.access: dict[str, Access] = {}

    def instrument(self, names: Sequence[str], fns: Sequence[Callable[..., Any]],
                   options: Sequence[Any]) -> tuple[list, list]:
        """The callables and options to run instead: each stateful task bound to its own view."""
        new_fns = list(fns[:len(names)])
        new_options = list(options[:len(names)])
        state, lock = self.state, self.lock
        owned = lock_owned(lock)
        access = self.access
        stateless: dict = {}  # most tasks share a few option tuples: replace each once
        for i, name in enumerate(names):
            opts = new_options[i]
            if opts.with_state:
                view = access[name] = StateView(state, owned)
                new_fns[i] = partial(new_fns[i], view)
                plain = stateless.get(opts)
                if plain is None:
                    plain = stateless[opts] = opts._replace(with_state=False)
                new_options[i] = plain
        return new_fns, new_options

    def findings(self, graph: Any, fns: Iterable[Callable[..., Any]] = ()) -> list[dict]:
        """The run's findings (see statefind.analyse), static ones on ``fns`` included."""
        from .statefind import analyse, static_findings

        found = analyse(graph, self.access)
        if fns:
            seen = {(f["kind"], f["key"], tuple(f["tasks"])) for f in found}
            for finding in static_findings(graph, fns):
                if (finding["kind"], finding["key"], tuple(finding["tasks"])) not in seen:
                    found.append(finding)
        return found
