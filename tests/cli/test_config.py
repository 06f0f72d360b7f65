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
    assert "history  off" in shown.out and "TDRUN_HISTORY=off" in shown.out


@pytest.mark.parametrize("body, message", [
    ("worker = 2", "[tool.tdrun] unknown key 'worker'; allowed: addopts, history, pattern, pools, tags, workers"),
    ("workers = 0", "[tool.tdrun] workers: expected a whole number >= 1, got 0"),
    ("workers = '4'", "[tool.tdrun] workers: expected a whole number >= 1, got '4'"),
    ("tags = 3", "[tool.tdrun] tags: expected tag names: a string 'a,b' or a list of strings, got 3"),
    ("history = 1", "[tool.tdrun] history: expected a file path, or false for no history, got 1"),
    ("addopts = 7", "[tool.tdrun] addopts: expected tdrun options: a string or a list of strings, got 7"),
    ("addopts = '--tags \"unclosed'", "[tool.tdrun] addopts: No closing quotation"),
    ("workers = [", "invalid TOML: "),
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
