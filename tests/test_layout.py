"""The package's layout rules, read from the code's own imports.

The engine sits at the centre and imports only itself and the standard
library; every front-end (cli, history, report, trace, web, pytest_plugin) may use
the engine and the shared modules, but reaches another front-end only through that
front-end's package face (``thread_order.history``, never
``thread_order.history.store``); nothing imports in a circle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "thread_order"
ENGINE = "thread_order.engine"
FRONT_ENDS = ("cli", "history", "report", "trace", "web", "pytest_plugin", "executors")
#: small named modules the front-ends share; they see only the engine
SHARED = ("thread_order.theme", "thread_order.runview")
MAX_LINES = 600
#: rules broken today, each to be mended by the change that reworks it; strict xfails,
#: so the mend must also delete its entry here
PENDING = {
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """Every module ``name`` imports, anywhere in the file (lazy imports count), with its line."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports the submodule pkg.mod when there is one
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out.extend((s, node.lineno) for s in subs)
            if len(subs) < len(node.names):
                out.append((target, node.lineno))
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _front_end(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FRONT_ENDS else None


def test_the_layout_has_the_expected_rooms():
    for room in ("engine", *FRONT_ENDS):
        assert (PACKAGE / room / "__init__.py").is_file(), room
    assert (PACKAGE / "web" / "static" / "index.html").is_file()


def test_the_engine_imports_only_itself_and_the_standard_library():
    bad = []
    for name, imports in IMPORTS.items():
        if not name.startswith(ENGINE):
            continue
        for target, line in imports:
            top = target.split(".")[0]
            if top == "thread_order":
                if not target.startswith(ENGINE):
                    bad.append(f"{name}:{line} imports {target}")
            elif top not in sys.stdlib_module_names and top != "__future__":
                bad.append(f"{name}:{line} imports the third-party {target}")
    assert bad == []


def test_shared_modules_import_only_the_engine():
    bad = [f"{name}:{line} imports {target}"
           for name in SHARED if name in IMPORTS
           for target, line in IMPORTS[name]
           if target.startswith("thread_order") and not target.startswith(ENGINE)]
    assert bad == []


def test_front_ends_meet_only_through_package_faces():
    bad = []
    for name, imports in IMPORTS.items():
        mine = _front_end(name)
        if mine is None:  # the engine, shared modules and entry points have rules of their own
            continue
        for target, line in imports:
            theirs = _front_end(target)
            if theirs is None or theirs == mine:
                continue
            if target != f"thread_order.{theirs}":
                bad.append(f"{name}:{line} reaches into {target}; use thread_order.{theirs}")
    assert bad == []


def test_the_public_package_exports_only_the_engine():
    bad = [f"thread_order:{line} imports {target}" for target, line in IMPORTS["thread_order"]
           if target.startswith("thread_order.") and not target.startswith(ENGINE)]
    assert bad == []


def test_the_engine_is_reached_by_every_front_end_but_reaches_none():
    engine_users = {_front_end(n) for n, imps in IMPORTS.items() if any(t.startswith(ENGINE) for t, _ in imps)}
    assert set(FRONT_ENDS) <= engine_users


def test_no_import_circles(request):
    if "circle" in PENDING:
        request.applymarker(pytest.mark.xfail(strict=True, reason=PENDING["circle"]))
    graph = {name: {t for t, _ in imps if t in MODULES and t != name} for name, imps in IMPORTS.items()}
    # a package's face importing its own submodules is how packages work; a submodule
    # importing its own package's face back would be a circle, and is caught below
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_what_it_owns_and_stays_small(name, request):
    path = MODULES[name]
    if path.relative_to(PACKAGE).as_posix() in PENDING:
        request.applymarker(pytest.mark.xfail(strict=True, reason=PENDING[path.relative_to(PACKAGE).as_posix()]))
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path.relative_to(PACKAGE)} has no module docstring"
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES})"
