"""tdrun tests: tasks talking JSON to a real HTTP server on loopback (``--api_url=URL``)."""

import json
import urllib.request

from thread_order import mark


def _call(state, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(state["api_url"] + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


@mark()
def create_network(state):
    return _call(state, "POST", "/networks", {"name": "t", "cidr": "10.0.0.0/16"})["id"]


@mark(after=["create_network"])
def create_subnet(state):
    net = state["results"]["create_network"]
    return _call(state, "POST", "/subnets", {"network_id": net, "name": "s", "cidr": "10.0.1.0/24"})["id"]


@mark(after=["create_subnet"])
def list_subnets(state):
    net = state["results"]["create_network"]
    return [s["id"] for s in _call(state, "GET", f"/subnets?network_id={net}")]


@mark(after=["list_subnets"], always=True)
def delete_subnet(state):
    _call(state, "DELETE", f"/subnets/{state['results']['create_subnet']}")


@mark(after=["delete_subnet"], always=True)
def delete_network(state):
    _call(state, "DELETE", f"/networks/{state['results']['create_network']}")
