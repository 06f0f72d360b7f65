"""A run that waits at a gate the test opens: for cancelling mid-run."""

import threading

from thread_order import dmark

STARTED = threading.Event()
GATE = threading.Event()


@dmark()
def hold():
    STARTED.set()
    if not GATE.wait(30):
        raise TimeoutError("the test never opened the gate")


@dmark(after=["hold"])
def step_1():
    pass


@dmark(after=["hold"])
def step_2():
    pass


@dmark(after=["step_1", "step_2"])
def step_3():
    pass


@dmark(after=["step_3"], always=True)
def teardown():
    print("teardown ran")
