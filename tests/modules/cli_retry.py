"""tdrun tests: a task that fails twice and then passes."""

from thread_order import mark


@mark(retries=2)
def flaky(state):
    with state["_state_lock"]:
        state["tries"] = state.get("tries", 0) + 1
        tries = state["tries"]
    if tries < 3:
        raise ConnectionError(f"try {tries} refused")
    return tries


@mark(after=["flaky"])
def after_flaky(state):
    return state["results"]["flaky"]
