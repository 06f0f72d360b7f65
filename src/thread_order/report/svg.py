"""SVG pictures of a run: the task graph in layers, left to right, and a Gantt timeline per thread.

Both are plain strings of SVG with an embedded ``<style>``, so they can be
inlined in an HTML page. Graph nodes are ``<g class="node" data-task=NAME
data-status=STATUS>`` and their colour comes from the style sheet keyed on
``data-status``: a page recolours a node live by changing that attribute.

The layout is computed here, in the Sugiyama manner: longest-path layering,
long edges split by dummy points, barycentre ordering sweeps (keeping the
order with the fewest crossings), then each layer's vertical positions placed
by isotonic regression towards the mean of their neighbours.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from html import escape
from typing import Any, Iterable, Mapping, Sequence

from ..runview import LOOP_THREAD, loop_rows
from ..theme import STATUS_COLORS, format_seconds

__all__ = ["STATUS_COLORS", "graph_svg", "timeline_svg", "critical_path", "format_seconds"]

_DARK_TEXT = {"SKIPPED", "WAITING"}  # light fills: dark text reads better

NODE_W, NODE_H = 176, 28
NODE_W_MAX = 296  # nodes widen to fit long names up to this, then elide in the middle
CHAR_W = 7  # an average character of the 12px node font, in pixels
GAP_X, ROW_H, DUMMY_ROW = 64, 40, 14
MARGIN = 16
SWEEPS = 4  # down+up barycentre passes; more rarely removes another crossing
DUMMY_LIMIT = 20_000  # beyond this many dummy points long edges are drawn straight

LANE_H, BAR_H, LABEL_W, AXIS_H, LEGEND_H = 26, 18, 96, 24, 26
MIN_BAR = 4  # a task of microseconds still gets a bar one can see and hover
AXIS_CHAR_W = 6.2  # an average character of the 11px timeline font

_STYLE = "".join(
    f'.tdo-graph .node[data-status="{s}"] rect{{fill:{c}}}'
    f'.tdo-graph .node[data-status="{s}"] text{{fill:{"#1f2328" if s in _DARK_TEXT else "#ffffff"}}}'
    f'.tdo-timeline .bar[data-status="{s}"]{{fill:{c}}}'
    for s, c in STATUS_COLORS.items()
) + (
    ".tdo-graph .node rect{stroke:#1f2328;stroke-opacity:.25;stroke-width:1}"
    ".tdo-graph .node.critical rect{stroke:#111827;stroke-opacity:1;stroke-width:2.5}"
    ".tdo-graph text{font:12px system-ui,-apple-system,'Segoe UI',sans-serif;dominant-baseline:central}"
    ".tdo-graph .edge{fill:none;stroke:#9aa3af;stroke-width:1.2}"
    ".tdo-graph .edge.critical{stroke:#111827;stroke-width:2.2}"
    ".tdo-timeline text{font:11px system-ui,-apple-system,'Segoe UI',sans-serif;fill:#1f2328}"
    ".tdo-timeline .lane-bg{fill:#f4f6f8}.tdo-timeline .lane-bg.odd{fill:#eceff3}"
    ".tdo-timeline .wait{fill:#9aa3af;fill-opacity:.35;stroke:#9aa3af;stroke-opacity:.6;stroke-dasharray:2 2}"
    ".tdo-timeline .tick{stroke:#d0d5dc;stroke-width:1}"
    ".tdo-timeline .bar{stroke:#ffffff;stroke-width:.5}"
    ".tdo-timeline .bar.critical{stroke:#111827;stroke-width:2}"
    ".tdo-timeline .bar-label{fill:#ffffff;pointer-events:none}"
    ".tdo-timeline .bar-label.dark{fill:#1f2328}"
)


def _status(value: Any) -> str:
    text = str(getattr(value, "value", value) or "WAITING").upper()
    return text if text in STATUS_COLORS else "WAITING"


def _clip(text: str, chars: int) -> str:
    if chars < 2:
        return ""
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def _elide_middle(text: str, chars: int) -> str:
    """Cut ``text`` to ``chars`` by dropping its middle: names that share a prefix
    (``create_subnet_eu_west_1a``, ``..._1b``) differ at the end, so both ends stay."""
    if len(text) <= chars:
        return text
    if chars < 3:
        return _clip(text, chars)
    head = chars // 2
    tail = chars - 1 - head
    return text[:head] + "\u2026" + (text[-tail:] if tail else "")


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


# --------------------------------------------------------------------------- graph layout


def _layers(n: int, succ: list[list[int]], pred: list[list[int]]) -> list[int]:
    """Longest-path layering; nodes on a cycle (not a DAG) go after everything else."""
    indeg = [len(p) for p in pred]
    layer = [0] * n
    order = [i for i in range(n) if not indeg[i]]
    pos = 0
    while pos < len(order):
        v = order[pos]
        pos += 1
        for c in succ[v]:
            layer[c] = max(layer[c], layer[v] + 1)
            indeg[c] -= 1
            if not indeg[c]:
                order.append(c)
    if len(order) < n:
        top = max(layer, default=0) + 1
        for i in range(n):
            if indeg[i]:
                layer[i] = top
    return layer


def _crossings(upper: list[int], lower_pos: dict[int, int], up_pos: dict[int, int],
               succ: list[list[int]]) -> int:
    """Edge crossings between two adjacent layers (inversions, counted with a Fenwick tree)."""
    ends = sorted((up_pos[u], lower_pos[v]) for u in upper for v in succ[u] if v in lower_pos)
    size = len(lower_pos) + 1
    tree = [0] * (size + 1)
    seen = crossings = 0
    for _, p in ends:
        i = p + 1
        below = 0
        while i > 0:  # how many seen so far end at or before p
            below += tree[i]
            i -= i & -i
        crossings += seen - below
        seen += 1
        i = p + 1
        while i <= size:
            tree[i] += 1
            i += i & -i
    return crossings


def _order(ranks: list[list[int]], succ: list[list[int]], pred: list[list[int]]) -> list[list[int]]:
    """Barycentre sweeps down and up; returns the ordering with the fewest crossings seen."""

    def total(rs):
        pos = [{v: i for i, v in enumerate(r)} for r in rs]
        return sum(_crossings(rs[k], pos[k + 1], pos[k], succ) for k in range(len(rs) - 1))

    best = [list(r) for r in ranks]
    best_cost = total(best)
    current = [list(r) for r in ranks]
    for sweep in range(SWEEPS * 2):
        if best_cost == 0:
            break
        down = sweep % 2 == 0
        seq = range(1, len(current)) if down else range(len(current) - 2, -1, -1)
        for k in seq:
            ref = current[k - 1] if down else current[k + 1]
            ref_pos = {v: i for i, v in enumerate(ref)}
            keyed = []
            for i, v in enumerate(current[k]):
                nbrs = [ref_pos[u] for u in (pred[v] if down else succ[v]) if u in ref_pos]
                keyed.append((sum(nbrs) / len(nbrs) if nbrs else float(i), i, v))
            keyed.sort()
            current[k] = [v for _, _, v in keyed]
        cost = total(current)
        if cost < best_cost:
            best, best_cost = [list(r) for r in current], cost
    return best


def _isotonic(desired: list[float], offsets: list[float]) -> list[float]:
    """Positions keeping order and spacing (``offsets``), nearest to ``desired`` in least squares.

    Subtracting each slot's cumulative offset turns "keep the gaps" into "be
    non-decreasing", which pool-adjacent-violators solves exactly in O(n).
    """
    z = [d - o for d, o in zip(desired, offsets)]
    blocks: list[list[float]] = []  # [sum, count]
    for value in z:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out.extend([s / c] * c)
    return [v + o for v, o in zip(out, offsets)]


def _place(ranks: list[list[int]], succ, pred, is_dummy: list[bool]) -> dict[int, float]:
    """Vertical centre of every node: stacked, then pulled towards their neighbours."""

    def offsets(rank):
        out, acc = [], 0.0
        for i, v in enumerate(rank):
            if i:
                both_real = not is_dummy[v] and not is_dummy[rank[i - 1]]
                acc += ROW_H if both_real else (ROW_H + DUMMY_ROW) / 2
            out.append(acc)
        return out

    offs = [offsets(r) for r in ranks]
    height = max((o[-1] for o in offs if o), default=0.0)
    y: dict[int, float] = {}
    for rank, off in zip(ranks, offs):
        shift = (height - (off[-1] if off else 0)) / 2
        for v, o in zip(rank, off):
            y[v] = o + shift
    for _ in range(2):
        for down in (True, False):
            seq = range(1, len(ranks)) if down else range(len(ranks) - 2, -1, -1)
            for k in seq:
                rank = ranks[k]
                desired = []
                for v in rank:
                    nbrs = pred[v] if down else succ[v]
                    desired.append(sum(y[u] for u in nbrs) / len(nbrs) if nbrs else y[v])
                for v, pos in zip(rank, _isotonic(desired, offs[k])):
                    y[v] = pos
    low = min(y.values(), default=0.0)
    return {v: pos - low for v, pos in y.items()}


def critical_path(tasks: Iterable[Mapping[str, Any]], edges: Iterable[Sequence[str]]) -> list[str]:
    """The chain of tasks that decided when the run ended, first to last.

    From the task that finished last, step back each time to the dependency
    that finished last (the one that released it). Tasks decided without
    running (skipped after a failure) count, at the moment they were decided:
    a teardown released by a failure upstream leads back to that failure.
    """
    ran = {t["name"]: t for t in tasks if t.get("finished_at") is not None}
    if not ran:
        return []
    parents: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        parents[b].append(a)
    current = max(ran.values(), key=lambda t: t["finished_at"])
    path = [current["name"]]
    seen = {current["name"]}
    while True:
        candidates = [ran[p] for p in parents.get(current["name"], ()) if p in ran and p not in seen]
        if not candidates:
            break
        current = max(candidates, key=lambda t: t["finished_at"])
        path.append(current["name"])
        seen.add(current["name"])
    return path[::-1]


def graph_svg(
    nodes: Sequence[str],
    edges: Iterable[Sequence[str]],
    statuses: Mapping[str, Any] | None = None,
    *,
    critical: Iterable[str] | None = None,
) -> str:
    """The dependency graph as SVG, layered left to right.

    Args:
        nodes: task names (registration order breaks ties).
        edges: ``(task, dependent)`` pairs; pairs naming unknown tasks are ignored.
        statuses: task name -> status (``PASSED``...); missing ones are ``WAITING``.
        critical: task names to outline as the critical path.
    """
    names = list(dict.fromkeys(nodes))
    index = {name: i for i, name in enumerate(names)}
    n = len(names)
    statuses = statuses or {}
    crit = set(critical or ())
    succ: list[list[int]] = [[] for _ in range(n)]
    pred: list[list[int]] = [[] for _ in range(n)]
    pairs = []
    for edge in edges:
        a, b = index.get(edge[0]), index.get(edge[1])
        if a is None or b is None or a == b or b in succ[a]:
            continue
        succ[a].append(b)
        pred[b].append(a)
        pairs.append((a, b))
    if not n:
        return ('<svg xmlns="http://www.w3.org/2000/svg" class="tdo-graph" width="240" height="40">'
                '<text x="12" y="24" font-family="sans-serif" font-size="12">no tasks</text></svg>')
    layer = _layers(n, succ, pred)

    # split long edges into unit steps through dummy points, so ordering sees them
    is_dummy = [False] * n
    layer_of = list(layer)
    d_succ = [list(s) for s in succ]
    d_pred = [list(p) for p in pred]
    routes: dict[tuple[int, int], list[int]] = {}
    budget = DUMMY_LIMIT
    for a, b in pairs:
        span = layer_of[b] - layer_of[a]
        if span <= 1 or span - 1 > budget:
            continue
        budget -= span - 1
        d_succ[a].remove(b)
        d_pred[b].remove(a)
        chain = [a]
        for step in range(1, span):
            v = len(layer_of)
            layer_of.append(layer_of[a] + step)
            is_dummy.append(True)
            d_succ.append([])
            d_pred.append([])
            d_succ[chain[-1]].append(v)
            d_pred[v].append(chain[-1])
            chain.append(v)
        d_succ[chain[-1]].append(b)
        d_pred[b].append(chain[-1])
        routes[(a, b)] = chain[1:]
    depth = max(layer_of) + 1
    ranks: list[list[int]] = [[] for _ in range(depth)]
    for v in range(len(layer_of)):  # registration order first, dummies after their source
        ranks[layer_of[v]].append(v)
    ranks = _order(ranks, d_succ, d_pred)
    y = _place(ranks, d_succ, d_pred, is_dummy)

    node_w = min(max(NODE_W, max(len(name) for name in names) * CHAR_W + 16), NODE_W_MAX)

    def x_of(v: int) -> float:
        return MARGIN + layer_of[v] * (node_w + GAP_X)

    top = MARGIN + NODE_H / 2
    width = MARGIN * 2 + depth * node_w + (depth - 1) * GAP_X
    height = MARGIN * 2 + NODE_H + max(y.values())
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tdo-graph" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="task graph: {n} tasks, {len(pairs)} dependencies">',
        f"<style>{_STYLE}</style>",
        '<defs><marker id="tdo-arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#9aa3af"/></marker></defs>',
        '<g class="edges">',
    ]
    for a, b in pairs:
        points = [(x_of(a) + node_w, top + y[a])]
        for v in routes.get((a, b), ()):
            points.append((x_of(v) + node_w / 2, top + y[v]))
        points.append((x_of(b), top + y[b]))
        d = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
        for (x1, y1), (x2, y2) in zip(points, points[1:]):
            mid = (x2 - x1) / 2
            d.append(f"C{x1 + mid:.1f},{y1:.1f} {x2 - mid:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
        hot = names[a] in crit and names[b] in crit
        out.append(
            f'<path class="edge{" critical" if hot else ""}" data-from="{escape(names[a])}" '
            f'data-to="{escape(names[b])}" d="{" ".join(d)}" marker-end="url(#tdo-arrow)"/>'
        )
    out.append('</g><g class="nodes">')
    chars = (node_w - 16) // CHAR_W
    for v in range(n):
        name = names[v]
        status = _status(statuses.get(name))
        label = _elide_middle(name, chars)
        cls = "node critical" if name in crit else "node"
        out.append(
            f'<g class="{cls}" data-task="{escape(name)}" data-status="{status}" '
            f'transform="translate({x_of(v):.1f},{MARGIN + y[v]:.1f})">'
            f"<title>{escape(name)} \u2014 {status.lower()}</title>"
            f'<rect width="{node_w}" height="{NODE_H}" rx="6"/>'
            f'<text x="8" y="{NODE_H / 2:.0f}">{escape(label)}</text></g>'
        )
    out.append("</g></svg>")
    return "".join(out)


# --------------------------------------------------------------------------- timeline


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return m * power
    return 10 * power


def attempt_bars(tasks: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``tasks`` plus a bar of their own for the earlier attempts of retried tasks.

    Each earlier (failed, retried) attempt from the history's ``earlier_attempts``
    becomes a task dict named ``name (attempt N)`` on the thread that ran it, for
    :func:`timeline_svg`; the task's own dict stays its last attempt.
    """
    out = []
    for t in tasks:
        out.append(t)
        for a in t.get("earlier_attempts") or ():
            if a.get("started_at") is None or not a.get("thread"):
                continue
            out.append({"name": f"{t['name']} (attempt {a['attempt']})", "status": a.get("status"),
                        "thread": a["thread"], "started_at": a["started_at"],
                        "finished_at": a.get("finished_at"), "duration": a.get("duration") or 0.0,
                        "attempts": a["attempt"], "error_type": a.get("error_type"),
                        "error": a.get("error")})
    return out


def timeline_svg(
    tasks: Iterable[Mapping[str, Any]],
    *,
    critical: Iterable[str] | None = None,
    edges: Iterable[Sequence[str]] | None = None,
    width: int = 1100,
) -> str:
    """A Gantt chart: one lane per worker thread, one bar per task that ran.

    Async tasks share the event loop's thread: they get rows of their own
    after the worker lanes (``event_loop``, ``event_loop ·2``, ...), as many
    as ran at once.

    Args:
        tasks: task dicts (``name``, ``status``, ``thread``, ``started_at``,
            ``finished_at``, ``duration``, ``attempts``, ``error_type``, ``error``; and
            ``waited``, ``waited_for`` for a task a pool kept waiting, drawn as a lighter
            segment before its bar).
        critical: task names to outline; computed from ``edges`` when not given.
        edges: ``(task, dependent)`` pairs, to find the critical path.
        width: pixels for the time axis (the SVG scales with its container).
    """
    tasks = list(tasks)
    ran = [t for t in tasks if t.get("thread") and t.get("started_at") is not None]
    if critical is None:
        critical = critical_path(tasks, edges) if edges is not None else ()
    crit = set(critical)
    if not ran:
        return ('<svg xmlns="http://www.w3.org/2000/svg" class="tdo-timeline" width="320" height="40">'
                f"<style>{_STYLE}</style>"
                '<text x="12" y="24">no task ran</text></svg>')
    def wait_of(t):  # seconds a pool kept it waiting before its bar, 0 if none
        return (t.get("waited") or 0.0) if t.get("waited_for") else 0.0

    t0 = min(t["started_at"] - wait_of(t) for t in ran)

    def end_of(t):
        if t.get("finished_at") is not None:
            return t["finished_at"]
        return t["started_at"] + (t.get("duration") or 0.0)

    loop_row = loop_rows(ran, end_of)
    row_of = [loop_row.get(i, t["thread"]) for i, t in enumerate(ran)]
    lanes = sorted({t["thread"] for t in ran if t["thread"] != LOOP_THREAD}, key=_natural)
    lanes += sorted(set(loop_row.values()), key=_natural)
    t1 = max(end_of(t) for t in ran)
    span = max(t1 - t0, 1e-6)
    scale = width / span
    lane_of = {name: i for i, name in enumerate(lanes)}
    plot_top = LEGEND_H + AXIS_H
    total_w = LABEL_W + width + MARGIN
    total_h = plot_top + len(lanes) * LANE_H + 8
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tdo-timeline" width="{total_w}" '
        f'height="{total_h}" viewBox="0 0 {total_w} {total_h}" role="img" '
        f'aria-label="timeline: {len(ran)} tasks on {len(lanes)} threads over {format_seconds(span)}">',
        f"<style>{_STYLE}</style>",
        '<g class="legend">',
    ]
    x = LABEL_W
    for status in ("PASSED", "FAILED", "CANCELLED", "SKIPPED"):
        out.append(f'<rect class="bar" data-status="{status}" x="{x}" y="6" width="12" height="12"/>'
                   f'<text x="{x + 16}" y="16">{status.lower()}</text>')
        x += 90
    # the legend counts the bars it outlines: critical tasks decided without running have none
    if any(wait_of(t) for t in ran):
        out.append(f'<rect class="wait" x="{x}" y="6" width="12" height="12"/>'
                   f'<text x="{x + 16}" y="16">waiting for a pool</text>')
        x += 140
    outlined = sum(1 for t in ran if t["name"] in crit)
    if outlined:
        out.append(f'<rect class="bar critical" data-status="WAITING" x="{x}" y="6" width="12" height="12"/>'
                   f'<text x="{x + 16}" y="16">critical path ({outlined} '
                   f'{"task" if outlined == 1 else "tasks"})</text>')
    out.append('</g><g class="axis">')
    step = _nice_step(span)
    k = 0
    while k * step <= span + 1e-12:
        tx = LABEL_W + k * step * scale
        label = format_seconds(k * step) if k else "0"
        # a label that would run past the right edge ends at its tick instead
        if tx + 2 + len(label) * AXIS_CHAR_W > total_w - 2:
            place = f'x="{tx - 2:.1f}" text-anchor="end"'
        else:
            place = f'x="{tx + 2:.1f}"'
        out.append(f'<line class="tick" x1="{tx:.1f}" y1="{plot_top - 4}" x2="{tx:.1f}" '
                   f'y2="{total_h - 8}"/><text {place} y="{plot_top - 8}">{label}</text>')
        k += 1
    out.append("</g>")
    for i, lane in enumerate(lanes):
        ly = plot_top + i * LANE_H
        out.append(
            f'<g class="lane" data-thread="{escape(lane)}">'
            f'<rect class="lane-bg{" odd" if i % 2 else ""}" x="{LABEL_W}" y="{ly}" width="{width}" '
            f'height="{LANE_H}"/><text x="8" y="{ly + LANE_H / 2 + 4:.0f}">{escape(lane)}</text></g>'
        )
    out.append('<g class="bars">')
    bars_at = len(out)
    waits: list[str] = []  # drawn under every bar: a wait may span the lane's earlier bars
    for k in sorted(range(len(ran)), key=lambda k: ran[k]["started_at"]):
        t = ran[k]
        name = t["name"]
        status = _status(t.get("status"))
        bx = LABEL_W + (t["started_at"] - t0) * scale
        bw = max((end_of(t) - t["started_at"]) * scale, MIN_BAR)
        by = plot_top + lane_of[row_of[k]] * LANE_H + (LANE_H - BAR_H) / 2
        tip = [f"{name} \u2014 {status.lower()}",
               f"{t['thread']}{' (async)' if k in loop_row else ''} \u00b7 "
               f"{format_seconds(t.get('duration'))} \u00b7 "
               f"started +{format_seconds(t['started_at'] - t0)}"]
        if (t.get("attempts") or 0) > 1:
            tip.append(f"attempts: {t['attempts']}")
        if t.get("error_type") or t.get("error"):
            tip.append(_clip(f"{t.get('error_type') or 'error'}: {t.get('error') or ''}", 300))
        if name in crit:
            tip.append("on the critical path")
        cls = "bar critical" if name in crit else "bar"
        waited = wait_of(t)
        if waited:
            tip.insert(2, f"waited {format_seconds(waited)} for pool {t['waited_for']}")
            wx = bx - waited * scale
            waits.append(
                f'<rect class="wait" data-task="{escape(name)}" data-pool="{escape(str(t["waited_for"]))}" '
                f'x="{wx:.1f}" y="{by:.1f}" width="{bx - wx:.1f}" height="{BAR_H}" rx="3"><title>'
                f"{escape(name)} waited {format_seconds(waited)} for pool {escape(str(t['waited_for']))}"
                "</title></rect>")
        out.append(
            f'<rect class="{cls}" data-task="{escape(name)}" data-status="{status}" x="{bx:.1f}" '
            f'y="{by:.1f}" width="{bw:.1f}" height="{BAR_H}" rx="3"><title>'
            f"{escape(chr(10).join(tip))}</title></rect>"
        )
        fits = int((bw - 6) // 6.5)
        if fits >= 3:
            dark = " dark" if status in _DARK_TEXT else ""
            out.append(f'<text class="bar-label{dark}" x="{bx + 3:.1f}" y="{by + BAR_H / 2 + 4:.1f}">'
                       f"{escape(_clip(name, fits))}</text>")
    if waits:
        out[bars_at:bars_at] = ['<g class="waits">', *waits, "</g>"]
    out.append("</g></svg>")
    return "".join(out)
