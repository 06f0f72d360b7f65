"""The tdrun demo: the lifecycle of a virtual network against a small JSON API.

    tdrun examples/demo.py                           # watch it in the live view
    tdrun examples/demo.py --fail_at=create_subnet_a # inject a failure: skips and teardown
    tdrun examples/demo.py --log                     # the HTTP calls as they happen
    tdrun examples/demo.py --graph                   # the plan, without running it

Create a network, then two subnets and a gateway in parallel, route a subnet
through the gateway, verify and update, and finally delete everything in
reverse order. The spare subnets are one parametrized task per CIDR
(``create_spare[10.20.8.0/24]``...): each case is verified and deleted by the
cases of ``verify_spare`` and ``delete_spare`` with the same CIDR, so a failed
case (``--fail_at="create_spare[10.20.8.0/24]"``) skips only its own verify. The API
allows two creates at a time, so the create steps after the network share a pool of
two (``POOLS``, ``pool="creates"``): the others wait for a slot without holding a
thread, and the live view counts them. The delete tasks are marked ``always=True``: they run even when
something before them failed, so nothing is left behind. ``setup_state``
starts the API on 127.0.0.1 on a free port unless ``--api_url=URL`` is given.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request

from thread_order import mark

log = logging.getLogger("demo")

#: at most two create calls at once, as the API's quota allows (tdrun --pool creates=N overrides)
POOLS = {"creates": 2}


# ---------------------------------------------------------------------------- hooks tdrun calls


def setup_state(state):
    """Called once before the run: start the API and check the options typed in."""
    from demo_api import prepare_demo_state

    prepare_demo_state(state, TASKS)


def add_logging_highlights():
    """Colour what matters in ``--log`` output."""
    return [
        (re.compile(r"\b(GET|POST|PATCH|DELETE)\b"), "bold cyan"),
        (re.compile(r"-> 2\d\d\b"), "green"),
        (re.compile(r"-> [45]\d\d\b.*"), "bold red"),
        (re.compile(r"\b(net|subnet|gw|rt)-[0-9a-f]{6}\b"), "magenta"),
    ]


# ---------------------------------------------------------------------------- a tiny client


class ApiError(Exception):
    """The API answered with an error status."""


def call(state, method, path, body=None, task=None):
    """One JSON request; a task named by ``--fail_at`` gets an injected server error."""
    url = state["api_url"] + path
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if task is not None and state.get("fail_at") == task:
        request.add_header("X-Fault", "500")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    ms = (time.perf_counter() - t0) * 1000
    payload = json.loads(raw) if raw else None
    log.info("%s %s -> %d (%.0f ms)", method, path, status, ms)
    if status >= 400:
        message = payload.get("error") if isinstance(payload, dict) else raw.decode(errors="replace")
        raise ApiError(f"{method} {path} -> {status}: {message}")
    return payload


def ident(state, task):
    """The id a create task returned (or a mocked ``--result-TASK=ID``); None if it never ran."""
    result = state["results"].get(task)
    if isinstance(result, dict):
        return result["id"]
    return result or None


def delete(state, kind, task, me):
    item = ident(state, task)
    if item is None:
        print(f"{task} created nothing: nothing to delete")
        return None
    try:
        call(state, "DELETE", f"/{kind}/{item}", task=me)
    except ApiError as exc:
        if "-> 404" not in str(exc):
            raise
        log.warning("%s %s was already gone", kind[:-1], item)
    return item


# ---------------------------------------------------------------------------- create


@mark(tags="create")
def create_network(state):
    return call(state, "POST", "/networks", {"name": "demo-net", "cidr": "10.20.0.0/16"}, "create_network")


@mark(after=["create_network"], tags="create", pool="creates")
def create_subnet_a(state):
    body = {"network_id": ident(state, "create_network"), "name": "subnet-a", "cidr": "10.20.1.0/24"}
    return call(state, "POST", "/subnets", body, "create_subnet_a")


@mark(after=["create_network"], tags="create", pool="creates")
def create_subnet_b(state):
    body = {"network_id": ident(state, "create_network"), "name": "subnet-b", "cidr": "10.20.2.0/24"}
    return call(state, "POST", "/subnets", body, "create_subnet_b")


@mark(after=["create_network"], tags="create", pool="creates")
def create_gateway(state):
    body = {"network_id": ident(state, "create_network"), "name": "edge-gw"}
    return call(state, "POST", "/gateways", body, "create_gateway")


@mark(after=["create_gateway", "create_subnet_a"], tags="create", pool="creates")
def create_route(state):
    body = {"subnet_id": ident(state, "create_subnet_a"), "gateway_id": ident(state, "create_gateway"),
            "destination": "0.0.0.0/0"}
    return call(state, "POST", "/routes", body, "create_route")


#: one spare subnet per CIDR: create_spare[10.20.8.0/24], verify_spare[...], delete_spare[...]
SPARES = {"cidr": ["10.20.8.0/24", "10.20.9.0/24"]}


@mark(after=["create_network"], tags="create", params=SPARES, pool="creates")
def create_spare(state, cidr):
    body = {"network_id": ident(state, "create_network"), "name": f"spare-{cidr}", "cidr": cidr}
    return call(state, "POST", "/subnets", body, f"create_spare[{cidr}]")


@mark(after=["create_spare"], tags="verify", params=SPARES)  # waits for the case with its cidr only
def verify_spare(state, cidr):
    return verify_subnet(state, f"create_spare[{cidr}]", f"verify_spare[{cidr}]", cidr)


# ---------------------------------------------------------------------------- verify and update


def verify_subnet(state, task, me, cidr):
    subnet = call(state, "GET", f"/subnets/{ident(state, task)}", task=me)
    assert subnet["cidr"] == cidr, f"{subnet['id']} has cidr {subnet['cidr']}, expected {cidr}"
    return subnet["id"]


@mark(after=["create_subnet_a"], tags="verify")
def verify_subnet_a(state):
    return verify_subnet(state, "create_subnet_a", "verify_subnet_a", "10.20.1.0/24")


@mark(after=["create_subnet_b"], tags="verify")
def verify_subnet_b(state):
    return verify_subnet(state, "create_subnet_b", "verify_subnet_b", "10.20.2.0/24")


@mark(after=["verify_subnet_a", "verify_subnet_b", "create_route"], tags="update")
def update_network(state):
    body = {"description": "two subnets, default route through edge-gw"}
    return call(state, "PATCH", f"/networks/{ident(state, 'create_network')}", body, "update_network")


# the API applies updates asynchronously: poll through retries until it settles
@mark(after=["update_network"], tags="verify", retries=4, retry_delay=0.25)
def verify_network(state):
    net_id = ident(state, "create_network")
    network = call(state, "GET", f"/networks/{net_id}", task="verify_network")
    assert network["status"] == "ready", f"network {net_id} is still {network['status']}"
    subnets = [s for s in call(state, "GET", f"/subnets?network_id={net_id}")
               if not s["name"].startswith("spare-")]
    assert len(subnets) == 2, f"network {net_id} has {len(subnets)} subnets, expected 2"
    return network["description"]


# ---------------------------------------------------------------------------- teardown, in reverse


@mark(after=["verify_network"], always=True, tags="teardown")
def delete_route(state):
    return delete(state, "routes", "create_route", "delete_route")


@mark(after=["delete_route"], always=True, tags="teardown")
def delete_subnet_a(state):
    return delete(state, "subnets", "create_subnet_a", "delete_subnet_a")


@mark(after=["verify_network"], always=True, tags="teardown")
def delete_subnet_b(state):
    return delete(state, "subnets", "create_subnet_b", "delete_subnet_b")


@mark(after=["delete_route"], always=True, tags="teardown")
def delete_gateway(state):
    return delete(state, "gateways", "create_gateway", "delete_gateway")


@mark(after=["verify_spare"], always=True, tags="teardown", params=SPARES)
def delete_spare(state, cidr):
    return delete(state, "subnets", f"create_spare[{cidr}]", f"delete_spare[{cidr}]")


@mark(after=["delete_subnet_a", "delete_subnet_b", "delete_gateway", "delete_spare"], always=True,
      tags="teardown")
def delete_network(state):
    return delete(state, "networks", "create_network", "delete_network")


def _task_names():
    """Every task name, the cases of a parametrized task included (for ``--fail_at``)."""
    names = []
    for name, fn in list(globals().items()):
        options = getattr(fn, "__thread_order__", None)
        if options is None:
            continue
        params = options.get("params")
        names += [f"{name}[{value}]" for value in params["cidr"]] if params else [name]
    return names


TASKS = _task_names()
