"""The dependency graph: validation messages, levels, roots, leaves, chains, fan-in/out."""

from __future__ import annotations

import pytest

from thread_order import (
    CycleError,
    DuplicateTaskError,
    Graph,
    GraphError,
    Scheduler,
    UnknownDependencyError,
)

# create -> (update, attach) -> verify -> teardown, plus an unrelated side task
LIFECYCLE = [
    ("create", ()),
    ("update", ("create",)),
    ("attach", ("create",)),
    ("verify", ("update", "attach")),
    ("teardown", ("verify",)),
    ("side", ()),
]


def test_nodes_keep_registration_order_and_mappings_are_read_only():
    g = Graph(LIFECYCLE)
    assert g.nodes == ("create", "update", "attach", "verify", "teardown", "side")
    assert len(g) == 6
    assert "verify" in g and "nope" not in g
    assert g.parents["verify"] == ("update", "attach")
    assert g.children["create"] == ("update", "attach")
    assert g.children["teardown"] == ()
    with pytest.raises(TypeError):
        g.parents["verify"] = ()  # type: ignore[index]
    with pytest.raises(TypeError):
        g.level_of["create"] = 3  # type: ignore[index]


def test_levels_roots_leaves_and_order():
    g = Graph(LIFECYCLE)
    assert g.levels == (("create", "side"), ("update", "attach"), ("verify",), ("teardown",))
    assert dict(g.level_of) == {
        "create": 0, "update": 1, "attach": 1, "verify": 2, "teardown": 3, "side": 0,
    }
    assert g.roots == ("create", "side")
    assert g.leaves == ("teardown", "side")
    # Kahn's order, seeded and drained in registration order
    assert g.order == ("create", "side", "update", "attach", "verify", "teardown")


def test_level_is_the_longest_path_not_the_shortest():
    # d hangs directly off a and also off the chain a -> b -> c
    g = Graph([("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ("a", "c"))])
    assert g.level_of["d"] == 3
    assert g.levels == (("a",), ("b",), ("c",), ("d",))


def test_edges_and_edge_count():
    g = Graph(LIFECYCLE)
    assert g.edges == [
        ("create", "update"), ("create", "attach"),
        ("update", "verify"), ("attach", "verify"),
        ("verify", "teardown"),
    ]
    assert g.edge_count == 5
    assert repr(g) == "<Graph 6 nodes, 5 edges, 4 levels>"


def test_longest_chains():
    g = Graph(LIFECYCLE)
    assert g.longest_chain_length == 3
    assert g.longest_chains() == [
        ["create", "update", "verify", "teardown"],
        ["create", "attach", "verify", "teardown"],
    ]
    assert g.longest_chains(limit=1) == [["create", "update", "verify", "teardown"]]


def test_longest_chains_follow_only_maximal_paths():
    # the shortcut a -> d must not produce the shorter chain [a, d]
    g = Graph([("a", ()), ("b", ("a",)), ("c", ("b",)), ("d", ("a", "c")), ("x", ())])
    assert g.longest_chains() == [["a", "b", "c", "d"]]


def test_flat_and_empty_graphs():
    flat = Graph([("a", ()), ("b", ()), ("c", ())])
    assert flat.longest_chain_length == 0
    assert flat.levels == (("a", "b", "c"),)
    assert flat.roots == flat.leaves == ("a", "b", "c")
    assert flat.longest_chains(limit=2) == [["a"], ["b"]]

    empty = Graph([])
    assert empty.nodes == () and empty.levels == () and empty.edges == []
    assert empty.longest_chain_length == 0
    assert empty.longest_chains() == []


def test_fan_in_and_fan_out():
    g = Graph([
        ("hub", ()), ("a", ("hub",)), ("b", ("hub",)), ("c", ("hub",)),
        ("x", ()), ("join", ("a", "b", "c", "x")), ("pair", ("a", "b")),
    ])
    assert g.fan_out() == [("hub", 3), ("a", 2), ("b", 2)]
    assert g.fan_out(3) == [("hub", 3)]
    assert g.fan_in() == [("join", 4), ("pair", 2)]
    assert g.fan_in(5) == []
    # minimum=1 lists every node with a dependency; ties keep registration order
    assert g.fan_in(1) == [("join", 4), ("pair", 2), ("a", 1), ("b", 1), ("c", 1)]


def test_upstream_and_downstream():
    g = Graph(LIFECYCLE)
    assert g.upstream("teardown") == ["create", "update", "attach", "verify"]
    assert g.upstream("create") == []
    assert g.downstream("create") == ["update", "attach", "verify", "teardown"]
    assert g.downstream("side") == []
    assert g.downstream("attach") == ["verify", "teardown"]
    with pytest.raises(KeyError):
        g.upstream("nope")


def test_dependencies_may_come_later_in_registration_order():
    g = Graph([("verify", ("create",)), ("create", ())])
    assert g.order == ("create", "verify")
    assert g.levels == (("create",), ("verify",))
    assert g.roots == ("create",)


# ---------------------------------------------------------------- validation


def test_unknown_dependency_names_task_and_dependency():
    with pytest.raises(UnknownDependencyError, match=r"^task 'b' depends on unknown task 'x'$") as info:
        Graph([("a", ()), ("b", ("a", "x"))])
    assert info.value.task == "b"
    assert info.value.dependency == "x"
    assert isinstance(info.value, GraphError) and isinstance(info.value, ValueError)


def test_two_node_cycle_is_reported_as_its_path():
    with pytest.raises(CycleError, match=r"^dependency cycle: a -> b -> a$") as info:
        Graph([("a", ("b",)), ("b", ("a",))])
    assert info.value.cycle == ["a", "b", "a"]
    assert isinstance(info.value, ValueError)


def test_longer_cycle_is_reported_in_run_order_from_the_earliest_registered_task():
    # c runs before a runs before b runs before c
    deps = [("x", ()), ("b", ("a",)), ("c", ("b",)), ("a", ("c", "x")), ("tail", ("a",))]
    with pytest.raises(CycleError, match=r"^dependency cycle: b -> c -> a -> b$") as info:
        Graph(deps)
    assert info.value.cycle == ["b", "c", "a", "b"]


def test_duplicate_names_are_rejected_when_building_a_graph_directly():
    with pytest.raises(DuplicateTaskError, match=r"^task 'a' is already registered$") as info:
        Graph([("a", ()), ("b", ("a",)), ("a", ())])
    assert info.value.name == "a"


def test_self_dependency_is_a_cycle():
    with pytest.raises(CycleError, match=r"^dependency cycle: a -> a$"):
        Graph([("a", ("a",))])


def test_cycle_is_found_behind_an_acyclic_prefix():
    deps = [(f"n{i}", (f"n{i - 1}",) if i else ()) for i in range(50)]
    deps += [("p", ("n49", "q")), ("q", ("p",))]
    with pytest.raises(CycleError, match=r"^dependency cycle: p -> q -> p$"):
        Graph(deps)


def test_scheduler_validates_the_whole_graph_before_anything_runs():
    ran = []
    s = Scheduler(workers=2)
    s.register(lambda: ran.append("a"), "a")
    s.register(lambda: ran.append("b"), "b", after=["c"])
    s.register(lambda: ran.append("c"), "c", after=["b"])
    with pytest.raises(CycleError, match=r"^dependency cycle: b -> c -> b$"):
        s.start()
    assert ran == []
    with pytest.raises(CycleError):
        s.graph


def test_scheduler_graph_reflects_later_registrations():
    s = Scheduler(workers=1)
    s.register(lambda: None, "b", after="a")
    with pytest.raises(UnknownDependencyError, match=r"^task 'b' depends on unknown task 'a'$"):
        s.graph
    s.register(lambda: None, "a")
    assert s.graph.order == ("a", "b")
    s.register(lambda: None, "c", after=["a", "b"])
    assert s.graph.levels == (("a",), ("b",), ("c",))
