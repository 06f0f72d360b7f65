"""The task dependency graph: validated once in O(V+E), then read-only."""

from __future__ import annotations

from array import array
from itertools import accumulate, chain
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

from .errors import CycleError, DuplicateTaskError, UnknownDependencyError, close_names

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

    # The edges are kept as flat arrays of machine integers (compressed sparse rows): the
    # parents of node i are _pflat[_pstart[i]:_pstart[i + 1]], its children likewise in
    # _cflat/_cstart. At 100,000 tasks that is a few MB where a list per node, and an int
    # object per entry, cost tens; the name-keyed views
    # (parents, children, level_of, levels, order, roots, leaves) are built on first use.
    __slots__ = (
        "nodes", "edge_count", "_index", "_pstart", "_pflat", "_cstart", "_cflat",
        "_order", "_level", "_views",
    )

    def __init__(self, deps: Iterable[tuple[str, Sequence[str]]]) -> None:
        pairs = list(deps)
        index: dict[str, int] = {}
        for i, (name, _) in enumerate(pairs):
            if name in index:
                raise DuplicateTaskError(name)
            index[name] = i
        self._build(index, [after for _, after in pairs])

    @classmethod
    def _from_index(cls, index: dict[str, int], afters: Sequence[Sequence[str]]) -> "Graph":
        """The graph of names already known unique (``index``: name -> position, in order)."""
        graph = cls.__new__(cls)
        graph._build(index, afters)
        return graph

    def _build(self, index: dict[str, int], afters: Sequence[Sequence[str]]) -> None:
        names = tuple(index)
        n = len(names)
        counts = list(map(len, afters))
        pstart = array("l", accumulate(counts, initial=0))
        parents = list(map(index.get, chain.from_iterable(afters)))
        if None in parents:
            pos = parents.index(None)
            i = next(i for i in range(n) if pstart[i + 1] > pos)
            dep = afters[i][pos - pstart[i]]
            raise UnknownDependencyError(names[i], dep, tuple(close_names(dep, names)))
        pflat = array("l", parents)
        del parents
        # children: a counting sort of the edges by parent, stable so that each node's
        # children stay in registration order
        ccount = [0] * n
        for j in pflat:
            ccount[j] += 1
        cstart = array("l", accumulate(ccount, initial=0))
        del ccount
        fill = cstart[:-1]
        cflat = array("l", bytes(8 * len(pflat)))
        for i in range(n):
            for j in pflat[pstart[i]:pstart[i + 1]]:
                cflat[fill[j]] = i
                fill[j] += 1
        del fill

        # Kahn's algorithm, seeded and drained in registration order
        indeg = counts
        order = array("l", [i for i in range(n) if not indeg[i]])
        level = [0] * n
        pos = 0
        while pos < len(order):
            v = order[pos]
            pos += 1
            lv = level[v] + 1
            for c in cflat[cstart[v]:cstart[v + 1]]:
                if level[c] < lv:
                    level[c] = lv
                indeg[c] -= 1
                if not indeg[c]:
                    order.append(c)
        if len(order) < n:
            parent_idx = [pflat[pstart[i]:pstart[i + 1]] for i in range(n)]
            raise CycleError(_find_cycle(names, parent_idx, indeg))

        self.nodes: tuple[str, ...] = names
        self.edge_count = len(pflat)
        self._index = index
        self._pstart, self._pflat, self._cstart, self._cflat = pstart, pflat, cstart, cflat
        self._order = order
        self._level = level
        self._views: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"<Graph {len(self.nodes)} nodes, {self.edge_count} edges, {len(self.levels)} levels>"

    # ------------------------------------------------------------------ name-keyed views

    def _view(self, key: str, build):
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = build()
        return view

    @property
    def order(self) -> tuple[str, ...]:
        """Kahn's topological order, seeded and drained in registration order."""
        return self._view("order", lambda: tuple(self.nodes[i] for i in self._order))

    @property
    def level_of(self) -> Mapping[str, int]:
        """Each node's level (read-only)."""
        return self._view("level_of", lambda: MappingProxyType(dict(zip(self.nodes, self._level))))

    @property
    def levels(self) -> tuple[tuple[str, ...], ...]:
        """The nodes of each level, in registration order."""

        def build():
            buckets: list[list[str]] = [[] for _ in range(max(self._level, default=-1) + 1)]
            for name, lv in zip(self.nodes, self._level):
                buckets[lv].append(name)
            return tuple(tuple(b) for b in buckets)

        return self._view("levels", build)

    @property
    def parents(self) -> Mapping[str, tuple[str, ...]]:
        """Each node's dependencies, in the order they were declared (read-only)."""
        return self._view("parents", lambda: self._adjacency(self._pstart, self._pflat))

    @property
    def children(self) -> Mapping[str, tuple[str, ...]]:
        """Each node's dependents, in registration order (read-only)."""
        return self._view("children", lambda: self._adjacency(self._cstart, self._cflat))

    def _adjacency(self, start: Sequence[int], flat: Sequence[int]) -> Mapping[str, tuple[str, ...]]:
        names = self.nodes
        return MappingProxyType({
            names[i]: tuple(names[j] for j in flat[start[i]:start[i + 1]]) for i in range(len(names))
        })

    @property
    def roots(self) -> tuple[str, ...]:
        """Nodes without dependencies, in registration order."""
        p = self._pstart
        return tuple(name for i, name in enumerate(self.nodes) if p[i] == p[i + 1])

    @property
    def leaves(self) -> tuple[str, ...]:
        """Nodes without dependents, in registration order."""
        c = self._cstart
        return tuple(name for i, name in enumerate(self.nodes) if c[i] == c[i + 1])

    @property
    def edges(self) -> list[tuple[str, str]]:
        """Every ``(task, dependent)`` pair, grouped by task in registration order."""
        names, start, flat = self.nodes, self._cstart, self._cflat
        return [(names[i], names[c]) for i in range(len(names)) for c in flat[start[i]:start[i + 1]]]

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
        return self._reach(name, self._pstart, self._pflat)

    def downstream(self, name: str) -> list[str]:
        """Every task that depends on ``name``, directly or not, in registration order."""
        return self._reach(name, self._cstart, self._cflat)

    def _reach(self, name: str, start: Sequence[int], flat: Sequence[int]) -> list[str]:
        first = self._index[name]
        seen = {first}
        stack = [first]
        while stack:
            v = stack.pop()
            for nxt in flat[start[v]:start[v + 1]]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        seen.discard(first)
        return [self.nodes[i] for i in sorted(seen)]


def _find_cycle(names: Sequence[str], parent_idx: list[Sequence[int]], indeg: list[int]) -> list[str]:
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
    cycle = [names[i] for i in loop]
    return cycle + [cycle[0]]
