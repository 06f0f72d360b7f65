"""tdrun's executor options: --executor local|dask|dask://HOST:PORT and --dask-processes.

What the options mean is the engine's (``engine/executor.py`` finds an executor by
name through the ``thread_order.executors`` entry points); this module only adds
them to the parser and refuses the combinations that cannot work, naming the option.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.errors import UsageError
from ..engine.executor import executor_from_spec

__all__ = ["add_executor_options", "executor_from_args"]


def _executor(text: str) -> str:
    if text in ("local", "dask") or text.startswith("dask://"):
        return text
    raise argparse.ArgumentTypeError(f"expected local, dask or dask://HOST:PORT, got {text!r}")


def _processes(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def add_executor_options(parser: argparse.ArgumentParser) -> None:
    """The "executor" option group."""
    where = parser.add_argument_group("executor (where tasks run)")
    where.add_argument("--executor", metavar="local|dask|dask://HOST:PORT", type=_executor, default="local",
                       help="local: threads of this process (default); dask: a Dask cluster started "
                            "for the run; dask://HOST:PORT: a running Dask scheduler")
    where.add_argument("--dask-processes", metavar="N", type=_processes, default=0,
                       help="with --executor dask: N worker processes of ceil(workers / N) threads "
                            "each (default: one worker in this process)")


def executor_from_args(args: argparse.Namespace, replay: Any = None) -> Any:
    """The executor the options name (None: local threads).

    Raises:
        UsageError: an option that needs another executor.
        ExecutorError: the executor cannot be made (Dask not installed, a bad address).
    """
    if replay is not None and args.executor != "local":
        raise UsageError(f"tdrun replay needs --executor local, not --executor {args.executor}: "
                         "a replay's start order is kept by tdrun's own worker threads")
    if getattr(args, "check_state", False) and args.executor != "local":
        raise UsageError(f"--check-state needs --executor local, not --executor {args.executor}: "
                         "a task on a cluster reads and writes a copy of the state")
    if args.dask_processes and args.executor != "dask":
        raise UsageError(f"--dask-processes needs --executor dask (the cluster tdrun starts), "
                         f"not --executor {args.executor}")
    options = {"processes": args.dask_processes} if args.dask_processes else {}
    return executor_from_spec(args.executor, **options)
