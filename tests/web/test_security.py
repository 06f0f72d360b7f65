"""Who may talk to the web UI, probed with real HTTP requests to a real server on 127.0.0.1.

A page on another site reaches a local server by DNS rebinding: its own name
(``127.0.0.1.evil.example``) resolves to 127.0.0.1, so the browser sends that
name as ``Host`` and ``Origin``. Only ``localhost`` and loopback addresses count.
"""

from __future__ import annotations

import httpx
import pytest

from thread_order.web.security import is_loopback
from thread_order.web.server import main as ui_main
from web_support import LiveServer, make_ui, module_path, sse_events

REBINDING_HOSTS = [
    "127.0.0.1.evil.example",
    "127.evil.example",
    "127.0.0.1.nip.io",
    "127.0.0.1.evil.example:{port}",
    "127.evil.example:{port}",
    "127.0.0.1.nip.io:{port}",
    "localhost.evil.example:{port}",
    "evil.example:{port}",
    "[::1].evil.example:{port}",
    "[::ffff:127.0.0.1].evil.example:{port}",
    "[::1]:{port}.evil.example",
    "127.0.0.1:{port}:80",
    "",
]
LOOPBACK_HOSTS = [
    "127.0.0.1:{port}",
    "127.0.0.2:{port}",
    "localhost:{port}",
    "LocalHost:{port}",
    "[::1]:{port}",
    "[::1]",
    "[::ffff:127.0.0.1]:{port}",
    "[0:0:0:0:0:0:0:1]:{port}",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with a module loaded and one recorded run, shared by the probes below."""
    ui = make_ui(tmp_path_factory.mktemp("security"))
    with LiveServer(ui) as srv, httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as http:
        assert http.post("/api/module", json={"path": module_path("web_lifecycle")}).status_code == 200
        assert http.put("/api/state", json={"values": {"delay": "0"}}).status_code == 200
        run_id = http.post("/api/runs", json={"workers": 2}).json()["id"]
        with http.stream("GET", f"/api/runs/{run_id}/events") as r:
            final = list(sse_events(r.iter_lines()))[-1][1]
        assert final["phase"] == "finished"
        srv.history_id = final["history_id"]
        srv.port = srv.url.rsplit(":", 1)[1]
        yield srv


def probes(history_id):
    """(method, path, body) of every kind of route: the page (it carries the token), the
    history (captured output), and the two changes a rebinding page would make."""
    return [
        ("GET", "/", None),
        ("GET", "/api/history", None),
        ("GET", f"/api/history/{history_id}", None),
        ("GET", f"/api/history/{history_id}/report", None),
        ("GET", f"/api/history/{history_id}/trace", None),
        ("GET", "/api/state", None),
        ("PUT", "/api/state", {"values": {"owned": "yes"}}),
        ("POST", "/api/module", {"path": module_path("web_gate")}),
    ]


@pytest.mark.parametrize("host", REBINDING_HOSTS)
def test_a_rebound_name_is_refused_on_every_route_even_with_the_token_and_its_own_origin(served, host):
    host = host.format(port=served.port)
    with httpx.Client(base_url=served.url, timeout=10) as http:
        for method, path, body in probes(served.history_id):
            # the attacker's page has read nothing yet, but give it the token and a matching
            # Origin anyway: the Host check alone must stop it
            headers = {"Host": host, "Origin": f"http://{host}", "X-Tdrun-Token": served.ui.token}
            r = http.request(method, path, json=body, headers=headers)
            assert r.status_code == 403, (method, path, r.status_code)
            assert r.json() == {"error": f"host {host!r} is not allowed: this server only "
                                         "answers on its loopback address"}
            assert served.ui.token not in r.text
    with httpx.Client(base_url=served.url, headers=served.headers, timeout=10) as http:
        entries = http.get("/api/state").json()["entries"]
        assert [e["key"] for e in entries] == ["delay"]  # no write got through
        assert http.get("/api/module").json()["target"] == module_path("web_lifecycle")


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_names_and_addresses_are_served(served, host):
    host = host.format(port=served.port)
    with httpx.Client(base_url=served.url, timeout=10) as http:
        for method, path, body in probes(served.history_id):
            if method == "POST":
                body = {"path": module_path("web_lifecycle")}
            if method == "PUT":
                body = {"values": {"delay": "0"}}
            headers = {"Host": host, "Origin": f"http://{host}", "X-Tdrun-Token": served.ui.token}
            r = http.request(method, path, json=body, headers=headers)
            assert r.status_code == 200, (method, path, r.text)


def test_a_write_from_another_origin_is_refused_even_on_a_loopback_host(served):
    host = f"127.0.0.1:{served.port}"
    with httpx.Client(base_url=served.url, timeout=10) as http:
        for origin in ("http://127.0.0.1.evil.example:" + served.port, "null",
                       f"http://localhost:{served.port}", "https://" + host):
            r = http.put("/api/state", json={"values": {"owned": "yes"}},
                         headers={"Origin": origin, "X-Tdrun-Token": served.ui.token})
            assert r.status_code == 403
            assert r.json()["error"] == (f"cross-site request refused: origin {origin!r} "
                                         f"is not 'http://{host}'")


@pytest.mark.parametrize("name, loopback", [
    ("localhost", True), ("127.0.0.1", True), ("127.255.0.9", True), ("::1", True), ("[::1]", True),
    ("[::ffff:127.0.0.1]", True), ("::ffff:7f00:1", True),
    ("127.0.0.1.evil.example", False), ("127.evil.example", False), ("127.0.0.1.nip.io", False),
    ("localhost.evil.example", False), ("10.0.0.1", False), ("::", False), ("0.0.0.0", False),
    ("[::ffff:10.0.0.1]", False), ("127.1", False), ("", False),
])
def test_is_loopback_judges_addresses_by_value_and_names_not_at_all(name, loopback):
    assert is_loopback(name) is loopback


@pytest.mark.parametrize("host", ["127.0.0.1.nip.io", "127.evil.example", "localhost.evil.example"])
def test_tdrun_ui_treats_a_name_that_looks_like_loopback_as_remote(capsys, host):
    # the same mistake at start-up would listen on whatever the name resolves to, without a token
    assert ui_main(["--host", host, "--no-browser"]) == 4
    assert capsys.readouterr().err.strip() == (
        f"tdrun ui: --host {host} is not a loopback address; add --allow-remote to accept "
        "connections from other machines (every request then needs the access token)")


# --------------------------------------------------------------------------- remote mode


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    ui = make_ui(tmp_path_factory.mktemp("remote"), remote=True)
    with LiveServer(ui) as srv:
        yield srv


@pytest.mark.parametrize("path, location", [
    ("//evil.example/", "/evil.example/"),
    ("//evil.example/x?tab=run", "/evil.example/x?tab=run"),
    ("///evil.example/", "/evil.example/"),
    ("/%2F%2Fevil.example/", "/evil.example/"),
    ("/%5Cevil.example/", "/%5Cevil.example/"),
    ("/%5C%5Cevil.example/", "/%5C%5Cevil.example/"),
    ("/%09/evil.example/", "/%09/evil.example/"),
    ("/?tab=history", "/?tab=history"),
    ("/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9"),
])
def test_the_token_redirect_only_goes_to_paths_of_this_server(remote, path, location):
    sep = "&" if "?" in path else "?"
    with httpx.Client(base_url=remote.url, timeout=10, follow_redirects=False) as http:
        r = http.get(f"{remote.url}{path}{sep}token={remote.ui.token}")  # a full URL: the path as sent
    assert r.status_code == 303, r.text
    assert r.headers["location"] == location
    resolved = httpx.URL(remote.url + "/").join(r.headers["location"])
    assert (resolved.host, resolved.port) == ("127.0.0.1", int(remote.url.rsplit(":", 1)[1]))


def test_remote_mode_still_needs_the_token_whatever_the_host(remote):
    with httpx.Client(base_url=remote.url, timeout=10) as http:
        r = http.get("/api/info", headers={"Host": "127.0.0.1.evil.example"})
        assert r.status_code == 401
        r = http.get("/api/info", headers={"Host": "anything.example", "X-Tdrun-Token": remote.ui.token})
        assert r.status_code == 200 and r.json()["remote"] is True
