"""The Scheduler: runs registered callables on a thread pool in dependency order."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from types import FunctionType
from typing import Any, Callable, Iterable

from .capture import configure_logging, log_task_failures
from .compat import add_thread_log_files, check_highlights
from .context import TaskContexts
from .dispatch import Run, RunOptions
from .errors import DuplicateTaskError
from .events import Event, EventKind, EventStream
from .executor import executor_from_spec
from .graph import Graph
from .model import NOT_PLAIN_FLAGS, PLAIN, STATEFUL, TaskOptions, TaskRecord, TaskSpec
from .gate import Gate
from .pools import Pool, check_task_pools, parse_pools, pool_of
from .order import ORDERS, ReplayOrder, make_plan, new_seed

__all__ = ["Scheduler", "default_workers"]

#: I/O-bound work: more threads than cores, as concurrent.futures does
default_workers = min(32, (os.cpu_count() or 1) + 4)

#: the defaults of register's retries= and retry_delay=, which its fast path tests by identity
_NO_RETRIES = 0
_NO_DELAY = 0.0


def _distinct_afters(afters: list[tuple[str, ...]], start: int) -> None:
    """Drop repeated names from ``afters[start:]`` in place (``after=["a", "a"]`` is one edge).

    register() keeps a tuple of names as it came; this finds the few with a repeat in one
    pass at C speed, when the graph is built, instead of a set per task at registration.
    """
    tail = afters[start:]
    if list(map(len, map(set, tail))) != list(map(len, tail)):
        for i, after in enumerate(tail, start):
            if len(set(after)) != len(after):
                afters[i] = tuple(dict.fromkeys(after))


def _checked_state(state: dict, store_results: bool) -> Any:
    """The lock of ``state``, once the two keys the engine owns hold what it needs.

    Raises:
        TypeError: ``state['_state_lock']`` is not a lock, or ``state['results']`` not a dict.
    """
    lock = state.get("_state_lock")
    kind = type(lock)
    if not (callable(getattr(kind, "__enter__", None)) and callable(getattr(kind, "__exit__", None))):
        # the engine only ever uses it as `with lock:`
        raise TypeError(f"state['_state_lock'] must be a lock (such as threading.RLock()), "
                        f"not {kind.__name__}")
    if store_results and not isinstance(state.get("results"), dict):
        raise TypeError(f"state['results'] must be a dict (the engine stores each task's return "
                        f"value there), not {type(state.get('results')).__name__}")
    return lock


def _checked_order(order: Any, shuffle: Any, durations: Any) -> tuple:
    """``(order, shuffle seed or None, durations)`` as given to Scheduler, checked.

    Raises:
        TypeError: a value of the wrong type.
        ValueError: an unknown order, or a shuffle with another order.
    """
    if not isinstance(order, ReplayOrder):
        if not isinstance(order, str):
            raise TypeError(f"order must be a string, not {type(order).__name__}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, not {order!r}")
    if shuffle is True:
        shuffle = new_seed()
    elif shuffle is False:
        shuffle = None
    elif shuffle is not None and type(shuffle) is not int:
        raise TypeError(f"shuffle must be an integer seed or True, not {shuffle!r}")
    if shuffle is not None and order != "declared":
        what = "a replay" if isinstance(order, ReplayOrder) else f"order={order!r}"
        raise ValueError(f"shuffle cannot be used with {what}")
    if durations is not None:
        if not isinstance(durations, dict):
            raise TypeError(f"durations must be a dict of seconds by task name, not {type(durations).__name__}")
        for name, seconds in durations.items():
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
                raise ValueError(f"durations[{name!r}] must be a number of seconds >= 0, not {seconds!r}")
    return order, shuffle, durations


#: per callback event: the method that registers it and the arguments it passes first
_CALLBACKS = {
    EventKind.RUN_STARTED: ("on_scheduler_start", ("meta",)),
    EventKind.TASK_STARTED: ("on_task_start", ("name",)),
    EventKind.TASK_RUNNING: ("on_task_run", ("name", "thread_name")),
    EventKind.TASK_FINISHED: ("on_task_done", ("name", "thread_name", "status", "count")),
    EventKind.RUN_FINISHED: ("on_scheduler_done", ("summary",)),
}


def _check_signature(kind: EventKind, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Refuse, when it is registered, a callback that could never be called the way it will be.

    Said once, here, rather than as a traceback for every task of every run.

    Raises:
        TypeError: naming the method, the callback and the arguments it will be given.
    """
    method, standard = _CALLBACKS[kind]
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: they will tell at call time
        return
    try:
        signature.bind(*standard, *args, **kwargs)
    except TypeError as exc:
        given = ", ".join(standard + tuple(repr(a) for a in args) + tuple(f"{k}=..." for k in kwargs))
        raise TypeError(f"{method}: callback {getattr(fn, '__qualname__', fn)!r} cannot be called "
                        f"as fn({given}): {exc}") from None


class Scheduler:
    """Run callables concurrently on threads while honouring their declared order.

    Args:
        workers: size of the thread pool (default: ``default_workers``).
        state: the dict shared with tasks registered ``with_state``; a new one if None.
        store_results: keep each task's return value in ``state['results'][name]``.
        clear_results_on_start: empty ``state['results']`` when a run starts.
        skip_dependents: a failed task's transitive dependents are SKIPPED.
        setup_logging: configure root logging to stderr (``[thread_N]`` per line), and log
            each failed task (ERROR) and each failed attempt that is retried (WARNING).
        verbose: with ``setup_logging``, log at DEBUG instead of INFO.
        capture: collect each task's stdout, stderr and log records into its record.
        add_stream_handler: with ``setup_logging``, log to stderr (1.x's keyword; False
            leaves stderr alone, for programs drawing their own display).
        add_file_handler: with ``setup_logging``, also write one log file per thread,
            ``<script>_thread_N.log`` in the current directory, as 1.x did (its default was
            True; here it is False).
        highlights: ``[(compiled regex, colour), ...]``: on a terminal, the stderr lines
            colour what each regex matches; colours are ANSI escapes (colorama's
            ``Fore.RED + Style.BRIGHT``) or names such as ``"bold red"``.
        check_state: note which state keys each task reads and writes, and report the
            ordering bugs that shows (``summary['state_findings']``; see statecheck.py).
        first: names of tasks to start before the others whenever several are ready
            (``tdrun --failed-first``); the graph still decides what is ready.
        order: which ready task starts first: ``"declared"`` (registration order) or
            ``"critical-path"`` (the longest remaining path first, weighing each task by
            ``durations``); see ``engine/order.py``.
        shuffle: a seed: ready tasks start in an order drawn from ``random.Random(seed)``;
            ``True`` draws a seed (kept in ``shuffle``).
        durations: expected seconds per task name, for ``order="critical-path"``; a task
            missing gets the median of the others.
        executor: where tasks run: ``"local"`` (this scheduler's threads), ``"dask"`` (a Dask
            cluster started for each run), ``"dask://HOST:PORT"`` (a running Dask scheduler),
            or an ``Executor`` object (see engine/executor.py).
        async_limit: how many ``async def`` tasks may run at once on the run's event loop.
        async_block_threshold: seconds one step of a coroutine may hold the event loop before
            its task gets a warning (once per task); None turns the check off.
        pools: ``{name: size}`` or ``{name: {"size": N, "rate": "10/s"}}``: pools tasks
            may be put in with ``register(..., pool=name)`` (see :meth:`add_pool`).

    Raises:
        TypeError: ``workers`` or ``async_limit`` is not an integer, ``state`` not a dict, or
            one of the keys the engine owns holds the wrong thing: ``state['_state_lock']``
            must be a lock and ``state['results']`` (with ``store_results``) a dict;
            ``highlights`` is not a list of (compiled regex, string) pairs.
        ValueError: ``workers`` or ``async_limit`` is less than 1, ``order`` unknown, both
            ``shuffle`` and ``order="critical-path"`` given, or ``async_block_threshold``
            not a finite number > 0 (or None).
        ExecutorError: ``executor`` names an unknown executor, or one whose extra is missing.
        ValueError: ``check_state``, or a replay order, with an executor other than local.
        ValueError: ``workers`` is less than 1.
        PoolError: a bad pool (a ValueError).
    """

    def __init__(
        self,
        workers: int | None = None,
        state: dict | None = None,
        store_results: bool = True,
        clear_results_on_start: bool = True,
        skip_dependents: bool = True,
        setup_logging: bool = False,
        verbose: bool = False,
        capture: bool = True,
        add_stream_handler: bool = True,
        add_file_handler: bool = False,
        highlights: list[tuple[Any, str]] | None = None,
        *,
        check_state: bool = False,
        first: Iterable[str] | None = None,
        order: str | ReplayOrder = "declared",
        shuffle: int | bool | None = None,
        durations: dict[str, float] | None = None,
        executor: Any = "local",
        async_limit: int = 100,
        async_block_threshold: float | None = 0.1,
        pools: dict[str, Any] | None = None,
    ) -> None:
        if workers is None:
            workers = default_workers
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be an integer, not {workers!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers!r}")
        if state is not None and not isinstance(state, dict):
            raise TypeError(f"state must be a dict, not {type(state).__name__}")
        if isinstance(async_limit, bool) or not isinstance(async_limit, int):
            raise TypeError(f"async_limit must be an integer, not {async_limit!r}")
        if async_limit < 1:
            raise ValueError(f"async_limit must be at least 1, not {async_limit!r}")
        if async_block_threshold is not None and (
                isinstance(async_block_threshold, bool) or not isinstance(async_block_threshold, (int, float))
                or not 0 < async_block_threshold < float("inf")):
            raise ValueError(f"async_block_threshold must be a finite number > 0 or None, "
                             f"not {async_block_threshold!r}")
        self.async_limit = async_limit
        self.async_block_threshold = async_block_threshold
        self.workers = workers
        self.state: dict = state if state is not None else {}
        self.state.setdefault("_state_lock", threading.RLock())
        self.store_results = store_results
        self.clear_results_on_start = clear_results_on_start
        self.skip_dependents = skip_dependents
        self.capture = capture
        self.check_state = check_state
        self.first = frozenset(first) if first else None
        if store_results:
            self.state.setdefault("results", {})
        self.state_lock = _checked_state(self.state, store_results)
        self.events = EventStream()
        self._task_contexts = TaskContexts()
        if highlights is not None:
            highlights = check_highlights(highlights)
        #: where tasks run: None for this scheduler's own threads, else an executor.Executor
        self.executor = executor_from_spec(executor)
        if check_state and self.executor is not None:
            raise ValueError(f"check_state=True needs the local executor, not {self.executor.name!r}: "
                             "a task on a cluster reads and writes a copy of the state")
        if setup_logging:
            if add_stream_handler:
                configure_logging(verbose=verbose, highlights=highlights or ())
            else:
                logging.getLogger().setLevel(logging.DEBUG if verbose else logging.INFO)
            if add_file_handler:
                add_thread_log_files([threading.current_thread().name]
                                     + [f"thread_{i}" for i in range(workers)])
            log_task_failures(self.events)

        # the registered tasks, by position: name -> position, and per position its callable,
        # its (deduplicated) dependencies and its options
        self._names: dict[str, int] = {}
        self._fns: list[Callable[..., Any]] = []
        self._afters: list[tuple[str, ...]] = []
        self._options: list[TaskOptions] = []
        self._specs: tuple[TaskSpec, ...] | None = None  # built on demand by `tasks`
        self._distinct = 0  # _afters[:_distinct] hold no repeated name
        self._graph: Graph | None = None
        # parametrized tasks (engine/params.py): base name -> Group
        self._groups: dict = {}
        self._async_tasks = 0  # async def tasks registered: a run with any gets an event loop
        self._pooled = 0  # tasks registered in a pool: none, and a run needs no gate
        # guards _run: the one start() in progress, reached by cancel() from any thread
        self._lock = threading.Lock()
        self._run: Run | None = None
        self.last_summary: dict | None = None
        #: the TaskRecord of every task of the last run, in registration order
        self.last_records: list[TaskRecord] = []
        self.order, self.shuffle, self.durations = _checked_order(order, shuffle, durations)
        if isinstance(self.order, ReplayOrder) and self.executor is not None:
            # a replay's start order is kept by the worker threads themselves (order.ReplayGate)
            raise ValueError(f"a replay needs the local executor, not {self.executor.name!r}")
        #: the declared pools, by name (engine/pools.py)
        self.pools: dict[str, Pool] = parse_pools(pools, "Scheduler")

    # ------------------------------------------------------------------ registration

    def register(
        self,
        fn: Callable[..., Any],
        name: str,
        after: str | Iterable[str] | None = None,
        with_state: bool = False,
        *,
        tags: str | Iterable[str] | None = None,
        always: bool = False,
        retries: int = _NO_RETRIES,
        retry_delay: float = _NO_DELAY,
        timeout: float | None = None,
        params: dict[str, list] | None = None,
        ids: list[str] | Callable[[Any], str | None] | None = None,
        pool: str | Iterable[str] | None = None,
    ) -> None:
        """Add a task. Dependencies may name tasks registered later.

        ``pool`` puts the task in a pool (or a list of pools, all of which must
        have room for it to start); the pools must be declared by ``start()``.

        ``params={"key": [values]}`` registers one task per case instead,
        ``name[id]``, each called with its values as keyword arguments (see
        ``engine/params.py``); ``ids`` names the cases.

        Raises:
            TypeError: ``fn`` is not callable, or a name is not a string.
            ValueError: ``name`` is taken (DuplicateTaskError) or an option is out of range.
        """
        if params is not None or ids is not None:
            from .params import register_cases

            if params is None:
                raise TypeError(f"task {name!r}: ids= needs params=")
            options = dict(tags=tags, always=always, retries=retries, retry_delay=retry_delay,
                           timeout=timeout, pool=pool)
            TaskSpec.build(fn, name, after, with_state, **options)  # all checked before any case is in
            register_cases(self, fn, name, after, with_state, params, ids, options)
            return
        # The common call (a name, a callable, dependencies, no other option) is checked here
        # inline; anything else, and any error, goes through TaskSpec.build, so messages are
        # the same either way. The task is kept as a few list entries, not a TaskSpec.
        # Options are compared by identity with their defaults (an explicit `retries=0` is the
        # same cached int; anything else, say `retry_delay=0`, just takes the checked path).
        if (tags is None and timeout is None and always is False and retries is _NO_RETRIES
                and pool is None
                and retry_delay is _NO_DELAY and type(name) is str and name
                and type(fn) is FunctionType and not fn.__code__.co_flags & NOT_PLAIN_FLAGS):
            kind = type(after)
            if kind is tuple or kind is list:
                # every item a non-empty string, at C speed; repeated names are dropped in
                # bulk when the graph is built (see `_distinct_afters`)
                deps = after if kind is tuple else tuple(after)
                try:
                    "".join(deps)
                except TypeError:
                    deps = TaskSpec.build(fn, name, after).after
                else:
                    if "" in deps:
                        deps = TaskSpec.build(fn, name, after).after
            elif after is None:
                deps = ()
            elif kind is str and after:
                deps = (after,)
            else:
                deps = TaskSpec.build(fn, name, after).after
            options = STATEFUL if with_state else PLAIN
        else:
            spec = TaskSpec.build(
                fn, name, after, with_state, tags=tags, always=always,
                retries=retries, retry_delay=retry_delay, timeout=timeout, pool=pool,
            )
            deps, options = spec.after, TaskOptions.of(spec)
            if spec.is_async:
                self._async_tasks += 1
            if options.pools:
                self._pooled += 1
        names = self._names
        if name in names:
            raise DuplicateTaskError(name)
        if self._graph is not None:
            # the graph shares the name index: leave it to the graph, and the run using it
            self._graph = None
            names = self._names = dict(names)
        names[name] = len(names)
        self._fns.append(fn)
        self._afters.append(deps)
        self._options.append(options)

    def add_pool(self, name: str, size: int | None = None, rate: str | None = None) -> None:
        """Declare (or redefine) pool ``name``: at most ``size`` of its tasks run at once,
        at most N start in any window of the rate's period (``"10/s"``, ``"100/min"``,
        ``"1000/h"``). Either may be None, not both. A run in progress keeps its pools.

        Raises:
            PoolError: a bad name, a size below 1, a bad rate (a ValueError).
        """
        self.pools[name] = pool_of(name, size=size, rate=rate, where="add_pool")

    def dregister(self, after=None, with_state: bool = False, **options: Any):
        """Decorator form of :meth:`register`, under ``fn.__name__``; returns ``fn`` itself."""

        def decorate(fn):
            self.register(fn, getattr(fn, "__name__", None), after, with_state, **options)
            return fn

        return decorate

    @property
    def tasks(self) -> tuple[TaskSpec, ...]:
        """The registered task specs, in registration order."""
        if self._specs is None or len(self._specs) != len(self._fns):  # built on first use
            _distinct_afters(self._afters, self._distinct)
            self._distinct = len(self._afters)
            self._specs = tuple(
                TaskSpec(name, fn, after, *options)
                for name, fn, after, options in zip(self._names, self._fns, self._afters, self._options)
            )
        return self._specs

    @property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """Each registered task's dependencies (distinct names), by name in registration order.

        A new dict, not validated (see ``graph``); cheaper than ``tasks`` for a large run.
        """
        _distinct_afters(self._afters, self._distinct)
        self._distinct = len(self._afters)
        return dict(zip(self._names, self._afters))

    @property
    def graph(self) -> Graph:
        """The validated dependency graph (raises GraphError if it is not a DAG)."""
        if self._graph is None:
            if self._groups:  # a dependency on a parametrized task means its cases
                from .params import resolve_groups

                self._afters = resolve_groups(self._names, self._afters, self._groups)
                self._specs = None
                self._distinct = 0  # the lists were rebuilt: check them all again
            _distinct_afters(self._afters, self._distinct)
            self._distinct = len(self._afters)
            self._graph = Graph._from_index(self._names, self._afters)
        return self._graph

    # ------------------------------------------------------------------ observation

    def subscribe(self, fn: Callable[[Event], Any], *kinds: EventKind | str) -> Callable[[], None]:
        """Receive every event (or only ``kinds``) on the thread running ``start()``.

        Returns a function that unsubscribes.
        """
        return self.events.subscribe(fn, kinds or None)

    def add_task_context(self, factory: Callable[[str, int], Any]) -> Callable[[], None]:
        """Enter ``factory(name, attempt)`` (a context manager, or None) around each attempt.

        Entered and left on the worker thread running the attempt, just around the task's
        call, so whatever it sets (a tracing span made current, a context variable) is
        what the task sees; its ``__exit__`` gets the task's exception. Errors in it are
        logged and never change the task's outcome. Takes effect from the next ``start()``.
        Returns a function that removes it.
        """
        return self._task_contexts.add(factory)

    def _callback(self, kind: EventKind, adapt: Callable[[Event], tuple], fn, args, kwargs):
        if not callable(fn):
            raise TypeError(f"callback {fn!r} is not callable")
        _check_signature(kind, fn, args, kwargs)

        def call(event: Event) -> None:
            fn(*adapt(event), *args, **kwargs)

        call.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        return self.events.subscribe(call, (kind,))

    def on_scheduler_start(self, fn, *args, **kwargs):
        """Call ``fn(meta, *args, **kwargs)`` when a run starts."""
        return self._callback(EventKind.RUN_STARTED, lambda e: (dict(e.data),), fn, args, kwargs)

    def on_task_start(self, fn, *args, **kwargs):
        """Call ``fn(name, *args, **kwargs)`` when a task is handed to a worker."""
        return self._callback(EventKind.TASK_STARTED, lambda e: (e.name,), fn, args, kwargs)

    def on_task_run(self, fn, *args, **kwargs):
        """Call ``fn(name, thread_name, *args, **kwargs)`` when a worker begins a task."""
        return self._callback(EventKind.TASK_RUNNING, lambda e: (e.name, e.thread), fn, args, kwargs)

    def on_task_done(self, fn, *args, **kwargs):
        """Call ``fn(name, thread_name, status, count, *args, **kwargs)`` when a task is final."""
        return self._callback(
            EventKind.TASK_FINISHED,
            lambda e: (e.name, e.record.thread, e.record.status, e.count),
            fn, args, kwargs,
        )

    def on_scheduler_done(self, fn, *args, **kwargs):
        """Call ``fn(summary, *args, **kwargs)`` when a run ends."""
        return self._callback(EventKind.RUN_FINISHED, lambda e: (e.data,), fn, args, kwargs)

    # ------------------------------------------------------------------ control

    def cancel(self, force: bool = False) -> bool:
        """Ask the running ``start()`` to stop, as Ctrl-C does; safe from any thread.

        The first request lets running tasks finish, starts nothing new except
        ``always`` tasks and cancels the rest; a second (or ``force``) stops
        waiting at once. Returns False when no run is in progress.
        """
        with self._lock:
            run = self._run
        if run is None:
            return False
        run.request_stop(force)
        return True

    @property
    def running(self) -> bool:
        """True while ``start()`` is in progress."""
        return self._run is not None

    @property
    def sanitized_state(self) -> dict:
        """A shallow copy of ``state`` without its lock, taken under the lock (e.g. to print it)."""
        with self.state_lock:
            copy = dict(self.state)
        copy.pop("_state_lock", None)
        return copy

    def sanitize_state(self) -> dict:
        """:attr:`sanitized_state` as a method, the name thread-order 1.x gave it."""
        return self.sanitized_state

    def start(self) -> dict:
        """Run every registered task and return the run summary.

        Raises:
            GraphError: the graph has an unknown dependency or a cycle (nothing ran).
            PoolError: a task is in a pool that is not declared (nothing ran).
            RuntimeError: this scheduler is already running.
            ValueError: an ``async def`` task with an executor other than local.
        """
        graph = self.graph  # validates before anything runs
        if self._async_tasks and self.executor is not None:  # coroutines run on this process's loop
            name = next(n for n, o in zip(self._names, self._options) if o.is_async)
            raise ValueError(f"task {name!r} is an async def: async tasks need the local executor, "
                             f"not {self.executor.name!r}")
        self.state_lock = _checked_state(self.state, self.store_results)
        gate = self._gate(len(graph.nodes))  # and the pools too
        with self._lock:
            if self._run is not None:
                raise RuntimeError("start: this scheduler is already running")
            options = RunOptions(self.workers, self.store_results, self.clear_results_on_start,
                                 self.skip_dependents, self.capture, first=self.first,
                                 task_context=self._task_contexts.combined(),
                                 executor=self.executor,
                                 async_limit=self.async_limit, block_threshold=self.async_block_threshold)
            # no copies: registration only appends, and the run reads the first len(graph) entries,
            # so a task registered while this run goes on belongs to the next run
            fns, task_options, checker = self._fns, self._options, None
            if self.check_state:
                from .statecheck import StateChecker

                checker = StateChecker(self.state, self.state_lock)
                fns, task_options = checker.instrument(graph.nodes, fns, task_options)
            plan = None
            if self.order != "declared" or self.shuffle is not None:
                replay = self.order if isinstance(self.order, ReplayOrder) else None
                plan = make_plan(graph, self.order, self.shuffle, self.durations, replay)
            kind = Run
            if self._async_tasks:
                from .aio import AsyncRun as kind  # only runs with async tasks get a loop
            run = self._run = kind(fns, task_options, graph, self.state,
                                   self.state_lock, self.events, options, plan)
            run.pool_gate = gate
        try:
            summary = run.execute()
            if checker is not None:
                summary["state_findings"] = checker.findings(graph, self._fns[:len(graph)])
            records = run.records
            self.last_records = records if None not in records else [r for r in records if r is not None]
            self.last_summary = summary
            self.events.emit(EventKind.RUN_FINISHED, data=summary)
        finally:
            with self._lock:
                self._run = None
        return summary

    def _gate(self, n: int) -> Gate | None:
        """The gate of a run of the first ``n`` tasks, or None when none is in a pool.

        Raises:
            PoolError: a task is in a pool that is not declared.
        """
        if not self._pooled:
            return None
        task_pools = [o.pools for o in self._options[:n]]
        check_task_pools(self.pools, task_pools, self._names)
        return Gate(self.pools, task_pools)
