"""--graph formats and the one-worker start order used by --list."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thread_order import EventKind, Graph, Scheduler
from thread_order.cli.graphfmt import format_graph, graph_dot, graph_mermaid, graph_text, start_order

DIAMOND = Graph([("fetch", ()), ("left", ("fetch",)), ("right", ("fetch",)),
                 ("join", ("left", "right")), ("lonely", ())])


def test_text_summary():
    assert graph_text(DIAMOND) == """\
Graph: 5 nodes, 4 edges
Roots: fetch, lonely
Leaves: join, lonely
Levels: 3

Nodes:
  [0] fetch  (level 0)
  [1] left  (level 1)
  [2] right  (level 1)
  [3] join  (level 2)
  [4] lonely  (level 0)

Edges:
  fetch -> left, right
  left -> join
  right -> join

Stats:
  Longest chain length (edges): 2
  Longest chains:
    fetch -> left -> join
    fetch -> right -> join
  High fan-in nodes (many dependencies):
    join (indegree=2)
  High fan-out nodes (many dependents):
    fetch (children=2)
"""


def test_text_summary_of_a_flat_graph():
    text = graph_text(Graph([("a", ()), ("b", ())]))
    assert "Edges:\n  (none)\n" in text
    assert "Longest chain length (edges): 0\n" in text
    assert "Longest chains:" not in text
    assert "High fan-in nodes (many dependencies): (none)\n" in text
    assert "High fan-out nodes (many dependents): (none)\n" in text


def test_dot_is_quoted_and_marks_teardown():
    graph = Graph([('say "hi"', ()), ("back\\slash", ('say "hi"',))])
    assert graph_dot(graph, "my mod", always=["back\\slash"]) == """\
digraph "my mod" {
  rankdir=LR;
  node [shape=box, style="rounded", fontname="Helvetica"];
  "say \\"hi\\"";
  "back\\\\slash" [style="rounded,dashed"];
  "say \\"hi\\"" -> "back\\\\slash";
}
"""


@pytest.mark.skipif(shutil.which("dot") is None and not os.environ.get("CI"),
                    reason="Graphviz is not installed (CI installs it)")
def test_dot_is_accepted_by_graphviz():
    proc = subprocess.run(["dot", "-Tsvg"], input=graph_dot(DIAMOND, "t", ["join"]), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count('class="node"') == 5


def test_mermaid_uses_safe_ids_and_escapes_labels():
    graph = Graph([('a "b" <c>', ()), ("d&e#f", ('a "b" <c>',))])
    assert graph_mermaid(graph, always=["d&e#f"]) == """\
flowchart LR
  n0["a #34;b#34; #60;c#62;"]
  n1["d#38;e#35;f"]
  n0 --> n1
  classDef always stroke-dasharray: 5 5
  class n1 always
"""


def test_format_graph_dispatch_and_unknown_format():
    assert format_graph(DIAMOND) == graph_text(DIAMOND)
    assert format_graph(DIAMOND, "dot", "x").startswith('digraph "x" {')
    assert format_graph(DIAMOND, "mermaid").startswith("flowchart LR\n")
    with pytest.raises(ValueError, match=r"^unknown graph format 'png', expected one of text, dot, mermaid$"):
        format_graph(DIAMOND, "png")


@st.composite
def dags(draw):
    n = draw(st.integers(1, 25))
    deps = []
    for i in range(n):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        deps.append((f"t{i}", tuple(f"t{p}" for p in sorted(parents))))
    # registration order need not be topological: shuffle it
    return draw(st.permutations(deps))


@settings(max_examples=60, deadline=None)
@given(dags())
def test_start_order_is_what_one_worker_does(deps):
    graph = Graph(deps)
    sched = Scheduler(workers=1, capture=False)
    for name, after in deps:
        sched.register(lambda: None, name, after)
    started = []
    sched.subscribe(lambda e: started.append(e.name), EventKind.TASK_STARTED)
    sched.start()
    assert start_order(graph) == started
