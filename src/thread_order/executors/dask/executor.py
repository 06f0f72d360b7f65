"""The Dask executor: a run's ready tasks executed on a Dask cluster, embedded or running elsewhere.

Everything a run decides (order, fates, retries, timeouts, interrupts,
events) stays on the client; Dask runs the attempts it is sent, one
submission per run, task and attempt (``pure=False``, no Dask retries). An
embedded ``LocalCluster`` is started for the run and closed after it; it
fails a task at once when its worker dies (``allowed-failures`` 0). A
running scheduler may be told otherwise: a second beginning of the same
submission (Dask running it again after losing its worker) fails that attempt.
"""

from __future__ import annotations

import linecache
import logging
import math
import os
import queue
import re
import signal
import sys
import sysconfig
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Sequence

import cloudpickle
import dask
from distributed import Client, LocalCluster

from ...engine.errors import ExecutorError
from ...engine.executor import RemoteExecutor
from ...engine.lanes import Job
from ...engine.remote import RemoteCall
from .worker import TOPIC, lane_prefix, run_remote, stop_run

__all__ = ["DaskExecutor", "parse_address"]

_MISSING = object()
#: seconds the dispatcher waits for the workers to confirm a stop before it goes on without
STOP_NOTICE_WAIT = 5.0

log = logging.getLogger("thread_order")


def parse_address(spec: str) -> str:
    """``dask://HOST:PORT`` as the address Dask connects to (``tcp://HOST:PORT``).

    Raises:
        ExecutorError: not ``dask://HOST:PORT`` with a port number.
    """
    rest = spec.partition("://")[2]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise ExecutorError(f"executor {spec!r}: expected dask://HOST:PORT, such as dask://127.0.0.1:8786")
    return f"tcp://{host}:{port}"


_DYNAMIC_FRAME = re.compile(r'^  File "<dynamic-code>", line (\d+), in (\S+)$', re.M)


def _code_files(modules: Sequence[Any]) -> dict[str, str]:
    """Function name -> file, for the functions of modules sent by value (names in one file only)."""
    found: dict[str, set] = {}
    for module in modules:
        for value in list(vars(module).values()):
            members = [value] + (list(vars(value).values()) if isinstance(value, type) else [])
            for member in members:
                code = getattr(member, "__code__", None)
                if code is not None and getattr(member, "__module__", None) == module.__name__:
                    found.setdefault(code.co_name, set()).add(code.co_filename)
    return {name: next(iter(files)) for name, files in found.items() if len(files) == 1}


def _real_frames(tb: str, files: dict[str, str]) -> str:
    """A worker's traceback with the files and lines of code sent by value put back.

    Code pickled by value comes back as ``<dynamic-code>``; the client has the files.
    """
    def frame(match: re.Match) -> str:
        line, name = match.group(1), match.group(2)
        path = files.get(name)
        if path is None:
            return match.group(0)
        source = linecache.getline(path, int(line)).strip()
        return f'  File "{path}", line {line}, in {name}' + (f"\n    {source}" if source else "")

    return _DYNAMIC_FRAME.sub(frame, tb)


def _installed(path: str) -> bool:
    """Whether a module file comes with Python or an installed package (workers import those)."""
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(path.startswith(root + os.sep) for root in roots)


class DaskExecutor(RemoteExecutor):
    """Run tasks on Dask.

    Args:
        address: a running scheduler (``"tcp://HOST:PORT"``, or ``"dask://HOST:PORT"``);
            None starts a ``LocalCluster`` for each run and closes it after.
        processes: with no address, the number of worker processes; 0 runs one worker
            in this process (threads only).
        client: a ``distributed.Client`` to use instead (left open after the run).
        connect_timeout: seconds to reach the scheduler (default: Dask's
            ``distributed.comm.timeouts.connect``).
    """

    dumps = staticmethod(cloudpickle.dumps)
    loads = staticmethod(cloudpickle.loads)

    def __init__(self, address: str | None = None, *, processes: int = 0, client: Any = None,
                 connect_timeout: float | None = None) -> None:
        super().__init__()
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 0:
            raise ValueError(f"processes must be an integer >= 0, not {processes!r}")
        if address is not None and address.startswith("dask://"):
            address = parse_address(address)
        if processes and (address is not None or client is not None):
            raise ExecutorError("executor 'dask': worker processes are for the embedded cluster; "
                                "a running scheduler has the workers it has")
        self.address = address
        self.processes = processes
        self.connect_timeout = connect_timeout
        self._given_client = client
        if client is not None:
            self.name = f"dask://{lane_prefix(client.scheduler.address)}"
        elif address is not None:
            self.name = f"dask://{lane_prefix(address)}"
        else:
            self.name = "dask"
        self.client: Any = None
        self.cluster: Any = None
        # _futures and _jobs are guarded by the inherited _lock (the dispatcher sends and
        # cancels, Dask's callback thread and event loop report)
        self._futures: dict[Job, Any] = {}
        self._jobs: dict[str, Job] = {}  # submission key -> job, for the beginnings
        self._by_value: list[Any] = []
        self._files: dict[str, str] = {}  # function name -> file, for tracebacks
        # beginnings are handled off Dask's event loop: a lost attempt calls the client back
        self._relay: ThreadPoolExecutor | None = None
        self._finished: queue.SimpleQueue = queue.SimpleQueue()  # (job, key, future) that are over

    # ------------------------------------------------------------------ RemoteExecutor

    def open(self, run: Any) -> Sequence[str]:
        self._futures = {}
        self._jobs = {}
        self._relay = ThreadPoolExecutor(1, thread_name_prefix="thread-order-dask")
        self._finished = queue.SimpleQueue()
        self._gatherer = threading.Thread(target=self._gather, args=(self._finished,),
                                          name="thread-order-dask-gather", daemon=True)
        self._gatherer.start()
        self._send_modules_by_value(run.fns)
        try:
            return super().open(run)
        except BaseException:
            self._forget_modules()
            raise

    def _connect(self, workers: int) -> Sequence[str]:
        if self._given_client is not None:
            self.client = self._given_client
        elif self.address is None:
            self._start_cluster(workers)
        else:
            timeout = self.connect_timeout
            if timeout is None:
                timeout = dask.config.get("distributed.comm.timeouts.connect")
            try:
                self.client = Client(self.address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ExecutorError(f"executor {self.name}: cannot reach the dask scheduler at "
                                    f"{self.address}: {exc}") from None
        try:
            nthreads = self.client.nthreads()
            if not nthreads:
                self.client.wait_for_workers(1, timeout=self.connect_timeout or 10)
                nthreads = self.client.nthreads()
        except (OSError, TimeoutError) as exc:
            self._disconnect(True)
            raise ExecutorError(f"executor {self.name}: the dask scheduler has no workers ({exc})") from None
        self.client.subscribe_topic(TOPIC, self._on_began)
        return [f"{lane_prefix(address)}/thread_{k}"
                for address, n in sorted(nthreads.items()) for k in range(n)]

    def _start_cluster(self, workers: int) -> None:
        processes = self.processes
        options = dict(
            dashboard_address=None, silence_logs=logging.ERROR,
            # no dashboard; the scheduler's own HTTP routes (health, metrics) on a free loopback
            # port, not on 8787, which a dashboard of the user's may hold
            scheduler_kwargs={"allowed_failures": 0, "dashboard": False, "dashboard_address": "127.0.0.1:0"},
        )
        if processes:  # in-process workers talk in memory; processes over TCP, on loopback only
            options.update(host="127.0.0.1", n_workers=processes, processes=True,
                           threads_per_worker=max(1, math.ceil(workers / processes)))
        else:
            options.update(n_workers=1, processes=False, threads_per_worker=workers)
        # worker processes must not take the terminal's Ctrl-C (sent to the whole process
        # group): the run handles it; an ignored SIGINT is inherited by the processes started
        restore = None
        if processes and threading.current_thread() is threading.main_thread():
            restore = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            # every task sent goes to a worker at once: the one queued ahead per thread waits
            # there, not at the scheduler (worker-saturation), so it starts without a round trip
            with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                  "distributed.scheduler.worker-saturation": float("inf")}):
                self.cluster = LocalCluster(**options)
            self.client = Client(self.cluster, set_as_default=False)
        except Exception as exc:  # noqa: BLE001 - whatever keeps a cluster from starting
            self._disconnect(True)
            raise ExecutorError(f"executor dask: cannot start a local dask cluster: "
                                f"{type(exc).__name__}: {exc}") from None
        finally:
            if restore is not None:
                signal.signal(signal.SIGINT, restore)

    def _send(self, job: Job, key: str, call: RemoteCall) -> None:
        with self._lock:
            self._jobs[key] = job
        future = self.client.submit(run_remote, call, key, key=key, pure=False, retries=0)
        with self._lock:
            self._futures[job] = future
        future.add_done_callback(partial(self._on_done, job, key))

    def stop(self) -> None:
        client = self.client
        if client is None:
            return
        # told from a thread of its own: the dispatcher calls this, and a cluster that does not
        # answer must not stop it from deciding the rest of the run (teardown included)
        told = threading.Event()
        problems: list[BaseException] = []

        def tell() -> None:
            try:
                client.run(stop_run, self.run.run_id)
            except Exception as exc:  # noqa: BLE001 - reported below
                problems.append(exc)
            finally:
                told.set()

        threading.Thread(target=tell, name="thread-order-dask-stop", daemon=True).start()
        if not told.wait(STOP_NOTICE_WAIT):
            log.warning("executor %s: the workers did not confirm the stop within %ss: tasks queued "
                        "on them may still begin", self.name, STOP_NOTICE_WAIT)
        elif problems:  # queued tasks will run: say so, the run goes on
            exc = problems[0]
            log.warning("executor %s: cannot tell the workers the run was stopped: %s: %s",
                        self.name, type(exc).__name__, exc)

    def _cancel(self, job: Job) -> None:
        with self._lock:
            future = self._futures.pop(job, None)
        if future is not None and self.client is not None:
            try:
                self.client.cancel([future], force=True)
            except Exception:  # noqa: BLE001 - the cluster may be gone already
                pass

    def _disconnect(self, forced: bool) -> None:
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        with self._lock:
            self._futures = {}
            self._jobs = {}
        relay, self._relay = self._relay, None
        if relay is not None:
            relay.shutdown(wait=False)
        self._finished.put(None)  # the gatherer stops once it has handled what came before
        try:
            if client is not None:
                try:
                    client.unsubscribe_topic(TOPIC)
                except Exception:  # noqa: BLE001
                    pass
                if client is not self._given_client:
                    client.close(timeout=2 if forced else 10)
            if cluster is not None:
                if not self.processes:
                    # an abandoned attempt (timed out, or a forced stop) may still be running:
                    # leave its thread behind, as a run on threads does, rather than wait for it
                    for worker in list(cluster.workers.values()):
                        cluster.sync(worker.close, executor_wait=False, timeout=2)
                cluster.close(timeout=2 if forced else 10)
        except Exception as exc:  # noqa: BLE001 - the run is over: say so, do not fail it
            log.warning("executor %s: closing the cluster: %s: %s", self.name, type(exc).__name__, exc)
        finally:
            self._forget_modules()

    # ------------------------------------------------------------------ reports from Dask

    def _on_began(self, event: tuple) -> None:
        """A worker began a submission (on the client's event loop)."""
        try:
            key, lane = event[1]
        except (TypeError, ValueError):
            return
        with self._lock:
            job = self._jobs.get(key)
        relay = self._relay
        if job is not None and relay is not None:
            try:
                relay.submit(self.began, key, job, lane)
            except RuntimeError:  # shut down: the run is over
                pass

    def _on_done(self, job: Job, key: str, future: Any) -> None:
        """A submission is over (on Dask's callback thread): the gatherer takes it from here."""
        self._finished.put((job, key, future))

    def _gather(self, finished: queue.SimpleQueue) -> None:
        """Fetch the outcomes of finished submissions, as many at a time as have finished.

        One ``gather`` per batch rather than a round trip per task: under load the
        outcomes of a whole wave of tasks come back in one request.
        """
        while True:
            batch = [finished.get()]
            while not finished.empty():
                batch.append(finished.get_nowait())
            stop = None in batch
            batch = [item for item in batch if item is not None]
            done = [future for _, _, future in batch if future.status == "finished"]
            values: dict[int, Any] = {}
            client = self.client
            if done and client is not None:
                try:
                    values = dict(zip(map(id, done), client.gather(done)))
                except BaseException:  # noqa: B902 - one lost result: ask for each on its own
                    values = {}
            for job, key, future in batch:
                try:
                    self._settle_future(job, key, future, values.get(id(future), _MISSING))
                except Exception:  # noqa: BLE001 - a bug here must not stop the other outcomes
                    log.exception("executor %s: handling the outcome of %s", self.name, key)
            if stop:
                return

    def _settle_future(self, job: Job, key: str, future: Any, value: Any) -> None:
        status = future.status
        name = self.run.names[job.idx]
        if status == "finished":
            try:
                outcome, lane = future.result() if value is _MISSING else value
            except BaseException as exc:  # noqa: B902 - its data was lost on the way
                self.lost(job, f"the result of task {name!r} was lost: {type(exc).__name__}: {exc}")
                return
            if outcome is None:  # the run was stopped before a worker began it
                with self._lock:
                    self._jobs.pop(key, None)
                    self._futures.pop(job, None)
                self.dropped(job)
                return
            with self._lock:
                self._jobs.pop(key, None)
                self._futures.pop(job, None)
            if outcome.error is not None and outcome.error[2] and self._files:
                kind, message, tb = outcome.error
                outcome = outcome._replace(error=(kind, message, _real_frames(tb, self._files)))
            self.completed(job, outcome, lane)
        elif status == "error":
            exc = future.exception()
            if type(exc).__name__ == "KilledWorker":
                message = f"the dask worker running task {name!r} died: this attempt fails"
            else:
                message = f"dask could not run task {name!r}: {type(exc).__name__}: {exc}"
            self.lost(job, message)
        else:  # cancelled: by us (then this is ignored), or by the cluster
            self.lost(job, f"dask cancelled task {name!r} (its scheduler or worker went away)")

    # ------------------------------------------------------------------ module shipping

    def _send_modules_by_value(self, fns: Sequence[Any]) -> None:
        """Send the code of task modules workers cannot import (files tdrun loaded, tests)."""
        seen = set()
        for fn in fns:
            while isinstance(fn, partial):
                fn = fn.func
            module = sys.modules.get(getattr(fn, "__module__", None) or "")
            if module is None or module.__name__ in seen or module.__name__ == "__main__":
                continue
            seen.add(module.__name__)
            path = getattr(module, "__file__", None)
            if not path or _installed(path) or module.__name__.split(".")[0] == "thread_order":
                continue
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:  # registered already
                continue
            self._by_value.append(module)
        self._files = _code_files(self._by_value)

    def _forget_modules(self) -> None:
        for module in self._by_value:
            try:
                cloudpickle.unregister_pickle_by_value(module)
            except ValueError:
                pass
        self._by_value = []
