"""tdrun's pools: the ``--pool`` option, and the pools a run uses (engine/pools.py declares them).

A module's ``POOLS`` come first, ``[tool.tdrun] pools`` over them and ``--pool``
over both, pool by pool (config.py folds the file's into ``--pool``'s list).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.errors import PoolError
from ..engine.pools import Pool, check_task_pools, parse_pool_option

__all__ = ["add_pool_options", "run_pools"]


def _pool(text: str) -> tuple[str, Pool]:
    try:
        return parse_pool_option(text, where="")
    except PoolError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_pool_options(parser: argparse.ArgumentParser) -> None:
    """``--pool NAME=SIZE[,RATE]``, repeatable, into ``args.pools`` as ``(name, Pool)`` pairs."""
    group = parser.add_argument_group("pools and rate limits")
    group.add_argument("--pool", metavar="NAME=SIZE[,RATE]", action="append", default=[], type=_pool,
                       dest="pools", help="declare a pool, or override a module's POOLS: api=2, "
                                          "quota=4,10/s, burst=100/min (repeatable)")


def run_pools(collection: Any, args: argparse.Namespace) -> dict[str, Pool]:
    """The pools of the run: the modules' ``POOLS`` < ``[tool.tdrun] pools`` < ``--pool``.

    Raises:
        PoolError: a collected task is in a pool none of them declares (tdrun: exit 4).
    """
    pools = {**collection.pools, **dict(args.pools)}
    check_task_pools(pools, [s.pools for s in collection.specs], collection.names)
    return pools
