"""The run report: a self-contained HTML page with the graph and timeline as inline SVG."""

from .html import render_report, write_report
from .svg import attempt_bars, critical_path, graph_svg, timeline_svg

__all__ = ["attempt_bars", "critical_path", "graph_svg", "render_report", "timeline_svg", "write_report"]
