"""thread_order: run Python callables concurrently on threads, in explicit dependency order."""

from .engine.capture import ThreadProxyLogger, configure_logging
from .engine.errors import (
    AmbiguousDependencyError,
    CycleError,
    DuplicateTaskError,
    ExecutorError,
    GraphError,
    HistoryError,
    PoolError,
    ThreadOrderError,
    UnknownDependencyError,
    UnpairedCaseError,
    UsageError,
    WorkerStartError,
)
from .engine.events import Event, EventKind
from .engine.graph import Graph
from .engine.model import TaskRecord, TaskSpec, TaskStatus, dmark, mark
from .engine.scheduler import Scheduler, default_workers

# imported outside the try: a Ctrl-C landing inside this import must surface as the
# KeyboardInterrupt it is, not as a NameError from an except clause naming an unbound class
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

try:
    __version__ = _version("thread-order")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
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
