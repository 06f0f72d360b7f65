"""An API lifecycle for the web UI tests: create -> subnets -> attach -> verify -> teardown."""

import logging
import time

from thread_order import mark

log = logging.getLogger("lifecycle")


def setup_state(state):
    state.setdefault("region", "eu-west-1")
    state["session"] = f"session-for-{state['region']}"


def _step(state, name):
    time.sleep(float(state.get("delay", 0.05)))
    if state.get("fail_at") == name:
        raise RuntimeError(f"{name} failed on purpose (fail_at)")


@mark(tags="create")
def create_network(state):
    """Create the network everything else lives in."""
    print("creating network in", state["region"])
    _step(state, "create_network")
    return {"id": "net-1"}


@mark(after=["create_network"], tags="create")
def create_subnet_a(state):
    _step(state, "create_subnet_a")
    return "subnet-a"


@mark(after=["create_network"], tags="create")
def create_subnet_b(state):
    _step(state, "create_subnet_b")
    return "subnet-b"


@mark(after=["create_subnet_a", "create_subnet_b"])
def attach_gateway(state):
    log.info("attaching gateway")
    _step(state, "attach_gateway")


@mark(after=["attach_gateway"], tags="verify")
def verify(state):
    _step(state, "verify")
    assert state["results"]["create_subnet_a"] == "subnet-a"


@mark(after=["verify"], always=True, tags="teardown")
def teardown(state):
    """Delete the network whatever happened before."""
    print("deleting", state["results"].get("create_network"))
