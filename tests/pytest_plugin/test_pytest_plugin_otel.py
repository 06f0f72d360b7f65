"""The pytest plugin's ``--tdrun-otel``: spans of real pytest sessions (``pytester``), and its errors.

As for ``tdrun --otel`` (tests/trace/test_otel.py), the sessions run in a process
of their own: one whose global tracer provider, with the SDK's
``InMemorySpanExporter``, is set by the session's conftest before the run (as
``opentelemetry-instrument`` would) and written out as JSON at the end; and one
where the plugin builds the provider from the ``OTEL_*`` variables (the console
exporter writes the spans to stderr).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

pytest_plugins = ["pytester"]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
HINT = "needs the OpenTelemetry SDK: pip install 'thread-order[otel]'"

#: create fails once then passes (retried) -> attach[a], attach[b] (each makes a span of its
#: own) -> verify fails -> report skipped; delete, always, runs anyway
TASKS = '''
from pathlib import Path
from thread_order import mark

Path("imported.txt").write_text("yes")   # tells whether the plugin imported the module

calls = []

@mark(retries=1, with_state=False)
def create():
    calls.append(1)
    if len(calls) == 1:
        raise ConnectionError("api not ready")
    return "net-1"

@mark(after=["create"], params={"disk": ["a", "b"]}, with_state=False)
def attach(disk):
    from opentelemetry import trace
    with trace.get_tracer("user-code").start_as_current_span(f"PUT /disks/{disk}"):
        pass

@mark(after=["attach"], with_state=False)
def verify():
    raise AssertionError("disk b is not attached")

@mark(after=["verify"], with_state=False)
def report():
    pass

@mark(after=["verify"], always=True, with_state=False)
def delete():
    pass
'''

#: a global provider set before the run, its spans written to spans.json when pytest ends
CONFTEST = '''
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

def pytest_unconfigure(config):
    spans = [json.loads(s.to_json()) for s in exporter.get_finished_spans()]
    with open("spans.json", "w") as fh:
        json.dump(spans, fh)
'''


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No history, and no OpenTelemetry settings from the machine running these tests."""
    monkeypatch.setenv("TDRUN_HISTORY", "off")
    for name in [n for n in os.environ if n.startswith("OTEL_") or n in ("TRACEPARENT", "TRACESTATE")]:
        monkeypatch.delenv(name)


@pytest.fixture
def tasks(pytester):
    pytester.makepyfile(tasks_otel=TASKS)
    return pytester


def subprocess_run(pytester, *args):
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *map(str, args), timeout=120)


def inprocess_run(pytester, *args):
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *map(str, args))


def spans_by_name(spans: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for span in spans:
        out.setdefault(span["name"], []).append(span)
    return out


def console_spans(text: str) -> list[dict]:
    """The JSON objects the console exporter wrote into ``text``."""
    decoder = json.JSONDecoder()
    spans, i = [], 0
    while (i := text.find("{", i)) >= 0:
        obj, end = decoder.raw_decode(text, i)
        spans.append(obj)
        i = end
    return spans


def test_a_session_exports_a_root_span_and_a_span_per_attempt(tasks, monkeypatch):
    tasks.makeconftest(CONFTEST)
    monkeypatch.setenv("TRACEPARENT", f"00-{TRACE_ID}-{PARENT_ID}-01")
    result = subprocess_run(tasks, "--tdrun", "tasks_otel.py", "--tdrun-otel", "--tdrun-workers", "2")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    got = spans_by_name(json.loads((tasks.path / "spans.json").read_text()))

    # the run: one root span, a child of the CI job's span given by TRACEPARENT
    (root,) = got.pop("tdrun tasks_otel")
    assert root["parent_id"] == f"0x{PARENT_ID}"
    assert root["context"]["trace_id"] == f"0x{TRACE_ID}"
    assert root["attributes"]["thread_order.module"] == "tasks_otel"
    assert root["attributes"]["thread_order.target"] == "tasks_otel.py"
    assert root["attributes"]["thread_order.workers"] == 2
    assert root["attributes"]["thread_order.total_tasks"] == 6
    assert root["attributes"]["thread_order.passed"] == 4
    assert root["attributes"]["thread_order.failed"] == 1
    assert root["attributes"]["thread_order.skipped"] == 1
    assert root["status"]["status_code"] == "ERROR"
    root_id = root["context"]["span_id"]

    tasks_spans = {name: group for name, group in got.items() if not name.startswith("PUT ")}
    assert sorted(tasks_spans) == ["attach[a]", "attach[b]", "create", "delete", "report", "verify"]
    for span in (s for group in tasks_spans.values() for s in group):
        assert span["parent_id"] == root_id
        assert span["context"]["trace_id"] == f"0x{TRACE_ID}"

    # a span per attempt: the retried one failed, the second passed
    creates = sorted(got["create"], key=lambda s: s["attributes"]["thread_order.attempt"])
    assert [s["attributes"]["thread_order.status"] for s in creates] == ["FAILED", "PASSED"]
    assert creates[0]["attributes"]["thread_order.retried"] is True
    assert creates[0]["status"]["status_code"] == "ERROR"
    assert creates[1]["attributes"]["thread_order.attempts"] == 2
    (exc,) = [e for e in creates[0]["events"] if e["name"] == "exception"]
    assert exc["attributes"]["exception.type"] == "ConnectionError"

    for case in ("a", "b"):
        (span,) = got[f"attach[{case}]"]
        assert span["attributes"]["thread_order.case"] == case
        assert span["attributes"]["thread.name"].startswith("thread_")
        # linked to the upstream task's last attempt
        assert [link["context"]["span_id"] for link in span["links"]] == [creates[1]["context"]["span_id"]]
        assert span["links"][0]["attributes"]["thread_order.dependency"] == "create"
        # the task's span was current inside the task: the user's own span nests under it
        (user,) = got[f"PUT /disks/{case}"]
        assert user["parent_id"] == span["context"]["span_id"]

    # the failing task: ERROR, error.type and an exception event with its traceback
    (verify,) = got["verify"]
    assert verify["status"]["status_code"] == "ERROR"
    assert verify["status"]["description"] == "AssertionError: disk b is not attached"
    assert verify["attributes"]["error.type"] == "AssertionError"
    (exc,) = [e for e in verify["events"] if e["name"] == "exception"]
    assert exc["attributes"]["exception.type"] == "AssertionError"
    assert exc["attributes"]["exception.message"] == "disk b is not attached"
    assert 'tasks_otel.py", line' in exc["attributes"]["exception.stacktrace"]
    assert "in verify" in exc["attributes"]["exception.stacktrace"]
    assert {link["context"]["span_id"] for link in verify["links"]} == {
        got["attach[a]"][0]["context"]["span_id"], got["attach[b]"][0]["context"]["span_id"]}

    # a task that never ran: a zero-length span with its reason
    (report,) = got["report"]
    assert report["attributes"]["thread_order.status"] == "SKIPPED"
    assert report["attributes"]["thread_order.reason"] == "dependency 'verify' failed"
    assert report["start_time"] == report["end_time"]
    (delete,) = got["delete"]
    assert delete["attributes"]["thread_order.status"] == "PASSED"


def test_without_traceparent_the_run_nests_under_the_current_span(tasks):
    # a pytest tracing plugin's session span, current around the run loop
    tasks.makeconftest(CONFTEST + textwrap.dedent('''
        import pytest

        @pytest.hookimpl(hookwrapper=True)
        def pytest_runtestloop(session):
            with trace.get_tracer("ci").start_as_current_span("pytest session"):
                yield
    '''))
    result = subprocess_run(tasks, "--tdrun", "tasks_otel.py", "--tdrun-otel", "-k", "create")
    result.assert_outcomes(passed=1)
    got = spans_by_name(json.loads((tasks.path / "spans.json").read_text()))
    (session,) = got["pytest session"]
    (root,) = got["tdrun tasks_otel"]
    assert root["parent_id"] == session["context"]["span_id"]
    assert {s["parent_id"] for s in got["create"]} == {root["context"]["span_id"]}


def test_provider_from_the_environment_and_a_selection(tasks, monkeypatch):
    # no provider set: the plugin builds tdrun's from OTEL_*; -k runs verify and what it needs
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "lifecycle-tests")
    result = subprocess_run(tasks, "--tdrun", "tasks_otel.py", "--tdrun-otel", "-k", "verify")
    result.assert_outcomes(failed=1)
    assert result.ret == 1
    spans = console_spans(result.stderr.str())
    names = sorted(s["name"] for s in spans)
    assert names == ["PUT /disks/a", "PUT /disks/b", "attach[a]", "attach[b]", "create", "create",
                     "tdrun tasks_otel", "verify"]
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"lifecycle-tests"}
    (root,) = [s for s in spans if s["name"] == "tdrun tasks_otel"]
    assert root["parent_id"] is None
    assert root["attributes"]["thread_order.total_tasks"] == 4
    (verify,) = [s for s in spans if s["name"] == "verify"]
    assert verify["parent_id"] == root["context"]["span_id"]
    assert verify["status"]["status_code"] == "ERROR"
    # the items still report as usual on stdout
    result.stdout.fnmatch_lines(["*tdrun: running 4 tasks (3 of them needed by the selection)*"])


def test_the_ini_option_turns_the_export_on(tasks, monkeypatch):
    tasks.makeini("[pytest]\ntdrun_files = tasks_*.py\ntdrun_otel = true\n")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    result = subprocess_run(tasks, "-k", "create")
    result.assert_outcomes(passed=1)
    names = sorted(s["name"] for s in console_spans(result.stderr.str()))
    assert names == ["create", "create", "tdrun tasks_otel"]


def test_spans_that_could_not_be_exported_are_a_warning_in_the_summary(tasks, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    result = subprocess_run(tasks, "--tdrun", "tasks_otel.py", "--tdrun-otel", "-k", "create")
    result.assert_outcomes(passed=1)  # the session's own outcome stands
    result.stdout.fnmatch_lines([f"warning: --tdrun-otel: 3 span(s) could not be exported to otlp ({url})"])


def test_an_exporter_that_is_not_installed_is_a_usage_error(tasks, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin_json")
    result = subprocess_run(tasks, "--tdrun", "tasks_otel.py", "--tdrun-otel")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: tdrun: OTEL_TRACES_EXPORTER=zipkin_json: no such span exporter is "
                                 "installed (looked for 'zipkin_json'; console, none and otlp come with "
                                 "thread-order[otel])"])


# ---------------------------------------------------------------------------- without the extra


@pytest.fixture
def no_sdk(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed


def test_without_the_extra_the_option_is_one_line_exit_4(tasks, no_sdk):
    result = inprocess_run(tasks, "--tdrun", "tasks_otel.py", "--tdrun-otel")
    assert result.ret == pytest.ExitCode.USAGE_ERROR == 4
    assert [line for line in result.stderr.lines if line] == [f"ERROR: --tdrun-otel {HINT}"]
    # refused at configure time: the task module was never imported, nothing ran
    assert not (tasks.path / "imported.txt").exists()


def test_without_the_extra_the_ini_option_is_one_line_exit_4(tasks, no_sdk):
    tasks.makeini("[pytest]\ntdrun_files = tasks_*.py\ntdrun_otel = true\n")
    result = inprocess_run(tasks)
    assert result.ret == 4
    assert [line for line in result.stderr.lines if line] == [f"ERROR: the ini option tdrun_otel {HINT}"]
    assert not (tasks.path / "imported.txt").exists()


def test_the_option_needs_something_to_collect(pytester):
    result = inprocess_run(pytester, "--tdrun-otel")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: --tdrun-otel needs something to collect: --tdrun PATH or "
                                 "the ini option tdrun_files"])


def test_the_ini_option_alone_leaves_ordinary_tests_alone(pytester, no_sdk):
    # inert without tasks to collect: not even the missing extra is an error
    pytester.makeini("[pytest]\ntdrun_otel = true\n")
    pytester.makepyfile(test_plain="def test_ok():\n    assert True\n")
    result = inprocess_run(pytester)
    result.assert_outcomes(passed=1)
