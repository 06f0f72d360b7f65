"""Driven by tests/test_history.py: a real process recording a run into a history file.

Usage: python history_run.py kill|many DB [TASKS]

``kill``: five quick tasks print a line each, then ``hold`` (which needs all
five) waits until the recorder has committed them, prints ``READY <run id>``
and blocks forever, as does ``stuck``, started alongside. The test SIGKILLs us.

``many``: attaches, prints ``ATTACHED <run id>``, waits for a line on stdin so
several processes start together, runs TASKS tasks (a few chains that sleep a
little: ~0.4 s, several commits, interleaved with the others) and prints ``DONE <run id> <passed>``.
"""

from __future__ import annotations

import sys
import threading
import time

from thread_order import Scheduler
from thread_order.history import HistoryRecorder

FOREVER = 600.0  # far longer than any test waits


def say(line: str) -> None:
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()


def kill_mode(db: str) -> int:
    sched = Scheduler(workers=3, state={"user": "alice", "api_token": "t0ps3cret"})
    recorder = HistoryRecorder(db)
    never = threading.Event()

    def quick(i):
        def task():
            print(f"quick {i} says hello")
        return task

    def hold():
        if not recorder.flush(timeout=30):
            say("FLUSH TIMED OUT")
        say(f"READY {recorder.run_id}")
        never.wait(FOREVER)

    def stuck():
        never.wait(FOREVER)

    names = [f"quick_{i}" for i in range(5)]
    for i, name in enumerate(names):
        sched.register(quick(i), name)
    sched.register(hold, "hold", after=names)
    sched.register(stuck, "stuck", after=["quick_0"])
    sched.register(lambda: None, "after_hold", after=["hold"])
    recorder.attach(sched, {"module": "history_run.py", "target": "history_run.py", "argv": sys.argv})
    sched.start()
    recorder.finish()
    say("NOT KILLED")
    return 1


def many_mode(db: str, tasks: int) -> int:
    sched = Scheduler(workers=4)
    chains = 4
    for i in range(tasks):
        after = [f"t{i - chains}"] if i >= chains else []
        sched.register(lambda: time.sleep(0.004), f"t{i}", after=after)
    recorder = HistoryRecorder(db)
    recorder.attach(sched, {"module": "history_run.py", "target": "history_run.py", "argv": sys.argv})
    say(f"ATTACHED {recorder.run_id}")
    sys.stdin.readline()  # the test lets every process go at once
    summary = sched.start()
    run_id = recorder.finish()
    say(f"DONE {run_id} {len(summary['passed'])}")
    return 0


if __name__ == "__main__":
    mode, db = sys.argv[1], sys.argv[2]
    if mode == "kill":
        sys.exit(kill_mode(db))
    sys.exit(many_mode(db, int(sys.argv[3]) if len(sys.argv) > 3 else 200))
