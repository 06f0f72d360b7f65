"""Loading a task module: discovery of @mark functions, hooks, filtering, initial state.

Shared by the command-line runner and the web UI, so both see the same tasks.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from .errors import UsageError, did_you_mean
from .jsonvalue import loads, problem
from .model import MARK_ATTR, TaskSpec, parse_tags

__all__ = ["Collection", "ModuleLoadError", "split_target", "load_module", "collect", "build_state"]


class ModuleLoadError(UsageError):
    """The user's module failed to import; ``user_traceback`` shows only the user's frames."""

    def __init__(self, path: str, exc: BaseException, user_traceback: str) -> None:
        super().__init__(f"{path}: cannot import module: {type(exc).__name__}: {exc}")
        self.path = path
        self.exc = exc
        self.user_traceback = user_traceback


@dataclass
class Collection:
    """The tasks found in a module, in source order, after filtering."""

    path: Path
    module: ModuleType
    specs: list[TaskSpec]
    target: str | None = None  # the ::task part, if any
    all_names: list[str] = field(default_factory=list)  # every marked function, unfiltered
    highlights: list[tuple[re.Pattern, str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def register_into(self, scheduler) -> None:
        """Register every collected task with ``scheduler``, in source order."""
        for s in self.specs:
            scheduler.register(
                s.fn, s.name, s.after, s.with_state, tags=s.tags, always=s.always,
                retries=s.retries, retry_delay=s.retry_delay, timeout=s.timeout,
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


def _marked_in_source_order(module: ModuleType, path: Path) -> list[tuple[str, Callable, dict, bool]]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError) as exc:  # imported fine, but unreadable now
        raise UsageError(f"{path}: cannot read source: {exc}") from exc
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fn = getattr(module, node.name, None)
            meta = getattr(fn, MARK_ATTR, None)
            if callable(fn) and isinstance(meta, dict):
                found.append((node.name, fn, meta, isinstance(node, ast.AsyncFunctionDef)))
    return found


def collect(
    target: str,
    tags: str | list[str] | None = None,
    with_deps: bool = False,
    module: ModuleType | None = None,
) -> Collection:
    """Load ``target`` (``path.py`` or ``path.py::task``) and collect its marked tasks.

    ``tags`` keeps tasks carrying all of them; dependencies on tasks filtered
    out are dropped. ``::task`` keeps that task alone without its dependencies,
    or, with ``with_deps``, the task plus everything upstream of it.

    Raises:
        UsageError: missing file, unknown ``::task``, async task, bad options.
        ModuleLoadError: the module failed to import.
    """
    path_str, only = split_target(target)
    if with_deps and only is None:
        raise UsageError("--with-deps needs a TARGET of the form module.py::task")
    path = Path(path_str)
    if module is None:
        module = load_module(path_str)
    found = _marked_in_source_order(module, path)
    specs: list[TaskSpec] = []
    for name, fn, meta, is_async in found:
        if is_async or inspect.iscoroutinefunction(inspect.unwrap(fn)):
            raise UsageError(f"{path_str}: task {name!r} is an async function; "
                             "async tasks are not supported yet, use a plain def")
        try:
            specs.append(TaskSpec.build(
                fn, name, meta.get("after"), meta.get("with_state", True), tags=meta.get("tags"),
                always=meta.get("always", False), retries=meta.get("retries", 0),
                retry_delay=meta.get("retry_delay", 0.0), timeout=meta.get("timeout"),
            ))
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path_str}: {exc}") from exc
    all_names = [s.name for s in specs]

    wanted = parse_tags(tags) if tags else ()
    if wanted:
        specs = [s for s in specs if all(t in s.tags for t in wanted)]
    if only is not None:
        by_name = {s.name: s for s in specs}
        if only not in by_name:
            if only in all_names:
                raise UsageError(f"{path_str}: task {only!r} does not have the tags {','.join(wanted)!r}")
            raise UsageError(f"{path_str}: no marked task named {only!r}"
                             + did_you_mean(only, all_names))
        if with_deps:
            keep = {only}
            stack = [only]
            while stack:
                for dep in by_name[stack.pop()].after:
                    if dep in by_name and dep not in keep:
                        keep.add(dep)
                        stack.append(dep)
            specs = [s for s in specs if s.name in keep]
        else:
            specs = [_replace_after(by_name[only], ())]
    kept = {s.name for s in specs}
    if wanted or only is not None:
        specs = [_replace_after(s, tuple(d for d in s.after if d in kept or d not in all_names))
                 for s in specs]

    highlights = _highlights(module, path_str)
    return Collection(path=path, module=module, specs=specs, target=only,
                      all_names=all_names, highlights=highlights)


def _replace_after(spec: TaskSpec, after: tuple[str, ...]) -> TaskSpec:
    from dataclasses import replace

    return spec if spec.after == after else replace(spec, after=after)


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
    module: ModuleType | None,
    state_file: str | None = None,
    values: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Assemble the initial state; returns ``(state, sources)``.

    Order (later wins): the state file, then ``values`` (command line or
    typed in), then the module's ``setup_state(state)`` hook. ``sources``
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
    return state, sources
