"""``tdrun trace RUN [-o FILE.json]``: write a recorded run as a Chrome Trace Event file.

Reads the history only (opened read-only, never created). Bad input (an
unknown run, a missing or corrupt history, a path that cannot be written) is
one line on stderr and exit code 4.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from ..engine.errors import HistoryError, UsageError
from ..history import DEFAULT_HISTORY, HistoryStore
from .chrome import trace_json

__all__ = ["main", "write_trace"]

EXIT_OK, EXIT_USAGE = 0, 4


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 4) instead of printing usage and exiting 2."""

    def error(self, message: str):  # noqa: D401 - argparse's name
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tdrun trace", allow_abbrev=False,
                description="Write one recorded run as a Chrome Trace Event file "
                            "(open it in Perfetto or chrome://tracing).")
    p.add_argument("run", metavar="RUN", help="a run id, or 'last'")
    p.add_argument("-o", "--output", metavar="FILE.json",
                   help="where to write it (default: tdrun-trace-<id>.json in the current folder)")
    p.add_argument("--history", metavar="PATH", help=f"the history file (default: {DEFAULT_HISTORY})")
    return p


def write_trace(path: str | Path, run: dict[str, Any], option: str = "-o") -> Path:
    """Write the trace of ``run`` to ``path``, whole or not at all.

    Raises:
        UsageError: ``path`` is a folder, its folder does not exist, or it cannot be written.
    """
    path = Path(path).expanduser()
    text = trace_json(run)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:  # even asking is_dir() of a name too long for the system raises
        if path.is_dir():
            raise UsageError(f"{option} {path}: is a directory, expected a file path")
        if not path.parent.is_dir():
            raise UsageError(f"{option} {path}: folder {path.parent} does not exist")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # a viewer never opens half a trace
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise UsageError(f"{option} {path}: cannot write: {exc.strerror or exc}") from None
    return path


def main(argv: Sequence[str]) -> int:
    """Run ``tdrun trace ...`` (``argv[0]`` is ``"trace"``); returns the exit code."""
    argv = [str(a) for a in argv][1:]
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as exc:  # --help printed its text
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        history = Path(args.history) if args.history else DEFAULT_HISTORY
        with HistoryStore(history, readonly=True) as store:
            run = store.get_run(args.run)
        output = write_trace(args.output or f"tdrun-trace-{run['id']}.json", run)
    except (HistoryError, UsageError) as exc:
        sys.stderr.write(f"tdrun: error: {exc}\n")
        return EXIT_USAGE
    sys.stdout.write(f"trace of run {run['id']} written to {output} "
                     "(open it in https://ui.perfetto.dev or chrome://tracing)\n")
    return EXIT_OK
