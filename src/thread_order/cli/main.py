"""tdrun: run the @mark functions of a Python file in dependency order, on threads.

Exit codes follow pytest's, so CI treats tdrun like a test runner: 0 all
passed, 1 some task failed, 2 interrupted, 3 internal error (a bug in tdrun),
4 usage or collection error, 5 no tasks collected.
"""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

from ..engine.collect import Collection, ModuleLoadError, build_state, collect
from ..engine.errors import ExecutorError, GraphError, PoolError, UsageError, WorkerStartError
from ..engine.errors import edit_distance as _edits
from .asyncopts import add_async_options, async_options
from .pooling import add_pool_options, run_pools
from .config import add_config_options, apply_config, find_config, show_config
from .graphfmt import FORMATS, format_graph, pool_note, static_note, task_list
from .ordering import (add_order_options, check_order_args, list_order, normalize_shuffle, order_notes,
                       scheduler_order)
from ..engine.model import parse_tags
from ..engine.scheduler import Scheduler, default_workers
from .executors import add_executor_options, executor_from_args

__all__ = ["main", "console_main", "build_parser", "parse_set_values", "SUBCOMMANDS", "EXIT_CODES"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_TASKS = range(6)
EXIT_CODES = {
    EXIT_OK: "all tasks passed",
    EXIT_FAILED: "some task failed",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_INTERNAL: "internal error in tdrun",
    EXIT_USAGE: "usage or collection error",
    EXIT_NO_TASKS: "no tasks collected",
}

#: ``tdrun NAME ...`` runs another front-end: name -> "module:function". The
#: function is called with the whole argument list, ``argv[0]`` being NAME,
#: and returns the exit code. A module that cannot be imported exits 4.
SUBCOMMANDS: dict[str, str] = {
    "ui": "thread_order.web.server:main",
    "history": "thread_order.history.commands:main",
    "show": "thread_order.history.commands:main",
    "report": "thread_order.history.commands:main",
    "compare": "thread_order.history.commands:main",
    "trace": "thread_order.trace:main",
    "replay": "thread_order.cli.replay:main",
}

# a state entry typed on the command line: --key=value (value may be empty)
_STATE_ARG = re.compile(r"^--([A-Za-z_][\w.\-]*)=(.*)$", re.S)
_STATE_KEY = re.compile(r"^[A-Za-z_][\w.\-]*$")
_RESULT_PREFIX = "result-"
#: flags added after state keys such as --fail=... and --check=... were in use: a state key
#: that is only the start of one of them stays a state key (a flag takes no value anyway)
_NO_PREFIX_MATCH = frozenset(("--check-state", "--last-failed", "--failed-first", "--no-check-state",
                              "--no-shuffle", "--no-otel"))


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (exit 4) instead of printing usage and exiting 2."""

    def error(self, message: str):  # noqa: D401 - argparse's name
        raise UsageError(message)


def _workers(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text!r}")
    return n


def _tags(text: str) -> str:
    if not parse_tags(text):
        raise argparse.ArgumentTypeError(f"expected tag names separated by commas, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``tdrun`` option parser (state entries ``--key=value`` are parsed separately)."""
    from .. import __version__

    p = _Parser(
        prog="tdrun",
        usage="tdrun PATH [PATH ...] [options] [--key=value ...]",
        description="Run the @mark functions of Python files concurrently on threads, "
                    "in dependency order. Defaults may live in pyproject.toml under [tool.tdrun].",
        epilog="Any other --key=value sets state['key'] = 'value' (the command line wins over "
               "--state-file), unless the key looks like a mistyped option (--tag=smoke is refused: "
               "did you mean --tags?); --set KEY=VALUE sets any key. "
               "--result-TASK=value puts a mocked result in state['results']. "
               "Exit codes: 0 passed, 1 failed, 2 interrupted, 3 internal error, "
               "4 usage or collection error, 5 no tasks.",
        allow_abbrev=False,  # --env=dev must never be read as an abbreviation of an option
    )
    p.add_argument("targets", metavar="PATH", nargs="*",
                   help="a module file, path/to/module.py::task, or a directory of modules")
    run = p.add_argument_group("selection and scheduling")
    run.add_argument("-k", dest="keyword", metavar="EXPR",
                     help="keep tasks whose full name matches EXPR: substrings with and/or/not, "
                          "as pytest's -k")
    run.add_argument("--pattern", metavar="GLOB", help="the files a directory collects (default: *.py)")
    run.add_argument("--workers", type=_workers, metavar="N",
                     help=f"worker threads (default: min({default_workers}, number of tasks))")
    run.add_argument("--tags", metavar="A,B", type=_tags, help="keep only tasks that have all these tags")
    run.add_argument("--with-deps", action="store_true",
                     help="with TARGET::task, also run everything the task depends on")
    skipping = run.add_mutually_exclusive_group()
    skipping.add_argument("--skip-deps", dest="skip_deps", action="store_true", default=True,
                          help="skip the dependents of a failed task (the default)")
    skipping.add_argument("--no-skip-deps", dest="skip_deps", action="store_false",
                          help="run the dependents of a failed task anyway")
    run.add_argument("--state-file", metavar="FILE.json", help="initial state values, a JSON object")
    run.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="set_values",
                     help="set state['KEY'] = 'VALUE', even for a key close to an option's name "
                          "(repeatable; wins over --key=value)")
    show = p.add_argument_group("inspection (runs nothing)")
    show.add_argument("--list", action="store_true",
                      help="list the tasks in the order they would start with one worker")
    show.add_argument("--graph", action="store_true", help="print the dependency graph")
    show.add_argument("--graph-format", choices=FORMATS, default=None,
                      help="format of --graph (default: text); implies --graph")
    show.add_argument("--show-config", action="store_true",
                      help="print the settings in force (pyproject.toml [tool.tdrun], command line) "
                           "and where each came from")
    out = p.add_argument_group("output")
    out.add_argument("--viewer", action="store_true", help="live view of the threads, even when not on a terminal")
    out.add_argument("--progress", action="store_true", help="show only a progress bar")
    out.add_argument("--plain", action="store_true", help="one line per finished task, even on a terminal")
    out.add_argument("--log", action="store_true", help="show log records as tasks run")
    out.add_argument("--verbose", action="store_true", help="show log records down to DEBUG")
    out.add_argument("--no-color", action="store_true", help="no colours (the NO_COLOR variable works too)")
    out.add_argument("--junit-xml", metavar="PATH", help="write a JUnit XML report for CI")
    out.add_argument("--json-report", metavar="PATH", help="write the run as a JSON document")
    hist = p.add_argument_group("history (see tdrun history, show, report, trace, compare)")
    hist.add_argument("--history", metavar="PATH",
                      help="record the run in this SQLite file (default: .tdrun/history.db)")
    hist.add_argument("--no-history", action="store_true",
                      help="do not record the run (TDRUN_HISTORY=off does the same)")
    hist.add_argument("--html-report", metavar="FILE.html",
                      help="write the run as a self-contained HTML page: timeline, graph, failures")
    order = p.add_argument_group("ordering bugs")
    order.add_argument("--check-state", action="store_true",
                       help="note which state keys each task reads and writes; report reads of "
                            "what a task not declared upstream wrote, and unordered writes of one "
                            "key (findings make the run exit 1)")
    rerun = order.add_mutually_exclusive_group()
    rerun.add_argument("--last-failed", action="store_true",
                       help="rerun only the tasks the last recorded run of this target did not "
                            "pass, what they need upstream and their always teardown")
    rerun.add_argument("--failed-first", action="store_true",
                       help="run every task, starting first those the last recorded run of this "
                            "target did not pass")
    tracing = p.add_argument_group("tracing")
    tracing.add_argument("--otel", action="store_true",
                         help="export the run live as OpenTelemetry spans, configured by the OTEL_* "
                              "variables (needs thread-order[otel]); honours TRACEPARENT")
    add_order_options(p)
    add_executor_options(p)
    add_async_options(p)
    add_pool_options(p)
    add_config_options(p)
    p.add_argument("--version", action="version", version=f"tdrun {__version__}")
    return p


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str], dict[str, str]]:
    """Parse options; returns ``(args, state values, mocked results)``.

    Raises:
        UsageError: an unknown option, a bad value, or options that conflict.
    """
    parser = build_parser()
    args, extras = parser.parse_known_args(normalize_shuffle(argv))
    options = _long_options(parser)
    values: dict[str, str] = {}
    results: dict[str, str] = {}
    for item in extras:
        m = _STATE_ARG.match(item)
        if m is None:
            if item.startswith("-"):
                near = _near_option(item.lstrip("-"), options)
                hint = f": did you mean {near}?" if near else " (state values take the form --key=value)"
                raise UsageError(f"unrecognized option {item!r}{hint}")
            args.targets.append(item)  # a PATH after an option
            continue
        key, value = m.group(1), m.group(2)
        if key.startswith(_RESULT_PREFIX):
            task = key[len(_RESULT_PREFIX):]
            if not task:
                raise UsageError(f"{item!r}: missing task name in --result-TASK=value")
            results[task] = value
            continue
        near = _near_option(key, options)
        if near is not None:
            # a typo must not become a state value: --tag=smoke would run every task
            raise UsageError(f"unknown option '--{key}': did you mean {near}? (to set state[{key!r}], "
                             f"use --set {key}=VALUE)")
        values[_state_key(f"--{key}", key)] = value
    values.update(parse_set_values(args.set_values))
    if not args.targets and not args.show_config:
        raise UsageError("missing PATH: give a task module, module.py::task or a directory")
    args.target = " ".join(args.targets)
    if args.graph_format:
        args.graph = True
    picked = [name for name, on in (("--viewer", args.viewer), ("--progress", args.progress),
                                    ("--plain", args.plain)) if on]
    if len(picked) > 1:
        raise UsageError(f"{' and '.join(picked)} cannot be used together")
    if args.graph and args.list:
        raise UsageError("--graph and --list cannot be used together")
    check_order_args(args)
    for option, path in (("--junit-xml", args.junit_xml), ("--json-report", args.json_report),
                         ("--html-report", args.html_report), ("--history", args.history)):
        if path is not None and (not path or Path(path).is_dir()):
            raise UsageError(f"{option} {path!r}: expected a file path")
    for option, path in (("--junit-xml", args.junit_xml), ("--json-report", args.json_report)):
        if path:
            _check_report_folder(option, path)
    return args, values, results


def parse_set_values(items: list[str], option: str = "--set") -> dict[str, str]:
    """The state values of ``--set KEY=VALUE`` options (strings, the last one wins).

    Raises:
        UsageError: not ``KEY=VALUE``, a key of other characters, or a reserved key.
    """
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not _STATE_KEY.match(key):
            raise UsageError(f"{option} {item!r}: expected KEY=VALUE, KEY made of letters, digits, "
                             "'_', '.' or '-'")
        values[_state_key(f"{option} {key}", key)] = value
    return values


def _state_key(option: str, key: str) -> str:
    if key.startswith("_"):
        raise UsageError(f"{option}: state keys starting with '_' are reserved")
    if key == "results":
        raise UsageError(f"{option}: 'results' is reserved for task results, use --result-TASK=value")
    return key


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")]


def _near_option(key: str, options: list[str]) -> str | None:
    """The option ``--key`` probably meant: the same but for case or ``_``/``-``, the start of
    one (3 letters at least), or one or two edits away (one for names up to 6 letters)."""
    typed = key.lower().replace("_", "-")
    if typed.startswith(_RESULT_PREFIX.rstrip("-")) and typed != key:  # --result_TASK=value
        return f"--{_RESULT_PREFIX}{key[len(_RESULT_PREFIX):]}" if len(key) > len(_RESULT_PREFIX) else None
    best: tuple[int, str] | None = None
    for option in options:
        name = option[2:]
        if typed == name or (len(typed) >= 3 and name.startswith(typed) and option not in _NO_PREFIX_MATCH):
            return option
        distance = _edits(typed, name)
        if distance <= (1 if len(name) <= 6 else 2) and (best is None or distance < best[0]):
            best = (distance, option)
    return best[1] if best else None


def _check_report_folder(option: str, path: str) -> None:
    """Refuse, before anything runs, a report path whose folders cannot be created."""
    folder = Path(path).expanduser().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: {folder} is not a folder")


# ---------------------------------------------------------------------------- entry points


def main(argv: list[str] | None = None, *, replay: Any = None) -> int:
    """Run tdrun with ``argv`` (default: ``sys.argv[1:]``); returns the exit code.

    ``replay`` is ``tdrun replay``'s session (cli/replay.py): the run it reruns.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    out, err = sys.stdout, sys.stderr
    try:
        if argv and argv[0] in SUBCOMMANDS and replay is None:
            return _dispatch(argv, err)
        return _tdrun(argv, out, err, replay)
    except ModuleLoadError as exc:
        err.write(exc.user_traceback.rstrip("\n") + "\n")
        err.write(f"tdrun: error: {exc}\n")
        return EXIT_USAGE
    except (UsageError, GraphError, WorkerStartError, ExecutorError, PoolError) as exc:
        err.write(f"tdrun: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.write("tdrun: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # tdrun --list | head: the reader has all it wanted
        _silence(out)
        return EXIT_OK
    except Exception:
        err.write(traceback.format_exc())
        err.write("tdrun: internal error: this is a bug in tdrun, please report it with the traceback above\n")
        return EXIT_INTERNAL


def _silence(stream: TextIO) -> None:
    """Point ``stream`` at /dev/null, so the flush at exit does not fail on a closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def console_main() -> None:
    """The ``tdrun`` console script."""
    sys.exit(main())


def _dispatch(argv: list[str], err: TextIO) -> int:
    name = argv[0]
    target = SUBCOMMANDS[name]
    module_name, _, func_name = target.partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        err.write(f"tdrun: error: 'tdrun {name}' is not available: cannot load {target} ({exc})\n")
        return EXIT_USAGE
    code = func(argv)
    return int(code or 0)


# ---------------------------------------------------------------------------- a run


def _tdrun(argv: list[str], out: TextIO, err: TextIO, replay: Any = None) -> int:
    config = find_config()
    try:
        args, values, results = parse_args(config.addopts + argv)
    except SystemExit as exc:  # --help and --version print and exit 0
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    rows = apply_config(args, config, argv, parse_args)
    if args.otel:
        from ..trace import require_otel

        require_otel()  # the extra missing is one line and exit 4, before any module is imported
    if args.show_config:
        out.write(show_config(rows, config))
        return EXIT_OK
    collection = collect(args.targets, tags=args.tags, with_deps=args.with_deps,
                         keyword=args.keyword, pattern=args.pattern)
    for task in results:
        if task not in collection.all_names:
            raise UsageError(f"--result-{task}: {collection.path}: no marked task named {task!r}")
    if not collection.specs:
        where = str(collection.path) if not collection.suite else f"the suite {collection.label}"
        if collection.all_names and (args.tags or args.keyword):
            asked = " and ".join(x for x in (args.tags and f"has the tags {args.tags!r}",
                                             args.keyword and f"matches -k {args.keyword!r}") if x)
            err.write(f"tdrun: no tasks collected: no task in {where} {asked}\n")
        else:
            err.write(f"tdrun: no tasks collected: {where} has no @mark functions\n")
        return EXIT_NO_TASKS
    graph = collection.graph()  # GraphError -> exit 4
    pools = run_pools(collection, args)  # PoolError -> exit 4
    first = None
    if args.last_failed or args.failed_first:
        from .rerun import not_passed_last_time, select_last_failed

        option = "--last-failed" if args.last_failed else "--failed-first"
        names = not_passed_last_time(args.history, str(args.target), option,
                                     lambda line: err.write(line + "\n"))
        if names is not None and args.last_failed:
            collection.specs, line = select_last_failed(collection.specs, graph, names)
            err.write(f"tdrun: {option}: {line}\n")
            graph = collection.graph()
        elif names is not None:
            first = [n for n in names if n in graph]
            err.write(f"tdrun: {option}: starting first {len(first)} task"
                      f"{'s' if len(first) != 1 else ''} that did not pass last time\n")
    module_name = collection.label
    always = [s.name for s in collection.specs if s.always]
    if args.graph:
        out.write(format_graph(graph, args.graph_format or "text", module_name, always))
        out.write(static_note(graph, collection.specs, args.graph_format or "text"))
        out.write(pool_note(pools, collection.specs, args.graph_format or "text"))
        return EXIT_OK
    if args.list:
        out.write(task_list(collection, graph, *list_order(args, graph)))
        out.write(static_note(graph, collection.specs))
        out.write(pool_note(pools, collection.specs))
        return EXIT_OK

    executor = executor_from_args(args, replay)
    state, sources = build_state(collection.hook_modules, args.state_file, values, results)
    if replay is not None:
        replay.fill_state(state, sources)
    check_initial_state(state, sources, args.state_file)
    n = len(collection.specs)
    workers = args.workers or min(default_workers, n)
    if replay is not None:
        order: dict[str, Any] = {"order": replay.order()}
    else:
        order = scheduler_order(args)
    scheduler = Scheduler(
        workers=workers, state=state, clear_results_on_start=not results and "results" not in sources,
        skip_dependents=args.skip_deps, capture=True, check_state=args.check_state, first=first,
        **order, **async_options(args),
        executor=executor,
        pools=pools,
    )
    collection.register_into(scheduler)
    if replay is not None:
        replay.check_graph(scheduler.dependencies, err)
    return _run(args, argv, collection, scheduler, sources, out, err, replay)


def check_initial_state(state: dict, sources: dict[str, str], state_file: str | None) -> None:
    """Refuse engine-owned keys from a state file and a ``results`` that is not a dict."""
    for key, source in sources.items():
        if source == "state file" and key.startswith("_"):
            raise UsageError(f"state file {state_file}: key {key!r} is reserved (keys starting with '_')")
    if "results" in state and not isinstance(state["results"], dict):
        where = f"state file {state_file}" if sources.get("results") == "state file" else "setup_state()"
        raise UsageError(f"{where}: 'results' must be an object of task results, "
                         f"not {type(state['results']).__name__}")


def _run_observers(args: argparse.Namespace) -> list[Any]:
    """Extra observers of the run: objects with ``attach(scheduler, run_info)`` and ``finish()``.

    They are attached after the display, before ``scheduler.start()``, and
    finished after it returns, in reverse order. This is where recorders
    (history...) plug in.
    """
    observers: list[Any] = []
    from ..history import history_observer

    recorder = history_observer(args.history, args.no_history, args.html_report)
    if recorder is not None:
        observers.append(recorder)
    if args.otel:
        from ..trace import OtelObserver

        observers.append(OtelObserver())
    return observers


def _warnings_outside_tasks(record: logging.LogRecord) -> bool:
    from ..engine.capture import in_task  # a worker's task, or a coroutine on the event loop
    return (record.levelno >= logging.WARNING and not in_task(record)
            and record.name != "thread_order.interrupt")  # tdrun says that in its own words


def _run(args, argv, collection: Collection, scheduler: Scheduler, sources: dict[str, str],
         out: TextIO, err: TextIO, replay: Any = None) -> int:
    from .live import LiveView
    from .plain import LineLogHandler, PlainReporter, display_mode, make_console, print_end_of_run
    from .reports import RunData, redact_argv, write_json_report, write_junit_xml

    color = not args.no_color
    mode = display_mode(args, out)
    total = len(scheduler.tasks)
    lanes = min(scheduler.workers, total)
    module_name = collection.label
    console = make_console(out, color=color, force_terminal=True if mode != "plain" else None)

    def say(message: str) -> None:
        err.write(message + "\n")
        err.flush()

    display: Any
    if mode == "plain":
        display = PlainReporter(console, total, lanes, err=say)
        log_handler: logging.Handler = LineLogHandler(console, collection.highlights, scheduler.tasks)
    else:
        display = LiveView(console, mode=mode, title=str(args.target), total=total, lanes=lanes,
                           highlights=collection.highlights)
        log_handler = display.log_handler(scheduler.tasks)

    run_info = {
        # redacted here too: the history's own redaction does not know --set KEY=VALUE
        "module": module_name, "target": str(args.target), "argv": redact_argv(argv),
        "tags": args.tags, "workers": scheduler.workers, "state": scheduler.state,
        **(replay.info() if replay is not None else {}),
    }
    observers = [display] + _run_observers(args)
    root = logging.getLogger()
    old_level = root.level
    # captured output (and --log) holds INFO records, or DEBUG ones with --verbose
    root.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    show_logs = args.log or args.verbose
    if not show_logs:
        # without --log, only warnings from outside the tasks (a timeout, a failing hook);
        # the tasks' own records are in their captured output. Printing them through the
        # display keeps the live view intact, where a bare stderr write would tear it.
        log_handler.addFilter(_warnings_outside_tasks)
    root.addHandler(log_handler)
    attached: list[Any] = []
    try:
        for observer in observers:
            observer.attach(scheduler, run_info)
            attached.append(observer)
        summary = scheduler.start()
    finally:
        _finish_all(attached)
        root.removeHandler(log_handler)
        root.setLevel(old_level)

    if summary["interrupted"]:
        code = EXIT_INTERRUPTED
    elif summary["failed"] or summary.get("state_findings"):
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    records = list(scheduler.last_records)
    report = RunData(
        module=module_name, path=str(collection.path), summary=summary, records=records,
        graph=scheduler.graph, specs=list(scheduler.tasks), target=collection.target,
        argv=list(argv), exit_code=code, state_sources=dict(sources),
        module_of=collection.module_of, cases=collection.cases,
        modules=[(m.label, m.path_str) for m in collection.modules],
    )
    written = []
    for option, path, write in (("--junit-xml", args.junit_xml, write_junit_xml),
                                ("--json-report", args.json_report, write_json_report)):
        if path:
            try:
                write(path, report)
            except OSError as exc:  # after the run: a warning with the summary, the run's code stands
                written.append(f"warning: {option} {path}: cannot write: {exc.strerror or exc}")
                continue
            written.append(f"{option.lstrip('-').replace('-', ' ')} written to {path}")
    written.extend(note for observer in observers for note in getattr(observer, "notes", ()))
    written[:0] = order_notes(args, summary, records, scheduler.graph, replay is not None)
    if replay is not None:
        new_id = next((o.run_id for o in observers if getattr(o, "run_id", None) is not None), None)
        if new_id is not None:
            written.append(f"compare with the recording: tdrun compare {replay.run_id} {new_id}"
                           + (f" --history {replay.history}" if replay.history else ""))
    end_console = make_console(out, color=color)
    try:
        print_end_of_run(end_console, summary, records, notes=written)
        out.flush()
    except BrokenPipeError:  # tdrun ... | head: the run's outcome still decides the exit code
        _silence(out)
    return code


def _finish_all(observers: list[Any]) -> None:
    """Finish every observer, last attached first, even if one of them raises."""
    error: BaseException | None = None
    for observer in reversed(observers):
        try:
            observer.finish()
        except BaseException as exc:  # noqa: B902 - the rest must still restore the terminal
            error = error or exc
    if error is not None:
        raise error


if __name__ == "__main__":
    console_main()
