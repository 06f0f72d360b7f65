"""The state checker through the Scheduler: what each task touched, and the findings."""

from __future__ import annotations

import json
import threading

import pytest

from thread_order import Scheduler
from thread_order.engine.statecheck import StateView, lock_owned

WAIT = 10.0


def _findings(summary):
    return [(f["kind"], f["key"], tuple(f["tasks"])) for f in summary["state_findings"]]


def _missing_after(check_state: bool):
    """verify_subnet reads what create_subnet writes without after=: it passes because the
    Events make create_subnet write first, as a lucky timing would."""
    written = threading.Event()
    s = Scheduler(workers=2, check_state=check_state)

    def create_subnet(state):
        state["subnet_id"] = "subnet-1"
        written.set()

    def verify_subnet(state):
        assert written.wait(WAIT)
        assert state["subnet_id"] == "subnet-1"

    s.register(verify_subnet, "verify_subnet", with_state=True)
    s.register(create_subnet, "create_subnet", with_state=True)
    return s


def test_missing_after_that_passes_by_timing_is_a_finding():
    summary = _missing_after(check_state=True).start()
    assert summary["passed"] and not summary["failed"]
    assert summary["state_findings"] == [{
        "kind": "undeclared dependency", "key": "state['subnet_id']",
        "tasks": ["create_subnet", "verify_subnet"], "locked": False, "static": False,
        "message": "verify_subnet reads state['subnet_id'] written by create_subnet, but does not "
                   "run after it: add after=['create_subnet']",
    }]
    json.dumps(summary["state_findings"])  # stored and reported as it is


def test_declared_order_is_not_a_finding():
    s = Scheduler(workers=2, check_state=True)
    # a reader upstream of the writer always reads before it: ordered too
    s.register(lambda st: st.get("subnet_id"), "early", with_state=True)
    s.register(lambda st: st.__setitem__("subnet_id", 1), "create_subnet", after=["early"], with_state=True)
    s.register(lambda st: st["subnet_id"], "verify_subnet", after=["create_subnet"], with_state=True)
    s.register(lambda st: st.pop("subnet_id"), "delete_subnet", after=["verify_subnet"], with_state=True)
    summary = s.start()
    assert len(summary["passed"]) == 4
    assert summary["state_findings"] == []


def test_without_the_checker_tasks_get_the_state_itself_and_nothing_is_reported():
    seen = []
    s = Scheduler(workers=2, state={"k": 1})
    s.register(lambda st: seen.append(st), "a", with_state=True)
    summary = s.start()
    assert seen[0] is s.state and type(seen[0]) is dict
    assert "state_findings" not in summary


def test_write_conflict_and_the_lock_note():
    both = threading.Barrier(2, timeout=WAIT)
    s = Scheduler(workers=2, state={"count": 0}, check_state=True)

    def locked(state):
        both.wait()
        with state["_state_lock"]:
            state["count"] += 1

    def unlocked(state):
        both.wait()
        state["flag"] = True

    s.register(locked, "inc_a", with_state=True)
    s.register(locked, "inc_b", with_state=True)
    s.register(unlocked, "flag_a", with_state=True)
    s.register(unlocked, "flag_b", with_state=True)
    s.workers = 4
    summary = s.start()
    assert not summary["failed"], summary["failures"]
    by_key = {f["key"]: f for f in summary["state_findings"]}
    assert set(by_key) == {"state['count']", "state['flag']"}
    count, flag = by_key["state['count']"], by_key["state['flag']"]
    assert count["kind"] == flag["kind"] == "write conflict"
    assert count["tasks"] == ["inc_a", "inc_b"] and count["locked"] is True
    assert "both held _state_lock: no torn write, but the order is still up to timing" in count["message"]
    assert flag["locked"] is False and "_state_lock" not in flag["message"]
    assert count["message"].startswith("inc_a and inc_b both write state['count'] and neither runs after "
                                       "the other, so the final value depends on timing")
    assert s.state["count"] == 2


def test_reading_a_result_of_a_task_not_upstream():
    done = threading.Event()
    s = Scheduler(workers=2, check_state=True)

    def create_network(state):
        done.set()
        return {"id": "net-1"}

    def create_subnet(state):
        assert done.wait(WAIT)
        return state["results"].get("create_network") or "missing"

    s.register(create_subnet, "create_subnet", with_state=True)
    s.register(create_network, "create_network", with_state=True)
    summary = s.start()
    assert _findings(summary) == [
        ("undeclared dependency", "state['results']['create_network']", ("create_network", "create_subnet"))
    ]
    assert summary["state_findings"][0]["message"] == (
        "create_subnet reads state['results']['create_network'] written by create_network, but does "
        "not run after it: add after=['create_network']")


def test_in_place_append_is_a_write_of_its_key():
    s = Scheduler(workers=2, state={"subnets": []}, check_state=True)
    s.register(lambda st: st["subnets"].append("a"), "add_a", with_state=True)
    s.register(lambda st: st.setdefault("subnets", []).extend(["b"]), "add_b", with_state=True)
    s.register(lambda st: len(st["subnets"]), "count", after=["add_a", "add_b"], with_state=True)
    summary = s.start()
    assert sorted(s.state["subnets"]) == ["a", "b"]
    assert _findings(summary) == [("write conflict", "state['subnets']", ("add_a", "add_b"))]


def test_nested_in_place_change_and_augmented_assignment():
    s = Scheduler(workers=2, state={"cfg": {"net": {"cidr": None}}, "tags": set(), "log": []},
                  check_state=True)

    def change(state):
        state["cfg"]["net"]["cidr"] = "10.0.0.0/24"
        state["tags"] |= {"x"}
        state["log"] += ["changed"]

    s.register(change, "change", with_state=True)
    s.register(lambda st: (st["cfg"], st["tags"], st["log"]), "look", with_state=True)
    summary = s.start()
    assert s.state["cfg"]["net"]["cidr"] == "10.0.0.0/24"
    assert type(s.state["tags"]) is set and s.state["tags"] == {"x"}
    assert type(s.state["log"]) is list and s.state["log"] == ["changed"]
    assert sorted(f["key"] for f in summary["state_findings"]) == [
        "state['cfg']", "state['log']", "state['tags']"]
    assert {f["kind"] for f in summary["state_findings"]} == {"undeclared dependency"}


def test_initial_keys_only_read_are_not_findings_and_setup_counts_as_before_everything():
    s = Scheduler(workers=3, state={"region": "eu", "base_url": "http://x"}, check_state=True)
    s.register(lambda st: (st["region"], "base_url" in st), "a", with_state=True)
    s.register(lambda st: st.get("region"), "b", with_state=True)
    s.register(lambda st: [k for k in st], "c", with_state=True)
    summary = s.start()
    assert summary["state_findings"] == []


def test_an_initial_key_written_by_one_task_and_read_by_another_is_a_finding():
    s = Scheduler(workers=2, state={"region": "eu"}, check_state=True)
    s.register(lambda st: st.update(region="us"), "move", with_state=True)
    s.register(lambda st: st["region"], "read", with_state=True)
    summary = s.start()
    assert _findings(summary) == [("undeclared dependency", "state['region']", ("move", "read"))]


def test_isinstance_and_views_behave_like_the_state():
    out = {}
    s = Scheduler(workers=1, state={"items": [1, 2], "m": {"a": 1}}, check_state=True)

    def look(state):
        out["dict"] = isinstance(state, dict)
        out["list"] = isinstance(state["items"], list)
        out["json"] = json.dumps({k: v for k, v in state.items() if k != "_state_lock"})
        out["copy"] = dict(state)["items"]
        out["eq"] = state["m"] == {"a": 1}

    s.register(look, "look", with_state=True)
    summary = s.start()
    assert not summary["failed"], summary["failures"]
    assert out["dict"] and out["list"] and out["eq"]
    assert json.loads(out["json"])["items"] == [1, 2]
    assert out["copy"] == [1, 2]


def test_a_tasks_traceback_still_starts_at_its_own_frame():
    def broken(state):
        raise ValueError("boom")

    s = Scheduler(workers=1, check_state=True)
    s.register(broken, "broken", with_state=True)
    s.start()
    tb = s.last_records[0].traceback
    assert tb.splitlines()[1].strip().startswith('File "') and "in broken" in tb.splitlines()[1]
    assert "engine/statecheck.py" not in tb and len(tb.splitlines()) == 4


def test_static_finding_from_the_source_before_it_runs():
    from thread_order.engine.statefind import static_findings

    def create_network(state):
        return 1

    def create_subnet(state):
        return state["results"]["create_network"]

    def verify(state):
        return "create_network" in state["results"] and state["results"].get("create_subnet")

    s = Scheduler()
    s.register(create_network, "create_network", with_state=True)
    s.register(create_subnet, "create_subnet", with_state=True)
    s.register(verify, "verify", after=["create_subnet"], with_state=True)
    found = static_findings(s.graph, [t.fn for t in s.tasks])
    assert [(f["tasks"], f["static"]) for f in found] == [
        (["create_network", "create_subnet"], True), (["create_network", "verify"], True)]
    assert found[0]["message"] == (
        "create_subnet's source reads state['results']['create_network'], the result of "
        "create_network, but does not run after it: add after=['create_network']")


def test_findings_per_key_are_capped():
    s = Scheduler(workers=4, check_state=True)
    for i in range(30):
        s.register(lambda st: st.__setitem__("k", 1), f"t{i}", with_state=True)
    summary = s.start()
    assert len(summary["state_findings"]) == 20


def test_access_records_reads_and_writes_of_a_view():
    lock = threading.RLock()
    view = acc = StateView({"a": 1, "results": {"x": 1}, "_state_lock": lock}, lock_owned(lock))
    view.get("a")
    "b" in view
    view["c"] = 3
    view.setdefault("d", [])
    view["results"]["x"]
    del view["c"]
    assert acc.reads == {"a", "b", "d"}
    assert acc.writes == {"c", "d"} and acc.results_read == {"x"}
    assert acc.unlocked == {"c", "d"}
    with lock:
        view["e"] = 1
    assert "e" in acc.writes and "e" not in acc.unlocked


# ---------------------------------------------------------------------------- property


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_KEYS = st.sampled_from(["a", "b", "c", 1])
_VALUES = st.one_of(st.integers(-3, 3), st.lists(st.integers(0, 3), max_size=3),
                    st.dictionaries(st.sampled_from("xy"), st.integers(0, 3), max_size=2),
                    st.sets(st.integers(0, 3), max_size=3))
_OPS = st.lists(st.one_of(
    st.tuples(st.sampled_from(["getitem", "get", "contains", "delitem", "pop", "setdefault_none"]), _KEYS),
    st.tuples(st.sampled_from(["setitem", "setdefault", "update", "pop_default"]), _KEYS, _VALUES),
    st.tuples(st.sampled_from(["len", "keys", "items", "values", "iter", "copy", "eq", "repr", "popitem",
                               "bool", "clear_if_big"])),
    st.tuples(st.sampled_from(["append", "extend", "add", "inplace_or", "subitem", "iadd"]), _KEYS,
              st.integers(0, 3)),
), max_size=30)


def _apply(d, op):
    """One operation on ``d``; what it returned (or raised), comparable across the two."""
    name, *args = op
    try:
        if name == "getitem":
            v = d[args[0]]
            return ("v", _plain(v), v == _plain(v))
        if name == "get":
            return ("v", _plain(d.get(args[0])))
        if name == "contains":
            return args[0] in d
        if name == "delitem":
            del d[args[0]]
        elif name == "pop":
            return _plain(d.pop(args[0]))
        elif name == "pop_default":
            return _plain(d.pop(args[0], args[1]))
        elif name == "setdefault_none":
            return _plain(d.setdefault(args[0]))
        elif name == "setitem":
            d[args[0]] = args[1]
        elif name == "setdefault":
            return _plain(d.setdefault(args[0], args[1]))
        elif name == "update":
            d.update({args[0]: args[1]})
        elif name == "len":
            return len(d)
        elif name == "keys":
            return list(d.keys())
        elif name == "items":
            return [(k, _plain(v)) for k, v in d.items()]
        elif name == "values":
            return [_plain(v) for v in d.values()]
        elif name == "iter":
            return list(d)
        elif name == "copy":
            return {k: _plain(v) for k, v in d.copy().items()}
        elif name == "eq":
            return d == {"a": 1}
        elif name == "repr":
            return repr(d)
        elif name == "popitem":
            k, v = d.popitem()
            return k, _plain(v)
        elif name == "bool":
            return bool(d)
        elif name == "clear_if_big":
            if len(d) > 3:
                d.clear()
        else:
            key, n = args
            value = d[key]
            if name == "append":
                value.append(n)
            elif name == "extend":
                value.extend([n])
            elif name == "add":
                value.add(n)
            elif name == "inplace_or":
                value |= {n}
                d[key] = value
            elif name == "subitem":
                value[n] = n
            elif name == "iadd":
                value += [n]
                d[key] = value
            return _plain(d[key])
    except Exception as exc:  # noqa: BLE001 - the same error is part of the same behaviour
        return ("raised", type(exc).__name__)
    return None


def _plain(value):
    """A wrapped container as the plain object it stands for (the comparison is by value)."""
    if isinstance(value, (list, dict, set)):
        return value.__class__(value)  # a wrapper's __class__ is the wrapped type
    return value


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(_KEYS, _VALUES, max_size=4), ops=_OPS)
def test_the_tracking_view_behaves_like_a_plain_dict(initial, ops):
    import copy

    plain = copy.deepcopy(initial)
    shared = copy.deepcopy(initial)
    view = acc = StateView(shared, lock_owned(threading.RLock()))
    for op in ops:
        assert _apply(view, copy.deepcopy(op)) == _apply(plain, copy.deepcopy(op)), op
        assert shared == plain
        assert view == plain and len(view) == len(plain)
    # every key a write touched is recorded as written
    changed = {k for k in set(initial) | set(plain) if initial.get(k, "absent") != plain.get(k, "absent")}
    assert changed <= acc.writes


# ---------------------------------------------------------------------------- first=


def test_first_starts_those_tasks_before_the_others_where_the_graph_allows():
    started = []
    s = Scheduler(workers=1, first=["c", "d"])
    for name, after in (("a", None), ("b", None), ("c", None), ("d", ["b"]), ("e", None)):
        s.register(lambda n=name: started.append(n), name, after=after)
    summary = s.start()
    assert len(summary["passed"]) == 5
    # c first; d must wait for b, then goes ahead of e
    assert started == ["c", "a", "b", "d", "e"]
    plain = []
    s2 = Scheduler(workers=1)
    for name in "abc":
        s2.register(lambda n=name: plain.append(n), name)
    s2.start()
    assert plain == ["a", "b", "c"]
