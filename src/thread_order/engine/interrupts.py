"""Stopping a run: Ctrl-C and cancel(), the first request and the forced second one.

The first request lets running tasks finish, starts nothing new but ``always``
tasks and cancels the rest as their turn comes; the second (or ``force``)
stops waiting at once. ``Run`` (dispatch.py) inherits these methods.
"""

from __future__ import annotations

import logging

from .events import EventKind
from .lanes import MSG_INTERRUPT
from .model import TaskStatus

__all__ = ["InterruptMethods"]

_CANCELLED = TaskStatus.CANCELLED


class InterruptMethods:
    """The interrupt side of a ``dispatch.Run``; everything but request_stop runs on the dispatcher."""

    def request_stop(self, force: bool, from_signal: bool = False) -> None:
        """Ctrl-C or cancel(): safe from any thread and from a signal handler.

        Once this returns (from cancel()), no worker starts a task that is not
        ``always``. A signal handler must not take the handshake lock (the
        main thread may hold it), and needs no such promise.
        """
        if from_signal:
            self.stop_requested = True
        else:
            with self.handshake:
                self.stop_requested = True
        self.inbox.put((MSG_INTERRUPT, force))

    def _interrupt(self, force: bool) -> None:
        if self.gate is not None:
            self._open_gate()  # parked replayed tasks go back on the queue, to be dropped
        first = not self.interrupted
        self.interrupted = self.stop_requested = True
        if self.pool_gate is not None and self.pool_gate.named:  # a task a worker took is running, not ready
            with self.handshake:
                self.stop_requested = True
            self._collect_handoffs()
        if first:
            if self.executor is not None:  # before anyone hears of it: what is queued there stays unstarted
                self.executor.stop()
            # its own logger, so a front-end that reports RUN_INTERRUPTED itself can mute it
            logging.getLogger("thread_order.interrupt").warning(
                "interrupted: running tasks may finish, teardown tasks still run; "
                "interrupt again to stop waiting")
            self.events.emit(EventKind.RUN_INTERRUPTED, data={"force": False})
            # Only what is ready now is cancelled now. A waiting task is cancelled by _decide
            # when its dependencies are final, like any other decision: cancelling it early
            # would release an `always` teardown below it while something upstream still runs.
            where = self.where
            options = self.options  # may hold tasks registered since: only the first n are ours
            for i in range(self.n):
                if options[i].always:
                    continue
                if where[i] in (self.RETRY_WAIT, self.READY):
                    self._stop_unstarted(i)
            if not force:
                return
        if not self.forced:
            with self.handshake:  # from here on, workers drop every job still queued
                self.forced = True
            self.events.emit(EventKind.RUN_INTERRUPTED, data={"force": True})
            for i in range(self.n):
                if self.where[i] == self.DONE:
                    continue
                job = self.job_of[i] if self.where[i] in (self.RUNNING, self.WAITING) else None
                if job is not None and self.where[i] == self.WAITING:
                    # started directly by a worker, whose report has not been handled yet
                    self.attempts[i] = job.attempt
                # an earlier attempt that failed keeps the task FAILED with its error, as a
                # first interrupt does: a teardown waiting for its retry did fail
                earlier = self.failed_attempt.get(i)
                if job is not None and job.started:
                    if earlier is not None:
                        record = earlier._replace(attempts=job.attempt, reason=(
                            f"retries stopped: attempt {job.attempt} still running when the run was stopped"))
                    else:
                        reason = "abandoned: still running when the run was stopped"
                        record = self._final(i, _CANCELLED, reason)._replace(thread=job.lane.name)
                else:
                    if job is not None:
                        self.attempts[i] -= 1  # queued, never started
                    if earlier is not None:
                        record = earlier._replace(reason="retries stopped: the run was stopped")
                    else:
                        record = self._final(i, _CANCELLED, "cancelled: the run was stopped")
                self._finish(i, record, pending=[])

    def _stop_unstarted(self, idx: int) -> None:
        """An interrupt keeps ``idx`` from starting: CANCELLED, or FAILED if an earlier
        attempt already ran and failed (its retries are cut short, its error kept)."""
        earlier = self.failed_attempt.get(idx)
        if earlier is not None:
            self._finish(idx, earlier._replace(reason="retries stopped: the run was interrupted"))
        else:
            self._finish(idx, self._final(idx, _CANCELLED, "cancelled: the run was interrupted"))
