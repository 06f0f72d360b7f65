"""tdrun tests: ``hold`` blocks until a line arrives on stdin, so a test can interrupt the run mid-task."""

import logging
import sys

from thread_order import mark

log = logging.getLogger("cli_hold")


@mark()
def setup(state):
    return "ready"


@mark(after=["setup"])
def hold(state):
    log.warning("hold is running")
    return sys.stdin.readline().strip()


@mark(after=["hold"])
def after_hold(state):
    return "should be cancelled"


@mark(after=["hold", "after_hold"], always=True)
def teardown(state):
    log.warning("teardown ran")
    print("teardown ran")
    return "cleaned"
