"""tdrun's async-task options (--async-limit, --async-block-threshold) and their Scheduler keywords."""

from __future__ import annotations

import argparse

__all__ = ["add_async_options", "async_options"]


def _async_limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of coroutines, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_async_options(parser: argparse.ArgumentParser) -> None:
    """Add the async-task options (defaults: the Scheduler's) as a group of their own."""
    aio = parser.add_argument_group("async tasks (async def)")
    aio.add_argument("--async-limit", type=_async_limit, default=100, metavar="N",
                     help="coroutines running at once on the run's event loop (default: 100)")
    aio.add_argument("--async-block-threshold", type=_seconds, default=0.1, metavar="SECONDS",
                     help="warn about a coroutine step holding the event loop longer (default: 0.1)")


def async_options(args: argparse.Namespace) -> dict:
    """The Scheduler's keyword arguments for what was given."""
    return {"async_limit": args.async_limit, "async_block_threshold": args.async_block_threshold}
