"""tdrun's start-order options: --shuffle[=SEED], --order, and what the summary says about them."""

from __future__ import annotations

import argparse
from typing import Any, Mapping, Sequence

from ..engine.errors import UsageError
from ..engine.graph import Graph
from ..engine.order import ORDERS, lower_bound, make_plan, new_seed
from ..theme import bound_text, order_text

__all__ = ["add_order_options", "check_order_args", "list_order", "normalize_shuffle", "order_notes",
           "run_bound", "scheduler_order"]

_RANDOM = "random"


def _seed(text: str) -> int:
    if text == _RANDOM:
        return new_seed()
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number seed, got {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"expected a seed >= 0, got {text!r}")
    return seed


def add_order_options(parser: argparse.ArgumentParser) -> None:
    """The "start order" option group."""
    group = parser.add_argument_group("start order (what starts first when several tasks are ready)")
    group.add_argument("--shuffle", metavar="SEED", type=_seed, default=None,
                       help="start ready tasks in an order drawn from a seeded generator; "
                            "--shuffle alone draws a seed (printed with the summary), --shuffle=SEED "
                            "repeats one")
    group.add_argument("--order", choices=ORDERS, default=None,
                       help="declared: registration (source) order, the default; critical-path: the "
                            "task with the longest remaining path first, weighed by its recent "
                            "durations in the history")


def normalize_shuffle(argv: Sequence[str]) -> list[str]:
    """A bare ``--shuffle`` asks for a fresh seed (``--shuffle SEED`` would eat a PATH)."""
    return [f"--shuffle={_RANDOM}" if arg == "--shuffle" else arg for arg in argv]


def check_order_args(args: argparse.Namespace) -> None:
    """Raises UsageError for options that cannot go together."""
    if args.shuffle is not None and args.order == "critical-path":
        raise UsageError("--shuffle and --order critical-path cannot be used together")


def scheduler_order(args: argparse.Namespace) -> dict[str, Any]:
    """The ``Scheduler`` keywords of the order options (durations read from the history: the
    runs of the same module in the file tdrun records into)."""
    if args.shuffle is not None:
        return {"shuffle": args.shuffle}
    if args.order == "critical-path":
        from ..history import recent_durations

        return {"order": "critical-path", "durations": recent_durations(_history_path(args), _module(args))}
    return {}


def list_order(args: argparse.Namespace, graph: Graph) -> tuple[list[int] | None, str]:
    """``tdrun --list`` under ``--shuffle`` or ``--order``: the ranks and how the order is named."""
    if args.shuffle is None and args.order != "critical-path":
        return None, ""
    kwargs = scheduler_order(args)
    plan = make_plan(graph, kwargs.get("order", "declared"), kwargs.get("shuffle"), kwargs.get("durations"),
                     None)
    how = order_text(plan.info)
    if plan.info["order"] == "shuffle":
        how += f": --shuffle={plan.info['seed']} repeats it"
    return plan.rank, how


def _history_path(args: argparse.Namespace) -> Any:
    from ..history import resolve_history_path

    return resolve_history_path(args.history, args.no_history)


def _module(args: argparse.Namespace) -> str:
    from ..engine.collect import split_target

    return split_target(str(args.target))[0]


def run_bound(summary: Mapping[str, Any], records: Sequence[Any], graph: Graph) -> dict[str, float]:
    """The run's lower bound: the summary's, or worked out from its records (declared order)."""
    bound = summary.get("lower_bound")
    if isinstance(bound, Mapping):
        return dict(bound)
    durations = {r.name: r.duration for r in records if r.attempts}
    return lower_bound(graph, durations, int(summary.get("workers") or 1))


def order_notes(args: argparse.Namespace, summary: Mapping[str, Any], records: Sequence[Any],
                graph: Graph, replay: bool = False) -> list[str]:
    """Lines for the end of the run: the seed to repeat a shuffle, the makespan beside its bound.

    Said only when an order was asked for, so the default summary stays as it was.
    """
    if args.shuffle is None and args.order is None and not replay:
        return []
    order = summary.get("order") or {}
    notes = []
    name = order_text(order) or "declared order"
    if order.get("order") == "shuffle":
        notes.append(f"{name}: repeat this order with --shuffle={order.get('seed')}")
    else:
        notes.append(name)
    notes.append(bound_text(summary.get("duration"), run_bound(summary, records, graph)))
    return notes
