"""The tdrun demo with an async client: the same network lifecycle, as ``async def`` tasks.

    tdrun examples/demo_async.py                           # watch it in the live view
    tdrun examples/demo_async.py --fail_at=create_subnet_a # inject a failure: skips and teardown
    tdrun examples/demo_async.py --log                     # the HTTP calls as they happen

What ``examples/demo.py`` does with a thread per call, done with one
``httpx.AsyncClient`` (``pip install "thread-order[examples]"``) shared by every
task: all of them run on the run's one event loop, so the client's connection
pool is reused from the first request to the last. ``setup_state`` creates
the client outside any loop; httpx binds it to a loop only when it is first
used, and every coroutine of the run runs on that same loop. The last task,
``close_client`` (``always=True``), closes it on that loop too.

``verify_network`` stays a plain function (a thread task, with retries) to
show that both kinds mix in one graph; ``inventory`` is a read-modify-write
across an ``await``, guarded by the run's asyncio lock, ``state["_async_lock"]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request

import httpx

from thread_order import mark

log = logging.getLogger("demo_async")


# ---------------------------------------------------------------------------- hooks tdrun calls


def setup_state(state):
    """Called once before the run: start the API (unless ``--api_url``) and make the client."""
    from demo_api import prepare_demo_state

    prepare_demo_state(state, TASKS)
    # no loop runs here: httpx binds the client to the run's loop on its first request
    state["client"] = httpx.AsyncClient(base_url=state["api_url"], timeout=10)


# ---------------------------------------------------------------------------- a tiny client


class ApiError(Exception):
    """The API answered with an error status."""


async def call(state, method, path, body=None, task=None):
    """One JSON request; a task named by ``--fail_at`` gets an injected server error."""
    headers = {"X-Fault": "500"} if task is not None and state.get("fail_at") == task else {}
    t0 = time.perf_counter()
    response = await state["client"].request(method, path, json=body, headers=headers)
    ms = (time.perf_counter() - t0) * 1000
    log.info("%s %s -> %d (%.0f ms)", method, path, response.status_code, ms)
    payload = response.json() if response.content else None
    if response.status_code >= 400:
        message = payload.get("error") if isinstance(payload, dict) else response.text
        raise ApiError(f"{method} {path} -> {response.status_code}: {message}")
    return payload


def ident(state, task):
    """The id a create task returned (or a mocked ``--result-TASK=ID``); None if it never ran."""
    result = state["results"].get(task)
    if isinstance(result, dict):
        return result["id"]
    return result or None


async def inventory(state, kind, item):
    """Count what was created, per kind: a read-modify-write with an ``await`` in the middle."""
    async with state["_async_lock"]:  # not state["_state_lock"]: held across an await it stalls the loop
        counts = dict(state.get("inventory", {}))
        await asyncio.sleep(0)  # another coroutine runs here; the lock keeps its update from being lost
        counts[kind] = counts.get(kind, 0) + 1
        state["inventory"] = counts
    return item


async def create(state, kind, body, task):
    item = await call(state, "POST", f"/{kind}", body, task)
    return await inventory(state, kind, item)


async def delete(state, kind, task, me):
    item = ident(state, task)
    if item is None:
        print(f"{task} created nothing: nothing to delete")
        return None
    try:
        await call(state, "DELETE", f"/{kind}/{item}", task=me)
    except ApiError as exc:
        if "-> 404" not in str(exc):
            raise
        log.warning("%s %s was already gone", kind[:-1], item)
    return item


# ---------------------------------------------------------------------------- create


@mark(tags="create")
async def create_network(state):
    return await create(state, "networks", {"name": "demo-net", "cidr": "10.20.0.0/16"}, "create_network")


@mark(after=["create_network"], tags="create")
async def create_subnet_a(state):
    body = {"network_id": ident(state, "create_network"), "name": "subnet-a", "cidr": "10.20.1.0/24"}
    return await create(state, "subnets", body, "create_subnet_a")


@mark(after=["create_network"], tags="create")
async def create_subnet_b(state):
    body = {"network_id": ident(state, "create_network"), "name": "subnet-b", "cidr": "10.20.2.0/24"}
    return await create(state, "subnets", body, "create_subnet_b")


@mark(after=["create_network"], tags="create")
async def create_gateway(state):
    body = {"network_id": ident(state, "create_network"), "name": "edge-gw"}
    return await create(state, "gateways", body, "create_gateway")


@mark(after=["create_gateway", "create_subnet_a"], tags="create")
async def create_route(state):
    body = {"subnet_id": ident(state, "create_subnet_a"), "gateway_id": ident(state, "create_gateway"),
            "destination": "0.0.0.0/0"}
    return await create(state, "routes", body, "create_route")


#: one spare subnet per CIDR: create_spare[10.20.8.0/24], verify_spare[...], delete_spare[...]
SPARES = {"cidr": ["10.20.8.0/24", "10.20.9.0/24"]}


@mark(after=["create_network"], tags="create", params=SPARES)
async def create_spare(state, cidr):
    body = {"network_id": ident(state, "create_network"), "name": f"spare-{cidr}", "cidr": cidr}
    return await create(state, "subnets", body, f"create_spare[{cidr}]")


@mark(after=["create_spare"], tags="verify", params=SPARES)
async def verify_spare(state, cidr):
    return await verify_subnet(state, f"create_spare[{cidr}]", f"verify_spare[{cidr}]", cidr)


# ---------------------------------------------------------------------------- verify and update


async def verify_subnet(state, task, me, cidr):
    subnet = await call(state, "GET", f"/subnets/{ident(state, task)}", task=me)
    assert subnet["cidr"] == cidr, f"{subnet['id']} has cidr {subnet['cidr']}, expected {cidr}"
    return subnet["id"]


@mark(after=["create_subnet_a"], tags="verify")
async def verify_subnet_a(state):
    return await verify_subnet(state, "create_subnet_a", "verify_subnet_a", "10.20.1.0/24")


@mark(after=["create_subnet_b"], tags="verify")
async def verify_subnet_b(state):
    return await verify_subnet(state, "create_subnet_b", "verify_subnet_b", "10.20.2.0/24")


@mark(after=["verify_subnet_a", "verify_subnet_b", "create_route"], tags="update")
async def update_network(state):
    body = {"description": "two subnets, default route through edge-gw"}
    return await call(state, "PATCH", f"/networks/{ident(state, 'create_network')}", body, "update_network")


def _get(state, path, task=None):
    """A blocking GET, for the thread task below (a coroutine must never block the loop)."""
    request = urllib.request.Request(state["api_url"] + path)
    if task is not None and state.get("fail_at") == task:
        request.add_header("X-Fault", "500")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ApiError(f"GET {path} -> {exc.code}: {json.loads(exc.read()).get('error')}") from None


# a plain function in the same graph: it runs on a worker thread, its retries poll the API
@mark(after=["update_network"], tags="verify", retries=4, retry_delay=0.25)
def verify_network(state):
    net_id = ident(state, "create_network")
    network = _get(state, f"/networks/{net_id}", "verify_network")
    assert network["status"] == "ready", f"network {net_id} is still {network['status']}"
    subnets = [s for s in _get(state, f"/subnets?network_id={net_id}") if not s["name"].startswith("spare-")]
    assert len(subnets) == 2, f"network {net_id} has {len(subnets)} subnets, expected 2"
    print("inventory:", state.get("inventory"))
    return network["description"]


# ---------------------------------------------------------------------------- teardown, in reverse


@mark(after=["verify_network"], always=True, tags="teardown")
async def delete_route(state):
    return await delete(state, "routes", "create_route", "delete_route")


@mark(after=["delete_route"], always=True, tags="teardown")
async def delete_subnet_a(state):
    return await delete(state, "subnets", "create_subnet_a", "delete_subnet_a")


@mark(after=["verify_network"], always=True, tags="teardown")
async def delete_subnet_b(state):
    return await delete(state, "subnets", "create_subnet_b", "delete_subnet_b")


@mark(after=["delete_route"], always=True, tags="teardown")
async def delete_gateway(state):
    return await delete(state, "gateways", "create_gateway", "delete_gateway")


@mark(after=["verify_spare"], always=True, tags="teardown", params=SPARES)
async def delete_spare(state, cidr):
    return await delete(state, "subnets", f"create_spare[{cidr}]", f"delete_spare[{cidr}]")


@mark(after=["delete_subnet_a", "delete_subnet_b", "delete_gateway", "delete_spare"], always=True,
      tags="teardown")
async def delete_network(state):
    return await delete(state, "networks", "create_network", "delete_network")


@mark(after=["delete_network"], always=True, tags="teardown")
async def close_client(state):
    """Close the shared client on the loop it was used on."""
    await state["client"].aclose()


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
