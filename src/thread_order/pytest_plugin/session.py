"""One pytest session's tdrun run: the suite of collected modules, run once on the Scheduler.

The selected items name the tasks to run; the engine's own suite assembly
(``assemble``: ``MODULE::TASK`` names, resolution, cases, ``with_deps``) adds
everything upstream of them, so a task selected with ``-k`` or ``-m`` still
gets what it needs. The whole graph then runs concurrently, as ``tdrun``
runs it (Ctrl-C, teardown, capture, history), and each item reads its
task's record afterwards. ``-x`` / ``--maxfail`` cancel the run as Ctrl-C
does, live, as failures happen.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from .options import Settings, history_argv
from .view import TdrunState

__all__ = ["SessionRun", "session_run", "RUN_KEY"]

RUN_KEY: pytest.StashKey["SessionRun"] = pytest.StashKey()


def session_run(config: pytest.Config) -> "SessionRun":
    """The session's run (created by the plugin's ``pytest_configure``)."""
    return config.stash[RUN_KEY]


class SessionRun:
    """The tdrun side of one pytest session: collected files, the run, its records."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.files: list[Any] = []          # TdrunFile nodes, in collection order
        self.markers: set[str] = set()
        self.records: dict[str, Any] = {}   # full task name -> TaskRecord
        self.full_names: dict[str, str] = {}  # item nodeid -> full task name
        self.selected: list[str] = []       # full names of the selected items, in item order
        self.needed: list[str] = []         # full names run only because a selected task needs them
        self.summary: dict[str, Any] | None = None
        self.view: TdrunState | None = None
        self.notes: list[str] = []
        self.stopped_by: str | None = None  # "-x"/"--maxfail" when pytest's limit cancelled the run
        self.reported: set[str] = set()     # full names whose item reported its outcome
        self.workers = 0
        self.last_item: str | None = None   # nodeid of the last item reporting a task

    # ------------------------------------------------------------------ collection

    def add_file(self, node: Any) -> None:
        self.files.append(node)

    def register_marker(self, tag: str) -> None:
        """Declare a tag as a marker, so ``-m`` selects by it and ``--strict-markers`` accepts it."""
        if tag not in self.markers:
            self.markers.add(tag)
            self.config.addinivalue_line("markers", f"{tag}: tdrun tag")

    def _labels(self) -> list[str]:
        """Each file's module label: tdrun's for ``--tdrun`` files; for files found by the
        ``tdrun_files`` glob, their path below the folder all of them share, without ``.py``."""
        known = self.settings.labels
        others = [f for f in self.files if os.path.realpath(f.path) not in known]
        common = None
        if others:
            common = Path(os.path.commonpath([str(f.path.parent) for f in others]))
        labels = []
        for f in self.files:
            label = known.get(os.path.realpath(f.path))
            if label is None:
                label = f.path.relative_to(common).with_suffix("").as_posix()
            labels.append(label)
        seen: dict[str, Any] = {}
        for f, label in zip(self.files, labels):
            if label in seen:
                raise pytest.UsageError(f"{seen[label].shown} and {f.shown} would both be module {label!r}; "
                                        "give their common directory to --tdrun instead")
            seen[label] = f
        return labels

    # ------------------------------------------------------------------ the run

    def record_of(self, item: Any) -> Any:
        name = self.full_names.get(item.nodeid)
        return None if name is None else self.records.get(name)

    def execute(self, session: pytest.Session, items: list[Any]) -> None:
        """Run the graph of ``items`` (and what they need) once; afterwards each item's
        record is in ``records``.

        Raises:
            pytest.UsageError: a cycle, an unknown or ambiguous dependency, a bad state.
        """
        from ..cli import check_initial_state
        from ..engine.collect import Collection, SuiteModule, build_state
        from ..engine.errors import GraphError, PoolError, UsageError
        from ..engine.pools import check_task_pools, module_pools
        from ..engine.scheduler import Scheduler, default_workers
        from ..engine.suite import SEP, assemble, marked_functions

        files = self.files  # each imported (a file that failed to is a collection error)
        labels = self._labels()
        multi = len(files) > 1
        modules = [SuiteModule(label, f.shown, f.module) for f, label in zip(files, labels)]
        label_of = {f.nodeid: label for f, label in zip(files, labels)}
        for item in items:
            prefix = label_of[item.parent.nodeid] + SEP if multi else ""
            self.full_names[item.nodeid] = prefix + item.name
        self.selected = [self.full_names[i.nodeid] for i in items]
        self.last_item = items[-1].nodeid
        try:
            found = [marked_functions(m.module, Path(m.path_str)) for m in modules]
            everything = assemble(modules, found)
            picked = set(self.selected)
            if picked >= set(everything.all_names):
                suite = everything
            else:  # the selection and everything upstream of it
                suite = assemble(modules, found, keyword=picked.__contains__, with_deps=True)
            collection = Collection(
                path=Path(modules[0].path_str), module=modules[0].module, specs=suite.specs,
                all_names=suite.all_names, modules=modules, module_of=suite.module_of,
                cases=suite.cases, unresolved=suite.unresolved,
                targets=self.settings.targets or [m.path_str for m in modules])
            collection.graph()
            pools = module_pools((m.path_str, m.module) for m in modules)  # the modules' POOLS
            check_task_pools(pools, [s.pools for s in suite.specs], [s.name for s in suite.specs])
            state, sources = build_state(collection.hook_modules, self.settings.state_file,
                                         self.settings.values)
            check_initial_state(state, sources, self.settings.state_file)
            self.needed = [s.name for s in suite.specs if s.name not in picked]
            self.workers = self.settings.workers or min(default_workers, len(suite.specs))
            try:
                scheduler = Scheduler(workers=self.workers, state=state, capture=True,
                                      clear_results_on_start="results" not in sources, pools=pools)
            except TypeError as exc:  # an engine-owned state key holding the wrong thing
                raise UsageError(str(exc)) from None
            collection.register_into(scheduler)
        except (UsageError, GraphError, PoolError) as exc:
            raise pytest.UsageError(f"tdrun: {exc}") from None
        self._announce(len(suite.specs))
        self._run(scheduler, collection)

    def _announce(self, total: int) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        extra = f" ({len(self.needed)} of them needed by the selection)" if self.needed else ""
        reporter.ensure_newline()
        reporter.write_line(f"tdrun: running {total} task{'s' if total != 1 else ''}{extra} "
                            f"on {self.workers} worker{'s' if self.workers != 1 else ''}")

    def _run(self, scheduler: Any, collection: Any) -> None:
        from ..engine.errors import UsageError, WorkerStartError
        from ..engine.events import EventKind
        from ..engine.model import TaskStatus

        maxfail = int(self.config.getoption("maxfail") or 0)
        failures = 0

        def on_finished(event: Any) -> None:
            # pytest's -x / --maxfail, applied while the run goes on: Ctrl-C's semantics
            nonlocal failures
            if event.record is not None and event.record.status is TaskStatus.FAILED:
                failures += 1
                if maxfail and failures >= maxfail and self.stopped_by is None:
                    self.stopped_by = "-x" if maxfail == 1 else f"--maxfail={maxfail}"
                    scheduler.cancel()

        scheduler.subscribe(on_finished, EventKind.TASK_FINISHED)
        run_info = {
            "module": collection.label, "target": " ".join(self.settings.targets) or " ".join(
                m.path_str for m in collection.modules),
            "argv": history_argv(self.config), "tags": None, "workers": scheduler.workers,
            "state": scheduler.state,
        }
        root = logging.getLogger()
        old_level = root.level
        if old_level > logging.INFO:  # a task's captured output holds its INFO records, as under tdrun
            root.setLevel(logging.INFO)  # (a lower level pytest's --log-level set is kept)
        # the engine's "interrupt again to stop waiting" is Ctrl-C's; after -x the summary says it
        quiet = _WhenStoppedByPytest(self)
        logging.getLogger("thread_order.interrupt").addFilter(quiet)
        attached: list[Any] = []
        try:
            # observers of the run, as tdrun's: attach(scheduler, run_info) before, finish() after
            for observer in self._observers():
                try:
                    observer.attach(scheduler, run_info)
                except UsageError as exc:  # e.g. the history file cannot be recorded into
                    hint = str(exc).replace("(--no-history runs", "(--tdrun-history off runs")
                    raise pytest.UsageError(f"tdrun: {hint}") from None
                attached.append(observer)
            try:
                summary = scheduler.start()
            except WorkerStartError as exc:  # near the process's thread limit: nothing ran
                raise pytest.UsageError(f"tdrun: {exc}") from None
        finally:
            root.setLevel(old_level)
            logging.getLogger("thread_order.interrupt").removeFilter(quiet)
            for observer in reversed(attached):
                observer.finish()
                # the export's warnings name tdrun's option; here it is --tdrun-otel
                self.notes.extend(note.replace("--otel:", "--tdrun-otel:", 1)
                                  for note in getattr(observer, "notes", ()))
        self.summary = summary
        self.records = {r.name: r for r in scheduler.last_records}
        self.view = TdrunState(scheduler.sanitized_state, self.records, summary)

    def _observers(self) -> list[Any]:
        """What watches the run besides the items: the history recorder, the OpenTelemetry
        export (``--tdrun-otel``), in tdrun's order."""
        from ..engine.errors import UsageError
        from ..history import history_observer

        observers: list[Any] = []
        try:
            recorder = history_observer(self.settings.history, self.settings.no_history, None)
            if recorder is not None:
                observers.append(recorder)
            if self.settings.otel:
                from ..trace import OtelObserver

                # tdrun's: the provider from the OTEL_* variables (or the one already set),
                # flushed when the run ends; an exporter that is not installed is refused here
                observers.append(OtelObserver())
        except UsageError as exc:
            raise pytest.UsageError(f"tdrun: {exc}") from None
        return observers

    @property
    def interrupted(self) -> bool:
        """True when Ctrl-C (not pytest's -x) stopped the run."""
        return bool(self.summary and self.summary["interrupted"] and self.stopped_by is None)

    @property
    def needed_failed(self) -> list[str]:
        return [n for n in self.needed if self.records.get(n) is not None
                and self.records[n].status.value == "FAILED"]


class _WhenStoppedByPytest(logging.Filter):
    """Drops the engine's Ctrl-C advice once pytest's -x / --maxfail stopped the run."""

    def __init__(self, run: SessionRun) -> None:
        super().__init__()
        self.run = run

    def filter(self, record: logging.LogRecord) -> bool:
        return self.run.stopped_by is None
