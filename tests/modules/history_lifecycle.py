"""tests/test_history_cli.py: an API lifecycle; ``--fail=TASK`` makes TASK raise, ``--slow=TASK`` slows it."""

import time

from thread_order import mark


def step(state, name):
    if state.get("slow") == name:
        time.sleep(0.2)
    print(f"{name} done")
    if state.get("fail") == name:
        raise RuntimeError(f"{name} failed on purpose")


@mark(tags="smoke")
def login(state):
    step(state, "login")


@mark(after=["login"])
def create(state):
    step(state, "create")


@mark(after=["create"])
def update(state):
    step(state, "update")


@mark(after=["update"])
def verify(state):
    step(state, "verify")


@mark(after=["verify"], always=True)
def teardown(state):
    step(state, "teardown")
