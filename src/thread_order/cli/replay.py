"""tdrun replay RUN: rerun a recorded run so that the same tasks overlap as they did.

The recorded run gives the module(s), target, options, workers and initial
state; its tasks' recorded starts and finishes become the new run's start
order (``engine.order.ReplayOrder``). What the history could not keep --
secret state values it redacted -- must be given again as ``--key=value``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from ..engine.errors import HistoryError, UsageError
from ..engine.order import ReplayOrder, graph_changes

__all__ = ["ReplaySession", "main"]

REDACTED = "***redacted***"
_NOT_JSON = "__not_json__"
#: recorded options the replay sets itself or that would write over the recording's files
_DROP_WITH_VALUE = ("--junit-xml", "--json-report", "--html-report", "--history", "--order",
                    "--workers", "--state-file", "--set", "--shuffle", "--graph-format")
_DROP_FLAGS = ("--no-history", "--shuffle", "--list", "--graph", "--show-config", "--failed-first")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse's name
        raise UsageError(f"replay: {message}")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="tdrun replay", allow_abbrev=False,
        usage="tdrun replay RUN [--serial] [--force] [--history PATH] [--key=value ...]",
        description="Rerun a recorded run: the same module, options and state, tasks starting in the "
                    "recorded order, each after every task that had finished before it started then.",
        epilog="--key=value gives a state value again (secrets are not kept in the history). "
               "Exit codes as tdrun's; 4 when the graph changed since the recording (see --force).",
    )
    p.add_argument("run", metavar="RUN", help="the run to replay: an id, or 'last'")
    p.add_argument("--serial", action="store_true",
                   help="one task at a time, in the recorded start order")
    p.add_argument("--force", action="store_true",
                   help="replay what still matches when tasks or dependencies changed")
    p.add_argument("--history", metavar="PATH",
                   help="the history file to read the run from and record the replay in "
                        "(default: .tdrun/history.db)")
    return p


def _has_redacted(value: Any) -> bool:
    if value == REDACTED:
        return True
    if isinstance(value, dict):
        return any(_has_redacted(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_redacted(v) for v in value)
    return False


def _not_json(value: Any) -> bool:
    if isinstance(value, dict):
        return _NOT_JSON in value or any(_not_json(v) for v in value.values())
    if isinstance(value, list):
        return any(_not_json(v) for v in value)
    return False


class ReplaySession:
    """One replay: the recorded run, and the hooks ``tdrun`` calls while it sets the new run up."""

    def __init__(self, run: dict[str, Any], serial: bool, force: bool, history: str | None) -> None:
        self.run = run
        self.serial = serial
        self.force = force
        self.history = history
        self.changes: dict[str, list] = {}

    @property
    def run_id(self) -> int:
        return self.run["id"]

    def argv(self, extras: Sequence[str], options: Sequence[str]) -> list[str]:
        """The tdrun command line of the replay: the recorded one, cleaned, with ``extras``."""
        out: list[str] = []
        recorded = list(self.run["argv"])
        skip = False
        for arg in recorded:
            if skip:
                skip = False
                continue
            name, eq, _ = arg.partition("=")
            if name in _DROP_WITH_VALUE:
                skip = not eq and name != "--shuffle"
                continue
            if arg in _DROP_FLAGS:
                continue
            if arg.startswith("--") and eq and name not in options and not name.startswith("--result-"):
                continue  # a state value: the recorded state gives it (see fill_state)
            if REDACTED in arg:
                continue
            out.append(arg)
        workers = 1 if self.serial else (self.run.get("workers") or 1)
        out += list(extras) + ["--workers", str(workers)]
        if self.history:
            out += ["--history", self.history]
        return out

    def fill_state(self, state: dict, sources: dict[str, str]) -> None:
        """Put the recorded initial state back; say which redacted values must be given again.

        Raises:
            UsageError: a secret the history redacted is given neither on the command line
                nor by the module's ``setup_state`` or state file this time.
        """
        missing = []
        for key, value in self.run["state"].items():
            if _has_redacted(value):
                if key not in state:
                    missing.append(key)
                continue
            if _not_json(value) and key in state:
                continue  # an object the history kept only the type of: setup_state made it again
            if sources.get(key) == "command line":
                continue  # given again on purpose
            state[key] = value
            sources[key] = "recorded"
        if missing:
            given = " ".join(f"--{key}=VALUE" for key in missing)
            raise UsageError(f"run {self.run_id} used secret state values the history does not keep: "
                             f"{', '.join(missing)}; give them again: {given}")

    def check_graph(self, dependencies: dict[str, tuple[str, ...]], err: TextIO) -> None:
        """Stop, listing what changed, when the graph is not the recorded one (unless ``force``).

        Raises:
            UsageError: tasks or dependencies were added or removed, without ``--force``.
        """
        graph = self.run["graph"]
        changes = graph_changes(graph["nodes"], graph["edges"], dependencies)
        self.changes = changes
        if not any(changes.values()):
            return
        for key, label in (("tasks_added", "task added"), ("tasks_removed", "task removed")):
            for name in changes[key]:
                err.write(f"  {label}: {name}\n")
        for key, label in (("edges_added", "dependency added"), ("edges_removed", "dependency removed")):
            for dep, name in changes[key]:
                err.write(f"  {label}: {name} after {dep}\n")
        count = sum(len(v) for v in changes.values())
        if self.force:
            err.write(f"tdrun: replay: the graph changed since run {self.run_id} ({count} differences); "
                      "replaying what still matches\n")
            return
        raise UsageError(f"the graph changed since run {self.run_id} ({count} differences, listed "
                         "above); nothing ran: use --force to replay what still matches")

    def order(self) -> ReplayOrder:
        starts = {t["name"]: (t["started_at"], t["finished_at"]) for t in self.run["tasks"]
                  if t["started_at"] is not None and t["finished_at"] is not None}
        return ReplayOrder(self.run_id, starts, self.serial)

    def info(self) -> dict[str, Any]:
        """What the history records of the replay beside the run."""
        return {"ordering": {"order": "replay", "replay_of": self.run_id, "serial": self.serial},
                "replay_of": self.run_id}


def main(argv: Sequence[str]) -> int:
    """``tdrun replay RUN ...`` (``argv[0]`` is ``replay``); returns the exit code."""
    from ..history import DEFAULT_HISTORY, HistoryStore
    from .main import EXIT_USAGE, _long_options, build_parser

    err = sys.stderr
    try:
        try:
            args, extras = _parser().parse_known_args(list(argv[1:]))
        except SystemExit as exc:  # --help printed its text
            return exc.code if isinstance(exc.code, int) else 0
        for item in extras:
            if not item.startswith("--") or "=" not in item:
                raise UsageError(f"replay: unexpected {item!r}: only RUN, --serial, --force, --history "
                                 "and state values as --key=value")
        path = Path(args.history) if args.history else DEFAULT_HISTORY
        with HistoryStore(path) as store:
            run = store.get_run(args.run)
    except (UsageError, HistoryError) as exc:
        err.write(f"tdrun: error: {exc}\n")
        return EXIT_USAGE
    if not run["argv"] and not run["target"]:
        err.write(f"tdrun: error: run {run['id']} has no recorded command line to replay "
                  "(it was not run by tdrun)\n")
        return EXIT_USAGE
    session = ReplaySession(run, args.serial, args.force, args.history)
    options = _long_options(build_parser())
    new_argv = session.argv(extras, options)
    if not any(not a.startswith("-") for a in new_argv) and run["target"]:
        new_argv = run["target"].split(" ") + new_argv
    from .main import main as tdrun_main

    return tdrun_main(new_argv, replay=session)
