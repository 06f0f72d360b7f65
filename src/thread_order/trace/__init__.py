"""Trace export: a recorded run as a Chrome Trace Event file (``tdrun trace``), a live run as
OpenTelemetry spans (``tdrun --otel``, ``otel.attach``)."""

from .chrome import chrome_trace, trace_json
from .command import main, write_trace
from .otel import OtelObserver, attach as otel_attach, require_sdk as require_otel

__all__ = ["OtelObserver", "chrome_trace", "main", "otel_attach", "require_otel", "trace_json",
           "write_trace"]
