"""A small in-memory JSON API of virtual networks, for the tdrun demo.

Resources: networks, subnets (in a network), gateways (in a network) and
routes (a subnet's traffic through a gateway). Deleting something that others
still use answers 409, so teardown has to run in reverse order. Every request
waits a random latency, like a real cloud API; a request carrying the header
``X-Fault: 500`` (or any status) gets that error back, to inject failures.

Run it alone with ``python examples/demo_api.py [--port N]``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import random
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["DemoAPI", "prepare_demo_state"]

# collection name -> (id prefix, required fields, parent references: field -> collection)
SCHEMA = {
    "networks": ("net", ("name", "cidr"), {}),
    "subnets": ("subnet", ("network_id", "name", "cidr"), {"network_id": "networks"}),
    "gateways": ("gw", ("network_id", "name"), {"network_id": "networks"}),
    "routes": ("rt", ("subnet_id", "gateway_id", "destination"),
               {"subnet_id": "subnets", "gateway_id": "gateways"}),
}
#: a network stays "updating" this long after a PATCH, as real APIs settle asynchronously
SETTLE_SECONDS = 0.4


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Store:
    """The API's data; one lock guards every collection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, dict[str, dict]] = {name: {} for name in SCHEMA}
        self.requests = 0

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def create(self, kind: str, body: dict) -> dict:
        prefix, required, parents = SCHEMA[kind]
        missing = [f for f in required if not body.get(f)]
        if missing:
            raise ApiError(422, f"missing field(s): {', '.join(missing)}")
        with self._lock:
            for field, parent in parents.items():
                if body[field] not in self.items[parent]:
                    raise ApiError(404, f"{field} {body[field]!r} does not exist")
            item = {k: v for k, v in body.items() if isinstance(v, (str, int, float, bool))}
            item["id"] = f"{prefix}-{secrets.token_hex(3)}"
            item["status"] = "ready"
            item["created_at"] = time.time()
            self.items[kind][item["id"]] = item
            return dict(item)

    def get(self, kind: str, item_id: str) -> dict:
        with self._lock:
            item = self.items[kind].get(item_id)
            if item is None:
                raise ApiError(404, f"{kind[:-1]} {item_id!r} not found")
            if item.get("settles_at", 0) > time.time():
                return dict(item, status="updating")
            return {k: v for k, v in item.items() if k != "settles_at"} | {"status": "ready"}

    def list(self, kind: str, filters: dict[str, str]) -> list[dict]:
        with self._lock:
            return [dict(i) for i in self.items[kind].values()
                    if all(str(i.get(k)) == v for k, v in filters.items())]

    def update(self, kind: str, item_id: str, body: dict) -> dict:
        with self._lock:
            item = self.items[kind].get(item_id)
            if item is None:
                raise ApiError(404, f"{kind[:-1]} {item_id!r} not found")
            for key, value in body.items():
                if key not in ("id", "status", "created_at") and isinstance(value, (str, int, float, bool)):
                    item[key] = value
            item["settles_at"] = time.time() + SETTLE_SECONDS
            return dict(item, status="updating")

    def delete(self, kind: str, item_id: str) -> None:
        with self._lock:
            if item_id not in self.items[kind]:
                raise ApiError(404, f"{kind[:-1]} {item_id!r} not found")
            for child, (_, _, parents) in SCHEMA.items():
                for field, parent in parents.items():
                    if parent == kind and any(i[field] == item_id for i in self.items[child].values()):
                        raise ApiError(409, f"{kind[:-1]} {item_id!r} still has {child}")
            del self.items[kind][item_id]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(items) for kind, items in self.items.items()}


_PATH = re.compile(r"^/(networks|subnets|gateways|routes)(?:/([\w-]+))?/?$")


class _Handler(BaseHTTPRequestHandler):
    server_version = "demo-api/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - http.server's name; stay quiet
        pass

    def _send(self, status: int, payload) -> None:
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError:
            raise ApiError(400, "body is not JSON") from None
        if not isinstance(data, dict):
            raise ApiError(400, "body must be a JSON object")
        return data

    def _handle(self, method: str) -> None:
        api: DemoAPI = self.server.api  # type: ignore[attr-defined]
        api.store.count_request()
        api.wait_latency()
        try:
            body = self._body() if method in ("POST", "PATCH") else {}
            fault = self.headers.get("X-Fault")
            if fault:
                code = int(fault) if fault.isdigit() else 500
                raise ApiError(code, "injected fault")
            path, _, query = self.path.partition("?")
            m = _PATH.match(path)
            if m is None:
                raise ApiError(404, f"no route {path!r}")
            kind, item_id = m.group(1), m.group(2)
            store = api.store
            if method == "GET" and item_id:
                self._send(200, store.get(kind, item_id))
            elif method == "GET":
                filters = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                self._send(200, store.list(kind, filters))
            elif method == "POST" and not item_id:
                self._send(201, store.create(kind, body))
            elif method == "PATCH" and item_id:
                self._send(200, store.update(kind, item_id, body))
            elif method == "DELETE" and item_id:
                store.delete(kind, item_id)
                self._send(204, None)
            else:
                raise ApiError(405, f"{method} not allowed on {path}")
        except ApiError as exc:
            self._send(exc.status, {"error": str(exc), "status": exc.status})

    def do_GET(self):  # noqa: N802 - http.server's names
        self._handle("GET")

    def do_POST(self):  # noqa: N802
        self._handle("POST")

    def do_PATCH(self):  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self):  # noqa: N802
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that went away mid-request (a run stopped by a second Ctrl-C cancels its
        coroutines, and their connections close) is nothing to report; anything else is."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class DemoAPI:
    """The API served on 127.0.0.1 (a free port by default) from a background thread.

    ``latency`` is the (min, max) seconds every request waits.
    """

    def __init__(self, port: int = 0, latency: tuple[float, float] = (0.15, 0.6)) -> None:
        self.store = Store()
        self.latency = latency
        self._rng = random.Random()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.api = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def wait_latency(self) -> None:
        lo, hi = self.latency
        if hi > 0:
            time.sleep(self._rng.uniform(lo, hi))

    def start(self) -> "DemoAPI":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="demo-api", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "DemoAPI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()



def prepare_demo_state(state: dict, tasks) -> None:
    """What both demos' ``setup_state`` does: start this API unless ``--api_url`` names one
    (``--latency`` seconds per call), and check ``--fail_at`` against the demo's ``tasks``."""
    if not state.get("api_url"):
        try:
            latency = float(state.get("latency", 0.9))
        except ValueError:
            raise ValueError(f"--latency={state['latency']}: expected seconds, such as 0.5") from None
        if not 0 <= latency <= 60:
            raise ValueError(f"--latency={state['latency']}: expected seconds from 0 to 60")
        api = DemoAPI(latency=(latency / 3, latency)).start()
        atexit.register(api.stop)
        state["api_url"] = api.url
    fail_at = state.get("fail_at")
    if fail_at and fail_at not in tasks:
        raise ValueError(f"--fail_at={fail_at}: no task of that name; pick one of {', '.join(tasks)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="the tdrun demo's JSON API")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--latency", type=float, default=0.6, help="maximum seconds per request")
    args = parser.parse_args()
    api = DemoAPI(args.port, (min(0.15, args.latency), args.latency)).start()
    print(f"demo API on {api.url} (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
