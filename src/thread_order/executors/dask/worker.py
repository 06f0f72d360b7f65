"""The worker side of the Dask executor: the function each submission runs on a Dask worker.

It says where it began (a ``worker-address/thread_N`` lane, logged as a Dask
event the client follows), runs the attempt with ``engine.remote.run_call``
and returns its outcome. Imported by reference, so every worker needs
thread-order installed.
"""

from __future__ import annotations

import threading

import cloudpickle
from distributed import get_worker

from ...engine.remote import RemoteCall, RemoteOutcome, run_call

__all__ = ["TOPIC", "lane_name", "lane_prefix", "run_remote", "stop_run"]

#: the Dask event topic of beginnings; one for every run, so a long-lived scheduler
#: keeps one bounded log for us rather than one per run
TOPIC = "thread-order-began"

# guards _lanes and _counts: the worker's threads name themselves on first use
_lock = threading.Lock()
_lanes: dict[tuple[str, int], str] = {}
_counts: dict[str, int] = {}
#: runs stopped by Ctrl-C (set by ``stop_run``, on every worker): their queued tasks do not begin
_stopped: set[str] = set()


def stop_run(run_id: str) -> None:
    """Run on every worker when a run is interrupted (``Client.run``)."""
    _stopped.add(run_id)


def lane_prefix(address: str) -> str:
    """A worker's address as a lane names it: ``host:port``, or ``inproc/N`` in this process."""
    if address.startswith("inproc://"):
        return "inproc/" + address.rsplit("/", 1)[-1]
    return address.split("://", 1)[-1]


def lane_name() -> str:
    """``host:port/thread_N``: this worker's address and a small number for this thread."""
    address = lane_prefix(get_worker().address)
    ident = threading.get_ident()
    with _lock:
        lane = _lanes.get((address, ident))
        if lane is None:
            n = _counts.get(address, 0)
            _counts[address] = n + 1
            lane = _lanes[(address, ident)] = f"{address}/thread_{n}"
    return lane


def run_remote(call: RemoteCall, key: str) -> tuple[RemoteOutcome | None, str]:
    """Run one attempt on this worker; returns its outcome (None: not begun, the run was
    stopped) and the lane it ran on."""
    lane = lane_name()
    if call.run_id in _stopped and not call.always:
        return None, lane
    try:
        get_worker().log_event(TOPIC, [key, lane])
    except Exception:  # noqa: BLE001 - telling is best effort; the outcome still comes back
        pass
    return run_call(call, cloudpickle.dumps, cloudpickle.loads), lane
