"""OpenTelemetry export: spans of a real run checked in the SDK's in-memory exporter, and tdrun --otel.

The library runs go through ``thread_order.trace.otel.attach`` with a provider of
our own (an ``InMemorySpanExporter`` behind a simple processor); tdrun runs as
a real process, with spans written by the console exporter or collected by a
global provider set before tdrun's ``main``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from conftest import tdrun_env  # noqa: E402
from thread_order import Scheduler  # noqa: E402
from thread_order.trace.otel import attach  # noqa: E402

WAIT = 60.0
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def lifecycle(scheduler: Scheduler, provider) -> dict:
    """create (fails once, then passes) -> attach[a], attach[b] -> verify (fails) -> report
    (skipped); delete runs always. Inside attach, user code makes a span of its own."""
    seen: dict = {}
    calls = {"create": 0}
    lock = threading.Lock()
    tracer = provider.get_tracer("user-code")

    def create():
        calls["create"] += 1
        if calls["create"] == 1:
            raise ConnectionError("api not ready")
        return "net-1"

    def attach_disk(disk):
        from opentelemetry import trace

        with lock:
            seen[disk] = trace.get_current_span().get_span_context()
        with tracer.start_as_current_span(f"PUT /disks/{disk}"):
            pass

    def verify():
        raise AssertionError("disk b is not attached")

    scheduler.register(create, "create", retries=1)
    scheduler.register(attach_disk, "attach", after=["create"], params={"disk": ["a", "b"]})
    scheduler.register(verify, "verify", after=["attach"])
    scheduler.register(lambda: None, "report", after=["verify"])
    scheduler.register(lambda: None, "delete", after=["verify"], always=True)
    return seen


def by_name(exporter) -> dict:
    out: dict = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


def test_root_span_and_a_span_per_attempt(spans):
    provider, exporter = spans
    s = Scheduler(workers=2)
    seen = lifecycle(s, provider)
    watcher = attach(s, tracer_provider=provider, attributes={"ci.job": "build-7"})
    summary = s.start()
    assert summary["failed"] == ["verify"]
    got = by_name(exporter)
    (root,) = got.pop("thread-order run")
    assert root.parent is None  # no TRACEPARENT, no current span
    assert root.attributes["thread_order.run_id"] == summary["run_id"]
    assert root.attributes["thread_order.failed"] == 1 and root.attributes["ci.job"] == "build-7"
    assert root.status.status_code is StatusCode.ERROR
    trace_id = root.context.trace_id

    creates = sorted(got["create"], key=lambda sp: sp.attributes["thread_order.attempt"])
    assert [sp.attributes["thread_order.status"] for sp in creates] == ["FAILED", "PASSED"]
    assert creates[0].attributes["thread_order.retried"] is True
    assert creates[0].status.status_code is StatusCode.ERROR
    (exc,) = [e for e in creates[0].events if e.name == "exception"]
    assert exc.attributes["exception.type"] == "ConnectionError"
    assert exc.attributes["exception.message"] == "api not ready"
    assert "in create" in exc.attributes["exception.stacktrace"]
    assert creates[1].attributes["thread_order.attempts"] == 2
    assert creates[1].status.status_code is StatusCode.UNSET
    assert "thread_order.wait_s" in creates[0].attributes  # its first attempt waited from ready
    for sp in [s_ for name, group in got.items() if not name.startswith("PUT") for s_ in group]:
        assert sp.context.trace_id == trace_id and sp.parent.span_id == root.context.span_id
        assert sp.start_time <= sp.end_time
        assert root.start_time <= sp.start_time and sp.end_time <= root.end_time

    cases = {sp.attributes["thread_order.case"]: sp for sp in got["attach[a]"] + got["attach[b]"]}
    assert set(cases) == {"a", "b"}
    for case, sp in cases.items():
        assert sp.attributes["thread.name"].startswith("thread_")
        # linked to the upstream task's span: its last attempt
        assert [link.context.span_id for link in sp.links] == [creates[1].context.span_id]
        assert sp.links[0].attributes["thread_order.dependency"] == "create"
        # the task's span was current inside it, and the user's own span nests under it
        assert seen[case].span_id == sp.context.span_id
        (user,) = got[f"PUT /disks/{case}"]
        assert user.parent.span_id == sp.context.span_id

    (verify,) = got["verify"]
    assert {link.context.span_id for link in verify.links} == {sp.context.span_id for sp in cases.values()}
    assert verify.attributes["error.type"] == "AssertionError"
    (report,) = got["report"]
    assert report.attributes["thread_order.status"] == "SKIPPED"
    assert report.attributes["thread_order.reason"] == "dependency 'verify' failed"
    assert report.start_time == report.end_time and "thread.name" not in report.attributes
    (delete,) = got["delete"]
    assert delete.attributes["thread_order.status"] == "PASSED"

    # detached: the next run exports nothing
    watcher.detach()
    watcher.detach()
    exporter.clear()
    s.start()
    # only the user's own spans, with no task span around them any more
    leftover = exporter.get_finished_spans()
    assert sorted(sp.name for sp in leftover) == ["PUT /disks/a", "PUT /disks/b"]
    assert all(sp.parent is None for sp in leftover)


def test_traceparent_makes_the_run_part_of_the_ci_trace(spans, monkeypatch):
    provider, exporter = spans
    monkeypatch.setenv("TRACEPARENT", f"00-{TRACE_ID}-{PARENT_ID}-01")
    s = Scheduler(workers=1)
    s.register(lambda: None, "only")
    attach(s, tracer_provider=provider)
    s.start()
    got = by_name(exporter)
    (root,) = got["thread-order run"]
    assert format(root.context.trace_id, "032x") == TRACE_ID
    assert format(root.parent.span_id, "016x") == PARENT_ID and root.parent.is_remote
    assert got["only"][0].context.trace_id == root.context.trace_id


def test_timeout_ends_the_attempt_span_while_its_thread_is_stuck(spans):
    provider, exporter = spans
    release = threading.Event()
    s = Scheduler(workers=1)
    s.register(lambda: release.wait(WAIT), "stuck", timeout=0.2)
    attach(s, tracer_provider=provider)
    try:
        summary = s.start()
    finally:
        release.set()
    assert summary["failed"] == ["stuck"]
    (stuck,) = by_name(exporter)["stuck"]
    assert stuck.attributes["error.type"] == "TimeoutError"
    assert stuck.status.status_code is StatusCode.ERROR


# ---------------------------------------------------------------------------- tdrun

MODULE = '''
from thread_order import mark

@mark(with_state=False)
def create():
    return 1

@mark(after=["create"], with_state=False)
def verify():
    from opentelemetry import trace
    with trace.get_tracer("user").start_as_current_span("GET /thing"):
        pass
    raise ValueError("wrong thing")
'''

#: tdrun in a process whose global provider was set before tdrun started (as
#: opentelemetry-instrument does): the spans are printed as JSON once tdrun returns
WRAPPER = '''
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
from thread_order.cli.main import main
code = main(sys.argv[1:])
spans = [json.loads(s.to_json()) for s in exporter.get_finished_spans()]
sys.__stdout__.write("SPANS " + json.dumps(spans) + "\\n")
sys.exit(code)
'''


def run(args, cwd, **env):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=WAIT, env=tdrun_env(**env), stdin=subprocess.DEVNULL)


@pytest.fixture
def module(tmp_path):
    path = tmp_path / "tasks.py"
    path.write_text(textwrap.dedent(MODULE), encoding="utf-8")
    return path


def test_tdrun_otel_with_a_provider_already_set(tmp_path, module):
    wrapper = tmp_path / "wrap.py"
    wrapper.write_text(textwrap.dedent(WRAPPER), encoding="utf-8")
    proc = run([wrapper, module, "--otel", "--plain"], tmp_path,
               TRACEPARENT=f"00-{TRACE_ID}-{PARENT_ID}-01")
    assert proc.returncode == 1, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("SPANS "))
    spans = {s["name"]: s for s in json.loads(line[6:])}
    root = spans[f"tdrun {module.stem}"] if f"tdrun {module.stem}" in spans else spans["tdrun tasks"]
    assert root["parent_id"] == f"0x{PARENT_ID}"
    assert root["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert root["attributes"]["thread_order.module"] == "tasks"
    assert spans["verify"]["parent_id"] == root["context"]["span_id"]
    assert spans["verify"]["status"]["status_code"] == "ERROR"
    assert spans["verify"]["links"][0]["context"]["span_id"] == spans["create"]["context"]["span_id"]
    assert spans["GET /thing"]["parent_id"] == spans["verify"]["context"]["span_id"]


def test_tdrun_otel_console_exporter_from_the_environment(tmp_path, module):
    proc = run(["-m", "thread_order", module, "--otel", "--plain"], tmp_path,
               OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="lifecycle-tests")
    assert proc.returncode == 1, proc.stderr
    decoder = json.JSONDecoder()
    spans, text, i = [], proc.stderr, 0
    while (i := text.find("{", i)) >= 0:
        obj, end = decoder.raw_decode(text, i)
        spans.append(obj)
        i = end
    names = {s["name"] for s in spans}
    assert {"tdrun tasks", "create", "verify", "GET /thing"} <= names
    assert all(s["resource"]["attributes"]["service.name"] == "lifecycle-tests" for s in spans)
    assert "1 passed, 1 failed" in proc.stdout  # stdout stays tdrun's


def test_tdrun_otel_unknown_exporter_is_one_line_exit_4(tmp_path, module):
    proc = run(["-m", "thread_order", module, "--otel"], tmp_path, OTEL_TRACES_EXPORTER="zipkin_json")
    assert proc.returncode == 4
    assert proc.stderr == ("tdrun: error: OTEL_TRACES_EXPORTER=zipkin_json: no such span exporter is "
                           "installed (looked for 'zipkin_json'; console, none and otlp come with "
                           "thread-order[otel])\n")


def test_tdrun_otel_without_the_extra_is_one_line_exit_4(tdrun_main, module, monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    result = tdrun_main(module, "--otel")
    assert result.code == 4
    assert result.err == "tdrun: error: --otel needs the OpenTelemetry SDK: pip install 'thread-order[otel]'\n"
    assert result.out == ""


class Collector:
    """A minimal OTLP/HTTP collector on 127.0.0.1: keeps every span posted to /v1/traces."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        collector = self
        self.spans: list = []
        self.resources: list = []
        self.lock = threading.Lock()  # guards spans and resources, written by request threads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with collector.lock:
                    for rs in request.resource_spans:
                        collector.resources.append({a.key: a.value.string_value for a in rs.resource.attributes})
                        for ss in rs.scope_spans:
                            collector.spans.extend(ss.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_tdrun_otel_exports_over_otlp_http_by_default(tmp_path, module):
    collector = Collector()
    try:
        proc = run(["-m", "thread_order", module, "--otel", "--plain"], tmp_path,
                   OTEL_EXPORTER_OTLP_ENDPOINT=collector.url, OTEL_RESOURCE_ATTRIBUTES="ci.job=7")
    finally:
        collector.close()
    assert proc.returncode == 1, proc.stderr
    assert "could not be exported" not in proc.stdout + proc.stderr
    names = sorted(s.name for s in collector.spans)
    assert names == ["GET /thing", "create", "tdrun tasks", "verify"]
    assert {r["service.name"] for r in collector.resources} == {"tdrun"}
    assert {r["ci.job"] for r in collector.resources} == {"7"}
    spans = {s.name: s for s in collector.spans}
    assert spans["verify"].parent_span_id == spans["tdrun tasks"].span_id
    assert spans["GET /thing"].parent_span_id == spans["verify"].span_id
    assert [link.span_id for link in spans["verify"].links] == [spans["create"].span_id]


def test_tdrun_otel_says_when_spans_could_not_be_exported(tmp_path, module):
    collector = Collector()
    url = collector.url
    collector.close()  # nothing listens there any more
    proc = run(["-m", "thread_order", module, "--otel", "--plain"], tmp_path,
               OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_EXPORTER_OTLP_TIMEOUT="1")
    assert proc.returncode == 1  # the run's own outcome stands
    assert f"warning: --otel: 4 span(s) could not be exported to otlp ({url})" in proc.stdout


def test_otel_observer_is_what_tdrun_uses_for_any_front_end(tmp_path):
    # in a fresh process: it sets the global tracer provider from the environment
    script = tmp_path / "front.py"
    script.write_text(textwrap.dedent('''
        import sys
        from thread_order import Scheduler
        from thread_order.trace import OtelObserver, require_otel
        require_otel()
        s = Scheduler(workers=1)
        s.register(lambda: None, "one")
        observer = OtelObserver()
        observer.attach(s, {"module": "suite", "target": "suite/"})
        s.start()
        observer.finish()
        print(observer.notes)
    '''), encoding="utf-8")
    proc = run([script], tmp_path, OTEL_TRACES_EXPORTER="console")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert '"name": "tdrun suite"' in proc.stderr and '"name": "one"' in proc.stderr
    assert '"thread_order.target": "suite/"' in proc.stderr


def test_spans_of_pooled_tasks_say_which_pool_kept_them_waiting_and_how_long(spans):
    import asyncio

    provider, exporter = spans

    async def call():
        await asyncio.sleep(0.03)

    def sync_call():
        threading.Event().wait(0.03)  # the call's own latency

    s = Scheduler(workers=4, pools={"api": 1})
    for i in range(3):
        s.register(call, f"call{i}", pool="api")
    s.register(sync_call, "sync_call", pool="api")
    s.register(lambda: None, "free")
    attach(s, tracer_provider=provider)
    summary = s.start()
    assert len(summary["passed"]) == 5
    got = by_name(exporter)
    records = {r.name: r for r in s.last_records}
    waited = {name for name, r in records.items() if r.waited_for == "api"}
    assert waited == {"call1", "call2", "sync_call"}  # a pool of 1: all but the first wait
    for name, record in records.items():
        (span,) = got[name]
        if name in waited:
            assert span.attributes["thread_order.pool"] == "api"
            assert span.attributes["thread_order.pool_wait_s"] == pytest.approx(record.waited)
            assert record.waited >= 0.02  # behind at least one 30 ms call
        else:
            assert "thread_order.pool" not in span.attributes
            assert "thread_order.pool_wait_s" not in span.attributes
    assert got["call1"][0].attributes["thread.name"] == "event_loop"
    assert got["sync_call"][0].attributes["thread.name"].startswith("thread_")
