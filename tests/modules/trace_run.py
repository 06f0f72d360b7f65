"""tests/trace: two workers side by side, a retry, a failure, a skip and a teardown."""

import threading

from thread_order import mark

# both roots wait here, so the run is sure to use two worker threads at once
_side_by_side = threading.Barrier(2)


@mark()
def left(state):
    _side_by_side.wait(timeout=30)


@mark()
def right(state):
    _side_by_side.wait(timeout=30)


@mark(after=["left"], retries=1)
def flaky(state):
    with state["_state_lock"]:
        state["tries"] = state.get("tries", 0) + 1
        tries = state["tries"]
    if tries < 2:
        raise ConnectionError(f"try {tries} refused")


@mark(after=["right"])
def broken(state):
    raise RuntimeError("broken on purpose")


@mark(after=["broken"])
def never(state):
    pass


@mark(after=["flaky", "right"])
def joined(state):
    pass


@mark(after=["joined", "never"], always=True)
def teardown(state):
    pass
