"""Start-order policies: shuffle, critical path, replay (engine/order.py) through Scheduler."""

from __future__ import annotations

import heapq
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import Scheduler
from thread_order.engine.order import (
    ReplayOrder,
    critical_path_plan,
    graph_changes,
    lower_bound,
    shuffle_plan,
)

WAIT = 10.0


def random_dag(rng: random.Random, n: int) -> list[tuple[str, tuple[str, ...]]]:
    """A DAG whose edges point from lower to higher positions, registered in a shuffled order."""
    names = [f"t{i}" for i in range(n)]
    dag = [(names[i], tuple({names[rng.randrange(i)] for _ in range(rng.randrange(3))} if i else ()))
           for i in range(n)]
    rng.shuffle(dag)
    return dag


def run_order(dag, workers=1, **kwargs) -> tuple[list[str], dict]:
    started: list[str] = []
    s = Scheduler(workers=workers, **kwargs)
    for name, after in dag:
        s.register(lambda name=name: started.append(name), name, list(after))
    summary = s.start()
    return started, summary


def simulate(dag, rank_of) -> list[str]:
    """One worker: repeatedly start the ready task of lowest rank (what the order promises)."""
    deps = {name: set(after) for name, after in dag}
    done: set[str] = set()
    ready = [(rank_of[name], name) for name, after in dag if not after]
    heapq.heapify(ready)
    order = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        done.add(name)
        for other, after in deps.items():
            if other not in done and name in after and after <= done and other not in order \
                    and all(other != r[1] for r in ready):
                heapq.heappush(ready, (rank_of[other], other))
    return order


# ---------------------------------------------------------------------------- shuffle


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), shape=st.integers(min_value=0, max_value=10**6),
       n=st.integers(min_value=1, max_value=25))
def test_shuffle_one_worker_same_seed_same_start_order(seed, shape, n):
    dag = random_dag(random.Random(shape), n)
    first, summary = run_order(dag, shuffle=seed)
    second, _ = run_order(dag, shuffle=seed)
    assert first == second
    assert summary["order"] == {"order": "shuffle", "seed": seed}
    # and it is the order the seed's ranks promise: lowest rank among the ready tasks
    s = Scheduler(workers=1)
    for name, after in dag:
        s.register(lambda: None, name, list(after))
    plan = shuffle_plan(s.graph, seed)
    assert first == simulate(dag, {name: plan.rank[i] for i, name in enumerate(s.graph.nodes)})


def test_shuffle_seeds_draw_different_orders_and_respect_dependencies():
    dag = [(f"t{i}", ()) for i in range(8)] + [("last", tuple(f"t{i}" for i in range(8)))]
    orders = {tuple(run_order(dag, shuffle=seed)[0]) for seed in range(6)}
    assert len(orders) > 1
    assert all(order[-1] == "last" for order in orders)
    assert tuple(run_order(dag)[0]) == tuple(name for name, _ in dag)  # declared stays declared


def test_shuffle_true_draws_a_seed_it_reports():
    s = Scheduler(workers=1, shuffle=True)
    assert isinstance(s.shuffle, int)
    s.register(lambda: None, "a")
    assert s.start()["order"] == {"order": "shuffle", "seed": s.shuffle}


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**6), workers=st.integers(min_value=1, max_value=4))
def test_shuffle_keeps_every_rule_with_failures_retries_and_always(seed, workers):
    calls: dict[str, int] = {}
    lock = threading.Lock()

    def task(name, fail_times=0):
        def run():
            with lock:
                calls[name] = calls.get(name, 0) + 1
                n = calls[name]
            if n <= fail_times:
                raise RuntimeError(f"{name} attempt {n}")
        return run

    s = Scheduler(workers=workers, shuffle=seed)
    s.register(task("create"), "create")
    s.register(task("flaky", 1), "flaky", after=["create"], retries=1)
    s.register(task("bad", 5), "bad", after=["create"])
    s.register(task("use"), "use", after=["bad"])
    s.register(task("teardown"), "teardown", after=["use", "flaky"], always=True)
    for i in range(5):
        s.register(task(f"free{i}"), f"free{i}")
    summary = s.start()
    assert sorted(summary["passed"]) == sorted(["create", "flaky", "teardown"] + [f"free{i}" for i in range(5)])
    assert summary["failed"] == ["bad"] and summary["skipped"] == ["use"]
    assert calls["flaky"] == 2


# ---------------------------------------------------------------------------- critical path


def test_critical_path_starts_the_long_chain_first_whatever_the_registration_order():
    dag = [(f"short{i}", ()) for i in range(6)]
    dag += [("chain0", ()), ("chain1", ("chain0",)), ("chain2", ("chain1",))]
    durations = {f"short{i}": 1.0 for i in range(6)} | {"chain0": 1.0, "chain1": 1.0, "chain2": 1.0}
    started, summary = run_order(dag, order="critical-path", durations=durations)
    # by remaining path: chain0 (3), chain1 (2), then the ties (1) in registration order
    assert started == ["chain0", "chain1"] + [f"short{i}" for i in range(6)] + ["chain2"]
    assert summary["order"]["order"] == "critical-path"
    assert summary["lower_bound"]["workers"] == 1


def test_critical_path_ties_keep_registration_order_and_unknown_tasks_get_the_median():
    dag = [("a", ()), ("b", ()), ("c", ()), ("d", ())]
    # c unknown: median of 1, 3, 5 = 3, the same as b: b (registered first) wins the tie
    started, _ = run_order(dag, order="critical-path", durations={"a": 1.0, "b": 3.0, "d": 5.0})
    assert started == ["d", "b", "c", "a"]
    # nothing known: every task weighs the same; the longest path in tasks wins
    started, _ = run_order([("x", ()), ("y", ()), ("z", ("y",))], order="critical-path")
    assert started == ["y", "x", "z"]


def test_critical_path_plan_weights_paths_not_tasks():
    s = Scheduler(workers=1)
    for name, after in [("heavy", ()), ("a", ()), ("b", ("a",)), ("c", ("b",))]:
        s.register(lambda: None, name, list(after))
    plan = critical_path_plan(s.graph, {"heavy": 10.0, "a": 1.0, "b": 1.0, "c": 1.0})
    assert [s.graph.nodes[i] for i in plan.at] == ["heavy", "a", "b", "c"]
    assert plan.info["estimated_critical_path"] == 10.0


def test_lower_bound_is_the_larger_of_the_critical_path_and_work_per_worker():
    s = Scheduler(workers=2)
    for name, after in [("a", ()), ("b", ("a",)), ("c", ()), ("d", ())]:
        s.register(lambda: None, name, list(after))
    bound = lower_bound(s.graph, {"a": 2.0, "b": 3.0, "c": 1.0, "d": 1.0}, 2)
    assert bound == {"critical_path": 5.0, "total_work": 7.0, "workers": 2, "lower_bound": 5.0}
    bound = lower_bound(s.graph, {"a": 1.0, "b": 1.0, "c": 4.0, "d": 4.0}, 2)
    assert bound["lower_bound"] == 5.0 and bound["critical_path"] == 4.0
    assert lower_bound(s.graph, {}, 8)["lower_bound"] == 0.0


@pytest.mark.parametrize("kwargs, error, message", [
    ({"order": "fastest"}, ValueError, r"^order must be one of 'declared', 'critical-path', not 'fastest'$"),
    ({"order": 3}, TypeError, r"^order must be a string, not int$"),
    ({"shuffle": "7"}, TypeError, r"^shuffle must be an integer seed or True, not '7'$"),
    ({"shuffle": 1, "order": "critical-path"}, ValueError,
     r"^shuffle cannot be used with order='critical-path'$"),
    ({"durations": [1]}, TypeError, r"^durations must be a dict of seconds by task name, not list$"),
    ({"durations": {"a": -1}}, ValueError, r"^durations\['a'\] must be a number of seconds >= 0, not -1$"),
])
def test_bad_order_arguments_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        Scheduler(**kwargs)


# ---------------------------------------------------------------------------- replay


def recorded(summary) -> dict[str, tuple[float, float]]:
    return {name: (t["started_at"], t["finished_at"]) for name, t in summary["tasks"].items()
            if t["started_at"] is not None}


def check_replayed(before: dict, after: dict) -> None:
    """Each task started after every task that had finished before it started in the recording."""
    for name, (start, _) in before.items():
        for other, (_, finish) in before.items():
            if finish < start:
                assert after[other][1] <= after[name][0], (other, "must finish before", name)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(min_value=0, max_value=10**6))
def test_replay_keeps_what_finished_before_each_start(seed):
    rng = random.Random(seed)
    dag = random_dag(rng, 12)
    gates = {name: threading.Event() for name, _ in dag}
    order = [name for name, _ in dag]
    rng.shuffle(order)

    # the recording: tasks finish in a random order, each waiting for the one before it
    def recording_task(name):
        def run():
            i = order.index(name)
            if i:
                gates[order[i - 1]].wait(0.05)
            gates[name].set()
        return run

    s = Scheduler(workers=4)
    for name, after in dag:
        s.register(recording_task(name), name, list(after))
    first = s.start()
    replay = Scheduler(workers=4, order=ReplayOrder(1, recorded(first)))
    for name, after in dag:
        replay.register(lambda: None, name, list(after))
    second = replay.start()
    assert second["order"] == {"order": "replay", "replay_of": 1, "serial": False}
    check_replayed(recorded(first), recorded(second))


def test_replay_reproduces_an_interleaving_that_made_a_task_fail():
    """use reads a key that delete_token (which lacks after=['use']) removes."""
    deleted = threading.Event()

    def register(s, state, slow):
        def create():
            if slow:
                deleted.wait(WAIT)  # this time the API was slow

        def hold():
            pass

        def delete_token():
            state.pop("token", None)
            deleted.set()

        def use():
            assert "token" in state, "token is gone"

        s.register(create, "create")
        s.register(hold, "hold")
        s.register(use, "use", after=["create"])
        s.register(delete_token, "delete_token", after=["hold"])

    state = {"token": "t-1"}
    s = Scheduler(workers=2, state=state)
    register(s, state, slow=True)
    first = s.start()
    assert first["failed"] == ["use"]
    for _ in range(5):
        state = {"token": "t-1"}
        again = Scheduler(workers=2, state=state, order=ReplayOrder(7, recorded(first)))
        register(again, state, slow=False)
        summary = again.start()
        assert summary["failed"] == ["use"]
        check_replayed(recorded(first), recorded(summary))


def test_serial_replay_starts_in_the_recorded_order():
    dag = [(f"t{i}", ()) for i in range(6)]
    starts = {f"t{i}": (float(10 - i), float(20 - i)) for i in range(6)}  # t5 first ... t0 last
    started, summary = run_order(dag, order=ReplayOrder(None, starts, serial=True))
    assert started == [f"t{i}" for i in reversed(range(6))]


def test_replay_runs_tasks_it_has_no_record_of_and_never_deadlocks_on_a_changed_graph():
    # recorded: b started after a finished; now b is gone, c is new and a depends on c
    starts = {"a": (1.0, 2.0), "b": (3.0, 4.0), "d": (0.5, 5.0)}
    dag = [("c", ()), ("a", ("c",)), ("d", ())]
    started, summary = run_order(dag, workers=2, order=ReplayOrder(3, starts))
    assert sorted(started) == ["a", "c", "d"] and summary["failed"] == []


def test_graph_changes_lists_tasks_and_edges():
    changes = graph_changes(["a", "b", "c"], [["a", "b"], ["b", "c"]],
                            {"a": (), "b": ("a",), "d": ("b",)})
    assert changes == {"tasks_added": ["d"], "tasks_removed": ["c"],
                       "edges_added": [("b", "d")], "edges_removed": [("b", "c")]}


def test_a_replayed_task_handed_out_early_waits_for_what_it_must_follow():
    # recorded: a and b start together, b ends, then c starts; a ends last
    starts = {"a": (0.0, 10.0), "b": (0.0, 1.0), "c": (2.0, 3.0)}
    c_started = threading.Event()
    b_release = threading.Event()
    seen = {}

    def b():
        # c is handed to the third worker while this runs: it must not start before b ends
        seen["c during b"] = c_started.wait(0.2)

    s = Scheduler(workers=3, order=ReplayOrder(1, starts))
    s.register(lambda: b_release.wait(WAIT), "a")
    s.register(b, "b")
    s.register(lambda: (c_started.set(), b_release.set()), "c")
    summary = s.start()
    assert summary["failed"] == [] and seen == {"c during b": False}
    assert summary["tasks"]["c"]["started_at"] >= summary["tasks"]["b"]["finished_at"]


def test_cancel_during_a_replay_drops_the_tasks_waiting_for_their_turn():
    starts = {"a": (0.0, 1.0), "b": (2.0, 3.0), "c": (4.0, 5.0), "teardown": (6.0, 7.0)}
    s = Scheduler(workers=3, order=ReplayOrder(1, starts))
    running = threading.Event()

    def a():
        running.set()
        s.cancel()

    s.register(a, "a")
    s.register(lambda: None, "b")
    s.register(lambda: None, "c")
    s.register(lambda: None, "teardown", after=["c"], always=True)
    summary = s.start()
    assert running.is_set() and summary["interrupted"]
    assert summary["passed"] == ["a", "teardown"] and sorted(summary["cancelled"]) == ["b", "c"]


def test_a_retry_in_a_replay_stops_holding_tasks_back():
    starts = {"flaky": (0.0, 1.0), "next": (2.0, 3.0)}
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt")

    s = Scheduler(workers=2, order=ReplayOrder(1, starts))
    s.register(flaky, "flaky", retries=1)
    s.register(lambda: None, "next")
    summary = s.start()
    assert sorted(summary["passed"]) == ["flaky", "next"] and len(attempts) == 2


@settings(max_examples=25, deadline=None)
@given(shape=st.integers(min_value=0, max_value=10**6), n=st.integers(min_value=1, max_value=20),
       weights=st.lists(st.integers(min_value=0, max_value=5), min_size=20, max_size=20))
def test_critical_path_one_worker_starts_the_longest_remaining_path_first(shape, n, weights):
    dag = random_dag(random.Random(shape), n)
    durations = {name: float(weights[i]) for i, (name, _) in enumerate(dag) if weights[i]}
    started, summary = run_order(dag, order="critical-path", durations=durations)
    s = Scheduler(workers=1)
    for name, after in dag:
        s.register(lambda: None, name, list(after))
    plan = critical_path_plan(s.graph, durations)
    assert started == simulate(dag, {name: plan.rank[i] for i, name in enumerate(s.graph.nodes)})
    # the rank: longest remaining path first, ties in registration order
    children = {name: [c for c, after in dag if name in after] for name, _ in dag}
    known = sorted(durations.values())
    fallback = (known[(len(known) - 1) // 2] + known[len(known) // 2]) / 2 if known else 1.0

    def remaining(name):
        return durations.get(name, fallback) + max((remaining(c) for c in children[name]), default=0.0)

    keys = [(-remaining(name), i) for i, name in enumerate(s.graph.nodes)]
    assert [s.graph.nodes[i] for i in plan.at] == [s.graph.nodes[i] for _, i in sorted(keys)]


@settings(max_examples=20, deadline=None)
@given(shape=st.integers(min_value=0, max_value=10**6), seed=st.integers(min_value=0, max_value=10**6))
def test_serial_replay_starts_every_task_in_the_recorded_order(shape, seed):
    dag = random_dag(random.Random(shape), 15)
    recorded, _ = run_order(dag, shuffle=seed)  # any valid order, recorded one task at a time
    starts = {name: (float(2 * k), float(2 * k + 1)) for k, name in enumerate(recorded)}
    replayed, _ = run_order(dag, order=ReplayOrder(1, starts, serial=True))
    assert replayed == recorded


@pytest.mark.parametrize("kwargs", [{"shuffle": 9}, {"order": "critical-path", "durations": {"a": 5.0}}])
def test_tasks_to_start_first_still_come_first_under_an_order(kwargs):
    dag = [(name, ()) for name in "abcdef"]
    started, summary = run_order(dag, first=["e", "c"], **kwargs)
    assert sorted(started[:2]) == ["c", "e"] and sorted(started) == list("abcdef")
    rest, _ = run_order(dag, **kwargs)
    assert started[2:] == [name for name in rest if name not in "ce"]  # the others keep the order's ranks
