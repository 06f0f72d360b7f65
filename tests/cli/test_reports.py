"""--junit-xml and --json-report: parsed back and checked, including by a JUnit reader CI plugins use."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from conftest import MODULES, REPO
from thread_order import Scheduler
from thread_order.cli.reports import RunData, json_report, junit_xml

BASIC = MODULES / "cli_basic.py"

TOP_KEYS = {
    "format_version", "tool", "version", "module", "path", "modules", "target", "argv", "outcome", "exit_code",
    "run_id", "started_at", "finished_at", "duration", "workers", "interrupted", "counts", "summary",
    "failure_counts", "teardown_not_run", "state_keys", "tasks", "graph", "state_findings", "order",
    "lower_bound",
    "executor", "warnings", "pools",
}
TASK_KEYS = {
    "name", "status", "thread", "started_at", "finished_at", "duration", "attempts", "error_type", "error",
    "traceback", "output", "reason", "tags", "after", "always", "level", "module", "case",
    "is_async", "warning", "waited", "waited_for",
}


@pytest.fixture
def basic_reports(tmp_path, tdrun_main):
    xml, js = tmp_path / "out" / "junit.xml", tmp_path / "out" / "run.json"
    result = tdrun_main(BASIC, "--workers", "2", "--junit-xml", xml, "--json-report", js, "--env=ci")
    assert result.code == 1
    assert f"junit xml written to {xml}" in result.out
    return xml, js


def test_junit_xml_structure_and_counts(basic_reports):
    xml, _ = basic_reports
    root = ET.parse(xml).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "cli_basic"
    assert {k: suite.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "5", "failures": "1", "errors": "0", "skipped": "1"}
    assert float(suite.get("time")) >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp"))
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["create", "update", "verify", "report", "teardown"]
    assert {c.get("classname") for c in cases.values()} == {"cli_basic"}
    assert all(float(c.get("time")) >= 0 for c in cases.values())

    failure = cases["update"].find("failure")
    assert failure.get("type") == "RuntimeError"
    assert failure.get("message") == "RuntimeError: update exploded"
    assert failure.text.startswith("Traceback (most recent call last):\n")
    assert 'raise RuntimeError("update exploded")' in failure.text
    assert "_scheduler.py" not in failure.text
    assert cases["update"].find("system-out").text == "update: about to fail\n"

    skipped = cases["verify"].find("skipped")
    assert skipped.get("message") == "dependency 'update' failed"
    assert cases["teardown"].find("system-out").text == "teardown: deleting item-1\n"
    assert cases["create"].find("failure") is None and cases["create"].find("skipped") is None
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["workers"] == "2" and props["interrupted"] == "false"


def test_junit_xml_loads_in_junitparser(basic_reports):
    junitparser = pytest.importorskip("junitparser")
    xml, _ = basic_reports
    doc = junitparser.JUnitXml.fromfile(str(xml))
    suites = list(doc)
    assert len(suites) == 1
    suite = suites[0]
    assert (suite.name, suite.tests, suite.failures, suite.errors, suite.skipped) == ("cli_basic", 5, 1, 0, 1)
    outcome = {}
    for case in suite:
        kinds = [type(r).__name__ for r in case.result]
        outcome[case.name] = kinds[0] if kinds else "passed"
        assert case.classname == "cli_basic"
    assert outcome == {"create": "passed", "update": "Failure", "verify": "Skipped",
                       "report": "passed", "teardown": "passed"}
    failed = next(c for c in suite if c.name == "update")
    assert failed.result[0].type == "RuntimeError"
    assert failed.system_out == "update: about to fail\n"


def test_output_that_is_not_legal_xml_still_parses(tmp_path, tdrun_main, write_module):
    module = write_module(r'''
        from thread_order import mark

        @mark()
        def noisy(state):
            print("nul\x00 bell\x07 \x1b[31mred\x1b[0m é ✓")
            raise ValueError("bad \x01 byte <&>")
    ''')
    xml = tmp_path / "j.xml"
    assert tdrun_main(module, "--junit-xml", xml).code == 1
    case = ET.parse(xml).getroot().find("testsuite/testcase")
    assert case.find("system-out").text == "nul\\x00 bell\\x07 red é ✓\n"
    assert case.find("failure").get("message") == "ValueError: bad \\x01 byte <&>"


def test_json_report_keys_and_content(basic_reports):
    _, js = basic_reports
    data = json.loads(js.read_text())
    assert set(data) == TOP_KEYS
    assert (data["format_version"], data["tool"], data["module"], data["outcome"], data["exit_code"]) == (
        1, "tdrun", "cli_basic", "failed", 1)
    assert data["counts"] == {"total": 5, "passed": 3, "failed": 1, "skipped": 1, "cancelled": 0}
    assert re.fullmatch(r"3 passed, 1 failed, 1 skipped in \d+\.\d\ds", data["summary"])
    assert data["failure_counts"] == {"RuntimeError": 1}
    assert data["state_keys"] == {"env": "typed in", "setup_saw": "setup_state"}
    assert "ci" not in json.dumps(data["state_keys"])  # values are left out
    assert [t["name"] for t in data["tasks"]] == ["create", "update", "verify", "report", "teardown"]
    tasks = {t["name"]: t for t in data["tasks"]}
    assert all(set(t) == TASK_KEYS for t in data["tasks"])
    assert tasks["update"]["status"] == "FAILED" and tasks["update"]["error"] == "update exploded"
    assert tasks["verify"]["reason"] == "dependency 'update' failed" and tasks["verify"]["thread"] is None
    assert tasks["teardown"]["always"] is True and tasks["teardown"]["after"] == ["verify", "report"]
    assert tasks["teardown"]["level"] == 3
    assert data["graph"] == {
        "nodes": ["create", "update", "verify", "report", "teardown"],
        "edges": [["create", "update"], ["create", "report"], ["update", "verify"],
                  ["verify", "teardown"], ["report", "teardown"]],
        "levels": [["create"], ["update", "report"], ["verify"], ["teardown"]],
        "roots": ["create"],
        "leaves": ["teardown"],
    }


def test_secret_looking_values_are_redacted_from_argv(tmp_path, tdrun_main):
    path = tmp_path / "r.json"
    tdrun_main(MODULES / "cli_ok.py", "--api_token=s3cr3t", "--DB_PASSWORD=hunter2", "--env=dev",
               "--json-report", path)
    text = path.read_text()
    assert "s3cr3t" not in text and "hunter2" not in text
    argv = json.loads(text)["argv"]
    assert argv[1:4] == ["--api_token=***redacted***", "--DB_PASSWORD=***redacted***", "--env=dev"]


def test_secrets_passed_with_set_are_redacted_from_the_report_and_the_history(tmp_path, tdrun_main):
    path, history = tmp_path / "r.json", tmp_path / "h.db"
    result = tdrun_main(MODULES / "cli_ok.py", "--set", "api_token=s3cr3t", "--set=db_password=hunter2",
                        "--set", "tag=smoke", "--json-report", path, "--history", history)
    assert result.code == 0
    text = path.read_text()
    assert "s3cr3t" not in text and "hunter2" not in text
    assert json.loads(text)["argv"][1:6] == ["--set", "api_token=***redacted***",
                                             "--set=db_password=***redacted***", "--set", "tag=smoke"]
    shown = tdrun_main("show", "last", "--json", "--history", history).out
    assert "s3cr3t" not in shown and "hunter2" not in shown
    assert "api_token=***redacted***" in json.loads(shown)["argv"]


def test_json_report_keys_are_documented():
    doc = (REPO / "docs" / "json-report.md").read_text()
    from thread_order.cli import reports as _reports

    for key in TOP_KEYS | TASK_KEYS:
        assert f"`{key}`" in doc, f"docs/json-report.md does not document {key!r}"
        assert f"``{key}``" in _reports.__doc__, f"cli/reports.py docstring does not document {key!r}"


def test_reports_of_an_interrupted_run():
    sched = Scheduler(workers=1)
    cancelled = threading.Event()

    def stop():
        sched.cancel()
        cancelled.set()

    sched.register(stop, "stop")
    sched.register(lambda: None, "never", after=["stop"])
    sched.register(lambda: None, "cleanup", after=["never"], always=True)
    summary = sched.start()
    assert cancelled.is_set()
    run = RunData(module="m", path="m.py", summary=summary, records=list(sched.last_records),
                  graph=sched.graph, specs=list(sched.tasks), exit_code=2)
    data = json_report(run)
    assert (data["outcome"], data["interrupted"], data["exit_code"]) == ("interrupted", True, 2)
    assert data["counts"] == {"total": 3, "passed": 2, "failed": 0, "skipped": 0, "cancelled": 1}
    suite = ET.fromstring(junit_xml(run)).find("testsuite")
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("3", "1", "0")
    skipped = suite.find("testcase[@name='never']/skipped")
    assert skipped.get("message") == "cancelled: the run was interrupted"


def forced_run() -> tuple[Scheduler, dict]:
    """A real run stopped twice while a teardown task runs; another teardown never starts."""
    sched = Scheduler(workers=1)
    release = threading.Event()

    def stop_twice():
        sched.cancel()
        sched.cancel(force=True)
        release.wait(10)

    sched.register(lambda: None, "create")
    sched.register(stop_twice, "delete_subnet", after=["create"], always=True)
    sched.register(lambda: None, "delete_network", after=["delete_subnet"], always=True)
    try:
        summary = sched.start()
    finally:
        release.set()
    # the contract: the always tasks that ended CANCELLED, in registration order (the engine's
    # part; read with .get so the front-ends work before it lands)
    expected = [r.name for r in sched.last_records if r.status.value == "CANCELLED"]
    assert expected == ["delete_subnet", "delete_network"]
    assert summary.get("teardown_not_run", expected) == expected
    summary["teardown_not_run"] = expected
    return sched, summary


def test_reports_name_the_teardown_a_forced_stop_left_undone():
    sched, summary = forced_run()
    run = RunData(module="m", path="m.py", summary=summary, records=list(sched.last_records),
                  graph=sched.graph, specs=list(sched.tasks), exit_code=2)
    assert json_report(run)["teardown_not_run"] == ["delete_subnet", "delete_network"]
    suite = ET.fromstring(junit_xml(run)).find("testsuite")
    assert suite.find("properties/property[@name='teardown_not_run']").get("value") == (
        "delete_subnet,delete_network")
    assert suite.find("testcase[@name='delete_subnet']/skipped").get("message") == (
        "teardown did not run (abandoned: still running when the run was stopped)"
        " — resources it cleans up may remain")
    assert suite.find("testcase[@name='delete_network']/skipped").get("message") == (
        "teardown did not run (cancelled: the run was stopped) — resources it cleans up may remain")
    assert suite.find("testcase[@name='create']/skipped") is None


def test_a_run_without_a_forced_stop_has_an_empty_teardown_not_run(basic_reports):
    xml, js = basic_reports
    assert json.loads(js.read_text())["teardown_not_run"] == []
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite.find("properties/property[@name='teardown_not_run']").get("value") == ""
    assert "teardown did not run" not in xml.read_text()


@pytest.mark.parametrize("option", ["--json-report", "--junit-xml"])
def test_report_into_a_folder_that_cannot_be_created_is_refused_before_the_run(tdrun_main, tmp_path, option):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = tdrun_main(MODULES / "cli_ok.py", option, blocker / "sub" / "r.json")
    assert result.code == 4
    assert result.err == f"tdrun: error: {option} {blocker / 'sub' / 'r.json'}: {blocker} is not a folder\n"
    assert result.out == ""  # nothing ran


def test_a_report_that_cannot_be_written_after_the_run_is_a_warning_and_the_run_decides_the_code(
        tdrun_main, tmp_path):
    target = tmp_path / "r.xml"
    (tmp_path / "r.xml.tmp").mkdir()  # the report is written through this name: writing it fails
    result = tdrun_main(MODULES / "cli_basic.py", "--plain", "--junit-xml", target,
                        "--json-report", tmp_path / "r.json")
    assert result.code == 1
    assert f"warning: --junit-xml {target}: cannot write: Is a directory\n" in result.out
    assert f"json report written to {tmp_path / 'r.json'}" in result.out
    assert "FAILURES" in result.out and result.out.rstrip().endswith("=")
    assert result.err == ""


def test_report_paths_are_created(tdrun_main, tmp_path):
    path = tmp_path / "a" / "b" / "r.xml"
    assert tdrun_main(MODULES / "cli_ok.py", "--junit-xml", path).code == 0
    assert ET.parse(path).getroot().find("testsuite").get("tests") == "4"
    assert not list(Path(path.parent).glob("*.tmp"))


def test_the_end_of_run_summary_names_the_teardown_left_undone():
    import io

    from rich.console import Console

    from thread_order.cli.plain import print_end_of_run

    sched, summary = forced_run()
    console = Console(file=io.StringIO(), width=100, record=True)
    print_end_of_run(console, summary, sched.last_records)
    lines = console.export_text().splitlines()
    heading = ("teardown did not run: delete_subnet, delete_network — resources they clean up may remain")
    assert heading in lines
    assert lines.index(heading) == len(lines) - 2  # just above the closing tally
    assert "!!! interrupted: stopped waiting, 2 cancelled !!!" in lines
    summary["teardown_not_run"] = []
    console = Console(file=io.StringIO(), width=100, record=True)
    print_end_of_run(console, summary, sched.last_records)
    assert "teardown did not run" not in console.export_text()


def test_long_skip_reasons_wrap_at_words_on_a_terminal_and_stay_whole_in_a_file():
    import io

    from rich.console import Console

    from thread_order.cli.plain import print_end_of_run

    sched = Scheduler(workers=1)
    sched.register(lambda: 1 / 0, "create_subnet_a")
    sched.register(lambda: None, "verify_subnet_a", after=["create_subnet_a"])
    sched.register(lambda: None, "update_network", after=["verify_subnet_a"])
    summary = sched.start()
    reason = "dependency 'verify_subnet_a' skipped: upstream 'create_subnet_a' failed"
    terminal = Console(file=io.StringIO(), width=80, force_terminal=True, record=True)
    print_end_of_run(terminal, summary, sched.last_records)
    lines = terminal.export_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("SKIPPED   update_network"))
    assert lines[at] == "SKIPPED   update_network   dependency 'verify_subnet_a' skipped: upstream"
    assert lines[at + 1] == " " * 27 + "'create_subnet_a' failed"
    piped = Console(file=io.StringIO(), width=80, record=True)
    print_end_of_run(piped, summary, sched.last_records)
    assert f"SKIPPED   update_network   {reason}" in piped.export_text().splitlines()
