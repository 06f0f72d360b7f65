"""Parametrized tasks through the library: case names, ids, pairing, and the errors."""

from __future__ import annotations

import threading

import pytest

from thread_order import Scheduler, TaskStatus, UnpairedCaseError, mark
from thread_order.engine.errors import DuplicateTaskError


def test_one_task_per_value_called_with_the_value_and_its_result_by_case_name():
    seen = []
    lock = threading.Lock()
    sched = Scheduler(workers=2)

    def create_subnet(state, cidr):
        with lock:
            seen.append(cidr)
        return f"id-{cidr}"

    sched.register(create_subnet, "create_subnet", with_state=True,
                   params={"cidr": ["10.0.1.0/24", "10.0.2.0/24"]})
    summary = sched.start()
    assert [t.name for t in sched.tasks] == ["create_subnet[10.0.1.0/24]", "create_subnet[10.0.2.0/24]"]
    assert sorted(seen) == ["10.0.1.0/24", "10.0.2.0/24"]
    assert sched.state["results"]["create_subnet[10.0.1.0/24]"] == "id-10.0.1.0/24"
    assert summary["tasks"]["create_subnet[10.0.2.0/24]"]["status"] is TaskStatus.PASSED


def test_several_keys_give_their_product_in_key_order_with_ids_joined_by_a_dash():
    sched = Scheduler(workers=1)
    calls = []
    sched.register(lambda region, size: calls.append((region, size)), "vm",
                   params={"region": ["eu", "us"], "size": [1, 2]})
    sched.start()
    assert [t.name for t in sched.tasks] == ["vm[eu-1]", "vm[eu-2]", "vm[us-1]", "vm[us-2]"]
    assert calls == [("eu", 1), ("eu", 2), ("us", 1), ("us", 2)]


def test_ids_as_a_list_or_a_function_and_automatic_ids_for_objects():
    sched = Scheduler()
    sched.register(lambda n: None, "listed", params={"n": [1, 2]}, ids=["one", "two"])
    sched.register(lambda cfg: None, "called", params={"cfg": [{"r": "eu"}, {"r": "us"}]},
                   ids=lambda cfg: cfg["r"])
    sched.register(lambda cfg: None, "auto", params={"cfg": [{"r": "eu"}, None]})
    assert [t.name for t in sched.tasks] == [
        "listed[one]", "listed[two]", "called[eu]", "called[us]", "auto[cfg0]", "auto[None]"]


def test_after_the_base_name_waits_for_every_case_and_a_case_name_for_one():
    sched = Scheduler(workers=4)
    sched.register(lambda: None, "report", after=["create"])  # registered before its dependency
    sched.register(lambda: None, "one", after=["create[b]"])
    sched.register(lambda c: None, "create", params={"c": ["a", "b", "c"]})
    graph = sched.graph
    assert graph.parents["report"] == ("create[a]", "create[b]", "create[c]")
    assert graph.parents["one"] == ("create[b]",)
    assert sched.start()["failed"] == []


def test_cases_sharing_parameter_names_pair_case_by_case():
    sched = Scheduler(workers=4)
    sched.register(lambda cidr: None, "create_subnet", params={"cidr": ["a", "b"]})
    sched.register(lambda cidr, port: None, "attach", after=["create_subnet"],
                   params={"cidr": ["a", "b"], "port": [80, 443]})
    sched.register(lambda cidr: None, "delete_subnet", after=["attach"], params={"cidr": ["a", "b"]},
                   always=True)
    parents = sched.graph.parents
    assert parents["attach[a-80]"] == ("create_subnet[a]",)
    assert parents["attach[b-443]"] == ("create_subnet[b]",)
    assert parents["delete_subnet[a]"] == ("attach[a-80]", "attach[a-443]")


def test_a_failed_case_skips_only_its_own_pair_and_teardown_still_runs():
    sched = Scheduler(workers=2)

    def create(cidr):
        if cidr == "b":
            raise RuntimeError("quota")

    sched.register(create, "create", params={"cidr": ["a", "b"]})
    sched.register(lambda cidr: None, "verify", after=["create"], params={"cidr": ["a", "b"]})
    sched.register(lambda cidr: None, "delete", after=["verify"], params={"cidr": ["a", "b"]}, always=True)
    sched.register(lambda: None, "summary", after=["verify"])
    s = sched.start()
    status = {name: t["status"].value for name, t in s["tasks"].items()}
    assert status == {"create[a]": "PASSED", "create[b]": "FAILED", "verify[a]": "PASSED",
                      "verify[b]": "SKIPPED", "delete[a]": "PASSED", "delete[b]": "PASSED",
                      "summary": "SKIPPED"}
    assert s["tasks"]["verify[b]"]["reason"] == "dependency 'create[b]' failed"


def test_a_case_without_a_partner_is_an_error_before_anything_runs():
    sched = Scheduler()
    ran = []
    sched.register(lambda c: ran.append(c), "create", params={"c": ["a"]})
    sched.register(lambda c: ran.append(c), "delete", after=["create"], params={"c": ["a", "z"]})
    with pytest.raises(UnpairedCaseError, match=r"^task 'delete\[z\]' depends on 'create', "
                                                r"which has no case with c='z'$"):
        sched.start()
    assert ran == []


@pytest.mark.parametrize("params, ids, error, message", [
    ({"c": []}, None, ValueError, r"^task 't': params\['c'\] is an empty list; give at least one value$"),
    ({"c": "abc"}, None, TypeError, r"^task 't': params\['c'\] must be a list of values, not str$"),
    (["c"], None, TypeError, r"^task 't': params must be a dict of lists, .* not list$"),
    ({}, None, ValueError, r"^task 't': params is empty; give at least one parameter$"),
    ({"nope": [1]}, None, TypeError, r"^task 't': the function does not accept a parameter 'nope'"),
    ({"c": [1, 2]}, ["x", "x"], ValueError, r"^task 't': duplicate case ids 'x'; give distinct ids=$"),
    ({"c": [1, "1"]}, None, ValueError, r"^task 't': duplicate case ids '1'"),
    ({"c": [1, 2]}, ["x"], ValueError, r"^task 't': ids has 1 entries for 2 cases$"),
    ({"c": [1]}, "x", TypeError, r"^task 't': ids must be a list of strings or a function"),
    (None, ["x"], TypeError, r"^task 't': ids= needs params=$"),
])
def test_bad_params_name_the_task_and_register_nothing(params, ids, error, message):
    sched = Scheduler()
    with pytest.raises(error, match=message):
        sched.register(lambda state, c: None, "t", with_state=True, params=params, ids=ids)
    assert sched.tasks == ()
    with pytest.raises(error, match=message.replace("'t'", "'t'")):
        def t(state, c):
            pass
        mark(params=params, ids=ids)(t)


def test_a_name_taken_by_a_parametrized_task_is_a_duplicate():
    sched = Scheduler()
    sched.register(lambda c: None, "create", params={"c": ["a"]})
    with pytest.raises(DuplicateTaskError):
        sched.register(lambda c: None, "create", params={"c": ["b"]})
    sched.register(lambda: None, "create")  # the plain path cannot know: the graph does
    with pytest.raises(DuplicateTaskError, match="'create' is already registered"):
        sched.graph


def test_bad_options_of_a_parametrized_task_register_no_case():
    sched = Scheduler()
    with pytest.raises(ValueError, match="retries"):
        sched.register(lambda c: None, "t", params={"c": [1, 2]}, retries=-1)
    assert sched.tasks == ()


def test_a_case_failure_traceback_starts_at_the_users_function():
    sched = Scheduler(workers=1)

    def boom(n):
        raise ValueError(f"bad {n}")

    sched.register(boom, "boom", params={"n": [7]})
    rec = sched.start()["tasks"]["boom[7]"]
    assert rec["error"] == "bad 7"
    frames = [line for line in rec["traceback"].splitlines() if line.strip().startswith("File ")]
    assert len(frames) == 1 and "in boom" in frames[0]
