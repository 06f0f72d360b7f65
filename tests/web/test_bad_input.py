"""Bad input to the web UI's API is a 4xx with one line, never a 500, never a poisoned state.

Python's json reads NaN, Infinity and 1e999, which no JSON consumer does; very
deep nesting exhausts the parser's recursion. Everything goes through a real
server on 127.0.0.1.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest

from web_support import LiveServer, make_ui, module_path, sse_events

DEEP = 5_000


def strict(text: str):
    """Parse as a browser's JSON.parse would: NaN and Infinity are errors."""
    def refuse(token):
        raise ValueError(f"not JSON: {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def http(tmp_path):
    ui = make_ui(tmp_path)
    with LiveServer(ui) as srv, httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30) as client:
        client.ui = ui
        yield client


def send(http, method, path, raw: bytes):
    return http.request(method, path, content=raw, headers={"Content-Type": "application/json"})


def assert_one_line_400(r, message):
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    error = strict(r.text)["error"]
    assert error == message
    assert "\n" not in error


def state_keys(http):
    r = http.get("/api/state")
    assert r.status_code == 200
    return {e["key"]: e["value"] for e in strict(r.text)["entries"]}


def run_to_end(http, **options):
    r = http.post("/api/runs", json=options)
    assert r.status_code == 202, r.text
    with http.stream("GET", f"/api/runs/{r.json()['id']}/events") as stream:
        lines = list(stream.iter_lines())
    for line in lines:
        if line.startswith("data:"):
            strict(line[5:])  # every event is standard JSON
    events = list(sse_events(lines))
    assert events[-1][1]["phase"] == "finished"
    return r.json()["id"], events[-1][1]


# --------------------------------------------------------------------------- NaN and Infinity


@pytest.mark.parametrize("text, message", [
    ("[1, NaN]", "state value 'ratio': NaN is not a JSON number"),
    ('{"max": Infinity}', "state value 'ratio': Infinity is not a JSON number"),
    ("[-Infinity]", "state value 'ratio': -Infinity is not a JSON number"),
    ("1e999", "state value 'ratio': 1e999 is too large for a number"),
    ("-1e400", "state value 'ratio': -1e400 is too large for a number"),
    ("1" * 5000, "state value 'ratio': a number has too many digits"),
])
def test_typed_values_json_cannot_hold_are_refused_naming_the_key(http, text, message):
    assert http.put("/api/state", json={"values": {"keep": "1"}}).status_code == 200
    assert_one_line_400(http.put("/api/state", json={"values": {"keep": "1", "ratio": text}}), message)
    assert state_keys(http) == {"keep": 1}


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_a_bare_nan_typed_in_is_text_as_tdruns_key_value_is(http, word):
    r = http.put("/api/state", json={"values": {"ratio": word}})
    assert r.status_code == 200
    assert state_keys(http) == {"ratio": word}


@pytest.mark.parametrize("raw, message", [
    (b'{"values": {"ratio": NaN}}', "state value 'ratio': NaN is not a JSON number"),
    (b'{"values": {"ratio": -Infinity}}', "state value 'ratio': -Infinity is not a JSON number"),
    (b'{"values": {"cfg": {"limits": [1, Infinity]}}}',
     "state value 'cfg': Infinity at limits[1] is not a JSON number"),
])
def test_nan_sent_through_the_api_is_refused_naming_the_key(http, raw, message):
    assert_one_line_400(send(http, "PUT", "/api/state", raw), message)
    assert state_keys(http) == {}


@pytest.mark.parametrize("content, message", [
    ('{"ratio": NaN}', "state file s.json: key 'ratio': NaN is not a JSON number"),
    ('{"owner": "ops", "limits": {"max": Infinity}}',
     "state file s.json: key 'limits': Infinity at max is not a JSON number"),
    ('{"big": 1e999}', "state file s.json: key 'big': Infinity is not a JSON number"),
])
def test_a_state_file_with_nan_is_refused_by_upload_and_by_path(http, tmp_path, content, message):
    assert_one_line_400(http.put("/api/state/file", json={"name": "s.json", "content": content}), message)
    path = tmp_path / "s.json"
    path.write_text(content)
    r = http.put("/api/state/file", json={"path": str(path)})
    assert_one_line_400(r, message.replace("s.json", str(path), 1))
    assert state_keys(http) == {}


def test_after_every_refusal_the_state_still_reads_and_a_run_starts(http):
    for raw in (b'{"values": {"a": NaN}}', b'{"values": {"a": "[NaN]"}}'):
        assert send(http, "PUT", "/api/state", raw).status_code == 400
    assert http.put("/api/state/file", json={"name": "s.json", "content": '{"a": NaN}'}).status_code == 400
    assert http.post("/api/module", json={"path": module_path("web_lifecycle")}).status_code == 200
    assert http.put("/api/state", json={"values": {"delay": "0"}}).status_code == 200
    _, final = run_to_end(http, workers=2)
    assert final["counts"]["PASSED"] == 6


def test_nan_put_in_the_state_by_setup_state_is_shown_safely(http, tmp_path):
    # the module's own code is not input we can refuse: what it stores must not break the page
    module = tmp_path / "nan_state.py"
    module.write_text(
        "from thread_order import mark\n\n"
        "def setup_state(state):\n"
        "    state['ratio'] = float('nan')\n"
        "    state['limit'] = float('inf')\n\n"
        "@mark()\n"
        "def only(state):\n"
        "    pass\n")
    assert http.post("/api/module", json={"path": str(module)}).status_code == 200
    run_id, final = run_to_end(http, workers=1)
    r = http.get(f"/api/runs/{run_id}")
    assert r.status_code == 200
    shown = {e["key"]: e["value"] for e in strict(r.text)["state"]}
    assert shown == {"ratio": {"__not_json__": "float"}, "limit": {"__not_json__": "float"}}
    r = http.get(f"/api/history/{final['history_id']}")
    assert r.status_code == 200
    strict(r.text)


def test_an_infinite_number_in_the_history_file_is_null_not_a_500(http):
    assert http.post("/api/module", json={"path": module_path("web_lifecycle")}).status_code == 200
    assert http.put("/api/state", json={"values": {"delay": "0"}}).status_code == 200
    _, final = run_to_end(http, workers=2)
    conn = sqlite3.connect(http.ui.history_path)
    try:
        with conn:
            conn.execute("UPDATE runs SET finished_at = 9e999 WHERE id = ?", (final["history_id"],))
    finally:
        conn.close()
    r = http.get("/api/history")
    assert r.status_code == 200, r.text
    (run,) = strict(r.text)["runs"]
    assert run["id"] == final["history_id"] and run["finished_at"] is None


# --------------------------------------------------------------------------- deep nesting


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("method, path, wrap", [
    ("POST", "/api/module", '{{"path": {}}}'),
    ("PUT", "/api/state", '{{"values": {{"a": {}}}}}'),
    ("PUT", "/api/state/file", '{{"name": "s.json", "content": "x", "pad": {}}}'),
    ("POST", "/api/runs", '{{"tags": {}}}'),
    ("POST", "/api/runs", "{}"),
])
@pytest.mark.parametrize("depth", [DEEP, 150])
def test_deeply_nested_request_bodies_are_a_400_with_one_line(http, method, path, wrap, depth):
    raw = wrap.format(deep(depth)).encode()
    assert_one_line_400(send(http, method, path, raw), "request body: nested deeper than 100 levels")
    assert state_keys(http) == {}


@pytest.mark.parametrize("depth", [DEEP, 150])
def test_a_deeply_nested_typed_value_or_state_file_is_a_400_with_one_line(http, tmp_path, depth):
    r = http.put("/api/state", json={"values": {"cfg": deep(depth)}})
    assert_one_line_400(r, "state value 'cfg': nested deeper than 100 levels")
    content = '{"cfg": ' + deep(depth) + "}"
    r = http.put("/api/state/file", json={"name": "deep.json", "content": content})
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith("state file deep.json: ")
    assert "nested deeper than 100 levels" in r.json()["error"] and "\n" not in r.json()["error"]
    path = tmp_path / "deep.json"
    path.write_text(content)
    r = http.put("/api/state/file", json={"path": str(path)})
    assert r.status_code == 400 and r.json()["error"].startswith(f"state file {path}: ")
    assert state_keys(http) == {}


def test_nesting_up_to_the_limit_is_accepted(http):
    value = "[" * 99 + "1" + "]" * 99
    assert http.put("/api/state", json={"values": {"cfg": value}}).status_code == 200
    assert http.get("/api/state").status_code == 200
