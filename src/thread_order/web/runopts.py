"""The options of a run started in the web UI (the body of ``POST /api/runs``), checked.

Each bad value is a ``UsageError`` naming the field (the API answers 400 with it). The
start-order and async fields mean what tdrun's ``--shuffle``, ``--order`` and
``--async-limit`` mean, and are recorded in the run's argv as those options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.errors import UsageError
from ..engine.model import parse_tags
from ..engine.order import ORDERS, new_seed
from ..engine.scheduler import default_workers

__all__ = ["MAX_WORKERS", "RunOptions", "parse_run_options"]

#: the most workers a run may ask for
MAX_WORKERS = 512
#: the Scheduler's (and tdrun's) async limit when none is asked for
DEFAULT_ASYNC_LIMIT = 100
_FIELDS = ("workers", "tags", "skip_dependents", "check_state", "shuffle", "order", "async_limit")


@dataclass
class RunOptions:
    workers: int
    tags: tuple[str, ...] = ()
    skip_dependents: bool = True
    check_state: bool = False
    shuffle: int | None = None  # the seed (a drawn one when the request said true)
    order: str = "declared"
    async_limit: int = DEFAULT_ASYNC_LIMIT

    def scheduler_order(self) -> dict[str, Any]:
        """The Scheduler keywords of the start order and the async limit."""
        return {"order": self.order, "shuffle": self.shuffle, "async_limit": self.async_limit}

    def order_argv(self) -> list[str]:
        """The tdrun options that would start the same run (for the history's argv)."""
        return (([f"--shuffle={self.shuffle}"] if self.shuffle is not None else [])
                + (["--order", self.order] if self.order != "declared" else [])
                + ([f"--async-limit={self.async_limit}"] if self.async_limit != DEFAULT_ASYNC_LIMIT else []))

    def order_fields(self) -> dict[str, Any]:
        """The fields a run's snapshot adds for these options."""
        return {"shuffle": self.shuffle, "order": self.order, "async_limit": self.async_limit}


def _whole(value: Any) -> Any:
    """A whole number as JSON or as the text of a form field; anything else unchanged."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


def parse_run_options(params: Any) -> RunOptions:
    """Check the body of a start request: workers, tags, skip_dependents, check_state,
    shuffle (true, false or a seed >= 0), order and async_limit."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise UsageError("run options must be a JSON object")
    unknown = sorted(set(params) - set(_FIELDS))
    if unknown:
        raise UsageError(f"unknown run option {unknown[0]!r}")
    workers = params.get("workers", default_workers)
    if workers in (None, ""):
        workers = default_workers
    workers = _whole(workers)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"workers must be a whole number from 1 to {MAX_WORKERS}, not {workers!r}")
    try:
        tags = parse_tags(params.get("tags") or None)
    except TypeError as exc:
        raise UsageError(str(exc)) from None
    skip = params.get("skip_dependents", True)
    if not isinstance(skip, bool):
        raise UsageError(f"skip_dependents must be true or false, not {skip!r}")
    check = params.get("check_state", False)
    if not isinstance(check, bool):
        raise UsageError(f"check_state must be true or false, not {check!r}")
    shuffle = _whole(params.get("shuffle", False))
    if shuffle is True:
        shuffle = new_seed()
    elif shuffle is False or shuffle is None or shuffle == "":
        shuffle = None
    elif isinstance(shuffle, bool) or not isinstance(shuffle, int) or shuffle < 0:
        raise UsageError(f"shuffle must be true, false or a whole number seed >= 0, not {shuffle!r}")
    order = params.get("order", "declared")
    if order in (None, ""):
        order = "declared"
    if order not in ORDERS:
        raise UsageError(f"order must be one of {', '.join(map(repr, ORDERS))}, not {order!r}")
    if shuffle is not None and order != "declared":
        raise UsageError(f"shuffle cannot be used with order {order!r}")
    limit = params.get("async_limit", DEFAULT_ASYNC_LIMIT)
    if limit in (None, ""):
        limit = DEFAULT_ASYNC_LIMIT
    limit = _whole(limit)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UsageError(f"async_limit must be a whole number >= 1, not {limit!r}")
    return RunOptions(workers=workers, tags=tags, skip_dependents=skip, check_state=check,
                      shuffle=shuffle, order=order, async_limit=limit)
