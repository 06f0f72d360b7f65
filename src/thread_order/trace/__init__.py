"""Trace export: a recorded run as a Chrome Trace Event file (``tdrun trace``)."""

from .chrome import chrome_trace, trace_json
from .command import main, write_trace

__all__ = ["chrome_trace", "main", "trace_json", "write_trace"]
