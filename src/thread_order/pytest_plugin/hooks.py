"""The pytest hooks of the plugin, and the ``tdrun_state`` fixture.

Inert unless asked: without ``--tdrun`` or the ``tdrun_files`` ini option every
hook returns at once and ordinary test files are collected as before.
When active:

- ``pytest_collect_file`` makes the task modules ``TdrunFile`` collectors
  (instead of Python modules, so a task file is imported once, by tdrun's loader);
- ``pytest_runtestloop`` (first) runs the selected items' graph once, then lets
  pytest's own loop report the items, the tdrun ones first;
- ``pytest_runtest_makereport`` turns each task's record into its item's report:
  outcome, traceback, captured output, real duration;
- ``pytest_terminal_summary`` says what ran only because it was needed, what a
  stop left unreported, and where the run was recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Generator

import pytest

from .nodes import TaskItem, TdrunFile, outcome_of
from .options import Settings, add_options, read_settings
from .session import RUN_KEY, SessionRun
from .view import TdrunState

__all__ = [
    "pytest_addoption", "pytest_configure", "pytest_collect_file", "pytest_runtestloop",
    "pytest_runtest_protocol", "pytest_runtest_makereport", "pytest_terminal_summary",
    "pytest_sessionfinish", "tdrun_state",
]

SETTINGS_KEY: pytest.StashKey[Settings] = pytest.StashKey()


def _run(config: pytest.Config) -> SessionRun | None:
    return config.stash.get(RUN_KEY, None)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    settings = read_settings(config)
    config.stash[SETTINGS_KEY] = settings
    if not settings.active:
        return
    config.stash[RUN_KEY] = SessionRun(config, settings)
    config.addinivalue_line("markers", "tdrun: a task of a tdrun module, run by thread-order")
    if settings.targets:
        # pytest --tdrun tasks.py collects tasks.py; with paths of its own, those too
        sources = getattr(pytest.Config, "ArgsSource", None)  # pytest 7.2+
        if sources is not None and config.args_source != sources.ARGS:
            config.args = list(settings.targets)
        else:
            config.args = list(config.args) + [t for t in settings.targets if t not in config.args]


# old-style wrappers (``hookwrapper=True``): the plugin loads into whatever pytest the package is
# installed beside, and must not break an older one that lacks the new style


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    settings = parent.config.stash.get(SETTINGS_KEY, None)
    if settings is None or not settings.active or not settings.is_task_file(file_path, parent.config.rootpath):
        return
    # a task module is tdrun's alone: not also a Python test module or a doctest module
    others = [node for node in (outcome.get_result() or []) if getattr(node, "path", None) != file_path]
    outcome.force_result(others + [TdrunFile.from_parent(parent, path=file_path)])


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    run = _run(session.config)
    option = session.config.option
    if run is None or option.collectonly or getattr(option, "setuponly", False) or getattr(option, "setupplan", False):
        return None
    if session.testsfailed and not session.config.option.continue_on_collection_errors:
        return None  # pytest's own loop stops on the collection errors
    items = [item for item in session.items if isinstance(item, TaskItem)]
    if not items:
        return None
    # they ran first, so they report first; ordinary tests (tdrun_state readers) follow
    session.items[:] = items + [item for item in session.items if not isinstance(item, TaskItem)]
    run.execute(session, items)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, Any, None]:
    yield
    run = _run(item.config)
    if run is not None and run.interrupted and item.nodeid == run.last_item:
        item.session.shouldstop = ("tdrun run interrupted: running tasks finished, teardown ran, "
                                   "the rest was cancelled")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    if not isinstance(item, TaskItem) or call.when != "call":
        return
    run = _run(item.config)
    record = run.record_of(item) if run is not None else None
    report = outcome.get_result()
    if record is None or report is None:
        return
    run.reported.add(run.full_names[item.nodeid])
    report.outcome, report.longrepr = outcome_of(item, record)
    # the task's real time, for --durations, --junitxml and pytest-html
    report.duration = record.duration
    if record.started_at is not None and record.finished_at is not None:
        report.start, report.stop = record.started_at, record.finished_at
    if record.output:
        report.sections.append(("Captured stdout call", record.output))
    # JUnit XML writes an item's properties from its teardown report, built after this one
    if record.thread:
        item.user_properties.append(("tdrun_thread", record.thread))
    item.user_properties.append(("tdrun_attempts", record.attempts))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = _run(config)
    if run is None or run.summary is None:
        return
    tr = terminalreporter
    tr.write_sep("-", "tdrun")
    records = run.records
    if run.needed:
        tr.write_line("run because selected tasks need them:")
        for name in run.needed:
            tr.write_line("  " + _describe(records.get(name)))
        for name in run.needed_failed:
            rec = records[name]
            tr.write_sep("_", f"needed task {name}", red=True)
            for line in (rec.traceback or f"{rec.error_type}: {rec.error}").rstrip("\n").split("\n"):
                tr.write_line(line)
            if rec.output:
                tr.write_sep("-", "Captured output")
                tr.write_line(rec.output.rstrip("\n"))
    unreported = [n for n in run.selected if n not in run.reported and n in records]
    if unreported:
        why = f"pytest stopped ({run.stopped_by})" if run.stopped_by else "pytest stopped early"
        tr.write_line(f"not reported as items ({why}):")
        for name in unreported:
            tr.write_line("  " + _describe(records[name]))
    if run.stopped_by:
        tr.write_line(f"{run.stopped_by}: the run was cancelled as Ctrl-C cancels it "
                      "(running tasks finished, teardown ran)")
    teardown = run.summary.get("teardown_not_run") or []
    if teardown:
        tr.write_line(f"teardown did not run: {', '.join(teardown)} — resources they clean up may remain",
                      red=True)
    for note in run.notes:
        tr.write_line(note)
    tr.write_line(f"tdrun: {run.summary['text']} on {run.workers} worker{'s' if run.workers != 1 else ''}")


def _describe(record: Any) -> str:
    if record is None:
        return "?"
    text = f"{record.name} {record.status.value} {record.duration:.2f}s"
    if record.status.value == "FAILED":
        text += f" ({record.error_type}: {record.error})"
    elif record.reason:
        text += f" ({record.reason})"
    return text


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = _run(session.config)
    if run is None or not run.needed_failed:
        return
    # a task the selection needed failed: the run failed, though no item did
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def tdrun_state(request: pytest.FixtureRequest) -> TdrunState:
    """A read-only view of the final state and results of this session's tdrun run."""
    run = _run(request.config)
    if run is None or run.view is None:
        pytest.skip("no tdrun run in this session (pytest --tdrun PATH, or the ini option tdrun_files)")
    return run.view
