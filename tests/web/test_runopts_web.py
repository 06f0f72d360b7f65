"""Start order and async limit of a run started in the web UI: the start request's
shuffle, order and async_limit, their 400s, the run's summary and its history."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

from thread_order.web.api import create_app
from web_support import loaded, make_ui, module_path, sse_events

LOCAL = "http://127.0.0.1:8000"

ASYNC = """
import asyncio
import threading
from thread_order import mark

GATE = {"now": 0, "most": 0}
LOCK = threading.Lock()

async def step():
    with LOCK:
        GATE["now"] += 1
        GATE["most"] = max(GATE["most"], GATE["now"])
    await asyncio.sleep(0.01)
    with LOCK:
        GATE["now"] -= 1
""" + "".join(f"""
@mark()
async def s{i}(state):
    await step()
""" for i in range(5)) + """

@mark(after=[f"s{i}" for i in range(5)])
def most(state):
    assert GATE["most"] == 2, GATE["most"]
"""


@pytest.fixture
def ui(tmp_path):
    return make_ui(tmp_path)


@pytest.fixture
def client(ui):
    with TestClient(create_app(ui), base_url=LOCAL, headers={"X-Tdrun-Token": ui.token}) as c:
        yield c


def _run(client, ui, path=None, **options):
    assert client.post("/api/module", json={"path": path or module_path("web_missing_after")}).status_code == 200
    if path is None:
        loaded(ui).written.clear()
    r = client.post("/api/runs", json={"workers": 2, **options})
    assert r.status_code == 202, r.text
    with client.stream("GET", f"/api/runs/{r.json()['id']}/events") as stream:
        events = list(sse_events(stream.iter_lines()))
    final = events[-1][1]
    assert final["phase"] == "finished"
    final["started"] = r.json()  # the start's answer: the run's options
    return final


def test_a_shuffled_run_with_a_seed_keeps_it_live_and_in_the_history(client, ui):
    final = _run(client, ui, shuffle=4242)
    assert final["summary"]["order"] == {"order": "shuffle", "seed": 4242}
    assert (final["started"]["shuffle"], final["started"]["order"]) == (4242, "declared")
    detail = client.get(f"/api/history/{final['history_id']}").json()
    assert detail["ordering"] == {"order": "shuffle", "seed": 4242}
    assert "--shuffle=4242" in detail["argv"]


def test_shuffle_true_draws_a_seed_and_says_it(client, ui):
    final = _run(client, ui, shuffle=True)
    seed = final["summary"]["order"]["seed"]
    assert isinstance(seed, int) and final["started"]["shuffle"] == seed
    assert f"--shuffle={seed}" in client.get(f"/api/history/{final['history_id']}").json()["argv"]


def test_a_seed_typed_in_a_form_field_is_a_seed(client, ui):
    assert _run(client, ui, shuffle="17")["summary"]["order"]["seed"] == 17


def test_critical_path_order(client, ui):
    final = _run(client, ui, order="critical-path")
    assert final["summary"]["order"]["order"] == "critical-path"
    detail = client.get(f"/api/history/{final['history_id']}").json()
    argv = detail["argv"]
    assert argv[argv.index("--order") + 1] == "critical-path"
    assert detail["ordering"]["order"] == "critical-path"


def test_no_order_asked_is_the_declared_order(client, ui):
    final = _run(client, ui, shuffle=False, order="")
    assert tuple(final["started"][k] for k in ("shuffle", "order", "async_limit")) == (None, "declared", 100)
    assert not any(a.startswith(("--shuffle", "--order", "--async-limit"))
                   for a in client.get(f"/api/history/{final['history_id']}").json()["argv"])


def test_async_limit_bounds_the_coroutines(client, ui, tmp_path):
    path = tmp_path / "aio.py"
    path.write_text(ASYNC)
    final = _run(client, ui, str(path), async_limit=2)
    assert final["counts"]["PASSED"] == 6, final["summary"]
    assert "--async-limit=2" in client.get(f"/api/history/{final['history_id']}").json()["argv"]
    loose = _run(client, ui, str(path), async_limit="5")   # all 5 at once: the check in `most` fails
    assert loose["counts"]["FAILED"] == 1


@pytest.mark.parametrize("body, message", [
    ({"shuffle": "abc"}, "shuffle must be true, false or a whole number seed >= 0, not 'abc'"),
    ({"shuffle": -1}, "shuffle must be true, false or a whole number seed >= 0, not -1"),
    ({"shuffle": 1.5}, "shuffle must be true, false or a whole number seed >= 0, not 1.5"),
    ({"order": "fast"}, "order must be one of 'declared', 'critical-path', not 'fast'"),
    ({"order": 3}, "order must be one of 'declared', 'critical-path', not 3"),
    ({"shuffle": 3, "order": "critical-path"}, "shuffle cannot be used with order 'critical-path'"),
    ({"async_limit": 0}, "async_limit must be a whole number >= 1, not 0"),
    ({"async_limit": "many"}, "async_limit must be a whole number >= 1, not 'many'"),
    ({"async_limit": True}, "async_limit must be a whole number >= 1, not True"),
])
def test_bad_order_options_are_400_naming_the_field(client, body, message):
    assert client.post("/api/module", json={"path": module_path("web_missing_after")}).status_code == 200
    r = client.post("/api/runs", json=body)
    assert (r.status_code, r.json()["error"]) == (400, message)
