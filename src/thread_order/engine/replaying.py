"""A replay's rule on the dispatcher's side: what must have started or finished before a task may.

Under ``tdrun replay`` (order.py's ``ReplayOrder``), a task may be handed out
only once every task that had finished before it started, in the recording,
has been handed out (its worker then waits for them at the ``ReplayGate``) --
or has finished, for a task whose clock starts when it is handed out (one
with a timeout) and for a coroutine (held on the dispatcher, not parked on
the loop). Both scans move a prefix of the recording's finish order forward,
never back: a task does not return to waiting.
"""

from __future__ import annotations

__all__ = ["ReplayMethods"]


class ReplayMethods:
    """For a ``dispatch.Run`` (which inherits these); dispatcher thread only."""

    def _open_gate(self) -> None:
        """Let every task parked at the replay gate go (the recording cannot be followed)."""
        for job in self.gate.open_all():
            self.jobs.put(job)

    def _replay_allows(self, idx: int) -> bool:
        """May thread task ``idx`` be handed out now (see the module docstring)?"""
        if self.options[idx].timeout is not None:
            return self._finished_before(idx)
        need = self.need[idx]
        p = self.launched_prefix
        if need <= p:
            return True
        order = self.plan.finish_order
        where = self.where
        end = len(order)
        out = (self.RUNNING, self.DONE)
        while p < end and where[order[p]] in out:
            p += 1
        self.launched_prefix = p
        return need <= p

    def _finished_before(self, idx: int) -> bool:
        """Has every task that had finished before ``idx`` started, in the recording, finished?"""
        need = self.need[idx]
        p = self.finished_prefix
        if need <= p:
            return True
        order = self.plan.finish_order
        where = self.where
        end = len(order)
        done = self.DONE
        while p < end and where[order[p]] == done:
            p += 1
        self.finished_prefix = p
        return need <= p
