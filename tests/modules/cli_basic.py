"""tdrun tests: a small workflow with a failure, a skip, tags, logging and a teardown."""

import logging
import re

from thread_order import mark

log = logging.getLogger("cli_basic")


def setup_state(state):
    state["setup_saw"] = sorted(k for k in state if not k.startswith("_"))


def add_logging_highlights():
    return [(re.compile(r"\bcreated\b"), "bold green")]


@mark(tags=["api", "create"])
def create(state):
    log.info("create: created item-1")
    log.debug("create: debug detail")
    return "item-1"


@mark(after=["create"], tags=["api"])
def update(state):
    print("update: about to fail")
    raise RuntimeError("update exploded")


@mark(after=["update"], tags=["api", "verify"])
def verify(state):
    return "verified"


@mark(after=["create"], tags=["report"])
def report(state):
    print("env=%s region=%s setup_saw=%s" % (state.get("env"), state.get("region"), state.get("setup_saw")))


@mark(after=["verify", "report"], always=True, tags=["api", "teardown"])
def teardown(state):
    print("teardown: deleting", state["results"].get("create"))
    return "deleted"
