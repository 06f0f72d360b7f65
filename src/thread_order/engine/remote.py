"""One attempt of a task run away from the client: its call, its copy of the state, what it changed.

A remote executor (engine/executor.py) sends a ``RemoteCall``; the machine
that runs it calls ``run_call``, which gives the task a private copy of the
state (each value unpickled from the bytes the client sent), runs it with its
output captured, and returns a ``RemoteOutcome``: the result and every state
key the task set or deleted, pickled, so the client can merge them into the
real state. Serialization is the executor's (``dumps``/``loads``): the
engine only needs the standard library.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import CoroutineType
from typing import Any, Callable, NamedTuple

from .capture import OutputCapture
from .lanes import describe, joined

__all__ = ["RemoteCall", "RemoteOutcome", "run_call", "ENGINE_KEYS"]

#: keys of the state the engine owns: never sent as state, never reported as changed
ENGINE_KEYS = ("results", "_state_lock")


class RemoteCall(NamedTuple):
    """Everything a worker needs to run one attempt, as bytes where it is the task's."""

    name: str
    fn: bytes
    with_state: bool
    state: dict  # key -> pickled value (engine keys excluded)
    results: dict | None  # task -> pickled result, of the task's upstream tasks; None: no results
    capture: bool
    log_level: int
    client_pid: int  # the process of the run: a worker inside it shares its capture and logging
    run_id: str
    always: bool  # a teardown task: it runs even once the run was stopped


class RemoteOutcome(NamedTuple):
    """What came back: as a worker lane reports it (lanes.py), plus the state's changes."""

    ok: bool
    value: bytes | None  # the pickled return value when ok
    error: tuple[str, str, str] | None  # (type name, message, traceback)
    started: float  # epoch seconds, on the worker's clock
    duration: float
    output: str
    changed: dict  # key -> pickled new value
    deleted: tuple


def _same(old: bytes, new_value: Any, new: bytes, loads: Callable[[bytes], Any]) -> bool:
    """Whether a value sent as ``old`` still is what it was.

    Equal bytes mean unchanged; different bytes may still be an equal value
    (a set pickles in hash order, which differs between processes), so the
    two are compared too; a value that cannot say counts as changed.
    """
    if old == new:
        return True
    try:
        return bool(loads(old) == new_value)
    except Exception:  # noqa: BLE001 - an __eq__ that raises or returns an array
        return False


def run_call(call: RemoteCall, dumps: Callable[[Any], bytes], loads: Callable[[bytes], Any]) -> RemoteOutcome:
    """Run one attempt here; never raises (every failure is in the outcome)."""
    started = time.time()
    t0 = time.perf_counter()
    state: dict | None = None
    try:
        fn = loads(call.fn)
        if call.with_state:
            state = {key: loads(blob) for key, blob in call.state.items()}
            if call.results is not None:
                state["results"] = {key: loads(blob) for key, blob in call.results.items()}
            # guards this copy only: tasks on other machines have copies of their own
            state["_state_lock"] = threading.RLock()
    except BaseException as exc:  # noqa: B902 - whatever unpickling raises
        kind, message, tb = describe(exc)
        return RemoteOutcome(False, None, (kind, f"cannot load task {call.name!r} on this worker: "
                                                 f"{kind}: {message}", tb),
                             started, time.perf_counter() - t0, "", {}, ())
    mine: list[str] = []
    ident = threading.get_ident()
    if call.capture:
        _capture_here(call)
        OutputCapture.buffers[ident] = mine
    started = time.time()
    t0 = time.perf_counter()
    try:
        value = fn(state) if call.with_state else fn()
        if type(value) is CoroutineType:
            value.close()
            value = None
            raise TypeError("the task returned a coroutine, which would never run: "
                            "it called an async function without awaiting it")
        ok, error = True, None
    except BaseException as exc:  # noqa: B902 - a task may raise anything, even SystemExit
        ok, value, error = False, None, describe(exc)
        del exc
    duration = time.perf_counter() - t0
    if call.capture:
        OutputCapture.buffers.pop(ident, None)
    output = joined(mine)
    changed: dict = {}
    deleted: tuple = ()
    if state is not None:
        try:
            changed, deleted = _changes(call.state, state, dumps, loads)
        except _Unsendable as exc:
            ok, value, error = False, None, ("TypeError", str(exc), f"TypeError: {exc}\n")
    blob = None
    if ok:
        try:
            blob = dumps(value)
        except Exception as exc:  # noqa: BLE001 - whatever pickling raises
            message = (f"task {call.name!r} returned a value that cannot be sent back to the client "
                       f"({type(value).__name__}): {exc}")
            ok, error = False, ("TypeError", message, f"TypeError: {message}\n")
    return RemoteOutcome(ok, blob, error, started, duration, output, changed, deleted)


# guards _installed: the first task of a worker process installs the capture, for good
_lock = threading.Lock()
_installed = False


def _capture_here(call: RemoteCall) -> None:
    """Route this process's output per thread, as a run does (the run's own process already does).

    A worker process installs the capture once and keeps it: swapping sys.stdout for each
    task would race with the tasks running beside it. Inside the run's process the run has
    installed it, and the process's streams and logging are the client's: left alone.
    """
    global _installed
    if os.getpid() == call.client_pid:
        return
    root = logging.getLogger()
    if root.level > call.log_level:  # a worker process logs WARNING and up by default
        root.setLevel(call.log_level)
    with _lock:
        if _installed:
            return
        _installed = True
    OutputCapture.install()


class _Unsendable(Exception):
    """A state value the task set cannot be sent back."""


def _changes(sent: dict, state: dict, dumps, loads) -> tuple[dict, tuple]:
    changed = {}
    for key, value in state.items():
        if key in ENGINE_KEYS:
            continue
        try:
            blob = dumps(value)
        except Exception as exc:  # noqa: BLE001
            raise _Unsendable(f"state[{key!r}] holds a value that cannot be sent back to the client "
                              f"({type(value).__name__}): {exc}") from None
        old = sent.get(key)
        if old is None or not _same(old, value, blob, loads):
            changed[key] = blob
    deleted = tuple(key for key in sent if key not in state)
    return changed, deleted
