"""A module whose verify reads what create writes without after=: it passes by timing."""

import threading

from thread_order import mark

written = threading.Event()


@mark()
def verify_subnet(state):
    assert written.wait(10)
    assert state["subnet_id"] == "subnet-1"


@mark()
def create_subnet(state):
    state["subnet_id"] = "subnet-1"
    written.set()
