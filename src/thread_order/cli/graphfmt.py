"""``tdrun --graph`` (the dependency graph as a text summary, Graphviz dot or Mermaid) and
``tdrun --list`` (the tasks in start order), each with the run's pools."""

from __future__ import annotations

import heapq
import re
from typing import Any, Iterable, Sequence

from ..engine.graph import Graph

__all__ = ["FORMATS", "format_graph", "graph_text", "graph_dot", "graph_mermaid", "start_order",
           "static_note", "task_list", "pool_note"]

FORMATS = ("text", "dot", "mermaid")

#: a node with at least this many dependencies (or dependents) is listed as high fan-in (fan-out)
FAN_THRESHOLD = 2
#: how many of the longest chains the text summary shows
CHAIN_LIMIT = 5


def start_order(graph: Graph, rank: Sequence[int] | None = None) -> list[str]:
    """The order in which tasks would start with one worker.

    The scheduler hands out the ready task registered first, so this is the
    topological order that always picks the lowest registration index -- or,
    under a start order (``--shuffle``, ``--order``), the lowest ``rank``.
    """
    nodes = graph.nodes
    index = {name: i for i, name in enumerate(nodes)}
    left = [len(graph.parents[name]) for name in nodes]
    key = (lambda i: i) if rank is None else rank.__getitem__
    ready = [(key(i), i) for i in range(len(nodes)) if not left[i]]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, i = heapq.heappop(ready)
        out.append(nodes[i])
        for child in graph.children[nodes[i]]:
            j = index[child]
            left[j] -= 1
            if not left[j]:
                heapq.heappush(ready, (key(j), j))
    return out


def graph_text(graph: Graph) -> str:
    """A human summary: counts, roots, leaves, levels, nodes, edges and the notable shapes."""
    lines = [
        f"Graph: {len(graph.nodes)} nodes, {graph.edge_count} edges",
        f"Roots: {_names(graph.roots)}",
        f"Leaves: {_names(graph.leaves)}",
        f"Levels: {len(graph.levels)}",
        "",
        "Nodes:",
    ]
    width = len(str(max(len(graph.nodes) - 1, 0)))
    for i, name in enumerate(graph.nodes):
        lines.append(f"  [{i:>{width}}] {name}  (level {graph.level_of[name]})")
    lines += ["", "Edges:"]
    if not graph.edge_count:
        lines.append("  (none)")
    for name in graph.nodes:
        children = graph.children[name]
        if children:
            lines.append(f"  {name} -> {', '.join(children)}")
    lines += ["", "Stats:", f"  Longest chain length (edges): {graph.longest_chain_length}"]
    chains = graph.longest_chains(CHAIN_LIMIT) if graph.edge_count else []
    if chains:
        lines.append("  Longest chains:")
        lines += [f"    {' -> '.join(chain)}" for chain in chains]
    fan_in = graph.fan_in(FAN_THRESHOLD)
    lines.append("  High fan-in nodes (many dependencies):" + ("" if fan_in else " (none)"))
    lines += [f"    {name} (indegree={n})" for name, n in fan_in]
    fan_out = graph.fan_out(FAN_THRESHOLD)
    lines.append("  High fan-out nodes (many dependents):" + ("" if fan_out else " (none)"))
    lines += [f"    {name} (children={n})" for name, n in fan_out]
    return "\n".join(lines) + "\n"


def _names(names: Iterable[str]) -> str:
    names = list(names)
    return ", ".join(names) if names else "(none)"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graph_dot(graph: Graph, name: str = "tasks", always: Iterable[str] = ()) -> str:
    """Graphviz source, left to right; ``always`` (teardown) tasks are drawn dashed."""
    always = set(always)
    lines = [
        f"digraph {_dot_quote(name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
    ]
    for node in graph.nodes:
        style = ' [style="rounded,dashed"]' if node in always else ""
        lines.append(f"  {_dot_quote(node)}{style};")
    for task, dependent in graph.edges:
        lines.append(f"  {_dot_quote(task)} -> {_dot_quote(dependent)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_MERMAID_UNSAFE = re.compile(r'["<>&#]')


def _mermaid_label(text: str) -> str:
    # Mermaid reads entity codes inside quoted labels; these characters would end or break them
    return _MERMAID_UNSAFE.sub(lambda m: f"#{ord(m.group())};", text)


def graph_mermaid(graph: Graph, always: Iterable[str] = ()) -> str:
    """A Mermaid flowchart, left to right; ids are ``n0..`` so any task name is safe."""
    always = set(always)
    ids = {node: f"n{i}" for i, node in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for node in graph.nodes:
        lines.append(f'  {ids[node]}["{_mermaid_label(node)}"]')
    for task, dependent in graph.edges:
        lines.append(f"  {ids[task]} --> {ids[dependent]}")
    teardown = [ids[node] for node in graph.nodes if node in always]
    if teardown:
        lines.append("  classDef always stroke-dasharray: 5 5")
        lines.append(f"  class {','.join(teardown)} always")
    return "\n".join(lines) + "\n"


def format_graph(graph: Graph, fmt: str = "text", name: str = "tasks", always: Iterable[str] = ()) -> str:
    """Render ``graph`` in one of :data:`FORMATS`.

    Raises:
        ValueError: ``fmt`` is not a known format.
    """
    if fmt == "text":
        return graph_text(graph)
    if fmt == "dot":
        return graph_dot(graph, name, always)
    if fmt == "mermaid":
        return graph_mermaid(graph, always)
    raise ValueError(f"unknown graph format {fmt!r}, expected one of {', '.join(FORMATS)}")


def task_list(collection: Any, graph: Graph, rank: Sequence[int] | None = None, how: str = "") -> str:
    """``tdrun --list``: the tasks in the order they would start with one worker, with their
    module (a suite's), case values, tags and dependencies; ``rank``/``how``: under a start order."""
    specs = {s.name: s for s in collection.specs}
    order = start_order(graph, rank)
    width = max(len(name) for name in order)
    num = len(str(len(order)))
    count = f"{len(order)} task{'s' if len(order) != 1 else ''}"
    if collection.suite:
        labels = [m.label for m in collection.modules]
        head = f"suite {collection.label}: {count} in {len(labels)} modules ({', '.join(labels)})"
    else:
        head = f"{collection.path}: {count}"
    lines = [f"{head}, in the order they would start with one worker" + (f" ({how})" if how else "")]
    for i, name in enumerate(order, 1):
        spec = specs[name]
        notes = []
        values = collection.cases.get(name)
        if values:
            notes.append("case: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
        if spec.is_async:
            notes.append("async")
        if spec.always:
            notes.append("always")
        if spec.retries:
            notes.append(f"retries={spec.retries}")
        if spec.timeout is not None:
            notes.append(f"timeout={spec.timeout:g}s")
        if spec.pools:
            notes.append(f"pool{'s' if len(spec.pools) > 1 else ''}: " + ",".join(spec.pools))
        if spec.tags:
            notes.append("tags: " + ",".join(spec.tags))
        if spec.after:
            notes.append("after: " + ", ".join(spec.after))
        line = f"  {i:>{num}}. {name}"
        if notes:
            line = f"{line:<{width + num + 5}}  " + "  ".join(notes)
        lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


#: how --graph's formats write a comment line, so the note keeps dot and mermaid paste-ready
_COMMENT = {"text": "", "dot": "// ", "mermaid": "%% "}


def static_note(graph: Graph, specs: Iterable[Any], fmt: str = "text") -> str:
    """What the state checker sees in the tasks' source before they run: each task reading
    ``state['results']['X']`` of a task X it does not run after (empty when none)."""
    from ..engine.statefind import static_findings

    found = static_findings(graph, [s.fn for s in specs])
    if not found:
        return ""
    lead = _COMMENT.get(fmt, "")
    lines = [f"{lead}state check: {len(found)} finding{'s' if len(found) != 1 else ''} in the tasks' source"]
    lines += [f"{lead}  {f['kind']}: {f['message']}" for f in found]
    return "\n".join(lines) + "\n"


def pool_note(pools: Any, specs: Iterable[Any], fmt: str = "text") -> str:
    """The run's pools (``{name: Pool}``), each with its size, rate and tasks, as --list and
    --graph end with them (empty when there are none)."""
    if not pools:
        return ""
    members: dict[str, list[str]] = {name: [] for name in pools}
    for spec in specs:
        for name in spec.pools:
            members.setdefault(name, []).append(spec.name)
    lead = _COMMENT.get(fmt, "")
    lines = [f"{lead}pools:"]
    for name, pool in pools.items():
        limits = ", ".join(x for x in (pool.size is not None and f"size {pool.size}",
                                       pool.rate_text and f"rate {pool.rate_text}") if x)
        tasks = members[name]
        count = f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}"
        lines.append(f"{lead}  {name} ({limits}): {count}" + (": " + ", ".join(tasks) if tasks else ""))
    return "\n".join(lines) + "\n"
