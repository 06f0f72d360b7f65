"""tdrun tests on a cluster: ``hold`` blocks until the test answers on a socket (``--port=N``),
so a test knows it is running and can interrupt the run mid-task."""

import socket

from thread_order import mark


@mark()
def setup(state):
    return "ready"


@mark(after=["setup"])
def hold(state):
    with socket.create_connection(("127.0.0.1", int(state["port"])), timeout=60) as conn:
        conn.sendall(b"running\n")
        return conn.recv(64).decode().strip()


@mark(after=["hold"])
def after_hold(state):
    return "should be cancelled"


@mark(after=["hold", "after_hold"], always=True)
def teardown(state):
    print("teardown ran")
    return "cleaned"
