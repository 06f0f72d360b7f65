"""Loading task modules: importing them, their hooks, the collection of a run, initial state.

Shared by the command-line runner and the web UI, so both see the same tasks.
Finding, naming, resolving and selecting the tasks of one module or a suite
of them is ``suite.py``'s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Sequence

from .errors import GraphError, PoolError, UnknownDependencyError, UsageError
from .graph import Graph
from .jsonvalue import loads, problem
from .keyword import compile_keyword
from .model import TaskSpec, parse_tags
from .pools import Pool, module_pools
from .suite import SuiteModule, assemble, discover, marked_functions

__all__ = ["Collection", "ModuleLoadError", "split_target", "load_module", "collect", "build_state", "SuiteModule"]


class ModuleLoadError(UsageError):
    """The user's module failed to import; ``user_traceback`` shows only the user's frames."""

    def __init__(self, path: str, exc: BaseException, user_traceback: str) -> None:
        super().__init__(f"{path}: cannot import module: {type(exc).__name__}: {exc}")
        self.path = path
        self.exc = exc
        self.user_traceback = user_traceback


@dataclass
class Collection:
    """The tasks found in one module or a suite of them, in collection order, after filtering.

    ``path`` and ``module`` are the first module's; ``modules`` lists every one
    (label, file, imported module). In a run of several modules each task's
    name is ``MODULE::TASK`` (``suite`` is True); ``module_of`` gives each
    task's module label and ``cases`` each case's parameter values.
    """

    path: Path
    module: ModuleType
    specs: list[TaskSpec]
    target: str | None = None  # the ::task part, if any (one target)
    all_names: list[str] = field(default_factory=list)  # every task, unfiltered
    highlights: list[tuple[re.Pattern, str]] = field(default_factory=list)
    modules: list[SuiteModule] = field(default_factory=list)
    module_of: dict[str, str] = field(default_factory=dict)
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    unresolved: dict[tuple[str, str], GraphError] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)  # as given
    pools: dict[str, Pool] = field(default_factory=dict)  # the modules' POOLS, combined

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    @property
    def suite(self) -> bool:
        """True when the run holds several modules (and names are ``MODULE::TASK``)."""
        return len(self.modules) > 1

    @property
    def label(self) -> str:
        """What the run is called in the history and reports: the module's stem, or the
        targets of a suite as given."""
        if not self.suite:
            return self.path.stem
        return " ".join(split_target(t)[0] for t in self.targets) if self.targets else "suite"

    @property
    def hook_modules(self) -> list[ModuleType]:
        """Every imported module, in collection order (their setup_state hooks run in it)."""
        return [m.module for m in self.modules if m.module is not None]

    def graph(self) -> Graph:
        """The validated graph of the selected tasks.

        Raises:
            GraphError: a cycle, or a dependency that is unknown or ambiguous
                (with the candidates).
        """
        try:
            return Graph((s.name, s.after) for s in self.specs)
        except UnknownDependencyError as exc:
            better = self.unresolved.get((exc.task, exc.dependency))
            if better is not None:
                raise better from None
            raise

    def register_into(self, scheduler) -> None:
        """Register every collected task with ``scheduler``, in collection order."""
        for s in self.specs:
            scheduler.register(
                s.fn, s.name, s.after, s.with_state, tags=s.tags, always=s.always,
                retries=s.retries, retry_delay=s.retry_delay, timeout=s.timeout,
                **({"pool": s.pools} if s.pools else {}),
            )


def split_target(target: str) -> tuple[str, str | None]:
    """``"mod.py::task"`` -> ``("mod.py", "task")``; ``"mod.py"`` -> ``("mod.py", None)``."""
    if "::" in target:
        path, name = target.split("::", 1)
        if not name:
            raise UsageError(f"{target}: empty task name after '::'")
        return path, name
    return target, None


def _user_traceback(exc: BaseException, path: Path) -> str:
    """Format ``exc`` dropping the frames of our own loader, keeping the user's."""
    import traceback

    tb = exc.__traceback__
    ours = Path(__file__).resolve()
    while tb is not None and Path(tb.tb_frame.f_code.co_filename).resolve() == ours:
        tb = tb.tb_next
    # importlib's own frames are noise too
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith("<frozen importlib"):
        tb = tb.tb_next
    if isinstance(exc, SyntaxError):
        return "".join(traceback.format_exception_only(type(exc), exc))
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _module_name(path: Path) -> str:
    """The file's own name, as ``python -m`` would use, so the user's classes and tracebacks
    read naturally; a private name instead when that would shadow another importable module."""
    stem = re.sub(r"\W", "_", path.stem)
    if not stem.isidentifier():
        stem = "_" + stem
    try:
        found = importlib.util.find_spec(stem)
    except (ImportError, ValueError):
        found = None
    if found is not None and (found.origin is None or Path(found.origin).resolve() != path.resolve()):
        return "_tdrun_" + stem
    return stem


def load_module(path_str: str) -> ModuleType:
    """Import a Python file by path, as ``tdrun`` and the web UI do.

    Raises:
        UsageError: the file is missing or is not a Python file.
        ModuleLoadError: the module raised while importing (syntax or import error...).
    """
    path = Path(path_str)
    if not path.exists():
        raise UsageError(f"{path_str}: no such file")
    if path.is_dir():
        raise UsageError(f"{path_str}: is a directory, expected a Python file")
    if path.suffix != ".py":
        raise UsageError(f"{path_str}: not a Python file (expected a .py file)")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path.resolve())
    if spec is None or spec.loader is None:
        raise UsageError(f"{path_str}: cannot load as a Python module")
    module = importlib.util.module_from_spec(spec)
    # make the module's own folder importable, as `python module.py` would
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module.__tdrun_path__ = path_str  # as the user named it, for messages
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: B902 - SystemExit in a module is a collection error too
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ModuleLoadError(path_str, exc, _user_traceback(exc, path)) from exc
    return module


def collect(
    target: str | Sequence[str],
    tags: str | list[str] | None = None,
    with_deps: bool = False,
    module: ModuleType | None = None,
    *,
    keyword: str | None = None,
    pattern: str | None = None,
    reuse: "Collection | None" = None,
) -> Collection:
    """Load ``target`` — a module file, ``file.py::task``, a directory, or a list of them —
    and collect its marked tasks.

    ``tags`` keeps tasks carrying all of them and ``keyword`` (``-k``) those whose
    full name matches; ``::task`` keeps that task. Dependencies on tasks left
    out are dropped, unless ``with_deps`` adds everything upstream. ``pattern``
    narrows the files a directory collects. ``module`` (one target) or ``reuse``
    (a collection of the same targets) gives modules already imported.

    Raises:
        UsageError: missing file, unknown ``::task``, generator task, bad options.
        ModuleLoadError: a module failed to import.
    """
    targets = [target] if isinstance(target, str) else list(target)
    if not targets:
        raise UsageError("no module to collect: give a file or a directory")
    wanted = parse_tags(tags) if tags else ()
    match = compile_keyword(keyword) if keyword is not None else None
    modules = discover(targets, pattern)
    if not modules:
        raise UsageError(f"{' '.join(targets)}: no module with marked tasks"
                         + (f" matching {pattern!r}" if pattern else ""))
    known = {}
    if reuse is not None:
        known = {os.path.realpath(m.path_str): m.module for m in reuse.modules}
    elif module is not None and len(modules) == 1:
        known = {os.path.realpath(modules[0].path_str): module}
    found = []
    for mod in modules:
        mod.module = known.get(os.path.realpath(mod.path_str)) or load_module(mod.path_str)
        found.append(marked_functions(mod.module, Path(mod.path_str)))
    suite = assemble(modules, found, wanted, match, with_deps)
    highlights = [pair for mod in modules for pair in _highlights(mod.module, mod.path_str)]
    first = modules[0]
    only = first.only[0] if len(targets) == 1 and first.only else None
    return Collection(path=Path(first.path_str), module=first.module, specs=suite.specs, target=only,
                      all_names=suite.all_names, highlights=highlights, modules=modules,
                      module_of=suite.module_of, cases=suite.cases, unresolved=suite.unresolved,
                      targets=targets, pools=_pools(modules))


def _pools(modules: list[SuiteModule]) -> dict[str, Pool]:
    try:
        return module_pools((m.path_str, m.module) for m in modules)
    except PoolError as exc:
        raise UsageError(str(exc)) from None


def _highlights(module: ModuleType, path_str: str) -> list[tuple[re.Pattern, str]]:
    hook = getattr(module, "add_logging_highlights", None)
    if hook is None:
        return []
    try:
        pairs = hook()
    except Exception as exc:
        raise UsageError(f"{path_str}: add_logging_highlights() raised {type(exc).__name__}: {exc}") from exc
    out = []
    for item in pairs or []:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not isinstance(item[0], re.Pattern) or not isinstance(item[1], str)):
            raise UsageError(f"{path_str}: add_logging_highlights() must return "
                             f"[(compiled_regex, color), ...], got {item!r}")
        out.append((item[0], item[1]))
    return out


def read_state_file(path_str: str) -> dict[str, Any]:
    """Read a JSON object of initial state values.

    Raises:
        UsageError: the file is missing, unreadable, not JSON, or not an object.
    """
    path = Path(path_str)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"state file {path_str}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"state file {path_str}: cannot read: {exc}") from None
    return parse_state_text(path_str, text)


def parse_state_text(name: str, text: str) -> dict[str, Any]:
    """The JSON object of a state file's text; ``name`` is the file as the user knows it.

    Raises:
        UsageError: not JSON, NaN or infinite numbers, nested deeper than
            ``MAX_DEPTH``, or not an object.
    """
    try:
        data = loads(text, f"state file {name}", finite=False)
    except json.JSONDecodeError as exc:
        raise UsageError(f"state file {name}: invalid JSON: {exc.msg} "
                         f"at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise UsageError(f"state file {name}: expected a JSON object, got {type(data).__name__}")
    for key, value in data.items():
        reason = problem(value)
        if reason is not None:
            raise UsageError(f"state file {name}: key {key!r}: {reason}")
    return data


def _where(module: ModuleType) -> str:
    return getattr(module, "__tdrun_path__", None) or getattr(module, "__file__", None) or "module"


def build_state(
    module: ModuleType | Sequence[ModuleType] | None,
    state_file: str | None = None,
    values: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Assemble the initial state; returns ``(state, sources)``.

    Order (later wins): the state file, then ``values`` (command line or
    typed in), then the module's ``setup_state(state)`` hook (each module's, in
    order, for a list of modules). ``sources``
    maps each key to ``"state file"``, ``"typed in"`` or ``"setup_state"``.
    ``results`` seeds ``state['results']`` (mocked upstream results).

    Raises:
        UsageError: a bad state file, or ``setup_state`` raised.
    """
    state: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if state_file:
        for key, value in read_state_file(state_file).items():
            state[key] = value
            sources[key] = "state file"
    for key, value in (values or {}).items():
        state[key] = value
        sources[key] = "typed in"
    if results:
        state["results"] = dict(results)
        sources["results"] = "typed in"
    for one in (module if isinstance(module, (list, tuple)) else [module]):
        _setup_state(one, state, sources)
    return state, sources


def _setup_state(module: ModuleType | None, state: dict[str, Any], sources: dict[str, str]) -> None:
    hook = getattr(module, "setup_state", None) if module is not None else None
    if hook is not None:
        before = {k: state[k] for k in state}
        try:
            hook(state)
        except SystemExit as exc:  # must not become the caller's exit code
            raise UsageError(f"{_where(module)}: setup_state() called sys.exit({exc.code!r})") from None
        except Exception as exc:
            raise UsageError(f"{_where(module)}: setup_state() raised {type(exc).__name__}: {exc}") from exc
        for key, value in state.items():
            if key not in before or before[key] is not value:
                sources[key] = "setup_state"
