"""Findings of the state checker: accesses set against the dependency graph, and the
``state['results']['X']`` reads visible in a task's source before it runs.

A finding is a plain dict (JSON as it is): ``kind`` (``undeclared dependency`` or
``write conflict``), ``key`` (as written in Python: ``state['subnet_id']``,
``state['results']['create_subnet']``), ``tasks`` (the writer first for an undeclared
dependency), ``locked`` (a write conflict whose writes all held ``_state_lock``), ``static``
(found in the source, before running) and ``message``, which says what to do.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from functools import partial
from typing import Any, Callable, Iterable, Mapping

__all__ = ["UNDECLARED", "WRITE_CONFLICT", "PER_KEY_LIMIT", "analyse", "change_findings",
           "static_findings"]

UNDECLARED = "undeclared dependency"
WRITE_CONFLICT = "write conflict"
#: findings reported per key at most: a thousand unordered writers of one key are one problem
PER_KEY_LIMIT = 20


def _key_text(key: Any) -> str:
    return f"state[{key!r}]"


def _result_text(task: str) -> str:
    return f"state['results'][{task!r}]"


class _Order:
    """Whether two tasks are ordered by the graph (one upstream of the other), cached."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self._up: dict[str, frozenset] = {}

    def upstream(self, name: str) -> frozenset:
        up = self._up.get(name)
        if up is None:
            up = self._up[name] = frozenset(self.graph.upstream(name))
        return up

    def ordered(self, a: str, b: str) -> bool:
        return a in self.upstream(b) or b in self.upstream(a)


def undeclared(writer: str, reader: str, key: str, static: bool = False) -> dict:
    what = (f"{reader}'s source reads {key}, the result of {writer}," if static
            else f"{reader} reads {key} written by {writer},")
    return {
        "kind": UNDECLARED, "key": key, "tasks": [writer, reader], "locked": False, "static": static,
        "message": f"{what} but does not run after it: add after=[{writer!r}]",
    }


def conflict(a: str, b: str, key: str, locked: bool) -> dict:
    note = (" (both held _state_lock: no torn write, but the order is still up to timing)"
            if locked else "")
    return {
        "kind": WRITE_CONFLICT, "key": key, "tasks": [a, b], "locked": locked, "static": False,
        "message": f"{a} and {b} both write {key} and neither runs after the other, so the final "
                   f"value depends on timing{note}: add after=[{a!r}] to {b}, or the reverse",
    }


def analyse(graph: Any, access: Mapping[str, Any]) -> list[dict]:
    """Findings from what each task read and wrote, in registration order of the tasks.

    ``access`` maps a task name to its ``statecheck.Access``.
    """
    order = _Order(graph)
    position = {name: i for i, name in enumerate(graph.nodes)}
    writers: dict[Any, list[str]] = {}
    readers: dict[Any, list[str]] = {}
    for name, acc in access.items():
        for key, flags in acc.touched.items():
            if flags & 2:  # written
                writers.setdefault(key, []).append(name)
            if flags & 1:  # read
                readers.setdefault(key, []).append(name)
    found: list[dict] = []
    # a key one task alone touches is the common case: no pair to look at
    shared = [key for key, ws in writers.items()
              if len(ws) > 1 or any(r != ws[0] for r in readers.get(key, ()))]
    for key in sorted(shared, key=repr):
        ws = sorted(writers[key], key=position.__getitem__)
        text = _key_text(key)
        count = 0
        for i, a in enumerate(ws):
            for b in ws[i + 1:]:
                if count < PER_KEY_LIMIT and not order.ordered(a, b):
                    locked = not (access[a].touched[key] | access[b].touched[key]) & 4  # all writes locked
                    found.append(conflict(a, b, text, locked))
                    count += 1
        both = set(ws)
        for reader in sorted(readers.get(key, ()), key=position.__getitem__):
            for writer in ws:
                if count >= PER_KEY_LIMIT:
                    break
                if writer == reader or (reader in both and writer in both):
                    continue  # a write conflict already names the pair
                if not order.ordered(writer, reader):
                    found.append(undeclared(writer, reader, text))
                    count += 1
    for reader in sorted((r for r, acc in access.items() if acc.results_read), key=position.__getitem__):
        for task in sorted(access[reader].results_read, key=repr):
            task = _task_named(task, reader, position)
            if task is not None and task != reader and not order.ordered(task, reader):
                found.append(undeclared(task, reader, _result_text(task)))
    return found


class _Changes:
    """What a task that ran elsewhere (on a cluster) did to the state, as ``analyse`` reads an
    access record: the keys it set or deleted, each a write. Its ``_state_lock`` guarded only its
    own copy, so no write counts as locked; what it read is not known."""

    __slots__ = ("touched",)
    results_read = None

    def __init__(self, keys: Iterable[Any]) -> None:
        self.touched = dict.fromkeys(keys, 2 | 4)  # written, without the (shared) lock


def change_findings(graph: Any, changed: Mapping[str, Iterable[Any]]) -> list[dict]:
    """The write conflicts among tasks whose changes were merged into the state after they ran.

    ``changed`` maps a task name to the state keys it set or deleted (a remote executor knows
    no more): two tasks neither of which runs after the other that changed one key are the
    same finding as the checker's, with the same message.
    """
    return analyse(graph, {name: _Changes(keys) for name, keys in changed.items()})


def _task_named(x: Any, reader: str, known: Mapping[str, Any]) -> str | None:
    """The task whose result ``results[x]`` is: ``x`` itself, or in a suite the task ``x`` of
    the reader's own module (``MODULE::x``); None for anything else (a mocked result)."""
    if x in known:
        return x
    module = reader.rpartition("::")[0]
    if module and isinstance(x, str) and f"{module}::{x}" in known:
        return f"{module}::{x}"
    return None


# ---------------------------------------------------------------------------- static check


def _function(fn: Callable[..., Any]) -> Any:
    while isinstance(fn, partial):  # a parametrized case, a task bound to its view
        fn = fn.func
    return inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _results_literals(tree: ast.AST) -> list[str]:
    """X of every ``<name>["results"]["X"]``, ``<name>["results"].get("X")`` and
    ``"X" in <name>["results"]`` in ``tree``."""

    def is_results(node: ast.AST) -> bool:
        return isinstance(node, ast.Subscript) and _literal(node.slice) == "results"

    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_results(node.value):
            x = _literal(node.slice)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("get", "setdefault", "pop") and is_results(node.func.value)
              and node.args):
            x = _literal(node.args[0])
        elif (isinstance(node, ast.Compare) and len(node.ops) == 1
              and isinstance(node.ops[0], (ast.In, ast.NotIn)) and is_results(node.comparators[0])):
            x = _literal(node.left)
        else:
            continue
        if x is not None and x not in names:
            names.append(x)
    return names


class _Sources:
    """The function definitions of each source file, parsed once, by their first line."""

    def __init__(self) -> None:
        self._files: dict[str, dict[int, ast.AST] | None] = {}

    def definition(self, fn: Any) -> ast.AST | None:
        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        path = code.co_filename
        defs = self._files.get(path, False)
        if defs is False:
            defs = self._files[path] = self._parse(fn)
        return defs.get(code.co_firstlineno) if defs else None

    @staticmethod
    def _parse(fn: Any) -> dict[int, ast.AST] | None:
        try:
            source = inspect.getsource(inspect.getmodule(fn))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError, ValueError):
            try:  # no module source (a function made in a notebook, say): the function alone
                lines, first = inspect.getsourcelines(fn)
                tree = ast.parse(textwrap.dedent("".join(lines)))
                ast.increment_lineno(tree, first - 1)
            except (OSError, TypeError, SyntaxError, ValueError):
                return None
        defs: dict[int, ast.AST] = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                defs[node.lineno] = node
                for deco in node.decorator_list:
                    defs.setdefault(deco.lineno, node)
        return defs


def static_findings(graph: Any, fns: Iterable[Callable[..., Any]]) -> list[dict]:
    """Tasks whose source reads ``state['results']['X']`` of a task X they do not run after.

    ``fns`` are the registered callables in registration order (a parametrized task's case
    is a partial of its function). In a suite, X may be a task of the reader's own module.
    """
    order = _Order(graph)
    known = graph._index
    sources = _Sources()
    seen: dict[Any, list[str]] = {}
    found: list[dict] = []
    unwrapped: dict = {}  # id(callable) -> its function: cases share one
    for name, fn in zip(graph.nodes, fns):
        key = id(fn.func) if type(fn) is partial else id(fn)
        inner = unwrapped.get(key)
        if inner is None:
            inner = unwrapped[key] = _function(fn)
        fn = inner
        code = getattr(fn, "__code__", None)
        if code is None:
            continue
        literals = seen.get(code)
        if literals is None:
            node = sources.definition(fn)
            literals = seen[code] = _results_literals(node) if node is not None else []
        for x in literals:
            task = _task_named(x, name, known)
            if task is None or task == name or order.ordered(task, name):
                continue
            found.append(undeclared(task, name, _result_text(task), static=True))
    return found
