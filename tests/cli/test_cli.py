"""tdrun through ``main(argv)``: runs, options, state, exit codes and every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import MODULES
from thread_order import __version__
from thread_order.cli.main import SUBCOMMANDS, main, parse_args
from thread_order.engine.errors import UsageError

BASIC = MODULES / "cli_basic.py"
OK = MODULES / "cli_ok.py"
RETRY = MODULES / "cli_retry.py"
LINE = re.compile(r"^(\[thread_\d+\]|\s+) (\w+) \.+ (PASSED|FAILED|SKIPPED|CANCELLED) \[\s*(\d+)%\]$")


def task_lines(out: str) -> list[tuple[str, str, str, int]]:
    """(lane, task, status, percent) of every plain task line, in order."""
    found = []
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            found.append((m.group(1).strip(), m.group(2), m.group(3), int(m.group(4))))
    return found


def report(tmp_path: Path, tdrun_main, *argv: str):
    path = tmp_path / "run.json"
    result = tdrun_main(*argv, "--json-report", path)
    data = json.loads(path.read_text())
    return result, data, {t["name"]: t for t in data["tasks"]}


# ---------------------------------------------------------------------------- runs


def test_all_passed_prints_a_line_per_task_and_exits_0(tdrun_main):
    result = tdrun_main(OK, "--workers", "2")
    assert result.code == 0
    assert result.err == ""
    lines = task_lines(result.out)
    assert [t for _, t, _, _ in lines][0] == "first"
    assert sorted(t for _, t, _, _ in lines) == ["first", "fourth", "second", "third"]
    assert {s for _, _, s, _ in lines} == {"PASSED"}
    assert [p for _, _, _, p in lines] == [25, 50, 75, 100]
    assert all(re.fullmatch(r"\[thread_[01]\]", lane) for lane, _, _, _ in lines)
    assert result.out.rstrip().splitlines()[-1].strip("= ") .startswith("4 passed, 0 failed, 0 skipped in ")


def test_failure_section_skips_and_summary_then_exit_1(tdrun_main):
    result = tdrun_main(BASIC, "--workers", "3")
    assert result.code == 1
    lines = {t: (lane, s) for lane, t, s, _ in task_lines(result.out)}
    assert lines["update"][1] == "FAILED"
    assert lines["verify"] == ("", "SKIPPED")  # never ran: no thread
    assert lines["teardown"][1] == "PASSED"  # always=True runs after the failure
    out = result.out
    failures = out.index(" FAILURES ")
    assert out.index(" update ", failures) > failures
    assert 'raise RuntimeError("update exploded")' in out
    assert "RuntimeError: update exploded" in out
    assert "update: about to fail" in out[failures:]  # captured output
    assert "_scheduler.py" not in out  # the engine's own frames are not the user's business
    assert re.search(r"^SKIPPED\s+verify\s+dependency 'update' failed$", out, re.M)
    assert re.search(r"^=+ 3 passed, 1 failed, 1 skipped in \d+\.\d\ds =+$", out, re.M)


def test_retries_are_shown_as_they_happen(tdrun_main):
    result = tdrun_main(RETRY, "--plain")
    assert result.code == 0
    retry_lines = [line for line in result.out.splitlines() if " RETRY " in line]
    assert len(retry_lines) == 2
    assert "attempt 1 failed: ConnectionError; retrying" in retry_lines[0]
    assert "attempt 2 failed: ConnectionError; retrying" in retry_lines[1]


def test_no_skip_deps_runs_dependents_of_a_failure(tdrun_main):
    result = tdrun_main(BASIC, "--no-skip-deps")
    assert result.code == 1
    assert dict((t, s) for _, t, s, _ in task_lines(result.out))["verify"] == "PASSED"
    # --skip-deps is the default, accepted and changing nothing
    result = tdrun_main(BASIC, "--skip-deps")
    assert dict((t, s) for _, t, s, _ in task_lines(result.out))["verify"] == "SKIPPED"


def test_workers_default_is_capped_by_the_number_of_tasks(tmp_path, tdrun_main):
    _, data, _ = report(tmp_path, tdrun_main, OK)
    assert data["workers"] == 4
    _, data, _ = report(tmp_path, tdrun_main, OK, "--workers=1")
    assert data["workers"] == 1
    assert {t["thread"] for t in data["tasks"]} == {"thread_0"}


# ---------------------------------------------------------------------------- state


def test_key_value_state_later_wins_and_beats_the_state_file(tmp_path, tdrun_main):
    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps({"env": "from-file", "region": "eu-west-1"}))
    result, data, tasks = report(tmp_path, tdrun_main, BASIC, "--env=dev", "--state-file", state_file,
                                 "--env=prod")
    assert result.code == 1
    assert data["state_keys"] == {"env": "typed in", "region": "state file", "setup_saw": "setup_state"}
    assert tasks["report"]["output"] == "env=prod region=eu-west-1 setup_saw=['env', 'region']\n"


def test_state_values_reach_tasks_and_setup_state(tmp_path, tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        def setup_state(state):
            state["seen_by_setup"] = state.get("env")

        @mark()
        def show(state):
            print(repr(state["env"]), repr(state["empty"]), repr(state["seen_by_setup"]))
    """)
    _, _, tasks = report(tmp_path, tdrun_main, module, "--env=a=b", "--empty=")
    assert tasks["show"]["output"] == "'a=b' '' 'a=b'\n"


def test_single_task_ignores_dependencies_and_takes_mocked_results(tmp_path, tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark()
        def a(state):
            raise AssertionError("a must not run")

        @mark(after=["a"])
        def b(state):
            print("a said", state["results"]["a"])
    """)
    result, data, tasks = report(tmp_path, tdrun_main, f"{module}::b", "--result-a=mocked")
    assert result.code == 0
    assert list(tasks) == ["b"]
    assert tasks["b"]["after"] == []
    assert tasks["b"]["output"] == "a said mocked\n"
    assert data["target"] == "b"


def test_with_deps_runs_the_task_and_everything_upstream(tmp_path, tdrun_main):
    result, _, tasks = report(tmp_path, tdrun_main, f"{OK}::second", "--with-deps")
    assert result.code == 0
    assert list(tasks) == ["first", "second"]


def test_tags_keep_tasks_with_all_tags_and_drop_dependencies_on_the_rest(tmp_path, tdrun_main):
    result, _, tasks = report(tmp_path, tdrun_main, BASIC, "--tags", "api")
    assert list(tasks) == ["create", "update", "verify", "teardown"]
    assert tasks["teardown"]["after"] == ["verify"]  # 'report' was filtered out
    result, _, tasks = report(tmp_path, tdrun_main, BASIC, "--tags=api,verify")
    assert list(tasks) == ["verify"]
    assert tasks["verify"]["after"] == []
    assert result.code == 0


# ---------------------------------------------------------------------------- inspection


def test_list_prints_one_worker_start_order_and_runs_nothing(tdrun_main):
    result = tdrun_main(BASIC, "--list")
    assert result.code == 0
    assert result.out.splitlines() == [
        f"{BASIC}: 5 tasks, in the order they would start with one worker",
        "  1. create     tags: api,create",
        "  2. update     tags: api  after: create",
        "  3. verify     tags: api,verify  after: update",
        "  4. report     tags: report  after: create",
        "  5. teardown   always  tags: api,teardown  after: verify, report",
    ]


def test_graph_text_summary(tdrun_main):
    result = tdrun_main(BASIC, "--graph")
    assert result.code == 0
    out = result.out
    assert out.startswith("Graph: 5 nodes, 5 edges\nRoots: create\nLeaves: teardown\nLevels: 4\n")
    assert "  create -> update, report\n" in out
    assert "    create -> update -> verify -> teardown\n" in out
    assert "    teardown (indegree=2)\n" in out
    assert "    create (children=2)\n" in out
    assert "FAILED" not in out  # nothing ran


@pytest.mark.parametrize("fmt, first", [("dot", 'digraph "cli_basic" {'), ("mermaid", "flowchart LR")])
def test_graph_formats(tdrun_main, fmt, first):
    result = tdrun_main(BASIC, "--graph", "--graph-format", fmt)
    assert result.code == 0
    assert result.out.splitlines()[0] == first
    # --graph-format alone implies --graph
    assert tdrun_main(BASIC, f"--graph-format={fmt}").out == result.out


def test_version_and_help(tdrun_main):
    result = tdrun_main("--version")
    assert (result.code, result.out) == (0, f"tdrun {__version__}\n")
    result = tdrun_main("--help")
    assert result.code == 0
    for option in ("--workers", "--tags", "--log", "--verbose", "--graph", "--skip-deps", "--progress",
                   "--viewer", "--state-file", "--no-skip-deps", "--with-deps", "--list", "--graph-format",
                   "--plain", "--junit-xml", "--json-report", "--no-color", "--version"):
        assert option in result.out


# ---------------------------------------------------------------------------- logging and colour


def test_log_shows_records_live_with_their_thread(tdrun_main):
    result = tdrun_main(BASIC, "--log")
    assert re.search(r"^\d\d:\d\d:\d\d INFO    \[thread_\d+ create\] create: created item-1$", result.out, re.M)
    assert "debug detail" not in result.out
    result = tdrun_main(BASIC, "--verbose")
    assert re.search(r"^\d\d:\d\d:\d\d DEBUG   \[thread_\d+ create\] create: debug detail$", result.out, re.M)


def test_log_lines_name_the_task_beside_the_thread(tdrun_main, write_module):
    module = write_module("""
        import logging
        from thread_order import mark

        log = logging.getLogger("m")

        def helper(what):
            log.info("helper for %s", what)

        @mark()
        def first(state):
            log.info("first runs")
            helper("first")

        @mark(after=["first"])
        def second(state):
            helper("second")

        def setup_state(state):
            log.info("before any task")
    """)
    result = tdrun_main(module, "--log", "--plain")
    assert result.code == 0, result.err
    lines = [line[9:] for line in result.out.splitlines() if re.match(r"\d\d:\d\d:\d\d INFO", line)]
    assert [re.sub(r"thread_\d", "thread_N", line) for line in lines] == [
        "INFO    [thread_N first] first runs",
        "INFO    [thread_N first] helper for first",
        "INFO    [thread_N second] helper for second",
    ]


def test_log_lines_name_the_right_task_when_tasks_follow_each_other_fast(tdrun_main, write_module):
    # the run's events lag behind the workers: a name taken from them would often be the task before
    body = ["import logging", "from thread_order import mark", "log = logging.getLogger('m')"]
    for i in range(300):
        body += ["@mark()", f"def t{i}(state):", f"    log.info('I am t{i}')"]
    module = write_module("\n".join(body) + "\n")
    result = tdrun_main(module, "--log", "--plain", "--workers", "4")
    assert result.code == 0, result.err
    named = re.findall(r"\[thread_\d (t\d+)\] I am (t\d+)$", result.out, re.M)
    assert len(named) == 300 and all(a == b for a, b in named)


def test_without_log_records_stay_in_the_captured_output(tmp_path, tdrun_main):
    result, _, tasks = report(tmp_path, tdrun_main, BASIC)
    assert "created item-1" not in result.out
    assert "INFO    cli_basic: create: created item-1" in tasks["create"]["output"]


def test_viewer_honours_no_color(tdrun_main, monkeypatch):
    colour = re.compile(r"\x1b\[(?:\d+;)*(?:3[0-7]|9[0-7]|38)[;m]")  # a foreground colour escape
    result = tdrun_main(OK, "--viewer")
    assert colour.search(result.out)
    result = tdrun_main(OK, "--viewer", "--no-color")
    assert "\x1b[?25l" in result.out  # still a live display (cursor hidden, then shown)
    assert not colour.search(result.out)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour.search(tdrun_main(OK, "--viewer").out)


# ---------------------------------------------------------------------------- bad input: exit 4


def error_of(result) -> str:
    assert result.code == 4, (result.code, result.out, result.err)
    assert result.out == ""
    assert "Traceback" not in result.err
    return result.err


def test_missing_file(tdrun_main, tmp_path):
    missing = tmp_path / "nope.py"
    assert error_of(tdrun_main(missing)) == f"tdrun: error: {missing}: no such file\n"


def test_not_a_python_file(tdrun_main, tmp_path):
    (tmp_path / "tasks.txt").write_text("")
    assert error_of(tdrun_main(tmp_path / "tasks.txt")) == (
        f"tdrun: error: {tmp_path / 'tasks.txt'}: not a Python file (expected a .py file)\n")


def test_syntax_error_shows_the_users_line(tdrun_main, write_module):
    module = write_module("from thread_order import mark\ndef broken(:\n    pass\n")
    result = tdrun_main(module)
    assert result.code == 4
    assert f'File "{module}", line 2' in result.err
    assert "def broken(:" in result.err
    assert result.err.splitlines()[-1] == (
        f"tdrun: error: {module}: cannot import module: SyntaxError: invalid syntax ({module.name}, line 2)")


def test_import_error_shows_only_the_users_frames(tdrun_main, write_module):
    write_module("def explode():\n    raise ImportError('no module named flux_capacitor')\n", name="helper.py")
    module = write_module("import helper\nhelper.explode()\n")
    result = tdrun_main(module)
    assert result.code == 4
    assert result.err.startswith("Traceback (most recent call last):\n")
    assert f'File "{module}", line 2, in <module>' in result.err
    assert "helper.py" in result.err
    assert "_collect.py" not in result.err and "importlib" not in result.err
    assert result.err.splitlines()[-1] == (
        f"tdrun: error: {module}: cannot import module: ImportError: no module named flux_capacitor")


def test_unknown_task(tdrun_main):
    assert error_of(tdrun_main(f"{OK}::nope")) == f"tdrun: error: {OK}: no marked task named 'nope'\n"


def test_cycle(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark(after=["b"])
        def a(state): pass

        @mark(after=["a"])
        def b(state): pass
    """)
    assert error_of(tdrun_main(module)) == "tdrun: error: dependency cycle: a -> b -> a\n"
    assert error_of(tdrun_main(module, "--graph")) == "tdrun: error: dependency cycle: a -> b -> a\n"


def test_unknown_dependency(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        @mark(after=["ghost"])
        def a(state): pass
    """)
    assert error_of(tdrun_main(module)) == "tdrun: error: task 'a' depends on unknown task 'ghost'\n"


def test_async_task_runs_on_the_event_loop(tdrun_main, write_module):
    module = write_module("""
        import asyncio
        from thread_order import mark

        @mark()
        async def fetch(state):
            await asyncio.sleep(0)
            print("fetched")
    """)
    result = tdrun_main(module, "--plain", "--no-history")
    assert result.code == 0, result.err
    assert "[event_loop] fetch" in result.out
    assert "1 passed" in result.out


@pytest.mark.parametrize("argv, message", [
    (["--workers=0"], "argument --workers: must be at least 1, got '0'"),
    (["--workers", "-3"], "argument --workers: must be at least 1, got '-3'"),
    (["--workers", "many"], "argument --workers: expected a whole number of threads, got 'many'"),
    (["--graph-format", "png"], "argument --graph-format: invalid choice: 'png' (choose from 'text', 'dot', 'mermaid')"),
    (["--frobnicate"], "unrecognized option '--frobnicate' (state values take the form --key=value)"),
    (["-x"], "unrecognized option '-x' (state values take the form --key=value)"),
    (["second.py"], "second.py: no such file"),  # a second PATH is a module of the suite
    (["--_state_lock=1"], "--_state_lock: state keys starting with '_' are reserved"),
    (["--results=1"], "--results: 'results' is reserved for task results, use --result-TASK=value"),
    (["--result-=1"], "'--result-=1': missing task name in --result-TASK=value"),
    (["--viewer", "--plain"], "--viewer and --plain cannot be used together"),
    (["--progress", "--viewer"], "--viewer and --progress cannot be used together"),
    (["--graph", "--list"], "--graph and --list cannot be used together"),
    (["--log=yes"], "argument --log: ignored explicit argument 'yes'"),
    (["--tags", ","], "argument --tags: expected tag names separated by commas, got ','"),
    (["--skip-deps", "--no-skip-deps"], "argument --no-skip-deps: not allowed with argument --skip-deps"),
])
def test_bad_options(tdrun_main, argv, message):
    assert error_of(tdrun_main(OK, *argv)) == f"tdrun: error: {message}\n"


@pytest.mark.parametrize("item, option", [
    ("--tag=smoke", "--tags"),  # the start of an option
    ("--worker=1", "--workers"),  # one letter off
    ("--work=1", "--workers"),
    ("--wokrers=1", "--workers"),  # two letters swapped
    ("--state_file=x.json", "--state-file"),  # '_' for '-'
    ("--Workers=2", "--workers"),
    ("--junit_xml=r.xml", "--junit-xml"),
    ("--no-skip-dep=1", "--no-skip-deps"),
    ("--histroy=h.db", "--history"),
])
def test_a_mistyped_option_is_refused_not_taken_as_a_state_value(tdrun_main, item, option):
    key = item[2:item.index("=")]
    result = tdrun_main(OK, item)
    assert error_of(result) == (f"tdrun: error: unknown option '--{key}': did you mean {option}? "
                                f"(to set state[{key!r}], use --set {key}=VALUE)\n")
    assert result.out == ""  # nothing ran


def test_a_mistyped_flag_without_a_value_suggests_the_option(tdrun_main):
    assert error_of(tdrun_main(OK, "--tag", "smoke")) == (
        "tdrun: error: unrecognized option '--tag': did you mean --tags?\n")
    assert error_of(tdrun_main(OK, "--result_first=1")) == (
        "tdrun: error: unknown option '--result_first': did you mean --result-first? "
        "(to set state['result_first'], use --set result_first=VALUE)\n")


def test_keys_far_from_every_option_are_still_state_values():
    _, values, _ = parse_args(["m.py", "--env=dev", "--fail_at=x", "--api_url=u", "--latency=0",
                               "--region=r", "--host=h", "--user=u", "--slow=1"])
    assert values == {"env": "dev", "fail_at": "x", "api_url": "u", "latency": "0", "region": "r",
                      "host": "h", "user": "u", "slow": "1"}


def test_set_passes_a_state_key_that_collides_with_an_option(tmp_path, tdrun_main):
    result, data, tasks = report(tmp_path, tdrun_main, OK, "--set", "tag=smoke", "--set=env=a=b",
                                 "--env=lost", "--workers", "1")
    assert result.code == 0 and data["counts"]["passed"] == 4
    assert data["state_keys"] == {"tag": "typed in", "env": "typed in"}
    assert data["argv"][1:3] == ["--set", "tag=smoke"]
    _, values, _ = parse_args(["m.py", "--set", "tag=smoke", "--set=env=a=b", "--env=lost"])
    assert values == {"tag": "smoke", "env": "a=b"}  # --set wins over --key=value


@pytest.mark.parametrize("argv, message", [
    (["--set", "tag"], "--set 'tag': expected KEY=VALUE, KEY made of letters, digits, '_', '.' or '-'"),
    (["--set", "=x"], "--set '=x': expected KEY=VALUE, KEY made of letters, digits, '_', '.' or '-'"),
    (["--set", "_state_lock=1"], "--set _state_lock: state keys starting with '_' are reserved"),
    (["--set", "results=1"], "--set results: 'results' is reserved for task results, use --result-TASK=value"),
])
def test_bad_set_values(tdrun_main, argv, message):
    assert error_of(tdrun_main(OK, *argv)) == f"tdrun: error: {message}\n"


def test_no_target(tdrun_main):
    assert error_of(tdrun_main()) == "tdrun: error: missing PATH: give a task module, module.py::task or a directory\n"


def test_with_deps_needs_a_task(tdrun_main):
    assert error_of(tdrun_main(OK, "--with-deps")) == (
        "tdrun: error: --with-deps needs a selection: TARGET::task, -k EXPR or --tags\n")


def test_mocked_result_for_an_unknown_task(tdrun_main):
    assert error_of(tdrun_main(f"{OK}::second", "--result-frist=1")) == (
        f"tdrun: error: --result-frist: {OK}: no marked task named 'frist'\n")


def test_report_path_that_is_a_folder(tdrun_main, tmp_path):
    assert error_of(tdrun_main(OK, "--junit-xml", tmp_path)) == (
        f"tdrun: error: --junit-xml {str(tmp_path)!r}: expected a file path\n")


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    ("{not json", "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"_state_lock": 1}', "key '_state_lock' is reserved (keys starting with '_')"),
    ('{"results": [1]}', "'results' must be an object of task results, not list"),
])
def test_bad_state_file(tdrun_main, tmp_path, content, problem):
    path = tmp_path / "state.json"
    if content is not None:
        path.write_text(content)
    assert error_of(tdrun_main(OK, "--state-file", path)) == f"tdrun: error: state file {path}: {problem}\n"


def test_setup_state_that_raises(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        def setup_state(state):
            raise KeyError("api_url")

        @mark()
        def a(state): pass
    """)
    assert error_of(tdrun_main(module)) == (
        f"tdrun: error: {module}: setup_state() raised KeyError: 'api_url'\n")


def test_setup_state_that_exits(tdrun_main, write_module):
    module = write_module("""
        from thread_order import mark

        def setup_state(state):
            raise SystemExit(7)

        @mark()
        def a(state): pass
    """)
    assert error_of(tdrun_main(module)) == f"tdrun: error: {module}: setup_state() called sys.exit(7)\n"


# ---------------------------------------------------------------------------- exit 5, exit 3, subcommands


def test_no_tasks_exits_5(tdrun_main, write_module):
    module = write_module("def not_marked():\n    pass\n")
    result = tdrun_main(module)
    assert (result.code, result.out) == (5, "")
    assert result.err == f"tdrun: no tasks collected: {module} has no @mark functions\n"


def test_tags_that_match_nothing_exit_5(tdrun_main):
    result = tdrun_main(BASIC, "--tags", "nothing-has-this")
    assert result.code == 5
    assert result.err == f"tdrun: no tasks collected: no task in {BASIC} has the tags 'nothing-has-this'\n"


def test_a_bug_in_tdrun_exits_3_with_a_traceback(tdrun_main, monkeypatch):
    import thread_order.cli.main as cli

    def broken(*args, **kwargs):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(cli, "task_list", broken)  # a defect inside tdrun's own code
    result = tdrun_main(BASIC, "--list")
    assert result.code == 3
    assert "Traceback (most recent call last):" in result.err
    assert "ZeroDivisionError: simulated bug" in result.err
    assert result.err.splitlines()[-1].startswith("tdrun: internal error: this is a bug in tdrun")


def test_subcommand_table_and_a_missing_subcommand_module(tdrun_main, monkeypatch):
    assert SUBCOMMANDS["ui"] == "thread_order.web.server:main"
    monkeypatch.setitem(SUBCOMMANDS, "nowhere", "thread_order._does_not_exist:main")
    result = tdrun_main("nowhere", "--flag")
    assert result.code == 4
    assert result.err.startswith("tdrun: error: 'tdrun nowhere' is not available: "
                                 "cannot load thread_order._does_not_exist:main (")
    assert len(result.err.splitlines()) == 1


def test_subcommand_receives_its_arguments(monkeypatch, tmp_path):
    module = tmp_path / "fake_front_end.py"
    module.write_text("seen = []\ndef main(argv):\n    seen.append(argv)\n    return 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(SUBCOMMANDS, "fake", "fake_front_end:main")
    assert main(["fake", "a", "--b"]) == 7
    import fake_front_end

    assert fake_front_end.seen == [["fake", "a", "--b"]]


def test_parse_args_splits_state_and_results():
    args, values, results = parse_args(["mod.py", "--env=dev", "--result-a=1", "--x.y-z=", "--workers", "2"])
    assert (args.target, args.workers) == ("mod.py", 2)
    assert values == {"env": "dev", "x.y-z": ""}
    assert results == {"a": "1"}
    with pytest.raises(UsageError, match=r"^unrecognized option '--env' \(state values take the form --key=value\)$"):
        parse_args(["mod.py", "--env"])


def test_engine_warnings_are_shown_through_the_display_without_log(tdrun_main, write_module):
    """A timeout's warning comes from the dispatcher, outside any task: tdrun prints it through
    its display even without --log (a bare stderr write would tear the live view)."""
    module = write_module("""
        import threading
        from thread_order import mark

        gate = threading.Event()

        @mark(timeout=0.2)
        def stuck(state):
            gate.wait(10)

        @mark(after=["stuck"], always=True)
        def release(state):
            gate.set()
    """)
    r = tdrun_main(module, "--plain")
    assert r.code == 1
    warning = "task 'stuck' still running after 0.2s; abandoning its thread"
    assert r.out.count(warning) == 1  # through the display's console
    assert warning not in r.err  # not a bare write to stderr
