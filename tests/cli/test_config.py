"""[tool.tdrun] in pyproject.toml: found upwards, overridden by the command line, shown by
--show-config, and refused in one line when wrong."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

TASKS = """
from thread_order import mark

@mark(tags="smoke")
def a(state):
    return state.get("env")

@mark(tags="slow")
def b(state):
    pass

@mark(after=["a"], tags="smoke")
def c(state):
    pass
"""


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    (root / "suite" / "deeper").mkdir(parents=True)
    (root / "suite" / "test_one.py").write_text(TASKS)
    (root / "suite" / "other.py").write_text("from thread_order import mark\n\n@mark()\ndef z(state): pass\n")
    monkeypatch.chdir(root / "suite" / "deeper")  # found from the current directory upwards
    return root


def pyproject(root: Path, text: str) -> Path:
    path = root / "pyproject.toml"
    path.write_text("[project]\nname = 'x'\n\n" + textwrap.dedent(text))
    return path


def names(report: Path) -> list[str]:
    return [t["name"] for t in json.loads(report.read_text())["tasks"]]


def test_settings_from_the_file_and_the_command_line_wins(project, tmp_path, tdrun_main):
    pyproject(project, """
        [tool.tdrun]
        workers = 3
        tags = ["smoke"]
        pattern = "test_*.py"
        addopts = "--plain --env=from-file"
    """)
    report = tmp_path / "r.json"
    result = tdrun_main(project / "suite", "--json-report", report)
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert names(report) == ["a", "c"]                 # pattern (one module: bare names) and tags
    assert data["workers"] == 3
    assert "[thread_" in result.out                    # --plain from addopts
    assert json.loads(report.read_text())["tasks"][0]["name"] == "a"
    over = tdrun_main(project / "suite", "--workers", "1", "--tags", "slow", "--pattern", "*.py",
                      "--env=typed", "--json-report", report)
    assert over.code == 0, over.err
    data = json.loads(report.read_text())
    assert data["workers"] == 1 and names(report) == ["test_one::b"]  # two modules now: full names
    assert data["argv"][-2:] == ["--json-report", str(report)]


def test_show_config_says_where_each_setting_came_from(project, tdrun_main):
    path = pyproject(project, """
        [tool.tdrun]
        workers = 3
        pattern = "test_*.py"
        history = false
        addopts = ["--tags", "smoke"]
    """)
    shown = tdrun_main("--show-config", "--workers", "5")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    where = str(Path("..", "..", "pyproject.toml"))
    assert lines[0] == f"settings from {where} [tool.tdrun] and the command line"
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines[1:]}
    assert rows["workers"] == ["5", "command line"]
    assert rows["tags"] == ["smoke", f"{where} [tool.tdrun] addopts"]
    assert rows["pattern"] == ["test_*.py", f"{where} [tool.tdrun] pattern"]
    assert rows["history"] == ["off", f"{where} [tool.tdrun] history"]
    assert rows["-k"] == ["-", "default"]
    assert rows["addopts"] == ["--tags", f"smoke  {where} [tool.tdrun] addopts"]
    path.unlink()
    bare = tdrun_main("--show-config")
    assert bare.out.splitlines()[0].startswith("no pyproject.toml with [tool.tdrun]")
    assert "history  .tdrun/history.db" not in bare.out or "default" in bare.out


def test_the_file_history_path_is_relative_to_the_file_and_the_environment_can_turn_it_off(
        project, tdrun_main, monkeypatch):
    pyproject(project, '[tool.tdrun]\nhistory = "runs/h.db"\n')
    monkeypatch.delenv("TDRUN_HISTORY")
    result = tdrun_main(project / "suite" / "test_one.py", "--plain")
    assert result.code == 0, result.err
    assert (project / "runs" / "h.db").is_file()
    assert not (project / "suite" / "deeper" / ".tdrun").exists()
    monkeypatch.setenv("TDRUN_HISTORY", "off")
    shown = tdrun_main("--show-config")
    row = next(line.split(None, 2) for line in shown.out.splitlines() if line.split()[0] == "history")
    assert row[1] == "off" and "TDRUN_HISTORY=off" in row[2]


@pytest.mark.parametrize("body, message", [
    ("worker = 2", "[tool.tdrun] unknown key 'worker'; allowed: addopts, async_limit, check_state, executor, "
                    "history, order, otel, pattern, pools, shuffle, tags, workers"),
    ("workers = 0", "[tool.tdrun] workers: expected a whole number >= 1, got 0"),
    ("workers = '4'", "[tool.tdrun] workers: expected a whole number >= 1, got '4'"),
    ("tags = 3", "[tool.tdrun] tags: expected tag names: a string 'a,b' or a list of strings, got 3"),
    ("history = 1", "[tool.tdrun] history: expected a file path, or false for no history, got 1"),
    ("addopts = 7", "[tool.tdrun] addopts: expected tdrun options: a string or a list of strings, got 7"),
    ("addopts = '--tags \"unclosed'", "[tool.tdrun] addopts: No closing quotation"),
    ("workers = [", "invalid TOML: "),
    ("check_state = 1", "[tool.tdrun] check_state: expected true or false, got 1"),
    ("check_state = 'yes'", "[tool.tdrun] check_state: expected true or false, got 'yes'"),
    ("shuffle = -3", "[tool.tdrun] shuffle: expected true (a new seed each run), a whole number seed >= 0, "
                     "or false, got -3"),
    ("shuffle = '7'", "[tool.tdrun] shuffle: expected true (a new seed each run), a whole number seed >= 0, "
                      "or false, got '7'"),
    ("order = 'fast'", "[tool.tdrun] order: expected 'declared' or 'critical-path', got 'fast'"),
    ("order = 1", "[tool.tdrun] order: expected 'declared' or 'critical-path', got 1"),
    ("async_limit = 0", "[tool.tdrun] async_limit: expected a whole number >= 1, got 0"),
    ("async_limit = '4'", "[tool.tdrun] async_limit: expected a whole number >= 1, got '4'"),
    ("async_limit = true", "[tool.tdrun] async_limit: expected a whole number >= 1, got True"),
    ("executor = 'ray'", "[tool.tdrun] executor: expected 'local', 'dask' or 'dask://HOST:PORT', got 'ray'"),
    ("otel = 'on'", "[tool.tdrun] otel: expected true or false, got 'on'"),
    ("shuffle = 3\norder = 'critical-path'",
     "[tool.tdrun] shuffle and order = 'critical-path' cannot be used together"),
])
def test_a_bad_file_is_one_line_naming_file_key_and_what_is_allowed(project, tdrun_main, body, message):
    pyproject(project, "[tool.tdrun]\n" + body + "\n")
    result = tdrun_main(project / "suite")
    assert result.code == 4
    where = str(Path("..", "..", "pyproject.toml"))
    assert result.err.startswith(f"tdrun: error: {where}: {message}") and result.err.count("\n") == 1


def test_a_bad_option_in_addopts_is_refused_like_one_typed(project, tdrun_main):
    pyproject(project, '[tool.tdrun]\naddopts = "--workers=0"\n')
    result = tdrun_main(project / "suite")
    assert (result.code, result.err) == (4, "tdrun: error: argument --workers: must be at least 1, got '0'\n")


def test_a_pyproject_without_the_table_is_passed_over(project, tmp_path, tdrun_main):
    pyproject(project, '[tool.tdrun]\ntags = "slow"\n')
    (project / "suite" / "pyproject.toml").write_text("[project]\nname = 'inner'\n")
    report = tmp_path / "r.json"
    assert tdrun_main(project / "suite" / "test_one.py", "--json-report", report).code == 0
    assert names(report) == ["b"]


def test_the_config_reaches_a_real_process(project, tdrun_proc, tmp_path):
    pyproject(project, '[tool.tdrun]\ntags = "smoke"\npattern = "test_*.py"\n')
    report = tmp_path / "r.json"
    done = tdrun_proc(project / "suite", "--json-report", report, cwd=project)
    assert done.code == 0, done.err
    assert names(report) == ["a", "c"]
    done = tdrun_proc(project / "suite", "-k", "not c", "--json-report", report, cwd=project)
    assert names(report) == ["a"]


RACY = """
from thread_order import mark

@mark()
def write(state):
    state["token"] = "t"

@mark()
def read(state):
    state.get("token")

@mark()
def slow(state):
    pass
"""

ASYNC = """
import asyncio
import threading
from thread_order import mark

GATE = {"now": 0, "most": 0}
LOCK = threading.Lock()

async def step():
    with LOCK:
        GATE["now"] += 1
        GATE["most"] = max(GATE["most"], GATE["now"])
    await asyncio.sleep(0.01)
    with LOCK:
        GATE["now"] -= 1
""" + "".join(f"""
@mark()
async def s{i}(state):
    await step()
""" for i in range(6)) + """

@mark(after=[f"s{i}" for i in range(6)])
def most(state):
    assert GATE["most"] == int(state["expect"]), GATE["most"]
"""


def rows(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split(None, 2)[1:] for line in out.splitlines()[1:]}


def test_check_state_from_the_file_runs_the_checker_and_no_check_state_turns_it_off(
        project, tmp_path, tdrun_main):
    (project / "suite" / "racy.py").write_text(RACY)
    pyproject(project, "[tool.tdrun]\ncheck_state = true\n")
    report = tmp_path / "r.json"
    found = tdrun_main(project / "suite" / "racy.py", "--plain", "--json-report", report)
    assert found.code == 1, found.err                  # the unordered write/read is a finding
    assert json.loads(report.read_text())["state_findings"]
    off = tdrun_main(project / "suite" / "racy.py", "--plain", "--no-check-state", "--json-report", report)
    assert off.code == 0, off.err
    assert json.loads(report.read_text())["state_findings"] is None
    shown = rows(tdrun_main("--show-config").out)
    where = str(Path("..", "..", "pyproject.toml"))
    assert shown["check_state"] == ["on", f"{where} [tool.tdrun] check_state"]
    assert rows(tdrun_main("--show-config", "--no-check-state").out)["check_state"] == ["off", "command line"]
    pyproject(project, "[tool.tdrun]\ncheck_state = false\n")
    assert tdrun_main(project / "suite" / "racy.py", "--plain", "--check-state").code == 1  # typed wins


def test_shuffle_from_the_file_a_seed_or_a_new_one_and_the_command_line_over_it(
        project, tmp_path, tdrun_main):
    where = str(Path("..", "..", "pyproject.toml"))
    pyproject(project, "[tool.tdrun]\nshuffle = 1234\n")
    report = tmp_path / "r.json"
    run = tdrun_main(project / "suite" / "test_one.py", "--plain", "--json-report", report)
    assert run.code == 0, run.err
    assert "--shuffle=1234" in run.out
    assert json.loads(report.read_text())["order"]["seed"] == 1234
    assert rows(tdrun_main("--show-config").out)["shuffle"] == ["1234", f"{where} [tool.tdrun] shuffle"]
    over = tdrun_main(project / "suite" / "test_one.py", "--plain", "--shuffle=9", "--json-report", report)
    assert json.loads(report.read_text())["order"]["seed"] == 9 and "--shuffle=9" in over.out
    off = tdrun_main(project / "suite" / "test_one.py", "--plain", "--no-shuffle")
    assert off.code == 0 and "--shuffle=" not in off.out
    assert rows(tdrun_main("--show-config", "--no-shuffle").out)["shuffle"] == ["off", "command line"]
    crit = tdrun_main("--show-config", "--order", "critical-path")  # a typed order drops the file's shuffle
    assert crit.code == 0, crit.err
    shown = rows(crit.out)
    assert shown["order"] == ["critical-path", "command line"]
    assert shown["shuffle"] == ["off", "command line (--order over the file's shuffle)"]
    pyproject(project, "[tool.tdrun]\nshuffle = true\n")
    fresh = tdrun_main(project / "suite" / "test_one.py", "--plain")
    assert fresh.code == 0 and "shuffled, seed " in fresh.out
    assert rows(tdrun_main("--show-config").out)["shuffle"] == [
        "on,", f"a new seed each run  {where} [tool.tdrun] shuffle"]


def test_order_from_the_file_and_a_typed_shuffle_over_it(project, tdrun_main):
    where = str(Path("..", "..", "pyproject.toml"))
    pyproject(project, "[tool.tdrun]\norder = 'critical-path'\n")
    run = tdrun_main(project / "suite" / "test_one.py", "--plain", "--no-history")
    assert run.code == 0, run.err
    assert "critical-path order" in run.out
    assert rows(tdrun_main("--show-config").out)["order"] == ["critical-path", f"{where} [tool.tdrun] order"]
    typed = tdrun_main(project / "suite" / "test_one.py", "--plain", "--no-history", "--shuffle=5")
    assert typed.code == 0, typed.err                  # not "cannot be used together": typed wins
    assert "--shuffle=5" in typed.out
    over = rows(tdrun_main("--show-config", "--order", "declared").out)
    assert over["order"] == ["declared", "command line"]


def test_async_limit_from_the_file_bounds_the_coroutines_and_the_command_line_over_it(
        project, tmp_path, tdrun_main):
    where = str(Path("..", "..", "pyproject.toml"))
    (project / "suite" / "aio.py").write_text(ASYNC)
    pyproject(project, "[tool.tdrun]\nasync_limit = 2\n")
    report = tmp_path / "r.json"
    run = tdrun_main(project / "suite" / "aio.py", "--plain", "--expect=2")
    assert run.code == 0, run.out                      # at most 2 coroutines at once
    typed = tdrun_main(project / "suite" / "aio.py", "--plain", "--expect=6", "--async-limit", "6")
    assert typed.code == 0, typed.out                  # the command line over the file: all 6 at once
    assert rows(tdrun_main("--show-config").out)["async_limit"] == ["2", f"{where} [tool.tdrun] async_limit"]
    shown = rows(tdrun_main("--show-config", "--async-limit", "100").out)  # the default, typed: still typed
    assert shown["async_limit"] == ["100", "command line"]


def test_executor_and_otel_from_the_file(project, tdrun_main):
    where = str(Path("..", "..", "pyproject.toml"))
    pyproject(project, "[tool.tdrun]\nexecutor = 'dask://127.0.0.1:1'\ncheck_state = true\notel = false\n")
    shown = rows(tdrun_main("--show-config").out)
    assert shown["executor"] == ["dask://127.0.0.1:1", f"{where} [tool.tdrun] executor"]
    assert shown["otel"] == ["off", f"{where} [tool.tdrun] otel"]
    refused = tdrun_main(project / "suite" / "test_one.py")  # the option's own rules apply to the file's
    assert refused.code == 4
    assert refused.err.startswith("tdrun: error: --check-state needs --executor local, not --executor dask://")
    local = tdrun_main(project / "suite" / "test_one.py", "--plain", "--executor", "local")
    assert local.code == 0, local.err
    assert rows(tdrun_main("--show-config", "--executor=local").out)["executor"] == ["local", "command line"]
    assert rows(tdrun_main("--show-config", "--no-otel").out)["otel"] == ["off", "command line"]


def test_addopts_count_as_typed_for_the_option_keys(project, tdrun_main):
    where = str(Path("..", "..", "pyproject.toml"))
    pyproject(project, "[tool.tdrun]\ncheck_state = true\naddopts = '--no-check-state --async-limit 3'\n")
    shown = rows(tdrun_main("--show-config").out)
    assert shown["check_state"] == ["off", f"{where} [tool.tdrun] addopts"]
    assert shown["async_limit"] == ["3", f"{where} [tool.tdrun] addopts"]
    assert rows(tdrun_main("--show-config", "--check-state").out)["check_state"] == ["on", "command line"]


def test_option_keys_reach_a_real_process(project, tdrun_proc, tmp_path):
    (project / "suite" / "racy.py").write_text(RACY)
    pyproject(project, "[tool.tdrun]\ncheck_state = true\nshuffle = 77\n")
    report = tmp_path / "r.json"
    done = tdrun_proc(project / "suite" / "racy.py", "--plain", "--json-report", report, cwd=project)
    assert done.code == 1, done.err
    data = json.loads(report.read_text())
    assert data["order"]["seed"] == 77 and data["state_findings"]
    done = tdrun_proc(project / "suite" / "racy.py", "--plain", "--no-check-state", "--no-shuffle", cwd=project)
    assert done.code == 0, done.err
