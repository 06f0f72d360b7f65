"""A run exported live through the OpenTelemetry SDK: a root span, a span per task attempt.

``attach(scheduler)`` is the whole hook, for ``tdrun --otel`` and anyone else
(a test plugin, a program embedding the Scheduler): it watches the run through
the engine's event stream, and through ``Scheduler.add_task_context`` makes
each attempt's span current on the worker thread running it, so spans the
task's own code creates (an instrumented HTTP client) nest under it. It never
patches the scheduler.

- the run: one root span (``thread-order run``), a child of the ``TRACEPARENT``
  environment variable's span when there is one (a CI job's trace), else of
  whatever span is current where the run is started;
- each attempt of each task: a span named after the task, child of the root,
  with links to the spans of the tasks it depends on (their last attempt),
  ``thread_order.*`` attributes (task, case, status, attempt, attempts, pool,
  wait), ``thread.name``, and on failure an ERROR status and an ``exception``
  event carrying the task's traceback. A task that never ran (skipped,
  cancelled) is a zero-length span with its reason.

``configure_from_env()`` builds the provider ``tdrun --otel`` uses, from the
standard ``OTEL_*`` variables. The ``opentelemetry`` packages are imported only
when one of these functions is called: ``pip install 'thread-order[otel]'``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Mapping

from ..engine.errors import UsageError
from ..engine.events import Event, EventKind

__all__ = ["INSTALL_HINT", "OtelRun", "attach", "configure_from_env", "require_sdk"]

INSTALL_HINT = "--otel needs the OpenTelemetry SDK: pip install 'thread-order[otel]'"
_ATTR = "thread_order."


def require_sdk() -> None:
    """Raises UsageError (one line, tdrun's exit 4) when the ``otel`` extra is not installed."""
    try:
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def _ns(seconds: float | None) -> int:
    return int((seconds if seconds is not None else time.time()) * 1_000_000_000)


def _case(name: str) -> str | None:
    """The case id of a parametrized task's name (``create_vm[eu-1]`` -> ``eu-1``)."""
    base = name.rsplit("::", 1)[-1]
    if base.endswith("]") and "[" in base:
        return base[base.index("[") + 1:-1]
    return None


class OtelRun:
    """The spans of the runs of one scheduler; built by :func:`attach`."""

    def __init__(self, scheduler: Any, tracer_provider: Any = None, name: str = "thread-order run",
                 attributes: Mapping[str, Any] | None = None, context: Any = None) -> None:
        require_sdk()
        from opentelemetry import trace
        from opentelemetry.propagate import extract

        self._trace = trace
        self.tracer = trace.get_tracer("thread_order", tracer_provider=tracer_provider)
        self.name = name
        self.attributes = dict(attributes or {})
        if context is None and os.environ.get("TRACEPARENT"):
            # the environment-variable carrier of the W3C trace context: a CI job's span
            carrier = {"traceparent": os.environ["TRACEPARENT"]}
            if os.environ.get("TRACESTATE"):
                carrier["tracestate"] = os.environ["TRACESTATE"]
            context = extract(carrier)
        self._parent = context
        self.root: Any = None
        self._root_context: Any = None
        self._parents: Mapping[str, tuple[str, ...]] = {}
        # written on the dispatcher thread (ready times, ending spans) and on workers (an
        # attempt's span, before its task runs); each key has one writer at a time, and a
        # task's dependencies finished before it starts, so no lock is needed: a dict's
        # single get/set is atomic
        self._ready: dict[str, float] = {}
        self._spans: dict[tuple[str, int], Any] = {}
        self._last: dict[str, Any] = {}  # task -> span context of its latest attempt
        self._undo: list[Callable[[], None]] = [
            scheduler.subscribe(self._on_event, EventKind.RUN_STARTED, EventKind.TASK_READY,
                                EventKind.TASK_RETRYING, EventKind.TASK_FINISHED,
                                EventKind.RUN_INTERRUPTED, EventKind.RUN_FINISHED),
            scheduler.add_task_context(self._task_context),
        ]
        self._scheduler = scheduler

    def detach(self) -> None:
        """Stop watching the scheduler (its next runs are not exported); idempotent."""
        while self._undo:
            self._undo.pop()()

    # ------------------------------------------------------------------ dispatcher thread

    def _on_event(self, event: Event) -> None:
        kind = event.kind
        if kind is EventKind.TASK_READY:
            self._ready[event.name] = event.time
        elif kind is EventKind.TASK_RETRYING:
            self._end(event.record, event.attempt, retried=True)
        elif kind is EventKind.TASK_FINISHED:
            self._end(event.record, event.record.attempts, retried=False)
        elif kind is EventKind.RUN_STARTED:
            self._start_run(event)
        elif kind is EventKind.RUN_INTERRUPTED and self.root is not None:
            self.root.add_event("interrupted", {"force": bool((event.data or {}).get("force"))})
        elif kind is EventKind.RUN_FINISHED:
            self._finish_run(event.data or {})

    def _start_run(self, event: Event) -> None:
        trace = self._trace
        meta = event.data or {}
        self._ready.clear()
        self._spans.clear()
        self._last.clear()
        self._parents = self._scheduler.graph.parents
        attributes = {f"{_ATTR}run_id": str(meta.get("run_id", "")),
                      f"{_ATTR}workers": int(meta.get("workers") or 0),
                      f"{_ATTR}total_tasks": int(meta.get("total_tasks") or 0), **self.attributes}
        self.root = self.tracer.start_span(self.name, context=self._parent, attributes=attributes,
                                           start_time=_ns(event.time))
        self._root_context = trace.set_span_in_context(self.root)

    def _links(self, name: str) -> list[Any]:
        from opentelemetry.trace import Link

        out = []
        for dep in self._parents.get(name, ()):
            context = self._last.get(dep)
            if context is not None:
                out.append(Link(context, {f"{_ATTR}dependency": dep}))
        return out

    def _end(self, record: Any, attempt: int, retried: bool) -> None:
        from opentelemetry.trace import Status, StatusCode

        if record is None or self.root is None:
            return
        name = record.name
        span = self._spans.pop((name, attempt), None)
        end = _ns(record.finished_at)
        if span is None:  # never ran (skipped, cancelled), or stopped before a worker took it
            span = self.tracer.start_span(name, context=self._root_context, links=self._links(name),
                                          start_time=end, attributes=self._attributes(name, attempt))
            self._last[name] = span.get_span_context()
        status = "FAILED" if retried else str(record.status)
        span.set_attribute(f"{_ATTR}status", status)
        span.set_attribute(f"{_ATTR}attempts", int(record.attempts))
        if retried:
            span.set_attribute(f"{_ATTR}retried", True)
        if record.thread:
            span.set_attribute("thread.name", record.thread)
        # a task in a pool: which one kept it waiting, and how long (records that carry it)
        pool = getattr(record, "waited_for", None)
        if isinstance(pool, str) and pool:
            span.set_attribute(f"{_ATTR}pool", pool)
        waited = getattr(record, "waited", None)
        if isinstance(waited, (int, float)) and waited > 0 and not retried:
            span.set_attribute(f"{_ATTR}pool_wait_s", float(waited))
        if record.reason:
            span.set_attribute(f"{_ATTR}reason", record.reason)
        if record.error_type is not None:
            span.set_attribute("error.type", record.error_type)
            # what Span.record_exception writes, from the record: its traceback starts at the
            # task's own frame, and a timed-out attempt (still running) has no exception object
            span.add_event("exception", {"exception.type": record.error_type,
                                         "exception.message": record.error or "",
                                         "exception.stacktrace": record.traceback or ""},
                           timestamp=end)
            span.set_status(Status(StatusCode.ERROR, f"{record.error_type}: {record.error}"))
        start = getattr(span, "start_time", None)
        span.end(end_time=max(end, start) if isinstance(start, int) else end)

    def _finish_run(self, summary: Mapping[str, Any]) -> None:
        from opentelemetry.trace import Status, StatusCode

        for span in list(self._spans.values()):  # a forced stop: attempts nobody reported back
            span.set_attribute(f"{_ATTR}status", "CANCELLED")
            span.end()
        self._spans.clear()
        root = self.root
        if root is None:
            return
        for key in ("passed", "failed", "skipped", "cancelled"):
            root.set_attribute(f"{_ATTR}{key}", len(summary.get(key) or ()))
        root.set_attribute(f"{_ATTR}interrupted", bool(summary.get("interrupted")))
        if summary.get("failed"):
            root.set_status(Status(StatusCode.ERROR, f"{len(summary['failed'])} task(s) failed"))
        root.end(end_time=_ns(summary.get("finished_at")) if summary.get("finished_at") else None)
        self.root = None

    # ------------------------------------------------------------------ worker thread

    def _attributes(self, name: str, attempt: int) -> dict[str, Any]:
        attributes: dict[str, Any] = {f"{_ATTR}task": name, f"{_ATTR}attempt": attempt}
        case = _case(name)
        if case is not None:
            attributes[f"{_ATTR}case"] = case
        return attributes

    def _task_context(self, name: str, attempt: int) -> Any:
        if self.root is None:
            return None
        now = time.time()
        attributes = self._attributes(name, attempt)
        ready = self._ready.get(name)
        if ready is not None and attempt == 1:
            attributes[f"{_ATTR}wait_s"] = max(0.0, now - ready)
        span = self.tracer.start_span(name, context=self._root_context, links=self._links(name),
                                      attributes=attributes, start_time=_ns(now))
        self._spans[(name, attempt)] = span
        self._last[name] = span.get_span_context()
        return _Current(self._trace.set_span_in_context(span))


class _Current:
    """Makes a span current on the worker thread for the duration of one attempt."""

    __slots__ = ("context", "token")

    def __init__(self, context: Any) -> None:
        self.context = context
        self.token = None

    def __enter__(self) -> None:
        from opentelemetry import context as otel_context

        self.token = otel_context.attach(self.context)

    def __exit__(self, *exc: Any) -> bool:
        from opentelemetry import context as otel_context

        otel_context.detach(self.token)
        return False


def attach(scheduler: Any, tracer_provider: Any = None, name: str = "thread-order run",
           attributes: Mapping[str, Any] | None = None, context: Any = None) -> OtelRun:
    """Export every run of ``scheduler`` from now on as OpenTelemetry spans; returns the watcher.

    Args:
        scheduler: a :class:`thread_order.Scheduler` (attach before ``start()``).
        tracer_provider: where spans go; default: the global one (``trace.get_tracer_provider()``).
        name: the root span's name.
        attributes: more attributes for the root span (the module, the command line...).
        context: the root span's parent; default: ``TRACEPARENT`` from the environment,
            else the span current when the run starts.

    Returns:
        An :class:`OtelRun`; its ``detach()`` stops watching.

    Raises:
        UsageError: the OpenTelemetry SDK is not installed (``thread-order[otel]``).
    """
    return OtelRun(scheduler, tracer_provider, name, attributes, context)


def configure_from_env(stream: Any = None) -> tuple[Any, bool]:
    """The tracer provider for ``tdrun --otel``, and whether it is ours to flush and shut down.

    A provider already set globally (``opentelemetry-instrument tdrun ...``) is used as it
    is. Otherwise a new one, set as the global provider so spans of the tasks' own code go
    to the same place: its resource from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``
    (service name ``tdrun`` when neither gives one), its sampler from ``OTEL_TRACES_SAMPLER``,
    a batch processor (``OTEL_BSP_*``) and the exporters named by ``OTEL_TRACES_EXPORTER``
    (default ``otlp``: OTLP over HTTP/protobuf, or gRPC when ``OTEL_EXPORTER_OTLP_PROTOCOL``
    says ``grpc``; ``console`` writes JSON to stderr; ``none``; any other name an
    installed exporter registers). Endpoints and headers come from ``OTEL_EXPORTER_OTLP_*``.

    Raises:
        UsageError: the SDK is missing, or an exporter named is not installed.
    """
    require_sdk()
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current, False
    exporters = [_exporter(name.strip(), stream) for name in
                 os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()]
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "tdrun"}))
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    provider.thread_order_exporters = [e for e in exporters if e is not None]  # for failure notes
    trace.set_tracer_provider(provider)
    return provider, True


def _watched(inner: Any, name: str) -> Any:
    """``inner`` wrapped so that spans it failed to export are counted (tdrun says so at the end)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Watched(SpanExporter):
        def __init__(self) -> None:
            self.inner = inner
            self.name = name
            self.failed = 0  # written by the batch processor's thread, read after its shutdown

        def export(self, spans: Any) -> Any:
            try:
                result = inner.export(spans)
            except Exception:  # an exporter must not take the run down
                result = SpanExportResult.FAILURE
            if result is not SpanExportResult.SUCCESS:
                self.failed += len(spans)
            return result

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            flush = getattr(inner, "force_flush", None)
            return flush(timeout_millis) if flush is not None else True

    return Watched()


def _endpoint() -> str:
    return (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318")


def _exporter(name: str, stream: Any) -> Any:
    from importlib.metadata import entry_points

    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=stream if stream is not None else sys.stderr)
    entry = name
    if name == "otlp":
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        entry = "otlp_proto_grpc" if protocol.strip() == "grpc" else "otlp_proto_http"
    found = list(entry_points(group="opentelemetry_traces_exporter", name=entry))
    if not found:
        raise UsageError(f"OTEL_TRACES_EXPORTER={name}: no such span exporter is installed "
                         f"(looked for {entry!r}; console, none and otlp come with thread-order[otel])")
    try:
        return _watched(found[0].load()(), f"{name} ({_endpoint()})" if name == "otlp" else name)
    except Exception as exc:
        raise UsageError(f"OTEL_TRACES_EXPORTER={name}: cannot create the exporter: "
                         f"{type(exc).__name__}: {exc}") from None


class OtelObserver:
    """``tdrun --otel``: the provider from the environment, attached for one run, flushed after."""

    def __init__(self, stream: Any = None) -> None:
        self.provider, self._owned = configure_from_env(stream)
        self.run: OtelRun | None = None
        self.notes: list[str] = []

    def attach(self, scheduler: Any, run_info: Mapping[str, Any]) -> None:
        attributes = {f"{_ATTR}module": str(run_info.get("module") or ""),
                      f"{_ATTR}target": str(run_info.get("target") or "")}
        self.run = attach(scheduler, self.provider, name=f"tdrun {run_info.get('module') or ''}".strip(),
                          attributes=attributes)

    def finish(self) -> None:
        if self.run is not None:
            self.run.detach()
        if self._owned:
            if not self.provider.force_flush(30_000):
                self.notes.append("warning: --otel: not every span was exported within 30s")
            self.provider.shutdown()
            for exporter in getattr(self.provider, "thread_order_exporters", ()):
                if getattr(exporter, "failed", 0):
                    self.notes.append(f"warning: --otel: {exporter.failed} span(s) could not be "
                                      f"exported to {exporter.name}")
        else:
            self.provider.force_flush(30_000)
