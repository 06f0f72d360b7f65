"""tdrun tests: everything passes; tasks echo what they see of the state."""

from thread_order import dmark, mark


@mark()
def first(state):
    return {"env": state.get("env"), "region": state.get("region"), "mock": state["results"].get("zero")}


@dmark(after=["first"])
def second():
    return "second"


@dmark(after=["first"])
def third():
    return "third"


@mark(after=["second", "third"])
def fourth(state):
    return [state["results"].get("second"), state["results"].get("third")]
