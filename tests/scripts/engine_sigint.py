"""Driven by tests/test_interrupt.py: a run that the test interrupts with real SIGINTs.

Usage: python engine_sigint.py finish|stuck

Prints ``RUNNING`` once both long tasks are running on workers, ``INTERRUPTED <json>`` for
every interrupt the engine reports, and finally ``SUMMARY <json>``. In ``finish`` mode the
long tasks return as soon as the run is interrupted; in ``stuck`` mode they never return on
their own, so only a second SIGINT gets ``start()`` back.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from thread_order import EventKind, Scheduler

HOLD = 60.0  # far longer than any test waits


def say(line: str) -> None:
    # the start() thread is never captured, but write to the real stream to be explicit
    sys.__stdout__.write(line + "\n")
    sys.__stdout__.flush()


def main(mode: str) -> int:
    interrupted = threading.Event()
    never = threading.Event()
    gate = interrupted if mode == "finish" else never
    running: list[str] = []
    marks: dict[str, float] = {}

    def long_task(name):
        def fn():
            if not gate.wait(HOLD):
                raise RuntimeError(f"{name} was never released")
            return name
        return fn

    def teardown(state):
        state["torn_down"] = True

    s = Scheduler(workers=2)
    s.register(long_task("a"), "a")
    s.register(long_task("b"), "b")
    s.register(lambda: "c", "c", after=["a"])
    s.register(lambda: "d", "d")
    s.register(teardown, "teardown", after=["a", "c"], with_state=True, always=True)
    s.register(lambda: "post", "post", after=["teardown"])

    def on_running(event):
        running.append(event.name)
        if len(running) == 2:
            say("RUNNING")

    def on_interrupted(event):
        marks.setdefault("first_interrupt", time.monotonic())
        interrupted.set()
        say("INTERRUPTED " + json.dumps(dict(event.data)))

    s.subscribe(on_running, EventKind.TASK_RUNNING)
    s.subscribe(on_interrupted, EventKind.RUN_INTERRUPTED)
    summary = s.start()
    returned = time.monotonic()
    say("SUMMARY " + json.dumps({
        "statuses": {n: t["status"] for n, t in summary["tasks"].items()},
        "reasons": {n: t["reason"] for n, t in summary["tasks"].items()},
        "interrupted": summary["interrupted"],
        "text": summary["text"],
        "torn_down": s.state.get("torn_down", False),
        "results": {k: v for k, v in s.state["results"].items()},
        "seconds_after_interrupt": returned - marks.get("first_interrupt", returned),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
