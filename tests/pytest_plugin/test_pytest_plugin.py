"""The pytest plugin, through real pytest sessions (``pytester``): collection, outcomes, selection,
-x, JUnit XML, cases, state, the ``tdrun_state`` fixture, history and bad input."""

from __future__ import annotations

import re
import textwrap
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

LIFECYCLE = '''
import threading
from pathlib import Path
from thread_order import mark

both = threading.Barrier(2, timeout=10)   # passes only if the two run at the same time

def setup_state(state):
    state.setdefault("region", "eu")
    state["from_setup"] = True

@mark(tags="create")
def create_network(state):
    print("creating the network in", state["region"])
    return {"id": "net-1"}

@mark(after=["create_network"], tags="create")
def create_subnet(state):
    print("creating the subnet")
    raise ValueError("subnet quota exceeded")

@mark(after=["create_subnet"])
def verify_subnet(state):
    pass

@mark(after=["create_network"], tags="create")
def create_gateway(state):
    both.wait()
    return "gw-1"

@mark(after=["create_network"], tags="create")
def create_route(state):
    both.wait()
    with state["_state_lock"]:
        state["routes"] = ["r1"]

@mark(after=["verify_subnet", "create_gateway", "create_route"], always=True, tags="teardown")
def delete_network(state):
    print("deleting", state["results"]["create_network"]["id"])
    Path(state["marker"]).write_text("deleted")
'''


@pytest.fixture
def lifecycle(pytester):
    pytester.makepyfile(tasks_life=LIFECYCLE)
    return pytester


@pytest.fixture(autouse=True)
def no_history(monkeypatch):
    """Runs are not recorded unless a test asks (``--tdrun-history PATH``)."""
    monkeypatch.setenv("TDRUN_HISTORY", "off")


def run(pytester, *args):
    """An in-process pytest session."""
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *map(str, args))


def test_a_lifecycle_reports_each_task_with_its_outcome(lifecycle):
    marker = lifecycle.path / "deleted.txt"
    result = run(lifecycle, "--tdrun", "tasks_life.py", "--tdrun-set", f"marker={marker}", "-rfs")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    assert result.ret == 1
    out = result.stdout.str()
    # the failure: the task's own traceback, from the user's frame, and its captured output
    failure = out.split("_ create_subnet _", 1)[1]
    assert re.search(r'File ".*tasks_life\.py", line \d+, in create_subnet', failure)
    assert "thread_order" not in failure.split("Captured stdout call")[0]
    assert "ValueError: subnet quota exceeded" in failure
    assert "Captured stdout call" in failure and "creating the subnet" in failure
    # the skip cascade, with tdrun's reason, located at the task's own line
    assert re.search(r"SKIPPED \[1\] tasks_life\.py:\d+: dependency 'create_subnet' failed", out)
    assert "FAILED tasks_life.py::create_subnet - ValueError: subnet quota exceeded" in out
    # the teardown ran although something upstream failed
    assert marker.read_text() == "deleted"
    assert "tdrun: 4 passed, 1 failed, 1 skipped" in out


def test_node_ids_are_file_and_task(lifecycle):
    result = run(lifecycle, "--tdrun", "tasks_life.py", "--collect-only", "-q")
    assert result.ret == 0
    ids = [line for line in result.stdout.lines if "::" in line]
    assert ids == [f"tasks_life.py::{name}" for name in (
        "create_network", "create_subnet", "verify_subnet", "create_gateway", "create_route",
        "delete_network")]


def test_the_plugin_is_inert_unless_asked(pytester):
    pytester.makepyfile(tasks_life=LIFECYCLE, test_plain="def test_one():\n    assert True\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert "tdrun" not in result.stdout.str()
    # the fixture is there, and says why it cannot help
    pytester.makepyfile(test_reads="def test_reads(tdrun_state):\n    pass\n")
    result = run(pytester, "test_reads.py", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no tdrun run in this session*"])


def test_the_ini_option_collects_matching_files_and_leaves_test_files_alone(lifecycle):
    lifecycle.makeini("[pytest]\ntdrun_files = tasks_*.py\n")
    lifecycle.makepyfile(test_plain="def test_one():\n    assert True\n")
    marker = lifecycle.path / "deleted.txt"
    result = run(lifecycle, "--tdrun-set", f"marker={marker}")
    result.assert_outcomes(passed=5, failed=1, skipped=1)
    assert marker.exists()


def test_every_task_carries_the_tdrun_marker(lifecycle):
    lifecycle.makepyfile(test_plain="def test_one():\n    assert True\n")
    result = run(lifecycle, "--tdrun", "tasks_life.py", "test_plain.py", "-m", "not tdrun", "--strict-markers")
    result.assert_outcomes(passed=1, deselected=6)
    assert "tdrun: running" not in result.stdout.str()


def test_k_selects_and_upstream_dependencies_still_run(lifecycle):
    marker = lifecycle.path / "deleted.txt"
    result = run(lifecycle, "--tdrun", "tasks_life.py", "-k", "gateway or route",
                 "--tdrun-set", f"marker={marker}")
    result.assert_outcomes(passed=2, deselected=4)
    assert result.ret == 0
    out = result.stdout.str()
    assert "run because selected tasks need them:" in out
    assert re.search(r"^  create_network PASSED \d+\.\d\ds$", out, re.M)
    assert "tdrun: running 3 tasks (1 of them needed by the selection)" in out
    assert not marker.exists()  # downstream of the selection: not run


def test_a_needed_task_that_fails_fails_the_session(lifecycle):
    result = run(lifecycle, "--tdrun", "tasks_life.py", "-k", "verify", "-rs")
    result.assert_outcomes(skipped=1, deselected=5)
    assert result.ret == 1
    out = result.stdout.str()
    assert "create_subnet FAILED" in out and "needed task create_subnet" in out
    assert "ValueError: subnet quota exceeded" in out


def test_m_selects_by_tag_and_tags_are_registered_markers(lifecycle):
    result = run(lifecycle, "--tdrun", "tasks_life.py", "-m", "create and not teardown", "--strict-markers")
    result.assert_outcomes(passed=3, failed=1, deselected=2)
    result = run(lifecycle, "--tdrun", "tasks_life.py", "-m", "teardown", "--strict-markers",
                 "--tdrun-set", "marker=m.txt")
    result.assert_outcomes(passed=1, deselected=5)
    assert "run because selected tasks need them:" in result.stdout.str()


def test_x_cancels_the_rest_but_teardown_runs(pytester):
    pytester.makepyfile(tasks_x='''
        from pathlib import Path
        from thread_order import mark

        @mark()
        def create(state):
            pass

        @mark(after=["create"])
        def boom(state):
            raise RuntimeError("no")

        @mark(after=["boom"], always=True)
        def step_a(state):
            pass

        @mark(after=["step_a"])
        def step_b(state):
            pass

        @mark(after=["step_b"], always=True)
        def teardown(state):
            Path(state["marker"]).write_text("ran")
    ''')
    marker = pytester.path / "teardown.txt"
    result = run(pytester, "--tdrun", "tasks_x.py", "--tdrun-workers", "1", "-x",
                 "--tdrun-set", f"marker={marker}", "-o", "log_cli=true", "-o", "log_cli_level=WARNING")
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "interrupt again" not in out  # Ctrl-C's advice; the summary explains -x
    assert "stopping after 1 failures" in out
    assert "not reported as items (pytest stopped (-x)):" in out
    assert re.search(r"^  step_b CANCELLED .*cancelled: the run was", out, re.M)
    assert re.search(r"^  teardown PASSED", out, re.M)
    assert marker.read_text() == "ran"


def test_maxfail_counts_failures_as_they_happen(pytester):
    pytester.makepyfile(tasks_mf='''
        from thread_order import mark

        @mark()
        def one(state):
            raise ValueError(1)

        @mark(after=["one"], always=True)
        def two(state):
            raise ValueError(2)

        @mark(after=["two"], always=True)
        def three(state):
            pass

        @mark(after=["three"])
        def four(state):
            pass
    ''')
    result = run(pytester, "--tdrun", "tasks_mf.py", "--maxfail", "2", "--tdrun-workers", "1")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["not reported as items (pytest stopped (--maxfail=2)):",
                                 "  three PASSED*", "  four CANCELLED*cancelled: the run was*"])


def test_junit_xml_has_real_durations(pytester):
    pytester.makepyfile(tasks_slow='''
        import time
        from thread_order import mark

        @mark()
        def slow(state):
            time.sleep(0.3)

        @mark(after=["slow"])
        def broken(state):
            raise KeyError("missing")
    ''')
    result = run(pytester, "--tdrun", "tasks_slow.py", "--junitxml", "report.xml",
                 "-o", "junit_logging=system-out")
    assert result.ret == 1
    root = ET.parse(pytester.path / "report.xml").getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"slow", "broken"}
    assert float(cases["slow"].get("time")) >= 0.3
    assert cases["slow"].get("classname") == "tasks_slow"
    failure = cases["broken"].find("failure")
    assert failure.get("message") == "KeyError: 'missing'"
    assert "in broken" in failure.text
    props = {p.get("name"): p.get("value") for p in cases["slow"].iter("property")}
    assert props["tdrun_thread"].startswith("thread_") and props["tdrun_attempts"] == "1"


def test_durations_show_the_tasks_time(pytester):
    pytester.makepyfile(tasks_d='''
        import time
        from thread_order import mark

        @mark()
        def sleeper(state):
            time.sleep(0.25)
    ''')
    result = run(pytester, "--tdrun", "tasks_d.py", "--durations", "1")
    result.stdout.re_match_lines([r"0\.(2[5-9]|[3-9]\d)s call +tasks_d\.py::sleeper"])


CASES = '''
from thread_order import mark

@mark(params={"region": ["eu", "us"]})
def create_vm(state, region):
    if region == "us":
        raise RuntimeError("no capacity in us")
    return f"vm-{region}"

@mark(after=["create_vm"], params={"region": ["eu", "us"]})
def verify_vm(state, region):
    pass

@mark(after=["verify_vm"], params={"region": ["eu", "us"]}, always=True)
def delete_vm(state, region):
    pass
'''


def test_parametrized_cases_are_items_paired_case_by_case(pytester):
    pytester.makepyfile(tasks_cases=CASES)
    result = run(pytester, "--tdrun", "tasks_cases.py", "-v", "-rs")
    result.assert_outcomes(passed=4, failed=1, skipped=1)
    result.stdout.fnmatch_lines([
        "*tasks_cases.py::create_vm[[]eu[]] PASSED*",
        "*tasks_cases.py::create_vm[[]us[]] FAILED*",
        "*tasks_cases.py::verify_vm[[]eu[]] PASSED*",
        "*tasks_cases.py::verify_vm[[]us[]] SKIPPED*",
        "*tasks_cases.py::delete_vm[[]eu[]] PASSED*",
        "*tasks_cases.py::delete_vm[[]us[]] PASSED*",
    ])
    result.stdout.fnmatch_lines(["*dependency 'create_vm[[]us[]]' failed*"])


def test_k_on_a_case_runs_only_its_own_upstream_case(pytester):
    pytester.makepyfile(tasks_cases=CASES)
    result = run(pytester, "--tdrun", "tasks_cases.py", "-k", "verify_vm and eu")
    result.assert_outcomes(passed=1, deselected=5)
    out = result.stdout.str()
    assert "create_vm[eu] PASSED" in out and "create_vm[us]" not in out


def test_node_ids_on_the_command_line_select_tasks(lifecycle):
    result = run(lifecycle, "--tdrun", "tasks_life.py::create_route", "--tdrun", "tasks_life.py::create_gateway",
                 "--tdrun-set", "marker=unused")
    result.assert_outcomes(passed=2)
    assert "create_network PASSED" in result.stdout.str()


def test_state_file_set_and_setup_state_reach_the_tasks_and_the_fixture(pytester):
    pytester.makepyfile(tasks_state='''
        from thread_order import mark

        def setup_state(state):
            state["seen_by_setup"] = state.get("env")

        @mark()
        def create(state):
            with state["_state_lock"]:
                state["created"] = {"ids": [1, 2], "env": state["env"], "size": state["size"]}
            return {"name": "n1"}
    ''')
    pytester.makepyfile(test_after='''
        import pytest

        def test_reads_the_final_state(tdrun_state):
            assert tdrun_state["created"] == {"ids": (1, 2), "env": "prod", "size": 3}
            assert tdrun_state["seen_by_setup"] == "prod"
            assert tdrun_state.results["create"]["name"] == "n1"
            assert tdrun_state.status("create") == "PASSED"
            assert tdrun_state.records["create"].attempts == 1
            assert tdrun_state.summary["passed"] == ["create"]
            assert "results" not in tdrun_state and "_state_lock" not in tdrun_state

        def test_it_is_read_only(tdrun_state):
            with pytest.raises(TypeError):
                tdrun_state["created"]["env"] = "dev"
            with pytest.raises(TypeError):
                tdrun_state.results["create"]["name"] = "other"
            with pytest.raises(AttributeError):
                tdrun_state["created"]["ids"].append(3)

        def test_an_unknown_task_says_so(tdrun_state):
            with pytest.raises(KeyError, match="no task 'craete' in the tdrun run; did you mean 'create'"):
                tdrun_state.status("craete")
    ''')
    (pytester.path / "state.json").write_text('{"env": "dev", "size": 3}')
    result = run(pytester, "--tdrun", "tasks_state.py", "test_after.py",
                 "--tdrun-state-file", "state.json", "--tdrun-set", "env=prod")
    result.assert_outcomes(passed=4)


def test_the_run_is_recorded_in_the_history(lifecycle):
    from thread_order.history import HistoryStore

    db = lifecycle.path / "runs" / "h.db"
    result = run(lifecycle, "--tdrun", "tasks_life.py", "--tdrun-history", db,
                 "--tdrun-set", f"marker={lifecycle.path / 'm.txt'}", "--tdrun-set", "api_token=hunter2")
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"run 1 recorded in {db} (tdrun show 1 --history {db})"])
    with HistoryStore(db, readonly=True) as store:
        recorded = store.get_run("last")
    assert recorded["status"] == "failed"
    assert recorded["module"] == "tasks_life.py"
    statuses = {t["name"]: t["status"] for t in recorded["tasks"]}
    assert statuses["create_subnet"] == "FAILED" and statuses["verify_subnet"] == "SKIPPED"
    assert statuses["delete_network"] == "PASSED"
    assert "hunter2" not in repr(recorded)
    assert recorded["argv"][:3] == ["pytest", "-p", "no:cacheprovider"]
    assert "api_token=***redacted***" in recorded["argv"]


def test_a_history_file_that_cannot_be_recorded_into_stops_before_the_run(lifecycle):
    (lifecycle.path / "corrupt.db").write_bytes(b"this is not a database" * 100)
    marker = lifecycle.path / "deleted.txt"
    result = run(lifecycle, "--tdrun", "tasks_life.py", "--tdrun-history", "corrupt.db",
                 "--tdrun-set", f"marker={marker}")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: tdrun: *corrupt.db*(--tdrun-history off runs without recording)"])
    assert not marker.exists()


def test_history_off_and_default(lifecycle, monkeypatch):
    monkeypatch.delenv("TDRUN_HISTORY")
    marker = f"marker={lifecycle.path / 'm.txt'}"
    run(lifecycle, "--tdrun", "tasks_life.py", "--tdrun-history", "off", "--tdrun-set", marker)
    assert not (lifecycle.path / ".tdrun").exists()
    result = lifecycle.runpytest_inprocess("-p", "no:cacheprovider", "--tdrun", "tasks_life.py",
                                           "--tdrun-set", marker)
    assert result.ret == 1
    assert (lifecycle.path / ".tdrun" / "history.db").is_file()


def test_a_suite_of_modules_names_tasks_module_colon_colon_task(pytester):
    pytester.mkpydir("suite")
    (pytester.path / "suite" / "__init__.py").unlink()
    (pytester.path / "suite" / "network.py").write_text(textwrap.dedent('''
        from thread_order import mark

        @mark()
        def create_network(state):
            return "net"
    '''))
    (pytester.path / "suite" / "storage.py").write_text(textwrap.dedent('''
        from thread_order import mark

        @mark(after=["network::create_network"])
        def create_volume(state):
            return state["results"]["network::create_network"] + "/vol"
    '''))
    # pytest's own file in the folder, though it mentions mark: not a task module
    (pytester.path / "suite" / "conftest.py").write_text(
        "import pathlib, pytest\nSLOW = pytest.mark.slow\n"
        "with open(pathlib.Path(__file__).parent.parent / 'imports.txt', 'a') as fh:\n"
        "    fh.write('imported\\n')\n")
    pytester.makepyfile(test_after='''
        def test_cross_module(tdrun_state):
            assert tdrun_state.results["storage::create_volume"] == "net/vol"
    ''')
    result = run(pytester, "--tdrun", "suite", "test_after.py", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*suite/network.py::create_network PASSED*",
                                 "*suite/storage.py::create_volume PASSED*"])
    assert (pytester.path / "imports.txt").read_text() == "imported\n"  # by pytest alone
    result = run(pytester, "--tdrun", "suite", "-k", "volume")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["  network::create_network PASSED*"])


@pytest.mark.parametrize("args, message", [
    (["--tdrun-set", "novalue"], "ERROR: --tdrun-set 'novalue': expected KEY=VALUE*"),
    (["--tdrun-set", "results=1"], "ERROR: --tdrun-set results: 'results' is reserved*"),
    (["--tdrun-workers", "0"], "ERROR: --tdrun-workers: must be at least 1, got '0'"),
    (["--tdrun-workers", "many"], "ERROR: --tdrun-workers: expected a whole number of threads, got 'many'"),
    (["--tdrun-state-file", "nope.json"], "ERROR: state file nope.json: no such file"),
    (["--tdrun-state-file", "bad.json"], "ERROR: state file bad.json: invalid JSON*"),
    (["--tdrun-state-file", "results.json"], "ERROR: tdrun: state file results.json: 'results' must be "
                                             "an object of task results, not int"),
    (["--tdrun-state-file", "private.json"], "ERROR: tdrun: state file private.json: key '_lock' is reserved*"),
    (["--tdrun-history", "."], "ERROR: --tdrun-history '.': expected a file path or 'off'"),
])
def test_bad_options_are_usage_errors(lifecycle, args, message):
    (lifecycle.path / "bad.json").write_text("{nope")
    (lifecycle.path / "results.json").write_text('{"results": 1}')
    (lifecycle.path / "private.json").write_text('{"_lock": 1}')
    result = run(lifecycle, "--tdrun", "tasks_life.py", *args)
    assert result.ret == 4
    result.stderr.fnmatch_lines([message])


def test_a_missing_path_and_options_without_a_target_are_usage_errors(pytester):
    result = run(pytester, "--tdrun", "missing.py")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: --tdrun missing.py: no such file or directory"])
    result = pytester.runpytest_inprocess("--tdrun-workers", "2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: --tdrun-workers needs something to collect: --tdrun PATH or "
                                 "the ini option tdrun_files"])


def test_an_unknown_dependency_is_a_usage_error_with_candidates(pytester):
    pytester.makepyfile(tasks_dep='''
        from thread_order import mark

        @mark()
        def prepare(state):
            pass

        @mark(after=["prepaer"])
        def go(state):
            pass
    ''')
    result = run(pytester, "--tdrun", "tasks_dep.py")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: tdrun: task 'go' depends on unknown task 'prepaer'; "
                                 "did you mean 'prepare'?"])


def test_an_import_error_is_a_collection_error_with_the_users_frames(pytester):
    pytester.makepyfile(tasks_broken='''
        from thread_order import mark

        def helper():
            return 1 / 0

        VALUE = helper()
    ''')
    result = run(pytester, "--tdrun", "tasks_broken.py")
    assert result.ret == 2
    out = result.stdout.str()
    assert "ERROR collecting tasks_broken.py" in out
    assert re.search(r'File ".*tasks_broken\.py", line 4, in helper', out)
    assert "tdrun: tasks_broken.py: cannot import module: ZeroDivisionError: division by zero" in out


def test_a_failing_setup_state_is_a_usage_error(pytester):
    pytester.makepyfile(tasks_setup='''
        from thread_order import mark

        def setup_state(state):
            raise RuntimeError("no credentials")

        @mark()
        def go(state):
            pass
    ''')
    result = run(pytester, "--tdrun", "tasks_setup.py")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: tdrun: tasks_setup.py: setup_state() raised RuntimeError: "
                                 "no credentials"])


def test_a_tag_named_like_a_pytest_marker_does_not_change_the_outcome(pytester):
    pytester.makepyfile(tasks_tags='''
        from thread_order import mark

        @mark(tags="skip,xfail,smoke")
        def create(state):
            pass

        @mark(tags="parametrize")
        def other(state):
            raise ValueError("really failed")
    ''')
    result = run(pytester, "--tdrun", "tasks_tags.py", "--strict-markers")
    result.assert_outcomes(passed=1, failed=1)
    result = run(pytester, "--tdrun", "tasks_tags.py", "-m", "smoke")
    result.assert_outcomes(passed=1, deselected=1)


def test_pytest_html_shows_the_tasks_with_their_durations(pytester):
    import html
    import json

    pytest.importorskip("pytest_html")
    pytester.makepyfile(tasks_html='''
        import time
        from thread_order import mark

        @mark()
        def slow(state):
            time.sleep(0.3)

        @mark(after=["slow"])
        def broken(state):
            print("about to break")
            raise KeyError("missing")
    ''')
    result = run(pytester, "--tdrun", "tasks_html.py", "--html", "report.html")
    assert result.ret == 1
    page = (pytester.path / "report.html").read_text(encoding="utf-8")
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))
    tests = {node: runs[0] for node, runs in blob["tests"].items()}
    assert set(tests) == {"tasks_html.py::slow", "tasks_html.py::broken"}
    slow = tests["tasks_html.py::slow"]
    assert slow["result"] == "Passed"
    ms = int(re.fullmatch(r"(\d+) ms", slow["duration"]).group(1))
    assert ms >= 300
    broken = tests["tasks_html.py::broken"]
    assert broken["result"] == "Failed"
    assert "KeyError: &#x27;missing&#x27;" in broken["log"] or "KeyError: 'missing'" in broken["log"]
    assert "about to break" in broken["log"]


def test_a_task_module_named_like_a_test_file_is_imported_once_by_tdrun_alone(pytester):
    pytester.makepyfile(test_tasks='''
        import pathlib
        from thread_order import mark

        with open(pathlib.Path(__file__).parent / "imports.txt", "a") as fh:
            fh.write("imported\\n")

        @mark()
        def create(state):
            pass

        def test_not_a_task():
            pass
    ''')
    result = run(pytester, "--tdrun", "test_tasks.py", "--collect-only", "-q")
    assert [line for line in result.stdout.lines if "::" in line] == ["test_tasks.py::create"]
    assert (pytester.path / "imports.txt").read_text() == "imported\n"


def test_log_records_are_in_the_captured_output_and_pytests_log_level_is_kept(pytester):
    pytester.makepyfile(tasks_log='''
        import logging
        from thread_order import mark

        log = logging.getLogger("tasks")

        @mark()
        def noisy(state):
            log.debug("a debug detail")
            log.info("calling the api")
            raise RuntimeError("api down")
    ''')
    result = run(pytester, "--tdrun", "tasks_log.py")
    assert "calling the api" in result.stdout.str()
    assert "a debug detail" not in result.stdout.str()
    result = run(pytester, "--tdrun", "tasks_log.py", "--log-level", "DEBUG")
    assert "a debug detail" in result.stdout.str()


def test_pytest_xdist_is_refused(lifecycle):
    # pytest-xdist's option as its -n sets it (a conftest may not declare lowercase short
    # options, a plugin may): each worker would run the whole graph
    lifecycle.makeconftest('''
        def pytest_addoption(parser):
            parser.addoption("--numprocesses", dest="numprocesses", type=int, default=None)
    ''')
    result = run(lifecycle, "--tdrun", "tasks_life.py", "--numprocesses", "2")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["ERROR: tdrun tasks cannot run under pytest-xdist (-n): *"])
    result = run(lifecycle, "--tdrun", "tasks_life.py", "--numprocesses", "0", "--tdrun-set", "marker=m.txt")
    assert result.ret == 1


POOLED = '''
import threading
from thread_order import mark

POOLS = {"api": 1}
LOCK = threading.Lock()
NOW = [0, 0]  # running, peak

@mark(pool="api", params={"i": [1, 2, 3]})
def call(state, i):
    with LOCK:
        NOW[0] += 1
        NOW[1] = max(NOW)
    threading.Event().wait(0.02)  # the call's own latency
    with LOCK:
        NOW[0] -= 1

@mark(after=["call"])
def peak(state):
    assert NOW[1] == 1, f"{NOW[1]} calls at once in a pool of 1"
'''


def test_a_module_s_pools_hold_under_pytest(pytester):
    pytester.makepyfile(tasks_pooled=POOLED)
    result = run(pytester, "--tdrun", "tasks_pooled.py", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    pytester.makepyfile(tasks_pooled=POOLED.replace('POOLS = {"api": 1}', "POOLS = {}"))
    result = run(pytester, "--tdrun", "tasks_pooled.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "tdrun: task 'call[1]' is in unknown pool 'api' (declared: none)" in result.stderr.str()
