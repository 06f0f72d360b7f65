"""The web UI's model: the loaded module, the state being edited, and the one live run.

Nothing here knows about HTTP. The run executes on its own thread; the engine
feeds the shared run-view model (``thread_order.runview``, which tdrun's live
view draws too) on that thread, which only updates a few fields under a lock
and appends to a change log. Streams read the log from the server's event
loop, at most ``COALESCE`` apart, so a 10,000-task run costs the dispatcher a
dict update per event, not a network write.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..engine.collect import Collection, build_state, collect, split_target
from ..engine.errors import GraphError, PoolError, UsageError
from ..engine.graph import Graph
from ..engine.model import parse_tags
from ..engine.params import unbound
from ..engine.pools import check_task_pools
from ..engine.scheduler import Scheduler, default_workers
from ..runview import RunSnapshot, RunView
from .payload import check_key, parse_value_text
from .runopts import MAX_WORKERS, RunOptions, parse_run_options

__all__ = ["Workspace", "LiveRun", "RunManager", "RunBusyError", "parse_value_text", "task_rows"]

#: seconds between two batches sent to one stream
COALESCE = 0.1
#: live runs kept for reconnecting pages (the history keeps everything)
KEEP_RUNS = 5

class RunBusyError(UsageError):
    """A run is already in progress on this server."""


def _jsonable(value: Any) -> tuple[Any, str]:
    """``(value, text)`` for display: JSON values as they are, others by type name only
    (as the history stores them: a repr may carry a secret)."""
    try:
        return value, json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        name = type(value).__name__
        return {"__not_json__": name}, f"<{name}>"


def _first_line(fn: Callable) -> str:
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def _case(values: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if values is None else {k: _jsonable(v)[0] for k, v in values.items()}


def task_rows(collection: Collection) -> list[dict[str, Any]]:
    """One JSON-ready row per task, in source order."""
    return [
        {
            "index": i, "name": s.name, "after": list(s.after), "tags": list(s.tags),
            "always": s.always, "retries": s.retries, "timeout": s.timeout,
            "with_state": s.with_state, "doc": _first_line(unbound(s.fn)),
            "module": collection.module_of.get(s.name), "case": _case(collection.cases.get(s.name)),
            "is_async": s.is_async, "pools": list(s.pools),
        }
        for i, s in enumerate(collection.specs, 1)
    ]


# --------------------------------------------------------------------------- workspace


class Workspace:
    """The module a person loaded and the initial state they are editing."""

    def __init__(self) -> None:
        # guards every attribute below; user code (imports) runs outside it
        self._lock = threading.Lock()
        self.target: str | None = None
        self.collection: Collection | None = None
        self.graph: Graph | None = None
        self.graph_error: str | None = None
        self.mtime: float | None = None
        self.typed: dict[str, Any] = {}
        self.file_values: dict[str, Any] = {}
        self.file_name: str | None = None
        self.recent: list[str] = []

    def load(self, target: str) -> dict[str, Any]:
        """Import ``target`` (``path.py`` or ``path.py::task``) and collect its tasks.

        Runs the module's code. Raises UsageError (or ModuleLoadError) for a
        missing file, an import error or a module without tasks; a graph
        error is kept and reported with the tasks.
        """
        if not isinstance(target, str) or not target.strip():
            raise UsageError("module path is empty")
        target = target.strip()
        path_str, _ = split_target(target)
        collection = collect(target)
        if not collection.specs:
            raise UsageError(f"{path_str}: no tasks found (mark functions with @mark)")
        try:
            graph: Graph | None = collection.graph()
            graph_error = None
        except GraphError as exc:
            graph, graph_error = None, str(exc)
        with self._lock:
            self.target = target
            self.collection = collection
            self.graph = graph
            self.graph_error = graph_error
            self.mtime = _mtimes(collection)
            resolved = str(Path(path_str).resolve())
            self.recent = [target] + [r for r in self.recent
                                      if str(Path(split_target(r)[0]).resolve()) != resolved][:9]
        return self.describe()

    def loaded(self) -> tuple[str | None, Collection | None, Graph | None, str | None]:
        """``(target, collection, graph, graph_error)`` of the module loaded last."""
        with self._lock:
            return self.target, self.collection, self.graph, self.graph_error

    def recent_targets(self) -> list[str]:
        with self._lock:
            return list(self.recent)

    def reload_if_changed(self) -> None:
        """Re-import the module when its file changed since it was loaded (before a run)."""
        with self._lock:
            target, collection, mtime = self.target, self.collection, self.mtime
        if target is not None and collection is not None and _mtimes(collection) != mtime:
            self.load(target)

    def describe(self) -> dict[str, Any]:
        """The loaded module as the page shows it, or ``{"module": None}``."""
        with self._lock:
            collection, target = self.collection, self.target
            graph, graph_error = self.graph, self.graph_error
        if collection is None:
            return {"module": None}
        return {
            "module": collection.label if collection.suite else str(collection.path),
            "target": target,
            "modules": [{"name": m.label, "path": m.path_str} for m in collection.modules],
            "tasks": task_rows(collection),
            "edges": len(graph.edges) if graph is not None else None,
            "levels": len(graph.levels) if graph is not None else None,
            "graph_error": graph_error,
            "has_setup_state": any(callable(getattr(m, "setup_state", None))
                                   for m in collection.hook_modules),
            "tags": sorted({t for s in collection.specs for t in s.tags}),
            # what tdrun would use for this module: one thread per task, up to the default
            "default_workers": max(1, min(default_workers, len(collection.specs))),
        }

    # ------------------------------------------------------------------ state

    def set_values(self, values: Any) -> None:
        """Replace the typed-in values; every value is parsed and checked first."""
        if not isinstance(values, dict):
            raise UsageError("'values' must be an object of key -> value")
        parsed = {check_key(k): parse_value_text(k, v) for k, v in values.items()}
        with self._lock:
            self.typed = parsed

    def set_state_file(self, name: str | None, values: dict[str, Any] | None) -> None:
        """Use ``values`` (already read from a JSON file called ``name``); None clears it."""
        if values is not None:
            for key in values:  # the values were judged as the state file was read
                check_key(key)
        with self._lock:
            self.file_name = name
            self.file_values = dict(values or {})

    def state_view(self) -> dict[str, Any]:
        """Every value that will seed the next run, and where it came from."""
        with self._lock:
            typed, file_values, file_name = dict(self.typed), dict(self.file_values), self.file_name
        entries = []
        for key, value in {**file_values, **typed}.items():
            shown, text = _jsonable(value)
            entries.append({"key": key, "value": shown, "text": text,
                            "source": "typed in" if key in typed else "state file"})
        return {"entries": entries, "file": file_name}

    def state_argv(self) -> list[str]:
        """The state of the next run as tdrun options, for the history's command line."""
        with self._lock:
            typed, file_name = dict(self.typed), self.file_name
        argv = [f"--state-file={file_name}"] if file_name else []
        return argv + [f"--{key}={value if isinstance(value, str) else _jsonable(value)[1]}"
                       for key, value in typed.items()]

    def build_run_state(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The initial state of a run: state file, typed values, then ``setup_state``."""
        with self._lock:
            typed, file_values = dict(self.typed), dict(self.file_values)
            module = self.collection.hook_modules if self.collection is not None else None
        state, sources = build_state(module, None, {**file_values, **typed})
        for key in file_values:
            if key not in typed and sources.get(key) == "typed in":
                sources[key] = "state file"
        return state, sources


def _mtimes(collection: Collection) -> tuple[float | None, ...]:
    """When each module of ``collection`` last changed (a suite reloads when any did)."""
    return tuple(_mtime(Path(m.path_str)) for m in collection.modules)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


# --------------------------------------------------------------------------- live run


@dataclass(eq=False)
class _Waiter:
    """One stream's doorbell: ``pending`` is set when it has been rung and not yet read."""

    ring: Callable[[], None]
    pending: bool = False
    cursor: int = 0


#: the web UI's phase names for the shared model's (the page keys its buttons on them)
_WEB_PHASE = {"starting": "starting", "running": "running", "interrupting": "cancelling",
              "forced": "cancelling"}


class LiveRun:
    """The live picture of one run for the page: the shared :class:`RunView` and its streams.

    The counts, lanes, latest completions and failures are the run-view
    model's, as tdrun's live view draws them; this class adds what only the
    page needs: the run's identity, its outcome once recorded, and the
    streams' doorbells (rung from the dispatcher thread, read on the event loop).
    """

    def __init__(self, live_id: str, target: str, module: str, tasks: list[dict[str, Any]],
                 options: RunOptions) -> None:
        self.id = live_id
        self.target = target
        self.module = module
        self.tasks = tasks
        self.total = len(tasks)
        self.options = options
        self.lanes_count = min(options.workers, max(self.total, 1))
        self.view = RunView(self.total, self.lanes_count, target, journal=True, on_change=self._ring)
        # guards the fields below and _waiters; held only for assignments, never while calling out
        self._lock = threading.Lock()
        self._outcome: str | None = None  # None while the run goes on, then "finished" or "error"
        self.finished_at: float | None = None
        self._waiters: tuple[_Waiter, ...] = ()
        self.closed = False  # the server is stopping: streams end
        self.summary: dict[str, Any] | None = None
        self.history_id: int | None = None
        self.history_error: str | None = None
        self.error: str | None = None
        self.state_entries: list[dict[str, Any]] = []

    # ------------------------------------------------------------ engine side (dispatcher thread)

    def _ring(self) -> None:
        if self._waiters:  # most runs have no page watching: no lock then
            with self._lock:
                ring = self._due_waiters()
            for waiter in ring:
                waiter.ring()

    def _due_waiters(self) -> list[_Waiter]:
        """Waiters to ring now (each at most once per read); call with the lock held."""
        due = []
        for waiter in self._waiters:
            if not waiter.pending:
                waiter.pending = True
                due.append(waiter)
        return due

    def finish(self, summary: dict[str, Any] | None, history_id: int | None,
               error: str | None = None, history_error: str | None = None) -> None:
        """The run is over (or never started: ``error``); streams send their last batch."""
        with self._lock:
            self._outcome = "error" if error else "finished"
            self.error = error
            self.history_id = history_id
            self.history_error = history_error
            self.finished_at = time.time()
            if summary is not None:
                self.summary = {k: summary[k] for k in (
                    "text", "duration", "interrupted", "started_at", "finished_at", "failure_counts")}
                self.summary["counts"] = {s: len(summary[s]) for s in (
                    "passed", "failed", "skipped", "cancelled")}
                self.summary["teardown_not_run"] = list(summary.get("teardown_not_run", []))
                findings = summary.get("state_findings")
                self.summary["state_findings"] = None if findings is None else list(findings)
                self.summary["order"] = summary.get("order")  # the seed of a shuffled run
            ring = self._due_waiters()
        for waiter in ring:
            waiter.ring()

    @property
    def phase(self) -> str:
        """starting, running, cancelling, finished or error (the page's names)."""
        if self._outcome is not None:
            return self._outcome
        if self.view.phase == "finished":  # the engine is done; the history is still being written
            return "cancelling" if self.view.stopped else "running"
        return _WEB_PHASE[self.view.phase]

    @property
    def done(self) -> bool:
        return self._outcome is not None

    # ------------------------------------------------------------ stream side (event loop)

    def add_waiter(self, ring: Callable[[], None]) -> tuple[_Waiter, dict[str, Any]]:
        """Register a stream; returns its waiter and the snapshot it starts from."""
        waiter = _Waiter(ring)
        with self._lock:
            # registered before the snapshot is taken: no event between the two goes unrung
            self._waiters = self._waiters + (waiter,)
        outcome = self._outcome_dict()
        snap, statuses, waiter.cursor = self.view.snapshot_with_cursor()
        return waiter, self._snapshot_dict(outcome, snap, statuses, with_tasks=True)

    def remove_waiter(self, waiter: _Waiter) -> None:
        with self._lock:
            self._waiters = tuple(w for w in self._waiters if w is not waiter)

    def close_streams(self) -> None:
        """The server is stopping: every stream ends after its next read."""
        with self._lock:
            self.closed = True
            for waiter in self._waiters:
                waiter.pending = True
            ring = list(self._waiters)
        for waiter in ring:
            waiter.ring()

    def read(self, waiter: _Waiter) -> dict[str, Any]:
        """What changed since this waiter's last read (see ``RunView.read_since``)."""
        with self._lock:
            waiter.pending = False  # before reading: an event from now on rings again
        # the outcome first: once it says finished, the view it is read with is complete
        outcome = self._outcome_dict()
        batch, waiter.cursor = self.view.read_since(waiter.cursor)
        batch.update(outcome)
        return batch

    def snapshot(self, with_tasks: bool = False) -> dict[str, Any]:
        outcome = self._outcome_dict()
        return self._snapshot_dict(outcome, *self.view.snapshot_with_cursor()[:2], with_tasks)

    def _outcome_dict(self) -> dict[str, Any]:
        with self._lock:
            return {"id": self.id, "phase": self.phase, "summary": self.summary,
                    "history_id": self.history_id, "history_error": self.history_error,
                    "error": self.error, "finished_at": self.finished_at}

    def _snapshot_dict(self, outcome: dict[str, Any], snap: RunSnapshot, statuses: dict[str, str],
                       with_tasks: bool) -> dict[str, Any]:
        out = snap.to_dict()
        out.update(outcome, target=self.target, module=self.module, workers=self.options.workers,
                   lanes_count=self.lanes_count, tags=list(self.options.tags),
                   skip_dependents=self.options.skip_dependents, statuses=statuses,
                   state=self.state_entries, **self.options.order_fields())
        if with_tasks:
            out["tasks"] = self.tasks
        return out


# --------------------------------------------------------------------------- runs


class RunManager:
    """Starts runs (one at a time), cancels them, and keeps the last few for streams.

    ``recorder_factory(scheduler, run_info)`` attaches a history recorder and
    returns an object with ``finish() -> int``, or None when history is off.
    """

    def __init__(self, recorder_factory: Callable[[Scheduler, dict], Any] | None = None) -> None:
        self.recorder_factory = recorder_factory
        # guards _busy, _scheduler, _current and runs
        self._lock = threading.Lock()
        self._busy = False
        self._scheduler: Scheduler | None = None
        self._current: LiveRun | None = None
        self._thread: threading.Thread | None = None
        self.runs: dict[str, LiveRun] = {}

    @property
    def current(self) -> LiveRun | None:
        with self._lock:
            return self._current

    def get(self, live_id: str) -> LiveRun | None:
        with self._lock:
            if live_id == "current":
                return self._current
            return self.runs.get(live_id)

    def busy_message(self) -> str:
        with self._lock:
            current = self._current
        if current is None:
            return "a run is being prepared; wait for it to start"
        return (f"a run is already in progress (run {current.id}, "
                f"{current.snapshot()['finished']}/{current.total} tasks done); cancel it or wait")

    def start(self, workspace: Workspace, params: dict[str, Any]) -> LiveRun:
        """Prepare and start a run on its own thread; returns once it is under way.

        Calls user code (the module's ``setup_state``), so call it off the
        event loop. Raises RunBusyError when a run is in progress, UsageError
        for bad parameters, no module, no matching task or a bad graph.
        """
        with self._lock:
            if self._busy:
                busy = True
            else:
                busy = False
                self._busy = True
        if busy:
            raise RunBusyError(self.busy_message())
        try:
            live, scheduler, recorder = self._prepare(workspace, params)
        except BaseException:
            with self._lock:
                self._busy = False
            raise
        thread = threading.Thread(target=self._execute, args=(live, scheduler, recorder),
                                  name="tdrun-ui-run", daemon=True)
        with self._lock:
            self._current = live
            self._scheduler = scheduler
            self._thread = thread
            self.runs[live.id] = live
            for old in list(self.runs)[:-KEEP_RUNS]:
                del self.runs[old]
        thread.start()
        return live

    def _prepare(self, workspace: Workspace, params: dict[str, Any]):
        options = parse_run_options(params)
        workspace.reload_if_changed()
        target, base, _, _ = workspace.loaded()
        if base is None or target is None:
            raise UsageError("no module loaded; load a module first")
        collection = collect(target, tags=list(options.tags) or None, reuse=base)
        if not collection.specs:
            raise UsageError(f"no task has the tags {','.join(options.tags)!r}")
        state, sources = workspace.build_run_state()
        scheduler = Scheduler(workers=options.workers, state=state,
                              skip_dependents=options.skip_dependents, capture=True,
                              check_state=options.check_state, pools=collection.pools,
                              **options.scheduler_order())
        try:
            collection.graph()
            check_task_pools(collection.pools, [s.pools for s in collection.specs], collection.names)
        except (GraphError, PoolError) as exc:
            raise UsageError(f"{collection.path if not collection.suite else collection.label}: {exc}") from exc
        collection.register_into(scheduler)
        live = LiveRun(uuid.uuid4().hex[:12], target,
                       collection.label if collection.suite else str(collection.path),
                       task_rows(collection), options)
        # shown as the history keeps it: secrets redacted, no reprs
        from ..history import snapshot_state

        live.state_entries = [
            {"key": key, "value": value, "text": _jsonable(value)[1], "source": sources.get(key, "")}
            for key, value in snapshot_state(state).items()
        ]
        live.view.subscribe(scheduler)
        recorder = None
        if self.recorder_factory is not None:
            run_info = {
                "module": str(split_target(target)[0]), "target": target,
                "argv": ["tdrun", "ui", target, f"--workers={options.workers}"]
                + ([f"--tags={','.join(options.tags)}"] if options.tags else [])
                + ([] if options.skip_dependents else ["--no-skip-deps"])
                + (["--check-state"] if options.check_state else []) + options.order_argv()
                + workspace.state_argv(),
                "tags": list(options.tags), "workers": options.workers, "state": state,
            }
            recorder = self.recorder_factory(scheduler, run_info)
            live.history_id = getattr(recorder, "run_id", None)
        return live, scheduler, recorder

    def _execute(self, live: LiveRun, scheduler: Scheduler, recorder: Any) -> None:
        summary = error = history_error = None
        history_id = None
        # as under tdrun, a task's captured output holds its INFO records (one run at a time)
        root = logging.getLogger()
        old_level = root.level
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)
        try:
            summary = scheduler.start()
        except Exception as exc:  # a bug in the engine: show it rather than hang the page
            error = f"the run failed: {type(exc).__name__}: {exc}"
        finally:
            root.setLevel(old_level)
            if recorder is not None:
                try:
                    history_id = recorder.finish()
                except Exception as exc:
                    history_error = f"could not record the run: {exc}"
                if history_id is None:
                    history_id = getattr(recorder, "run_id", None) if summary is not None else None
            with self._lock:
                self._busy = False
                self._scheduler = None
            live.finish(summary, history_id, error, history_error)

    def cancel(self, live_id: str, force: bool = False) -> bool:
        """Ask the run ``live_id`` to stop as Ctrl-C does; False when it is not running."""
        with self._lock:
            live, scheduler = self._current, self._scheduler
        if live is None or scheduler is None or live_id not in (live.id, "current"):
            return False
        return scheduler.cancel(force=force)

    def shutdown(self, timeout: float) -> bool:
        """Cancel the run in progress and wait up to ``timeout`` for its teardown; True if it ended."""
        with self._lock:
            scheduler, thread = self._scheduler, self._thread
            runs = list(self.runs.values())
        if scheduler is not None:
            scheduler.cancel()
        ended = True
        if thread is not None:
            thread.join(timeout)
            ended = not thread.is_alive()
        for live in runs:
            live.close_streams()
        return ended

    def join(self, timeout: float) -> bool:
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True
