"""Pins the public surface: ``thread_order.__all__``, signatures, the exception tree, stdlib-only import."""

from __future__ import annotations

import enum
import inspect
import json
import subprocess
import sys
from importlib.metadata import version

import thread_order
from thread_order import (
    CycleError,
    DuplicateTaskError,
    GraphError,
    HistoryError,
    Scheduler,
    TaskStatus,
    ThreadOrderError,
    UnknownDependencyError,
    UsageError,
    WorkerStartError,
)

PUBLIC = [
    "AmbiguousDependencyError",
    "CycleError",
    "DuplicateTaskError",
    "Event",
    "EventKind",
    "ExecutorError",
    "Graph",
    "GraphError",
    "HistoryError",
    "PoolError",
    "Scheduler",
    "TaskRecord",
    "TaskSpec",
    "TaskStatus",
    "ThreadOrderError",
    "ThreadProxyLogger",
    "UnknownDependencyError",
    "UnpairedCaseError",
    "UsageError",
    "WorkerStartError",
    "__version__",
    "configure_logging",
    "default_workers",
    "dmark",
    "mark",
]


def test_all_is_pinned_and_sorted():
    assert thread_order.__all__ == PUBLIC
    assert thread_order.__all__ == sorted(thread_order.__all__)
    for name in PUBLIC:
        assert hasattr(thread_order, name), name


def test_public_names_are_defined_in_the_engine():
    # the public API is the engine's; front-ends are reached through their commands
    for name in PUBLIC:
        obj = getattr(thread_order, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("thread_order.engine."), (name, obj.__module__)


def test_version_matches_the_installed_distribution():
    assert thread_order.__version__ == version("thread-order")


def test_exception_tree():
    assert issubclass(GraphError, ThreadOrderError) and issubclass(GraphError, ValueError)
    for cls in (DuplicateTaskError, UnknownDependencyError, CycleError):
        assert issubclass(cls, GraphError)
    for cls in (UsageError, HistoryError):
        assert issubclass(cls, ThreadOrderError) and not issubclass(cls, GraphError)
    assert issubclass(ThreadOrderError, Exception)
    assert issubclass(WorkerStartError, ThreadOrderError) and issubclass(WorkerStartError, RuntimeError)
    # graph errors carry the offending names
    assert DuplicateTaskError("a").name == "a"
    err = UnknownDependencyError("b", "x")
    assert (err.task, err.dependency, str(err)) == ("b", "x", "task 'b' depends on unknown task 'x'")
    assert CycleError(["a", "b", "a"]).cycle == ["a", "b", "a"]
    assert issubclass(thread_order.PoolError, ThreadOrderError) and issubclass(thread_order.PoolError, ValueError)
    assert not issubclass(thread_order.PoolError, GraphError)


def test_task_status_is_a_str_enum():
    assert issubclass(TaskStatus, str) and issubclass(TaskStatus, enum.Enum)
    assert {s.name for s in TaskStatus} == {"PASSED", "FAILED", "SKIPPED", "CANCELLED"}


def params(fn):
    return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]


E = inspect.Parameter.empty


def test_scheduler_signatures_follow_the_published_api():
    assert params(Scheduler.__init__) == [
        ("self", "POSITIONAL_OR_KEYWORD", E),
        ("workers", "POSITIONAL_OR_KEYWORD", None),
        ("state", "POSITIONAL_OR_KEYWORD", None),
        ("store_results", "POSITIONAL_OR_KEYWORD", True),
        ("clear_results_on_start", "POSITIONAL_OR_KEYWORD", True),
        ("skip_dependents", "POSITIONAL_OR_KEYWORD", True),
        ("setup_logging", "POSITIONAL_OR_KEYWORD", False),
        ("verbose", "POSITIONAL_OR_KEYWORD", False),
        ("capture", "POSITIONAL_OR_KEYWORD", True),
        # thread-order 1.x's logging keywords (add_file_handler: 1.x's default was True)
        ("add_stream_handler", "POSITIONAL_OR_KEYWORD", True),
        ("add_file_handler", "POSITIONAL_OR_KEYWORD", False),
        ("highlights", "POSITIONAL_OR_KEYWORD", None),
        ("check_state", "KEYWORD_ONLY", False),
        ("first", "KEYWORD_ONLY", None),
        ("order", "KEYWORD_ONLY", "declared"),
        ("shuffle", "KEYWORD_ONLY", None),
        ("durations", "KEYWORD_ONLY", None),
        ("executor", "KEYWORD_ONLY", "local"),
        ("async_limit", "KEYWORD_ONLY", 100),
        ("async_block_threshold", "KEYWORD_ONLY", 0.1),
        ("pools", "KEYWORD_ONLY", None),
    ]
    assert params(Scheduler.register) == [
        ("self", "POSITIONAL_OR_KEYWORD", E),
        ("fn", "POSITIONAL_OR_KEYWORD", E),
        ("name", "POSITIONAL_OR_KEYWORD", E),
        ("after", "POSITIONAL_OR_KEYWORD", None),
        ("with_state", "POSITIONAL_OR_KEYWORD", False),
        ("tags", "KEYWORD_ONLY", None),
        ("always", "KEYWORD_ONLY", False),
        ("retries", "KEYWORD_ONLY", 0),
        ("retry_delay", "KEYWORD_ONLY", 0.0),
        ("timeout", "KEYWORD_ONLY", None),
        ("params", "KEYWORD_ONLY", None),
        ("ids", "KEYWORD_ONLY", None),
        ("pool", "KEYWORD_ONLY", None),
    ]
    assert params(Scheduler.dregister)[:3] == [
        ("self", "POSITIONAL_OR_KEYWORD", E),
        ("after", "POSITIONAL_OR_KEYWORD", None),
        ("with_state", "POSITIONAL_OR_KEYWORD", False),
    ]
    for hook in ("on_scheduler_start", "on_task_start", "on_task_run", "on_task_done", "on_scheduler_done"):
        assert params(getattr(Scheduler, hook)) == [
            ("self", "POSITIONAL_OR_KEYWORD", E),
            ("fn", "POSITIONAL_OR_KEYWORD", E),
            ("args", "VAR_POSITIONAL", E),
            ("kwargs", "VAR_KEYWORD", E),
        ], hook
    assert params(Scheduler.cancel) == [("self", "POSITIONAL_OR_KEYWORD", E), ("force", "POSITIONAL_OR_KEYWORD", False)]
    for attr in ("start", "subscribe", "graph", "state", "tasks", "last_records"):
        assert hasattr(Scheduler(workers=1), attr), attr


def test_mark_signatures_are_keyword_only():
    expected = [
        ("after", "KEYWORD_ONLY", None),
        ("with_state", "KEYWORD_ONLY", True),
        ("tags", "KEYWORD_ONLY", None),
        ("always", "KEYWORD_ONLY", False),
        ("retries", "KEYWORD_ONLY", 0),
        ("retry_delay", "KEYWORD_ONLY", 0.0),
        ("timeout", "KEYWORD_ONLY", None),
        ("params", "KEYWORD_ONLY", None),
        ("ids", "KEYWORD_ONLY", None),
        ("pool", "KEYWORD_ONLY", None),
    ]
    assert params(thread_order.mark) == expected
    expected[1] = ("with_state", "KEYWORD_ONLY", False)
    assert params(thread_order.dmark) == expected


def test_importing_the_engine_loads_only_the_standard_library():
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import thread_order\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(json.loads(out.stdout))
    assert "thread_order" in loaded
    assert loaded - set(sys.stdlib_module_names) == {"thread_order"}
