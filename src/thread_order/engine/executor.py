"""Where a run's tasks execute: the seam between the dispatcher and an executor other than threads.

By default a run executes its tasks on its own worker lanes (lanes.py). An
``Executor`` takes their place below the point where the dispatcher has
decided to launch an attempt: the DAG, fates, retries, timeouts, interrupts
and every event stay the dispatcher's; the executor only runs the ``Job`` it
is handed, and reports back through the run's inbox with the messages a lane
sends (``MSG_RUNNING``, ``MSG_DONE``, ``MSG_DROPPED``).

``RemoteExecutor`` is the part of that contract every executor running tasks
in other processes shares: a fixed number of slots with a backlog (a job
waiting for a slot is dropped if the run is stopped meanwhile, as a queued
job is by a lane), the state sent as a copy and the changes a task made
merged back in finish order, and the keys two unordered tasks both changed
(the state checker's write-conflict findings, ``summary["state_findings"]``). A subclass
connects, sends and cancels.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import threading
from importlib.metadata import entry_points
from typing import Any, Callable, Sequence

from .errors import ExecutorError
from .events import EventKind
from .lanes import MSG_DONE, MSG_DROPPED, MSG_RUNNING, Job
from .remote import ENGINE_KEYS, RemoteCall, RemoteOutcome
from .statefind import change_findings

__all__ = ["Executor", "RemoteExecutor", "RemoteLane", "executor_from_spec", "ENTRY_POINT_GROUP"]

log = logging.getLogger("thread_order")

#: the entry-point group naming executor factories: ``name = "module:factory"``,
#: called as ``factory(spec, **options)`` for a spec ``name`` or ``name://...``
ENTRY_POINT_GROUP = "thread_order.executors"


def executor_from_spec(spec: Any, **options: Any) -> "Executor | None":
    """The executor ``spec`` names: None for ``"local"`` (the run's own threads), else a new one.

    ``spec`` may be an ``Executor`` already, ``"local"``, or a name registered
    in the ``thread_order.executors`` entry-point group (``"dask"``), alone or
    as ``name://address``.

    Raises:
        ExecutorError: an unknown name, or an executor that cannot be made (its extra missing).
    """
    if spec is None or spec == "local":
        if options:
            given = ", ".join(sorted(options))
            raise ExecutorError(f"executor 'local' takes no options (got {given})")
        return None
    if isinstance(spec, Executor):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"executor must be 'local', a name such as 'dask', or an Executor, not {spec!r}")
    name = spec.partition("://")[0]
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = sorted({"local", *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
        raise ExecutorError(f"unknown executor {spec!r}: expected one of {', '.join(known)} "
                            f"(or NAME://ADDRESS)")
    try:
        factory = found[0].load()
    except ImportError as exc:
        raise ExecutorError(f"executor {spec!r} cannot be loaded: {exc}") from None
    return factory(spec, **options)


class Executor:
    """Runs the attempts a run hands it, and reports each back through the run's inbox.

    Called by the dispatcher thread, in this order: ``open`` once before
    anything is announced (it may raise: the run then has not started),
    ``submit`` per attempt, ``timed_out`` for an attempt past its timeout,
    and ``close`` once when the run is over, however it ended. ``annotate``
    may add keys to the summary.
    """

    #: what the executor is called in messages (``"dask"``, ``"dask://10.0.0.5:8786"``)
    name = "executor"

    def open(self, run: Any) -> Sequence[str]:
        """Get ready for ``run`` (a ``dispatch.Run``); returns the names of its lanes.

        As many attempts as lanes are in flight at once.
        """
        raise NotImplementedError

    def submit(self, job: Job) -> None:
        """Run ``job`` (one attempt), now or when a lane is free."""
        raise NotImplementedError

    def timed_out(self, job: Job) -> str | None:
        """``job`` outlived its timeout: forget it (its outcome is discarded); returns its lane."""
        raise NotImplementedError

    def stop(self) -> None:
        """The run was interrupted: attempts queued and not begun must not begin (``always`` ones may)."""

    def close(self, forced: bool) -> None:
        """The run is over: cancel what is still in flight and let go of what ``open`` took."""

    def annotate(self, summary: dict) -> None:
        """Add what this executor knows to the run's summary."""


class RemoteLane:
    """Where a remote attempt runs: named once the worker says it began (a ``Job.lane``)."""

    __slots__ = ("name", "thread", "abandoned", "slot")

    def __init__(self, name: str) -> None:
        self.name = name
        self.thread = None
        self.abandoned = False
        self.slot = -1


class RemoteExecutor(Executor):
    """Runs attempts in other processes, sending each a copy of the state.

    A subclass provides ``dumps``/``loads`` (a pickler that can send the
    tasks' functions), ``_connect(workers)`` returning the lane names,
    ``_send(job, key, call)``, ``_cancel(job)``, ``_disconnect(forced)`` and ``stop()``
    (tell the workers that nothing of the run but ``always`` tasks may begin), and reports
    with ``began``, ``completed``, ``dropped`` and ``lost``, from any thread.
    """

    dumps: Callable[[Any], bytes] = staticmethod(pickle.dumps)
    loads: Callable[[bytes], Any] = staticmethod(pickle.loads)

    def __init__(self) -> None:
        # guards _free, _backlog, _inflight, _begun: the dispatcher submits and times out,
        # the subclass's threads report beginnings and outcomes
        self._lock = threading.Lock()
        self.run: Any = None
        self.lanes: tuple[str, ...] = ()

    # ------------------------------------------------------------------ the seam

    def open(self, run: Any) -> Sequence[str]:
        self.run = run
        self._free = 0
        self._backlog: collections.deque[Job] = collections.deque()
        self._inflight: dict[Job, str] = {}  # job -> key of its submission
        self._begun: set[str] = set()  # keys a worker said it began
        self._fn_bytes: list[bytes | None] = [None] * run.n
        # guarded by the run's state lock, as the state they mirror: key -> pickled value
        self._state_bytes: dict[str, bytes] = {}
        self._result_bytes: dict[str, bytes] = {}
        self._writers: dict[str, list[int]] = {}  # state key -> tasks that changed it, in merge order
        self._given: list[str] | None = None
        self._pid = os.getpid()
        self._pickle_everything(run)
        lanes = tuple(self._connect(run.s.workers))
        if not lanes:
            self._disconnect(True)
            raise ExecutorError(f"executor {self.name}: the cluster has no worker threads")
        self.lanes = lanes
        # one attempt queued ahead per lane, as the dispatcher queues ahead for worker threads:
        # the cluster starts it the moment a thread is free, without a round trip to the client
        self._free = 2 * len(lanes)
        self._wants_running = bool(run.events._subs[EventKind.TASK_RUNNING])
        return lanes

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._free:
                self._free -= 1
                go = True
            else:
                self._backlog.append(job)
                go = False
        if go and not self._start(job):
            self._release()

    def timed_out(self, job: Job) -> str | None:
        with self._lock:
            key = self._inflight.pop(job, None)
            began = key in self._begun
            self._begun.discard(key)
        if key is not None:  # else its outcome is being settled: that frees its slot
            self._cancel(job)
            self._release()
        # a submission no worker began is cancelled before it starts: it ran nowhere
        return job.lane.name if began and job.lane is not None else None

    def close(self, forced: bool) -> None:
        with self._lock:
            left = list(self._inflight)
            self._inflight.clear()
            self._backlog.clear()
        for job in left:
            self._cancel(job)
        self._disconnect(forced)

    def annotate(self, summary: dict) -> None:
        summary["executor"] = self.name
        summary["workers"] = len(self.lanes)  # the cluster's threads, whatever workers= said
        # findings of the state checker's kind, so every front-end shows them and the run exits 1;
        # none means none seen, not "checked": what the tasks read is not known here
        findings = self.write_conflicts()
        if findings:
            summary["state_findings"] = [*(summary.get("state_findings") or ()), *findings]

    # ------------------------------------------------------------------ for subclasses

    def _connect(self, workers: int) -> Sequence[str]:
        raise NotImplementedError

    def _send(self, job: Job, key: str, call: RemoteCall) -> None:
        raise NotImplementedError

    def _cancel(self, job: Job) -> None:
        raise NotImplementedError

    def _disconnect(self, forced: bool) -> None:
        raise NotImplementedError

    def began(self, key: str, job: Job, lane: str) -> None:
        """A worker began the submission ``key`` of ``job`` on ``lane``.

        A second beginning of the same submission means the cluster ran it
        again after losing the worker that had it: that attempt fails.
        """
        with self._lock:
            if self._inflight.get(job) != key:
                return  # over already (finished, timed out, lost)
            again = key in self._begun
            self._begun.add(key)
            if not again:
                if job.lane is not None:
                    job.lane.name = lane
                if self._wants_running:  # under the lock: never after the job's MSG_DONE
                    self.run.inbox.put((MSG_RUNNING, job, lane))
        if again:
            self.lost(job, f"the worker running task {self.run.names[job.idx]!r} was lost and the "
                           f"cluster started it again on {lane}; this attempt fails rather than run twice")

    def completed(self, job: Job, outcome: RemoteOutcome, lane: str) -> None:
        """``job`` came back: merge its state changes, then tell the dispatcher."""
        run = self.run
        began = self._settle(job)
        if began is None:
            return
        idx = job.idx
        value = None
        ok, error = outcome.ok, outcome.error
        if outcome.changed or outcome.deleted:
            self._merge(idx, outcome.changed, outcome.deleted)
        if ok:
            try:
                value = self.loads(outcome.value)
            except Exception as exc:  # noqa: BLE001 - a class the client cannot import
                ok, error = False, ("TypeError", f"task {run.names[idx]!r}: its result cannot be loaded "
                                                 f"here: {type(exc).__name__}: {exc}", None)
            else:
                if run.results is not None:  # sent as is to the tasks that depend on this one
                    with run.state_lock:
                        self._result_bytes[run.names[idx]] = outcome.value
        if job.lane is not None:
            job.lane.name = lane
        if not began and self._wants_running:
            # the worker's notice that it began travels apart from the outcome and may come
            # second (then it is ignored): a task is announced running before it finishes
            run.inbox.put((MSG_RUNNING, job, lane))
        run.inbox.put((MSG_DONE, job, ok, value, error, outcome.started, outcome.duration,
                       outcome.output, lane, None))
        self._release()  # only now: whatever is sent next sees this task's changes

    def dropped(self, job: Job) -> None:
        """``job`` reached a worker after the run was stopped, which did not begin it."""
        if self._settle(job) is not None:
            self.run.inbox.put((MSG_DROPPED, job))
            self._release()

    def lost(self, job: Job, message: str) -> None:
        """``job`` will not come back (its worker died): its attempt fails."""
        if self._settle(job) is None:
            return
        self._cancel(job)
        lane = job.lane.name if job.lane is not None else None
        self.run.inbox.put((MSG_DONE, job, False, None, ("WorkerLostError", message, None),
                            None, 0.0, "", lane, None))
        self._release()

    # ------------------------------------------------------------------ internals

    def _settle(self, job: Job) -> bool | None:
        """Claim ``job``'s outcome against a timeout. None: already over (its slot is freed);
        else the caller reports it, then frees the slot, and this says whether a worker's
        beginning of it was announced."""
        with self._lock:
            key = self._inflight.pop(job, None)
            if key is None:
                return None  # settled already: a timeout, or an earlier report
            began = key in self._begun
            self._begun.discard(key)
        run = self.run
        with run.handshake:
            abandoned = job.abandoned
            if not abandoned:
                job.done = True
        if abandoned:
            self._release()
            return None
        return began

    def _release(self) -> None:
        """A slot is free: the next job in the backlog takes it."""
        while True:
            with self._lock:
                if not self._backlog:
                    self._free += 1
                    return
                job = self._backlog.popleft()
            if self._start(job):
                return

    def _start(self, job: Job) -> bool:
        """Send ``job`` unless the run no longer wants it; False if it was not sent."""
        run = self.run
        idx = job.idx
        with run.handshake:
            if job.abandoned:  # timed out while waiting for a slot
                return False
            drop = run.forced or (run.stop_requested and not run.options[idx].always)
            if drop:
                job.done = True
            else:
                job.lane = RemoteLane(self.name)
                job.started = True
        if drop:
            run.inbox.put((MSG_DROPPED, job))
            return False
        name = run.names[idx]
        key = f"{name}-{job.attempt}-{run.run_id}"
        try:
            call = self._call(idx)
        except ExecutorError as exc:  # a value set during the run cannot be sent
            with self._lock:
                self._inflight[job] = key
            self.lost(job, str(exc))
            return True
        with self._lock:
            self._inflight[job] = key
        try:
            self._send(job, key, call)
        except Exception as exc:  # noqa: BLE001 - the cluster went away
            self.lost(job, f"cannot send task {name!r} to {self.name}: {type(exc).__name__}: {exc}")
        return True

    def _call(self, idx: int) -> RemoteCall:
        run = self.run
        opts = run.options[idx]
        state = results = None
        if opts.with_state:
            with run.state_lock:
                state = dict(self._state_bytes)
                if run.results is not None:
                    results = self._upstream_results(idx)
        return RemoteCall(run.names[idx], self._fn_bytes[idx], opts.with_state, state or {},
                          results, run.s.capture, logging.getLogger().getEffectiveLevel(), self._pid,
                          run.run_id, opts.always)

    def _upstream_results(self, idx: int) -> dict:
        """The pickled results of every task ``idx`` depends on, and those given before the run."""
        run = self.run
        index = run.index
        results = run.results
        blobs = self._result_bytes
        if self._given is None:  # results given before the run (mocked): sent to every task
            self._given = [key for key in results if key not in index]
        out = {}
        for key in self._given:
            if key in results:
                if key not in blobs:
                    blobs[key] = self._dumps_or_raise(results[key], f"state['results'][{key!r}]")
                out[key] = blobs[key]
        pstart, pflat = run.graph._pstart, run.graph._pflat
        seen = set()
        todo = list(pflat[pstart[idx]:pstart[idx + 1]])
        names = run.names
        while todo:
            i = todo.pop()
            if i in seen:
                continue
            seen.add(i)
            todo.extend(pflat[pstart[i]:pstart[i + 1]])
            name = names[i]
            if name in results:
                blob = blobs.get(name)
                if blob is None:
                    blob = blobs[name] = self._dumps_or_raise(results[name], f"state['results'][{name!r}]")
                out[name] = blob
        return out

    def _dumps_or_raise(self, value: Any, where: str) -> bytes:
        try:
            return self.dumps(value)
        except Exception as exc:  # noqa: BLE001
            raise ExecutorError(f"{where} cannot be sent to {self.name} ({type(value).__name__}): "
                                f"{exc}") from None

    def _pickle_everything(self, run: Any) -> None:
        """Pickle every task and state value once, or name everything that cannot be sent.

        Raises:
            ExecutorError: one error listing each task and state key that does not pickle.
        """
        problems = []
        names = run.names
        for idx in range(run.n):
            fn = run.fns[idx]
            try:
                self._fn_bytes[idx] = self.dumps(fn)
            except Exception as exc:  # noqa: BLE001 - whatever the pickler raises
                problems.append(f"task {names[idx]!r} ({type(exc).__name__}: {exc})")
        with run.state_lock:
            items = list(run.state.items())
        for key, value in items:
            if key in ENGINE_KEYS:
                continue
            try:
                self._state_bytes[key] = self.dumps(value)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"state[{key!r}] ({type(value).__name__}: {exc})")
        if problems:
            raise ExecutorError(f"cannot run on {self.name}: these cannot be sent to its workers: "
                                + "; ".join(problems))

    def _merge(self, idx: int, changed: dict, deleted: tuple) -> None:
        """Apply one task's changes to the real state (in the order tasks finish)."""
        run = self.run
        state = run.state
        values = {}
        for key, blob in changed.items():
            try:
                values[key] = self.loads(blob)
            except Exception as exc:  # noqa: BLE001
                log.warning("task %r set state[%r] to a value that cannot be loaded here: %s",
                            run.names[idx], key, exc)
        with run.state_lock:
            for key, value in values.items():
                state[key] = value
                self._state_bytes[key] = changed[key]
            for key in deleted:
                state.pop(key, None)
                self._state_bytes.pop(key, None)
            for key in (*values, *deleted):
                self._writers.setdefault(key, []).append(idx)

    def write_conflicts(self) -> list[dict]:
        """The state checker's write-conflict findings for the keys two tasks changed that could run
        at the same time (neither depends on the other): the one to finish last won.

        The same records, with the same messages, as ``check_state=True`` makes on threads
        (statefind.py); a retried task counts once.
        """
        run = self.run
        if run is None:
            return []
        changed: dict[str, list[str]] = {}
        names = run.names
        with run.state_lock:
            writers = [(key, list(idxs)) for key, idxs in self._writers.items() if len(idxs) > 1]
        for key, idxs in writers:
            for i in dict.fromkeys(idxs):
                changed.setdefault(names[i], []).append(key)
        if not changed:
            return []
        return change_findings(run.graph, changed)
