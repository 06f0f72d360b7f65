"""Values shared by the engine and its front-ends: task specs, statuses and records."""

from __future__ import annotations

import enum
import functools
import inspect
import math
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Callable, Iterable, NamedTuple

from .pools import pool_names

__all__ = [
    "TaskStatus", "TaskSpec", "TaskOptions", "TaskRecord", "mark", "dmark", "parse_tags", "MARK_ATTR",
    "new_record",
]

#: attribute under which ``mark`` stores a function's task options
MARK_ATTR = "__thread_order__"


class TaskStatus(str, enum.Enum):
    """The final state of a task; every task of a run ends in exactly one."""

    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"

    def __str__(self) -> str:
        return self.value


def parse_tags(tags: str | Iterable[str] | None) -> tuple[str, ...]:
    """Normalise ``"a, b"`` or ``["a", "b"]`` into ``("a", "b")``."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        items = tags.split(",")
    else:
        try:
            items = list(tags)
        except TypeError:
            raise TypeError(f"tags must be a string or a list of strings, not {tags!r}") from None
    out = []
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"tags must be strings, got {item!r}")
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return tuple(out)


def _parse_after(after: str | Iterable[str] | None, task: str) -> tuple[str, ...]:
    if after is None:
        return ()
    if isinstance(after, str):
        after = [after]
    try:
        names = list(after)
    except TypeError:
        raise TypeError(f"task {task!r}: after must be a list of task names, not {after!r}") from None
    for dep in names:
        if not isinstance(dep, str) or not dep:
            raise TypeError(f"task {task!r}: after must hold task names, got {dep!r}")
    return tuple(dict.fromkeys(names))


#: code flags of functions whose call only creates an object (a coroutine or generator)
#: instead of running their body: such a task would pass without doing anything
NOT_PLAIN_FLAGS = (inspect.CO_COROUTINE | inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
                   | inspect.CO_ITERABLE_COROUTINE)


def not_plain(fn: Callable[..., Any]) -> str | None:
    """What ``fn`` is when calling it would not run its body (``"an async function"``), or None.

    Looks through ``functools.partial``, bound methods and objects whose ``__call__`` is one.
    """
    if (type(fn) is FunctionType and not fn.__code__.co_flags & NOT_PLAIN_FLAGS
            and "_is_coroutine_marker" not in fn.__dict__):
        return None  # a plain def: what inspect would conclude from the same flags, at a tenth
    target = fn
    for _ in range(100):  # partials of partials; a loop bound instead of trusting the chain
        if isinstance(target, functools.partial):
            target = target.func
        elif inspect.ismethod(target):
            target = target.__func__
        else:
            break
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        call = getattr(type(target), "__call__", None)
        if call is not None and inspect.isfunction(call):
            target = call
    if inspect.iscoroutinefunction(target):
        return ASYNC_KIND
    if inspect.isasyncgenfunction(target):
        return "an async generator function"
    if inspect.isgeneratorfunction(target):
        return "a generator function"
    return None


#: what ``not_plain`` says of an ``async def``: such a task runs on the run's event loop
ASYNC_KIND = "an async function (async def)"


def is_async(fn: Callable[..., Any]) -> bool:
    """True when calling ``fn`` creates a coroutine to run on the event loop (an ``async def``)."""
    return not_plain(fn) == ASYNC_KIND


def not_runnable(fn: Callable[..., Any], name: str) -> str | None:
    """Why task ``name`` could not run ``fn`` (a generator function), or None.

    An ``async def`` is runnable: its coroutine runs on the run's event loop (engine/aio.py).
    """
    kind = not_plain(fn)
    if kind is None or kind == ASYNC_KIND:
        return None
    return (f"task {name!r}: {getattr(fn, '__qualname__', fn)!r} is {kind}; calling it would not "
            "run its body, so the task would pass without doing anything (tasks must be plain "
            "or async functions)")


def _finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What was registered: a callable and how to run it."""

    name: str
    fn: Callable[..., Any]
    after: tuple[str, ...] = ()
    with_state: bool = False
    tags: tuple[str, ...] = ()
    always: bool = False
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    is_async: bool = False  # an async def: its coroutine runs on the run's event loop
    pools: tuple[str, ...] = ()  # the pools it must have room in to start (engine/pools.py)

    @classmethod
    def build(
        cls,
        fn: Callable[..., Any],
        name: str,
        after: str | Iterable[str] | None = None,
        with_state: bool = False,
        tags: str | Iterable[str] | None = None,
        always: bool = False,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        *,
        runnable: bool = True,
        pool: str | Iterable[str] | None = None,
    ) -> "TaskSpec":
        """Validate user input and build a spec; raises TypeError or ValueError naming the task.

        ``runnable`` also refuses a callable whose call would not run its body (a generator
        function); ``mark`` leaves that to whoever collects the function. An ``async def``
        is a task like any other (``is_async``).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"task name must be a non-empty string, not {name!r}")
        if not callable(fn):
            raise TypeError(f"task {name!r}: {fn!r} is not callable")
        if runnable:
            why = not_runnable(fn, name)
            if why is not None:
                raise TypeError(why)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"task {name!r}: retries must be an integer >= 0, not {retries!r}")
        if not _finite_number(retry_delay) or retry_delay < 0:
            raise ValueError(f"task {name!r}: retry_delay must be a finite number >= 0, not {retry_delay!r}")
        if timeout is not None and (not _finite_number(timeout) or timeout <= 0):
            raise ValueError(f"task {name!r}: timeout must be a finite number > 0 or None, not {timeout!r}")
        try:
            tag_names = parse_tags(tags)
        except TypeError as exc:
            raise TypeError(f"task {name!r}: {exc}") from None
        pools = pool_names(pool, name)
        return cls(
            name=name,
            fn=fn,
            after=_parse_after(after, name),
            with_state=bool(with_state),
            tags=tag_names,
            always=bool(always),
            retries=retries,
            retry_delay=float(retry_delay),
            timeout=None if timeout is None else float(timeout),
            is_async=is_async(fn),
            pools=pools,
        )


class TaskOptions(NamedTuple):
    """How to run one task: a TaskSpec without its name, callable and dependencies.

    The scheduler keeps one of these per task rather than a TaskSpec, and most
    tasks share ``PLAIN`` or ``STATEFUL``: at 100,000 tasks a spec per task was
    the largest object registration built.
    """

    with_state: bool = False
    tags: tuple[str, ...] = ()
    always: bool = False
    retries: int = 0
    retry_delay: float = 0.0
    timeout: float | None = None
    is_async: bool = False
    pools: tuple[str, ...] = ()

    @classmethod
    def of(cls, spec: "TaskSpec") -> "TaskOptions":
        """The options of ``spec``, shared with every other task that has the same."""
        opts = cls(spec.with_state, spec.tags, spec.always, spec.retries, spec.retry_delay, spec.timeout,
                   spec.is_async, spec.pools)
        return _SHARED_OPTIONS.get(opts, opts)


#: the options of a task registered with none, and with only ``with_state=True``
PLAIN = TaskOptions()
STATEFUL = TaskOptions(with_state=True)
_SHARED_OPTIONS = {PLAIN: PLAIN, STATEFUL: STATEFUL}


class TaskRecord(NamedTuple):
    """What happened to one task in one run.

    Times are epoch seconds (for display); ``duration`` is measured with a
    monotonic clock. ``thread`` is None for tasks that never ran. ``waited`` and
    ``waited_for`` are kept for tasks in a pool (0.0 and None for the rest). An immutable
    named tuple rather than a frozen dataclass: the dispatcher builds one per
    task on its hot path, and this is several times cheaper to construct.
    """

    name: str
    status: TaskStatus
    thread: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration: float = 0.0
    attempts: int = 0
    error_type: str | None = None
    error: str | None = None
    traceback: str | None = None
    output: str = ""
    reason: str | None = None
    tags: tuple[str, ...] = ()
    is_async: bool = False  # an async def task, run on the run's event loop
    warning: str | None = None  # e.g. a coroutine that blocked the event loop
    #: seconds between becoming ready and starting (its last attempt), for a task in a pool
    waited: float = 0.0
    #: the pool that kept it waiting, or None when it started as soon as a worker was free
    waited_for: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (status as its string value)."""
        data = self._asdict()
        data["status"] = self.status.value
        data["tags"] = list(self.tags)
        return data


#: ``new_record(TaskRecord, fields)`` builds a record from a tuple of every one of its fields,
#: in order, without the call through the named tuple's ``__new__`` (half the cost, for the
#: dispatcher's hot paths); tests/engine/test_model.py checks the two agree
new_record = tuple.__new__


def _quick_after(after: Any) -> list[str] | None:
    """``after`` as mark stores it, when it needs no more checking (None, a name, a list or
    tuple of names); None when ``TaskSpec.build`` has to look at it."""
    if after is None:
        return []
    kind = type(after)
    if kind is str:
        return [after] if after else None
    if kind is list or kind is tuple:
        try:
            "".join(after)  # every item a string, at C speed
        except TypeError:
            return None
        return None if "" in after else list(dict.fromkeys(after))
    return None


def _quick_decorate(after: list[str], with_state: bool, retry_delay: float, fn: Any) -> Any:
    """mark with its common options, checked already: only the function is left to look at."""
    name = getattr(fn, "__name__", None)
    if type(fn) is not FunctionType or type(name) is not str or not name:
        # not a plain def: what mark's checked path does with the same options
        spec = TaskSpec.build(fn, getattr(fn, "__name__", repr(fn)), after, with_state,
                              retry_delay=retry_delay, runnable=False)
        name, after = spec.name, list(spec.after)
    setattr(fn, MARK_ATTR, {
        "after": after[:], "with_state": with_state, "orig_name": name, "tags": [],
        "always": False, "retries": 0, "retry_delay": retry_delay, "timeout": None,
    })
    return fn


def _marker(default_with_state: bool):
    def marker(
        *,
        after: str | Iterable[str] | None = None,
        with_state: bool = default_with_state,
        tags: str | Iterable[str] | None = None,
        always: bool = False,
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        params: dict[str, list] | None = None,
        ids: list[str] | Callable[[Any], str | None] | None = None,
        pool: str | Iterable[str] | None = None,
    ):
        # the common mark (dependencies at most, every other option its default) is checked
        # here, as register() does: a module of 10,000 tasks makes 10,000 of them at import
        if (params is None and ids is None and pool is None and tags is None and always is False
                and timeout is None
                and type(retries) is int and retries == 0 and type(retry_delay) is float
                and retry_delay == 0 and type(with_state) is bool):
            deps = _quick_after(after)
            if deps is not None:
                return functools.partial(_quick_decorate, deps, with_state, retry_delay)
        options = dict(
            after=after,
            with_state=with_state,
            tags=tags,
            always=always,
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
        )

        def decorate(fn):
            # validate now so a bad option is reported at import, naming the function
            spec = TaskSpec.build(fn, getattr(fn, "__name__", repr(fn)), **options, runnable=False,
                                  pool=pool)
            if params is not None or ids is not None:
                from .params import expand

                if params is None:
                    raise TypeError(f"task {spec.name!r}: ids= needs params=")
                expand(fn, spec.name, params, ids, spec.with_state)  # a bad value list fails at import
            # the function itself is returned, unchanged and unwrapped: only the metadata is new
            setattr(
                fn,
                MARK_ATTR,
                {
                    "after": list(spec.after),
                    "with_state": spec.with_state,
                    "orig_name": spec.name,
                    "tags": list(spec.tags),
                    "always": spec.always,
                    "retries": spec.retries,
                    "retry_delay": spec.retry_delay,
                    "timeout": spec.timeout,
                    **({"pools": list(spec.pools)} if spec.pools else {}),
                    **({} if params is None else {"params": params, "ids": ids}),
                },
            )
            return fn

        return decorate

    return marker


mark = _marker(default_with_state=True)
mark.__name__ = "mark"
mark.__doc__ = """Attach task options to a function for discovery by ``tdrun``; registers nothing.

The function stays callable unchanged. Options mean what they mean for
:meth:`Scheduler.register`; ``with_state`` defaults to True.
"""

dmark = _marker(default_with_state=False)
dmark.__name__ = "dmark"
dmark.__doc__ = """Like :func:`mark`, but ``with_state`` defaults to False."""
