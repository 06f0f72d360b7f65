"""Suites: the tasks of one or many modules, named, expanded, resolved and selected.

- Discovery: a directory collects, recursively in sorted path order, the ``*.py``
  files (narrowed by a glob pattern) that define marked tasks, skipping names
  starting with ``_`` or ``.``.
- Naming: in a run of several modules a task is ``MODULE::TASK``, MODULE being the
  file's path relative to the directory given (or its stem), without ``.py``; a
  run of one module keeps bare names.
- Parametrized tasks become one task per case (``engine/params.py``).
- ``after=`` names resolve in the task's own module first, then as a name unique
  across the suite; ``MODULE::TASK`` is explicit. An unknown or ambiguous name is
  kept as written, with the error (and its candidates) to raise when the graph
  is built, so that a task filtered out never fails a run.
- Selection: ``::task`` targets, tags, ``-k``; dependencies outside the selection
  are dropped unless ``with_deps`` adds everything upstream.
"""

from __future__ import annotations

import fnmatch
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any, Callable, Sequence

from .errors import (AmbiguousDependencyError, GraphError, UnknownDependencyError, UsageError,
                     close_names, did_you_mean)
from .model import MARK_ATTR, TaskSpec, not_runnable
from .params import Group, expand, resolve_groups

__all__ = ["SuiteModule", "Suite", "discover", "marked_functions", "assemble", "split_name", "SEP"]

#: between a task's module and its name: ``network::create_network``
SEP = "::"
_ASYNC = 0x80 | 0x200  # CO_COROUTINE | CO_ASYNC_GENERATOR


def split_name(full: str) -> tuple[str | None, str]:
    """``"compute/vms::create_vm[eu]"`` -> ``("compute/vms", "create_vm[eu]")``; a bare name has no module."""
    module, sep, name = full.partition(SEP)
    if not sep or "[" in module:
        return None, full
    return module, name


@dataclass
class SuiteModule:
    """One module of a run: its label (``compute/vms``), file, imported module, and the
    tasks its target named with ``::task`` (None: all of them)."""

    label: str
    path_str: str
    module: ModuleType | None = None
    only: list[str] | None = None


def _is_task_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return b"mark" in fh.read()  # no @mark/@dmark anywhere: nothing to import
    except OSError:
        return False


def discover(targets: Sequence[str], pattern: str | None = None) -> list[SuiteModule]:
    """The modules ``targets`` name, in order, each file once.

    Raises:
        UsageError: a missing path, ``DIR::task``, or two modules that would share a label.
    """
    out: list[SuiteModule] = []
    seen: dict[str, SuiteModule] = {}
    glob = pattern or "*.py"
    for target in targets:
        path_str, only = _split_target(target)
        path = Path(path_str)
        if path.is_dir():
            if only is not None:
                raise UsageError(f"{target}: '::task' needs a module file, not a directory; "
                                 "select tasks with -k instead")
            found = []
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
                for name in sorted(files):
                    if not name.endswith(".py") or name.startswith(("_", ".")):
                        continue
                    file = Path(folder) / name
                    rel = file.relative_to(path).as_posix()
                    if not fnmatch.fnmatch(name if "/" not in glob else rel, glob):
                        continue
                    if _is_task_file(file):
                        found.append((rel[:-3], str(file)))
            for label, file in sorted(found):
                _add(out, seen, SuiteModule(label, file))
        else:
            label = path.stem
            _add(out, seen, SuiteModule(label, path_str, only=None if only is None else [only]))
    return out


def _split_target(target: str) -> tuple[str, str | None]:
    if SEP in target:
        path, name = target.split(SEP, 1)
        if not name:
            raise UsageError(f"{target}: empty task name after '::'")
        return path, name
    return target, None


def _add(out: list[SuiteModule], seen: dict[str, SuiteModule], mod: SuiteModule) -> None:
    key = os.path.realpath(mod.path_str)
    if key in seen:  # the same file named twice: one module, the union of what was asked
        old = seen[key]
        if old.only is not None:
            old.only = None if mod.only is None else old.only + mod.only
        return
    for other in out:
        if other.label == mod.label:
            raise UsageError(f"{other.path_str} and {mod.path_str} would both be module {mod.label!r}; "
                             "give their common directory instead")
    seen[key] = mod
    out.append(mod)


def marked_functions(module: ModuleType, path: Path) -> list[tuple[str, Callable, dict, bool]]:
    """``(name, function, options, is_async)`` of the functions marked in ``module``'s own
    file, in source order (imported marked functions are not the module's tasks)."""
    own = str(path.resolve())
    found = []
    lines: list[int] = []
    for name, obj in list(vars(module).items()):
        if type(obj) is not FunctionType:
            continue
        attrs = obj.__dict__  # read directly: a miss through getattr costs an exception
        meta = attrs.get(MARK_ATTR)
        if type(meta) is not dict or obj.__name__ != name:
            continue
        code = obj.__code__
        if "__wrapped__" in attrs:  # a decorator's wrapper: the function it wraps says where
            inner = inspect.unwrap(obj)
            code = getattr(inner, "__code__", None)
            if code is None:
                continue
        if code.co_filename != own and os.path.realpath(code.co_filename) != own:
            continue
        found.append((name, obj, meta, bool(code.co_flags & _ASYNC)))
        lines.append(code.co_firstlineno)
    # sorted by line through the indexes: no second tuple per function
    return [found[i] for i in sorted(range(len(found)), key=lines.__getitem__)]


@dataclass
class Suite:
    """What ``assemble`` returns: the selected specs and how they came about."""

    specs: list[TaskSpec]
    all_names: list[str]
    module_of: dict[str, str]          # every task's module label
    cases: dict[str, dict[str, Any]]   # every case's parameter values
    groups: dict[str, Group]           # every parametrized task, by full name
    unresolved: dict[tuple[str, str], GraphError] = field(default_factory=dict)


def assemble(
    modules: Sequence[SuiteModule],
    found: Sequence[list[tuple[str, Callable, dict, bool]]],
    tags: Sequence[str] = (),
    keyword: Callable[[str], bool] | None = None,
    with_deps: bool = False,
) -> Suite:
    """Name, expand, resolve and select the tasks of ``modules`` (``found``: their marked
    functions, as :func:`marked_functions` lists them).

    Raises:
        UsageError: a generator function, a bad option, an unknown ``::task``.
        UnpairedCaseError: a case without a case to pair with.
    """
    multi = len(modules) > 1
    specs: list[TaskSpec] = []
    module_of: dict[str, str] = {}
    cases: dict[str, dict[str, Any]] = {}
    groups: dict[str, Group] = {}
    spaces: dict[str, dict[str, str]] = {}  # label -> {name as written in the module: full name}
    for mod, functions in zip(modules, found):
        prefix = mod.label + SEP if multi else ""
        space = spaces[mod.label] = {}
        for name, fn, meta, is_async in functions:
            why = not_runnable(fn, name)
            if why is not None:
                raise UsageError(f"{mod.path_str}: {why}")
            full = prefix + name
            try:
                spec = _from_mark(fn, full, name, meta, is_async) or TaskSpec.build(
                    fn, full, meta.get("after"), meta.get("with_state", True), tags=meta.get("tags"),
                    always=meta.get("always", False), retries=meta.get("retries", 0),
                    retry_delay=meta.get("retry_delay", 0.0), timeout=meta.get("timeout"),
                    pool=meta.get("pools"),
                )
                params = meta.get("params")
                group = None if params is None else expand(fn, full, params, meta.get("ids"),
                                                           spec.with_state)
            except (TypeError, ValueError) as exc:
                raise UsageError(f"{mod.path_str}: {exc}") from exc
            space[name] = full
            module_of[full] = mod.label
            if group is None:
                specs.append(spec)
                continue
            groups[full] = group
            rest = (spec.after, spec.with_state, spec.tags, spec.always, spec.retries, spec.retry_delay,
                    spec.timeout, spec.is_async, spec.pools)
            for case, case_id, values, call in zip(group.names, group.ids, group.values, group.calls):
                space[f"{name}[{case_id}]"] = case
                module_of[case] = mod.label
                cases[case] = values
                specs.append(TaskSpec(case, call, *rest))

    # resolve every after= name to a full name (a group's, for a parametrized task)
    unresolved: dict[tuple[str, str], GraphError] = {}
    resolved_afters = []
    cache: dict[tuple[str, str], str] = {}
    for spec in specs:
        if not spec.after:
            resolved_afters.append(())
            continue
        label = module_of[spec.name]
        out = []
        for dep in spec.after:
            hit = cache.get((label, dep))
            if hit is None:
                hit = _resolve(dep, label, spaces, multi)
                if isinstance(hit, str):
                    cache[(label, dep)] = hit
            if isinstance(hit, str):
                out.append(hit)
            else:  # kept as written: the graph reports it, with candidates, if the task stays
                candidates, ambiguous = hit
                err = (AmbiguousDependencyError(spec.name, dep, candidates) if ambiguous
                       else UnknownDependencyError(spec.name, dep, candidates))
                unresolved[(spec.name, dep)] = err
                out.append(dep)
        resolved_afters.append(tuple(dict.fromkeys(out)))
    index = {s.name: i for i, s in enumerate(specs)}
    try:
        if groups:  # else no name can stand for cases: nothing to pair
            resolved_afters = resolve_groups(index, resolved_afters, groups, cases)
    except GraphError as exc:
        where = {m.label: m.path_str for m in modules}.get(module_of.get(getattr(exc, "task", ""), ""))
        raise UsageError(f"{where or modules[0].path_str}: {exc}") from exc
    all_names = list(index)

    # selection
    whole = {m.label for m in modules if m.only is None}
    picked: dict[str, str] = {}  # task named by a ::task target -> its module's path
    for mod in modules:
        for name in mod.only or ():
            full = spaces[mod.label].get(name)
            if full is None:
                raise UsageError(f"{mod.path_str}: no marked task named {name!r}"
                                 + did_you_mean(name, _without_cases(name, list(spaces[mod.label]))))
            for one in (groups[full].names if full in groups else [full]):
                picked[one] = mod.path_str
    has_filter = bool(picked) or bool(tags) or keyword is not None
    if with_deps and not has_filter:
        raise UsageError("--with-deps needs a selection: TARGET::task, -k EXPR or --tags")
    keep_idx = [] if has_filter else range(len(specs))  # no selection pass when nothing is selected
    for i, spec in enumerate(specs if has_filter else ()):
        if module_of[spec.name] not in whole and spec.name not in picked:
            continue
        if tags and not all(t in spec.tags for t in tags):
            continue
        if keyword is not None and not keyword(spec.name):
            continue
        keep_idx.append(i)
    if picked and tags:
        for name, where in picked.items():
            if not all(t in specs[index[name]].tags for t in tags):
                raise UsageError(f"{where}: task {name!r} does not have the tags {','.join(tags)!r}")
    if with_deps:
        keep = set(keep_idx)
        stack = list(keep_idx)
        while stack:
            for dep in resolved_afters[stack.pop()]:
                j = index.get(dep)
                if j is not None and j not in keep:
                    keep.add(j)
                    stack.append(j)
        keep_idx = sorted(keep)
    kept = {specs[i].name for i in keep_idx} if has_filter else set()
    chosen: list[TaskSpec] = []
    for i in keep_idx:
        spec, after = specs[i], resolved_afters[i]
        if has_filter:
            alone = spec.name in picked and not with_deps and module_of[spec.name] not in whole
            after = tuple(d for d in after if d in kept or (not alone and (spec.name, d) in unresolved))
        chosen.append(spec if spec.after == after else TaskSpec(
            spec.name, spec.fn, after, spec.with_state, spec.tags, spec.always, spec.retries,
            spec.retry_delay, spec.timeout, spec.is_async, spec.pools))
    return Suite(chosen, all_names, module_of, cases, groups, unresolved)


def _from_mark(fn: Callable, full: str, name: str, meta: dict, is_async: bool = False) -> TaskSpec | None:
    """The spec of options ``mark`` wrote and checked itself (it records the function's name),
    without checking them again: at 10,000 tasks that check is a tenth of the collection.
    None for options written by other hands, which go through ``TaskSpec.build``."""
    if meta.get("orig_name") != name:
        return None
    try:
        after, tags = meta["after"], meta["tags"]
        if type(after) is not list or type(tags) is not list:
            return None
        return TaskSpec(full, fn, tuple(after), meta["with_state"], tuple(tags), meta["always"],
                        meta["retries"], meta["retry_delay"], meta["timeout"], is_async,
                        tuple(meta.get("pools", ())))
    except KeyError:
        return None


def _resolve(dep: str, label: str, spaces: dict[str, dict[str, str]], multi: bool):
    """The full name ``dep`` means in module ``label``, or ``(candidates, ambiguous)``."""
    own = spaces[label]
    if dep in own:
        return own[dep]
    module, sep, name = dep.partition(SEP)
    if sep and module in spaces:
        hit = spaces[module].get(name)
        if hit is not None:
            return hit
        return tuple(f"{module}{SEP}{n}" if multi else n
                     for n in close_names(name, _without_cases(name, list(spaces[module])))), False
    if not sep:
        hits = [space[dep] for other, space in spaces.items() if other != label and dep in space]
        if len(hits) == 1:
            return hits[0]
        if hits:
            return tuple(hits), True
    fulls: dict[str, list[str]] = {}  # a name as written in any module -> every task it names
    for space in spaces.values():
        for n, full in space.items():
            fulls.setdefault(n, []).append(full)
            if full != n:
                fulls.setdefault(full, []).append(full)
    close = close_names(dep, _without_cases(dep, list(fulls)))
    return tuple(dict.fromkeys(full for c in close for full in fulls[c]))[:3], False


def _without_cases(word: str, names: list[str]) -> list[str]:
    """``names`` to suggest from for ``word``: the cases of a parametrized task only when its
    own name is not there, or when ``word`` names a case itself."""
    if word.endswith("]"):
        return names
    bases = set(names)
    return [m for m in names if not (m.endswith("]") and "[" in m and m[:m.index("[")] in bases)]
