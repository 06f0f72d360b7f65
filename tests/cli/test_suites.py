"""Suites across files through tdrun: directories, MODULE::TASK names, cross-module
dependencies, -k, and every front-end showing each task's module and case."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

NETWORK = """
    from thread_order import mark

    def setup_state(state):
        state.setdefault("setup_order", []).append("network")

    @mark(tags="create")
    def create_network(state):
        return "net-1"

    @mark(after=["compute/vms::delete_vm", "delete_volume"], always=True, tags="teardown")
    def delete_network(state):
        return "deleted " + state["results"]["network::create_network"]
"""
VMS = """
    from thread_order import mark

    REGIONS = {"region": ["eu", "us"]}

    def setup_state(state):
        state.setdefault("setup_order", []).append("vms")

    @mark(after=["create_network"], params=REGIONS, tags="create")
    def create_vm(state, region):
        if state.get("fail_region") == region:
            raise RuntimeError(f"no capacity in {region}")
        return f"vm-{region}"

    @mark(after=["create_vm"], params=REGIONS, always=True, tags="teardown")
    def delete_vm(state, region):
        return state["results"].get(f"compute/vms::create_vm[{region}]")
"""
STORAGE = """
    from thread_order import mark

    def setup_state(state):
        state.setdefault("setup_order", []).append("storage")

    @mark(after=["network::create_network"], tags="create")
    def create_volume(state):
        return "vol-1"

    @mark(after=["create_volume", "create_vm"], params={"region": ["eu", "us"]})
    def attach_volume(state, region):
        return f"vol-1 on vm-{region}"

    @mark(after=["attach_volume"], always=True, tags="teardown")
    def delete_volume(state):
        pass
"""


def write(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def suite(tmp_path) -> Path:
    root = tmp_path / "suite"
    write(root, "network.py", NETWORK)
    write(root, "compute/vms.py", VMS)
    write(root, "storage.py", STORAGE)
    write(root, "notes.py", "print('never imported: it has no task')\nraise SystemExit(9)\n")
    write(root, "_private.py", "raise SystemExit('a private module is never collected')\nmark = 1\n")
    write(root, ".hidden/tasks.py", "raise SystemExit('hidden folders are skipped')\nmark = 1\n")
    return root


ORDER = ["compute/vms::create_vm[eu]", "compute/vms::create_vm[us]", "compute/vms::delete_vm[eu]",
         "compute/vms::delete_vm[us]", "network::create_network", "network::delete_network",
         "storage::create_volume", "storage::attach_volume[eu]", "storage::attach_volume[us]",
         "storage::delete_volume"]


def test_a_directory_runs_as_one_suite_with_cross_module_dependencies(suite, tmp_path, tdrun_main):
    js, junit = tmp_path / "r.json", tmp_path / "r.xml"
    result = tdrun_main(suite, "--json-report", js, "--junit-xml", junit, "--plain")
    assert result.code == 0, result.out + result.err
    data = json.loads(js.read_text())
    assert [t["name"] for t in data["tasks"]] == ORDER  # collection order: sorted paths, source order
    assert data["modules"] == [{"name": "compute/vms", "path": str(suite / "compute" / "vms.py")},
                               {"name": "network", "path": str(suite / "network.py")},
                               {"name": "storage", "path": str(suite / "storage.py")}]
    tasks = {t["name"]: t for t in data["tasks"]}
    assert tasks["compute/vms::create_vm[eu]"]["after"] == ["network::create_network"]
    assert tasks["compute/vms::create_vm[eu]"]["module"] == "compute/vms"
    assert tasks["compute/vms::create_vm[eu]"]["case"] == {"region": "eu"}
    assert tasks["network::create_network"]["case"] is None
    # attach pairs with the vm of its own region, and with the one volume
    assert tasks["storage::attach_volume[us]"]["after"] == ["storage::create_volume", "compute/vms::create_vm[us]"]
    assert tasks["network::delete_network"]["after"] == [
        "compute/vms::delete_vm[eu]", "compute/vms::delete_vm[us]", "storage::delete_volume"]
    # a run of one module keeps bare names; here every name carries its module
    assert "[thread_" in result.out and "compute/vms::delete_vm[us]" in result.out
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases][:2] == [
        ("compute.vms", "create_vm[eu]"), ("compute.vms", "create_vm[us]")]


def test_every_modules_setup_state_runs_once_in_collection_order(suite, tmp_path, tdrun_main):
    write(suite, "zz_check.py", """
        from thread_order import mark

        @mark(after=["network::delete_network"])
        def check(state):
            assert state["setup_order"] == ["vms", "network", "storage"], state["setup_order"]
    """)
    result = tdrun_main(suite, "--plain")
    assert result.code == 0, result.out + result.err


def test_the_suite_as_a_real_process_with_a_failing_case(suite, tdrun_proc, tmp_path):
    js = tmp_path / "r.json"
    done = tdrun_proc(suite, "--fail_region=us", "--json-report", js)
    assert done.code == 1, done.err
    status = {t["name"]: t["status"] for t in json.loads(js.read_text())["tasks"]}
    assert status["compute/vms::create_vm[us]"] == "FAILED"
    assert status["storage::attach_volume[us]"] == "SKIPPED"       # its dependent
    assert status["storage::attach_volume[eu]"] == "PASSED"        # the other case is untouched
    assert status["compute/vms::delete_vm[us]"] == "PASSED"        # teardown still runs
    assert "1 failed" in done.out and "dependency 'compute/vms::create_vm[us]' failed" in done.out


def test_several_paths_and_a_file_task_make_one_suite(suite, tdrun_main):
    # files given one by one are named by their stem: network's "compute/vms::delete_vm" is then unknown
    result = tdrun_main(suite / "network.py", suite / "compute" / "vms.py", suite / "storage.py", "--list")
    assert result.code == 4
    assert result.err.startswith("tdrun: error: task 'network::delete_network' depends on unknown task "
                                 "'compute/vms::delete_vm'; did you mean 'vms::delete_vm'")
    result = tdrun_main(suite / "compute" / "vms.py", suite / "storage.py", f"{suite / 'network.py'}::create_network",
                        "--list")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        f"suite {suite / 'compute' / 'vms.py'} {suite / 'storage.py'} {suite / 'network.py'}: 9 tasks in "
        "3 modules (vms, storage, network), in the order they would start with one worker")
    assert "vms::create_vm[eu]" in result.out and "case: region='eu'" in result.out
    assert "network::delete_network" not in result.out
    alone = tdrun_main(f"{suite / 'network.py'}::create_network", suite / "storage.py", "--list")
    assert alone.code == 4
    assert alone.err == ("tdrun: error: task 'storage::attach_volume[eu]' depends on unknown task "
                         "'create_vm'; did you mean 'storage::create_volume'?\n")


def test_k_selects_by_full_name_and_drops_dependencies_outside_unless_with_deps(suite, tdrun_main):
    listed = tdrun_main(suite, "-k", "vms and not delete", "--list")
    assert listed.code == 0, listed.err
    names = [line.split()[1] for line in listed.out.splitlines()[1:]]
    assert names == ["compute/vms::create_vm[eu]", "compute/vms::create_vm[us]"]
    assert "after:" not in listed.out  # create_network is outside the selection
    upstream = tdrun_main(suite, "-k", "attach_volume[eu]", "--with-deps", "--list")
    names = [line.split()[1] for line in upstream.out.splitlines()[1:]]
    assert names == ["network::create_network", "compute/vms::create_vm[eu]", "storage::create_volume",
                     "storage::attach_volume[eu]"]
    both = tdrun_main(suite, "-k", "(volume or network) and not attach", "--tags", "create", "--list")
    names = [line.split()[1] for line in both.out.splitlines()[1:]]
    assert names == ["network::create_network", "storage::create_volume"]
    none = tdrun_main(suite, "-k", "nothing-like-this")
    assert none.code == 5 and "matches -k 'nothing-like-this'" in none.err


@pytest.mark.parametrize("expr, message", [
    ("a and", "-k 'a and': expected a name, 'not' or '(', found the end"),
    ("(a or b", "-k '(a or b': expected ')', found the end"),
    ("a b", "-k 'a b': expected 'and', 'or' or the end, found 'b' at column 3"),
    ("", "-k: expected an expression such as 'subnet and not delete'"),
])
def test_a_bad_k_expression_is_one_line_and_exit_4(suite, tdrun_main, expr, message):
    result = tdrun_main(suite, "-k", expr)
    assert (result.code, result.err) == (4, f"tdrun: error: {message}\n")


def test_an_ambiguous_or_unknown_dependency_lists_the_candidates(tmp_path, tdrun_main):
    root = tmp_path / "s"
    write(root, "a.py", "from thread_order import mark\n\n@mark()\ndef prepare(state): pass\n")
    write(root, "b.py", "from thread_order import mark\n\n@mark()\ndef prepare(state): pass\n")
    write(root, "c.py", "from thread_order import mark\n\n@mark(after=['prepare'])\ndef go(state): pass\n")
    result = tdrun_main(root)
    assert (result.code, result.err) == (4, "tdrun: error: task 'c::go' depends on 'prepare', which several "
                                            "modules define: a::prepare, b::prepare; name one as MODULE::TASK\n")
    write(root, "c.py", "from thread_order import mark\n\n@mark(after=['a::prepar'])\ndef go(state): pass\n")
    result = tdrun_main(root)
    assert (result.code, result.err) == (4, "tdrun: error: task 'c::go' depends on unknown task 'a::prepar'; "
                                            "did you mean 'a::prepare'?\n")
    write(root, "c.py", "from thread_order import mark\n\n@mark(after=['prepaer'])\ndef go(state): pass\n")
    result = tdrun_main(root)
    assert result.err == ("tdrun: error: task 'c::go' depends on unknown task 'prepaer'; did you mean "
                          "'a::prepare' or 'b::prepare'?\n")
    # a task filtered out never fails the run with its unresolved name
    assert tdrun_main(root, "-k", "prepare", "--list").code == 0


def test_pattern_narrows_what_a_directory_collects(suite, tdrun_main):
    result = tdrun_main(suite, "--pattern", "s*.py", "--list")
    assert result.code == 4  # storage alone: its dependencies on the other modules are unknown
    assert "depends on unknown task 'network::create_network'" in result.err
    write(suite, "compute/other.py", "from thread_order import mark\n\n@mark()\ndef x(state): pass\n")
    result = tdrun_main(suite, "--pattern", "compute/*.py", "--list")
    assert result.code == 4 and "unknown task 'create_network'" in result.err
    empty = tdrun_main(suite, "--pattern", "nothing_*.py")
    assert (empty.code, empty.err) == (4, f"tdrun: error: {suite}: no module with marked tasks matching "
                                          "'nothing_*.py'\n")


def test_two_modules_that_would_share_a_name_are_refused(tmp_path, tdrun_main):
    a = write(tmp_path, "a/net.py", "from thread_order import mark\n\n@mark()\ndef x(state): pass\n")
    b = write(tmp_path, "b/net.py", "from thread_order import mark\n\n@mark()\ndef y(state): pass\n")
    result = tdrun_main(a, b)
    assert (result.code, result.err) == (4, f"tdrun: error: {a} and {b} would both be module 'net'; "
                                            "give their common directory instead\n")
    assert tdrun_main(a, a, "--list").out.splitlines()[0].startswith(f"{a}: 1 task")  # once


def test_directory_task_target_is_refused(suite, tdrun_main):
    result = tdrun_main(f"{suite}::create_network")
    assert result.code == 4 and "'::task' needs a module file, not a directory" in result.err


def test_graph_history_show_and_html_report_name_each_tasks_module(suite, tmp_path, tdrun_main):
    graph = tdrun_main(suite, "--graph", "--graph-format", "dot")
    assert graph.code == 0 and '"network::create_network" -> "compute/vms::create_vm[eu]"' in graph.out
    history, html = tmp_path / "h.db", tmp_path / "r.html"
    ran = tdrun_main(suite, "--history", history, "--html-report", html, "--plain")
    assert ran.code == 0, ran.err
    shown = tdrun_main("show", "last", "--history", history)
    assert "compute/vms::create_vm[eu]" in shown.out and "storage::attach_volume[us]" in shown.out
    listed = tdrun_main("history", "--history", history)
    assert str(suite) in listed.out
    page = html.read_text()
    assert "compute/vms::delete_vm[us]" in page


def test_a_parametrized_module_with_a_collection_error_names_the_task(tmp_path, tdrun_main):
    path = write(tmp_path, "p.py", """
        from thread_order import mark

        @mark(params={"cidr": []})
        def create_subnet(state, cidr):
            pass
    """)
    result = tdrun_main(path)
    assert result.code == 4
    assert result.err.splitlines()[-1] == (
        f"tdrun: error: {path}: cannot import module: ValueError: task 'create_subnet': "
        "params['cidr'] is an empty list; give at least one value")
    path = write(tmp_path, "p.py", """
        from thread_order import mark

        @mark(params={"cidr": ["a"]})
        def create(state, cidr): pass

        @mark(after=["create"], params={"cidr": ["a", "b"]})
        def delete(state, cidr): pass
    """)
    result = tdrun_main(path)
    assert (result.code, result.err) == (4, f"tdrun: error: {path}: task 'delete[b]' depends on 'create', "
                                            "which has no case with cidr='b'\n")


def test_one_module_keeps_bare_names_and_suggests_a_close_name(tmp_path, tdrun_main):
    path = write(tmp_path, "one.py", """
        from thread_order import mark

        @mark(params={"n": [1, 2]})
        def create_network(state, n): pass

        @mark(after=["create_netwrok"])
        def use(state): pass
    """)
    result = tdrun_main(path)
    assert (result.code, result.err) == (4, "tdrun: error: task 'use' depends on unknown task 'create_netwrok'; "
                                            "did you mean 'create_network'?\n")
    listed = tdrun_main(f"{path}::create_network", "--list")  # a parametrized task's name: all its cases
    assert listed.code == 0, listed.err
    assert [line.split()[1] for line in listed.out.splitlines()[1:]] == ["create_network[1]", "create_network[2]"]
    one = tdrun_main(f"{path}::create_network[2]", "--list")
    assert [line.split()[1] for line in one.out.splitlines()[1:]] == ["create_network[2]"]
    missing = tdrun_main(f"{path}::create_netwrk")
    assert missing.err == (f"tdrun: error: {path}: no marked task named 'create_netwrk'; did you mean "
                           "'create_network'?\n")
