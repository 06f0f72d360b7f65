"""SVG pictures: the layered graph layout and the per-thread timeline, checked as parsed XML."""

from __future__ import annotations

import itertools
import random
import re
import time
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import Graph, Scheduler
from thread_order.report.svg import (
    NODE_H,
    STATUS_COLORS,
    _crossings,
    _isotonic,
    _order,
    critical_path,
    format_seconds,
    graph_svg,
    timeline_svg,
)

NS = {"s": "http://www.w3.org/2000/svg"}
TRANSLATE = re.compile(r"translate\(([-\d.]+),([-\d.]+)\)")


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def nodes_of(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-task"): g for g in root.iter("{http://www.w3.org/2000/svg}g")
            if g.get("class", "").split()[:1] == ["node"]}


def position(g: ET.Element) -> tuple[float, float]:
    x, y = TRANSLATE.search(g.get("transform")).groups()
    return float(x), float(y)


def layered_dag(n: int, layers: int, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    rng = random.Random(seed)
    per = max(n // layers, 1)
    names = [f"task_{i:03d}_{rng.choice(['create', 'verify', 'delete'])}_resource" for i in range(n)]
    edges = []
    for i in range(per, n):
        lo, hi = max(0, (i // per - 2) * per), (i // per) * per
        for dep in {names[rng.randrange(lo, hi)] for _ in range(rng.randint(1, 3))}:
            edges.append((dep, names[i]))
    return names, edges


# --------------------------------------------------------------------------- graph


def test_every_task_is_one_node_group_carrying_its_name_and_status():
    nodes = ["login", "create", "update", "verify", "teardown"]
    edges = [("login", "create"), ("create", "update"), ("update", "verify"), ("verify", "teardown")]
    svg = graph_svg(nodes, edges, {"login": "PASSED", "create": "FAILED", "update": "skipped"})
    root = parse(svg)
    groups = nodes_of(root)
    assert list(groups) == nodes
    assert {n: g.get("data-status") for n, g in groups.items()} == {
        "login": "PASSED", "create": "FAILED", "update": "SKIPPED", "verify": "WAITING", "teardown": "WAITING"}
    for name, g in groups.items():
        assert g.find("s:title", NS).text.startswith(name)
        assert g.find("s:rect", NS) is not None
    assert len(root.findall(".//s:path[@class='edge']", NS)) == 4
    # colours come from the style sheet keyed on data-status, so changing the attribute recolours
    style = root.find("s:style", NS).text
    for status, color in STATUS_COLORS.items():
        assert f'.node[data-status="{status}"] rect{{fill:{color}}}' in style


def test_layers_run_left_to_right_and_nodes_of_a_layer_do_not_overlap():
    names, edges = layered_dag(120, 8, seed=1)
    groups = nodes_of(parse(graph_svg(names, edges)))
    pos = {n: position(g) for n, g in groups.items()}
    levels = Graph([(n, [a for a, b in edges if b == n]) for n in names]).level_of
    for a, b in edges:
        assert pos[a][0] < pos[b][0]
    for n in names:  # same level, same column
        assert pos[n][0] == min(p[0] for m, p in pos.items() if levels[m] == levels[n])
    columns: dict[float, list[float]] = {}
    for x, y in pos.values():
        columns.setdefault(x, []).append(y)
    for ys in columns.values():
        ys.sort()
        assert all(b - a >= NODE_H for a, b in zip(ys, ys[1:]))


def test_ordering_removes_crossings_a_naive_order_has():
    # registration order puts b1 above b0 although a0 -> b0 and a1 -> b1: one crossing
    succ = [[3], [2], [], []]
    pred = [[], [], [1], [0]]
    ranks = [[0, 1], [2, 3]]
    pos = [{v: i for i, v in enumerate(r)} for r in ranks]
    assert _crossings(ranks[0], pos[1], pos[0], succ) == 1
    best = _order(ranks, succ, pred)
    pos = [{v: i for i, v in enumerate(r)} for r in best]
    assert _crossings(best[0], pos[1], pos[0], succ) == 0


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_crossing_count_matches_brute_force(data):
    top = data.draw(st.integers(1, 7))
    bottom = data.draw(st.integers(1, 7))
    succ = [sorted(data.draw(st.sets(st.integers(top, top + bottom - 1), max_size=bottom)))
            for _ in range(top)] + [[] for _ in range(bottom)]
    upper = data.draw(st.permutations(range(top)))
    lower = data.draw(st.permutations(range(top, top + bottom)))
    up_pos = {v: i for i, v in enumerate(upper)}
    low_pos = {v: i for i, v in enumerate(lower)}
    ends = [(up_pos[u], low_pos[v]) for u in upper for v in succ[u]]
    brute = sum(1 for (a, b), (c, d) in itertools.combinations(ends, 2) if (a - c) * (b - d) < 0)
    assert _crossings(list(upper), low_pos, up_pos, succ) == brute


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-500, 500), min_size=1, max_size=12), st.data())
def test_isotonic_placement_keeps_order_and_gaps_and_is_optimal(desired, data):
    gaps = data.draw(st.lists(st.sampled_from([27.0, 40.0]), min_size=len(desired) - 1,
                              max_size=len(desired) - 1))
    offsets = list(itertools.accumulate([0.0] + gaps))
    y = _isotonic(desired, offsets)
    for i, gap in enumerate(gaps):
        assert y[i + 1] - y[i] >= gap - 1e-6
    cost = sum((a - b) ** 2 for a, b in zip(y, desired))
    # no feasible nudge of any single block of neighbours does better
    for i in range(len(y)):
        for j in range(i, len(y)):
            for delta in (-1.0, 1.0):
                moved = [v + delta if i <= k <= j else v for k, v in enumerate(y)]
                if all(moved[k + 1] - moved[k] >= gaps[k] - 1e-6 for k in range(len(gaps))):
                    assert sum((a - b) ** 2 for a, b in zip(moved, desired)) >= cost - 1e-6
    if all(desired[k + 1] - desired[k] >= gaps[k] for k in range(len(gaps))):
        assert y == pytest.approx(desired)  # already feasible: left where wanted


def node_width(g: ET.Element) -> float:
    return float(g.find("s:rect", NS).get("width"))


def test_long_names_widen_the_nodes_then_lose_their_middle_not_their_end():
    # names that share a long prefix differ at the end: that part must stay on the node
    names = [f"create_subnet_in_availability_zone_eu_west_{z}" for z in ("1a", "1b")]
    root = parse(graph_svg(names + ["b"], [(names[0], "b"), (names[1], "b")]))
    groups = nodes_of(root)
    labels = [groups[n].find("s:text", NS).text for n in names]
    assert labels[0] != labels[1]
    for name, label in zip(names, labels):
        head, tail = label.split("\u2026")
        assert name.startswith(head) and name.endswith(tail) and len(tail) >= 6
        assert len(label) * 7 + 16 <= node_width(groups[name]) <= 296
        assert groups[name].find("s:title", NS).text.startswith(name)
    # a name that fits the widened box is whole
    mid = "create_subnet_eu_west_1a_and_route"
    assert nodes_of(parse(graph_svg([mid], [])))[mid].find("s:text", NS).text == mid
    assert node_width(nodes_of(parse(graph_svg(["a"], [])))["a"]) == 176


def test_names_are_escaped():
    name = 'a<b>&"c\''
    root = parse(graph_svg([name, "z"], [(name, "z")], {name: "FAILED"}))
    assert name in nodes_of(root)
    assert root.find(".//s:path[@class='edge']", NS).get("data-from") == name


def test_unknown_self_and_duplicate_edges_are_ignored_and_cycles_do_not_hang():
    root = parse(graph_svg(["a", "b"], [("a", "b"), ("a", "b"), ("a", "a"), ("a", "ghost")]))
    assert len(root.findall(".//s:path[@class='edge']", NS)) == 1
    root = parse(graph_svg(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "b")]))
    assert set(nodes_of(root)) == {"a", "b", "c"}
    assert "no tasks" in graph_svg([], [])


def test_the_critical_path_is_outlined_in_the_graph():
    root = parse(graph_svg(["a", "b", "c"], [("a", "b"), ("a", "c")], critical=["a", "c"]))
    groups = nodes_of(root)
    assert [n for n, g in groups.items() if "critical" in g.get("class")] == ["a", "c"]
    hot = [(p.get("data-from"), p.get("data-to")) for p in root.iter("{http://www.w3.org/2000/svg}path")
           if p.get("class") == "edge critical"]
    assert hot == [("a", "c")]


def test_five_hundred_tasks_stay_readable():
    names, edges = layered_dag(500, 20, seed=7)
    t0 = time.perf_counter()
    svg = graph_svg(names, edges, {n: "PASSED" for n in names})
    assert time.perf_counter() - t0 < 5
    root = parse(svg)
    groups = nodes_of(root)
    assert len(groups) == 500
    width, height = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox") == f"0 0 {width:.0f} {height:.0f}"  # scales when a page shrinks it
    columns = {position(g)[0] for g in groups.values()}
    assert len(columns) == len(Graph([(n, [a for a, b in edges if b == n]) for n in names]).levels)
    for g in groups.values():  # every label fits its box
        assert len(g.find("s:text", NS).text) * 7 + 16 <= node_width(g)


# --------------------------------------------------------------------------- timeline


def run_tasks(workers: int = 3):
    import threading

    gate = threading.Barrier(workers, timeout=10)
    sched = Scheduler(workers=workers)
    for i in range(workers):  # one task per thread at the same moment: every lane is used
        sched.register(gate.wait, f"start_{i}")
    sched.register(lambda: None, "join", after=[f"start_{i}" for i in range(workers)])
    sched.register(lambda: 1 / 0, "boom", after=["join"])
    sched.register(lambda: None, "never", after=["boom"])
    summary = sched.start()
    tasks = [dict(name=n, **{k: (v.value if k == "status" else v) for k, v in t.items()})
             for n, t in summary["tasks"].items()]
    return tasks, sched.graph.edges


def bars_of(root):
    return [r for r in root.iter("{http://www.w3.org/2000/svg}rect")
            if r.get("class", "").split()[:1] == ["bar"] and r.get("data-task")]


def test_one_lane_per_thread_and_one_bar_per_task_that_ran():
    tasks, edges = run_tasks(workers=3)
    root = parse(timeline_svg(tasks, edges=edges))
    lanes = [g.get("data-thread") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "lane"]
    assert lanes == ["thread_0", "thread_1", "thread_2"]
    bars = {r.get("data-task"): r for r in bars_of(root)}
    assert set(bars) == {"start_0", "start_1", "start_2", "join", "boom"}  # 'never' did not run
    assert bars["boom"].get("data-status") == "FAILED"
    assert "ZeroDivisionError" in bars["boom"].find("s:title", NS).text
    lane_y = {g.get("data-thread"): float(g.find("s:rect", NS).get("y"))
              for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "lane"}
    by_name = {t["name"]: t for t in tasks}
    for name, rect in bars.items():
        y = float(rect.get("y"))
        top = lane_y[by_name[name]["thread"]]
        assert top <= y <= top + 26
    assert float(bars["join"].get("x")) >= max(float(bars[f"start_{i}"].get("x")) for i in range(3))
    assert float(bars["boom"].get("x")) >= float(bars["join"].get("x"))


def test_the_critical_path_is_marked_on_the_timeline():
    tasks = [
        {"name": "a", "status": "PASSED", "thread": "thread_0", "started_at": 0.0, "finished_at": 1.0, "duration": 1.0},
        {"name": "b", "status": "PASSED", "thread": "thread_1", "started_at": 0.0, "finished_at": 3.0, "duration": 3.0},
        {"name": "c", "status": "PASSED", "thread": "thread_0", "started_at": 3.0, "finished_at": 4.0, "duration": 1.0},
        {"name": "d", "status": "PASSED", "thread": "thread_0", "started_at": 1.0, "finished_at": 1.5, "duration": 0.5},
    ]
    edges = [("a", "c"), ("b", "c"), ("a", "d")]
    assert critical_path(tasks, edges) == ["b", "c"]  # c ended last; b released it
    root = parse(timeline_svg(tasks, edges=edges))
    marked = sorted(r.get("data-task") for r in bars_of(root) if "critical" in r.get("class"))
    assert marked == ["b", "c"]
    chained = [{"name": n, "started_at": float(i), "finished_at": float(i + 1)} for i, n in enumerate("xyz")]
    assert critical_path(chained, [("x", "y"), ("y", "z")]) == ["x", "y", "z"]
    # a teardown released by a failure: the chain runs back through the skipped task to it
    failed = [{"name": "create", "started_at": 0.0, "finished_at": 1.0},
              {"name": "slow_side", "started_at": 0.0, "finished_at": 0.5},
              {"name": "verify", "started_at": None, "finished_at": 1.0},
              {"name": "teardown", "started_at": 1.0, "finished_at": 2.0}]
    edges = [("create", "verify"), ("verify", "teardown"), ("slow_side", "teardown")]
    assert critical_path(failed, edges) == ["create", "verify", "teardown"]
    assert critical_path([], []) == []


def test_a_run_where_nothing_ran_draws_a_note():
    svg = timeline_svg([{"name": "a", "status": "CANCELLED", "thread": None, "started_at": None}])
    assert "no task ran" in svg
    parse(svg)


def test_five_hundred_bars_on_eight_lanes():
    rng = random.Random(3)
    tasks, clock = [], [0.0] * 8
    for i in range(500):
        lane = rng.randrange(8)
        d = rng.random() * 0.01
        tasks.append({"name": f"task_with_a_long_name_{i}", "status": rng.choice(["PASSED", "FAILED"]),
                      "thread": f"thread_{lane}", "started_at": clock[lane], "finished_at": clock[lane] + d,
                      "duration": d})
        clock[lane] += d
    root = parse(timeline_svg(tasks))
    assert len(bars_of(root)) == 500
    assert len([g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "lane"]) == 8
    assert float(root.get("width")) < 1400  # the axis scales to the run, the page scrolls the rest
    for text in root.iter("{http://www.w3.org/2000/svg}text"):
        assert text.text is None or len(text.text) < 60


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 4.2e-6, 0.0042, 0.05, 0.123, 1.5, 95, 4000, None)] == [
        "0s", "4\u00b5s", "4.2ms", "50ms", "123ms", "1.50s", "1m35s", "1h06m", "\u2014"]


def legend_text(root):
    legend = next(g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "legend")
    return [t.text for t in legend.iter("{http://www.w3.org/2000/svg}text")]


def test_a_task_of_microseconds_still_gets_a_visible_bar():
    tasks = [
        {"name": "slow", "status": "PASSED", "thread": "thread_0", "started_at": 0.0, "finished_at": 12.0,
         "duration": 12.0},
        {"name": "quick", "status": "FAILED", "thread": "thread_1", "started_at": 5.0, "finished_at": 5.000032,
         "duration": 0.000032},
    ]
    bars = {r.get("data-task"): r for r in bars_of(parse(timeline_svg(tasks)))}
    assert float(bars["quick"].get("width")) >= 4
    assert "32\u00b5s" in bars["quick"].find("s:title", NS).text


def test_the_legend_counts_the_bars_it_outlines():
    # create failed: verify_* were skipped without running (no bar) yet sit on the critical path
    tasks = [
        {"name": "create", "status": "FAILED", "thread": "thread_0", "started_at": 0.0, "finished_at": 1.0},
        {"name": "verify", "status": "SKIPPED", "thread": None, "started_at": None, "finished_at": 1.0},
        {"name": "report", "status": "SKIPPED", "thread": None, "started_at": None, "finished_at": 1.0},
        {"name": "teardown", "status": "PASSED", "thread": "thread_0", "started_at": 1.0, "finished_at": 2.0},
    ]
    edges = [("create", "verify"), ("verify", "report"), ("report", "teardown")]
    assert critical_path(tasks, edges) == ["create", "verify", "report", "teardown"]
    root = parse(timeline_svg(tasks, edges=edges))
    outlined = [r.get("data-task") for r in bars_of(root) if "critical" in r.get("class")]
    assert outlined == ["create", "teardown"]
    assert "critical path (2 tasks)" in legend_text(root)


@pytest.mark.parametrize("span", [12.0, 0.9, 95.0, 0.0042])
def test_every_axis_label_fits_inside_the_picture(span):
    tasks = [{"name": "a", "status": "PASSED", "thread": "thread_0", "started_at": 0.0, "finished_at": span,
              "duration": span}]
    root = parse(timeline_svg(tasks))
    width = float(root.get("width"))
    axis = next(g for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "axis")
    labels = list(axis.iter("{http://www.w3.org/2000/svg}text"))
    assert labels[-1].text == format_seconds(span) or len(labels) > 2
    for text in labels:
        x = float(text.get("x"))
        chars = len(text.text) * 6.2
        left, right = (x - chars, x) if text.get("text-anchor") == "end" else (x, x + chars)
        assert 0 <= left and right <= width, (text.text, left, right, width)
