"""The Dask executor (``--executor dask``, ``dask://HOST:PORT``); needs ``thread-order[dask]``.

``from_spec`` is the ``thread_order.executors`` entry point ``Scheduler(executor=...)``
resolves; ``DaskExecutor`` is the class, for a cluster or client of your own.
"""

from __future__ import annotations

from typing import Any

from ...engine.errors import ExecutorError

__all__ = ["DaskExecutor", "from_spec"]

_MISSING = "executor {spec!r} needs Dask, which is not installed: pip install 'thread-order[dask]' ({why})"


def from_spec(spec: str, processes: int = 0, **options: Any) -> Any:
    """The executor for ``"dask"`` (a cluster per run) or ``"dask://HOST:PORT"``.

    Raises:
        ExecutorError: Dask is not installed, or the address is not HOST:PORT.
    """
    try:
        from .executor import DaskExecutor, parse_address
    except ImportError as exc:
        raise ExecutorError(_MISSING.format(spec=spec, why=exc)) from None
    if spec == "dask":
        return DaskExecutor(processes=processes, **options)
    if processes:
        raise ExecutorError(f"executor {spec!r}: --dask-processes is for the embedded cluster "
                            "(--executor dask); a running scheduler has the workers it has")
    return DaskExecutor(parse_address(spec), **options)


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        try:
            from .executor import DaskExecutor
        except ImportError as exc:
            raise ExecutorError(_MISSING.format(spec="dask", why=exc)) from None
        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
