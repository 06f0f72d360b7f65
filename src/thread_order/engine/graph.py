"""The task dependency graph: validated once in O(V+E), then read-only."""

from __future__ import annotations

from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

from .errors import CycleError, DuplicateTaskError, UnknownDependencyError

__all__ = ["Graph"]


class Graph:
    """A validated DAG of task names, in registration order.

    Edges point from a task to the tasks that run after it. ``levels[0]`` are
    the roots; a node's level is the length of the longest path reaching it.

    Raises:
        DuplicateTaskError: a name appears twice.
        UnknownDependencyError: a task depends on a name not in the graph.
        CycleError: the dependencies form a cycle (reported as its path).
    """

    __slots__ = (
        "nodes", "parents", "children", "order", "level_of", "levels",
        "roots", "leaves", "edge_count", "_index", "_parent_idx", "_child_idx",
    )

    def __init__(self, deps: Iterable[tuple[str, Sequence[str]]]) -> None:
        pairs = list(deps)
        index: dict[str, int] = {}
        for i, (name, _) in enumerate(pairs):
            if name in index:
                raise DuplicateTaskError(name)
            index[name] = i
        n = len(pairs)
        parent_idx: list[list[int]] = [[] for _ in range(n)]
        child_idx: list[list[int]] = [[] for _ in range(n)]
        edge_count = 0
        for i, (name, after) in enumerate(pairs):
            plist = parent_idx[i]
            for dep in after:
                j = index.get(dep)
                if j is None:
                    raise UnknownDependencyError(name, dep)
                plist.append(j)
                child_idx[j].append(i)
                edge_count += 1

        # Kahn's algorithm, seeded and drained in registration order
        indeg = [len(p) for p in parent_idx]
        order = [i for i in range(n) if not indeg[i]]
        level = [0] * n
        pos = 0
        while pos < len(order):
            v = order[pos]
            pos += 1
            lv = level[v] + 1
            for c in child_idx[v]:
                if level[c] < lv:
                    level[c] = lv
                indeg[c] -= 1
                if not indeg[c]:
                    order.append(c)
        if len(order) < n:
            raise CycleError(_find_cycle(pairs, parent_idx, indeg))

        names = tuple(name for name, _ in pairs)
        self.nodes: tuple[str, ...] = names
        self._index = index
        self._parent_idx = parent_idx
        self._child_idx = child_idx
        self.edge_count = edge_count
        self.order: tuple[str, ...] = tuple(names[i] for i in order)
        self.level_of: Mapping[str, int] = MappingProxyType({names[i]: level[i] for i in range(n)})
        depth = max(level, default=-1) + 1
        buckets: list[list[str]] = [[] for _ in range(depth)]
        for i in range(n):
            buckets[level[i]].append(names[i])
        self.levels: tuple[tuple[str, ...], ...] = tuple(tuple(b) for b in buckets)
        self.parents: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {names[i]: tuple(names[j] for j in parent_idx[i]) for i in range(n)}
        )
        self.children: Mapping[str, tuple[str, ...]] = MappingProxyType(
            {names[i]: tuple(names[j] for j in child_idx[i]) for i in range(n)}
        )
        self.roots: tuple[str, ...] = tuple(names[i] for i in range(n) if not parent_idx[i])
        self.leaves: tuple[str, ...] = tuple(names[i] for i in range(n) if not child_idx[i])

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"<Graph {len(self.nodes)} nodes, {self.edge_count} edges, {len(self.levels)} levels>"

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Every ``(task, dependent)`` pair, grouped by task in registration order."""
        names = self.nodes
        return [(names[i], names[c]) for i in range(len(names)) for c in self._child_idx[i]]

    def fan_in(self, minimum: int = 2) -> list[tuple[str, int]]:
        """Nodes with at least ``minimum`` dependencies, most first."""
        items = [(n, len(p)) for n, p in self.parents.items() if len(p) >= minimum]
        return sorted(items, key=lambda item: -item[1])

    def fan_out(self, minimum: int = 2) -> list[tuple[str, int]]:
        """Nodes with at least ``minimum`` dependents, most first."""
        items = [(n, len(c)) for n, c in self.children.items() if len(c) >= minimum]
        return sorted(items, key=lambda item: -item[1])

    @property
    def longest_chain_length(self) -> int:
        """Edges on the longest dependency chain (0 for an empty or flat graph)."""
        return max(len(self.levels) - 1, 0)

    def longest_chains(self, limit: int = 5) -> list[list[str]]:
        """Up to ``limit`` of the longest root-to-node chains, in registration order."""
        if not self.nodes:
            return []
        top = len(self.levels) - 1
        level = self.level_of
        chains: list[list[str]] = []
        # depth-first from each deepest node back to a root, only along levels that drop by one
        for end in self.levels[top]:
            stack = [(end, [end])]
            while stack and len(chains) < limit:
                node, path = stack.pop()
                lv = level[node]
                if lv == 0:
                    chains.append(path[::-1])
                    continue
                for p in reversed(self.parents[node]):
                    if level[p] == lv - 1:
                        stack.append((p, path + [p]))
            if len(chains) >= limit:
                break
        return chains

    def upstream(self, name: str) -> list[str]:
        """Every task ``name`` depends on, directly or not, in registration order."""
        return self._reach(name, self._parent_idx)

    def downstream(self, name: str) -> list[str]:
        """Every task that depends on ``name``, directly or not, in registration order."""
        return self._reach(name, self._child_idx)

    def _reach(self, name: str, adjacency: list[list[int]]) -> list[str]:
        start = self._index[name]
        seen = {start}
        stack = [start]
        while stack:
            for nxt in adjacency[stack.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        seen.discard(start)
        return [self.nodes[i] for i in sorted(seen)]


def _find_cycle(pairs, parent_idx: list[list[int]], indeg: list[int]) -> list[str]:
    """Return one cycle among the nodes Kahn's algorithm could not order.

    Every such node still has a parent in the leftover set, so walking parents
    from the first leftover node must revisit a node; that loop is a cycle.
    """
    start = next(i for i, d in enumerate(indeg) if d > 0)
    seen: dict[int, int] = {}
    path: list[int] = []
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in parent_idx[node] if indeg[p] > 0)
    loop = path[seen[node]:]  # each entry depends on the next
    loop.reverse()  # now in run order: each entry runs before the next
    # rotate so the earliest-registered node leads, for stable messages
    k = loop.index(min(loop))
    loop = loop[k:] + loop[:k]
    names = [pairs[i][0] for i in loop]
    return names + [names[0]]
