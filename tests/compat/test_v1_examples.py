"""Programs shaped like thread-order 1.x's examples, run through the library and through tdrun.

The shapes (a module-level scheduler with ``dregister``, a ``register`` list with a
failing task and callbacks, shared state, ``@mark`` modules with ``setup_state``,
tags, mocked results and highlights) are written here; what they check is that a
1.x program runs unchanged and ends as the README's "Coming from thread-order 1.x"
says it does.
"""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import tdrun_env
from thread_order import Scheduler, ThreadProxyLogger, configure_logging, mark
from thread_order.engine.compat import HighlightFormatter, add_thread_log_files, sgr

RED_BRIGHT = "\x1b[31m\x1b[1m"  # colorama's Fore.RED + Style.BRIGHT
BRIGHT_YELLOW = "\x1b[1m\x1b[33m"  # colorama's Style.BRIGHT + Fore.YELLOW


@pytest.fixture(autouse=True)
def _clean_logging():
    """Scheduler(setup_logging=True) configures the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    thread_loggers = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level)
                      for name in ["MainThread"] + [f"thread_{i}" for i in range(8)]}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, (old, lvl) in thread_loggers.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers[:]:
            if handler not in old:
                logger.removeHandler(handler)
                handler.close()
        logger.setLevel(lvl)


def _lifecycle(scheduler: Scheduler, fail: str = "i06") -> None:
    """The 17-task graph of 1.x's register examples, with one failing task."""
    edges = {"i05": "i01", "i06": "i01", "i07": "i01", "i08": "i01", "i09": "i04", "i10": "i04",
             "i11": "i04", "i12": "i06", "i13": "i06", "i14": "i06", "i15": "i09", "i16": "i12",
             "i17": "i16"}

    def task(name):
        def run():
            if name == fail:
                raise Exception(f"error with {name}")
            return name
        return run

    for i in range(1, 18):
        name = f"i{i:02d}"
        scheduler.register(task(name), name, after=[edges[name]] if name in edges else None)


# ---------------------------------------------------------------------------- the library


def test_register_shape_with_1x_keywords_and_callbacks(capsys):
    s = Scheduler(workers=5, setup_logging=True, add_stream_handler=False)
    started, done, meta, summaries = [], [], [], []
    s.on_task_start(started.append)
    s.on_task_done(lambda name, thread, status, count: done.append((name, status, count)))
    s.on_scheduler_start(meta.append)
    s.on_scheduler_done(lambda summary: summaries.append(json.dumps(summary, indent=2)))
    _lifecycle(s)
    summary = s.start()

    assert meta[0]["total_tasks"] == 17 and meta[0]["workers"] == 5
    assert summary["failed"] == ["i06"]
    # skip_dependents=True is the default here (1.x: False): what depended on i06 is skipped
    assert sorted(summary["skipped"]) == ["i12", "i13", "i14", "i16", "i17"]
    assert [c for _, _, c in done] == list(range(1, 18))
    assert sorted(started) == sorted(summary["passed"] + summary["failed"])
    # the summary goes through json.dumps as 1.x's did, task details included
    dumped = json.loads(summaries[0])
    assert dumped["failures"]["i06"] == {"error_type": "Exception", "error": "error with i06"}
    assert dumped["tasks"]["i12"]["status"] == "SKIPPED"
    assert "upstream" not in dumped["tasks"]["i12"]["reason"]  # i12's own dependency failed
    # add_stream_handler=False: nothing was logged to stderr, not even i06's failure
    assert not [h for h in logging.getLogger().handlers
                if getattr(h, "_thread_order_handler", False)]


def test_skip_dependents_false_runs_as_1x_did():
    s = Scheduler(workers=5, skip_dependents=False)
    _lifecycle(s)
    summary = s.start()
    assert summary["failed"] == ["i06"] and summary["skipped"] == []
    assert len(summary["passed"]) == 16


def test_1x_callback_of_the_wrong_shape_is_refused_when_registered():
    s = Scheduler(workers=2)
    # 1.x example 3 passes a two-argument lambda; 1.x called it with four and logged the
    # TypeError at DEBUG for every task: here it is refused once, naming the method
    with pytest.raises(TypeError, match=r"^on_task_done: callback '.*<lambda>' cannot be called as "
                                        r"fn\(name, thread_name, status, count\)"):
        s.on_task_done(lambda n, ok: None)


def test_dregister_shape_with_state_and_sanitize_state():
    s = Scheduler(workers=3, state={})

    @s.dregister(with_state=True)
    def load(state):
        with state["_state_lock"]:
            state["counter"] = state.get("counter", 0) + 1
        state["x"] = 10
        return "loaded"

    @s.dregister(with_state=True)
    def behave(state):
        with state["_state_lock"]:
            state["counter"] = state.get("counter", 0) + 1
        return "behaved"

    @s.dregister(after=["load"], with_state=True)
    def compute(state):
        with state["_state_lock"]:
            state["counter"] += 1
        state["x"] += 5
        return state["x"]

    assert callable(load) and load.__name__ == "load"  # dregister returns the function itself
    s.start()
    clean = s.sanitize_state()
    assert "_state_lock" not in clean and "_state_lock" in s.state
    assert clean == s.sanitized_state
    assert clean["counter"] == 3 and clean["results"] == {"load": "loaded", "behave": "behaved",
                                                          "compute": 15}
    json.dumps(clean)  # what 1.x's examples print


def test_highlights_must_be_pairs_of_compiled_regex_and_colour():
    with pytest.raises(TypeError, match=r"^highlights must be a list of \(compiled_regex, color\) "
                                        r"pairs, not str$"):
        Scheduler(highlights="red")
    with pytest.raises(TypeError, match=r"^highlights must hold \(compiled_regex, color\) pairs, "
                                        r"got \('PASSED', 'red'\)$"):
        Scheduler(highlights=[("PASSED", "red")])


def test_ansi_highlight_colours_the_stream_lines():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    highlights = [(re.compile(r'Employee:\s*"[^"]+"'), BRIGHT_YELLOW), (re.compile(r"\bdone\b"), "bold red")]
    configure_logging(stream=stream, highlights=highlights)
    logging.getLogger("thread_0").info('Employee: "Smith" is done')
    line = stream.getvalue()
    assert f'{BRIGHT_YELLOW}Employee: "Smith"\x1b[0m' in line
    assert "\x1b[1;31mdone\x1b[0m" in line
    # not a terminal: no escapes at all
    plain = io.StringIO()
    configure_logging(stream=plain, highlights=highlights)
    logging.getLogger("thread_0").info('Employee: "Smith" is done')
    assert "\x1b" not in plain.getvalue() and 'Employee: "Smith" is done' in plain.getvalue()


def test_sgr_names_and_escapes():
    assert sgr(RED_BRIGHT) == RED_BRIGHT
    assert sgr("bold red") == "\x1b[1;31m"
    assert sgr("bright_cyan") == "\x1b[96m"
    assert sgr("#ff0000") is None and sgr("") is None
    formatter = HighlightFormatter("%(message)s", None, [(re.compile("x"), "no such colour")])
    assert formatter.highlights == []


def test_per_thread_log_files_as_1x_wrote_them(tmp_path):
    handlers = add_thread_log_files(["thread_0", "thread_1"], directory=tmp_path, prefix="example1")
    assert add_thread_log_files(["thread_0"], directory=tmp_path, prefix="example1") == []  # once
    logger = ThreadProxyLogger()
    done = threading.Event()

    def on_thread():
        logger.debug("i01 running")
        done.set()

    threading.Thread(target=on_thread, name="thread_1").start()
    assert done.wait(10)
    for handler in handlers:
        handler.flush()
    text = (tmp_path / "example1_thread_1.log").read_text(encoding="utf-8")
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} DEBUG \[thread_1\] on_thread: i01 running\n$", text)
    assert not (tmp_path / "example1_thread_0.log").exists()  # created on the first record


SCRIPT = '''
import json, logging, re
from thread_order import Scheduler, ThreadProxyLogger

s = Scheduler(workers=3, setup_logging=True, add_file_handler=True,
              highlights=[(re.compile(r"completed"), "\\x1b[32m")])
logger = ThreadProxyLogger()

def run(name, fail=False):
    logger.debug(f"{name} running")
    if fail:
        assert False, "Intentional Failure"
    logger.info(f"{name} completed")
    return name

@s.dregister()
def a(): return run("a")

@s.dregister(after=["a"])
def b(): return run("b")

@s.dregister(after=["a"])
def c(): return run("c", fail=True)

@s.dregister(after=["b", "c"])
def f(): return run("f")

if __name__ == "__main__":
    s.on_scheduler_done(lambda s: print(f"Passed:{len(s['passed'])} Failed:{len(s['failed'])}"))
    s.start()
    print(json.dumps(s.sanitize_state(), default=str))
'''


def test_dregister_script_as_a_real_process_writes_per_thread_files(tmp_path):
    script = tmp_path / "example4.py"
    script.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env=tdrun_env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Passed:2 Failed:1"
    assert json.loads(lines[1])["results"] == {"a": "a", "b": "b"}
    # the stream handler: INFO lines with the thread, the failure logged; stderr is no terminal,
    # so the highlight adds no escapes
    assert re.search(r"INFO +\[thread_\d\] a completed", proc.stderr)
    assert "c: FAILED: AssertionError: Intentional Failure" in proc.stderr
    assert "\x1b" not in proc.stderr and "a running" not in proc.stderr  # DEBUG stays in the files
    logs = {p.name: p.read_text(encoding="utf-8") for p in tmp_path.glob("example4_*.log")}
    assert set(logs) <= {"example4_MainThread.log", "example4_thread_0.log", "example4_thread_1.log",
                         "example4_thread_2.log"}
    everything = "".join(logs.values())
    for name in "abc":
        assert re.search(rf"DEBUG \[thread_\d\] run: {name} running", everything)
    assert "f running" not in everything  # skipped: its dependency c failed


# ---------------------------------------------------------------------------- tdrun

MODULE = '''
import re
import logging
from thread_order import mark, ThreadProxyLogger

logger = ThreadProxyLogger()

def setup_state(state):
    state.setdefault("names", ["Smith", "Jones"])

def add_logging_highlights():
    return [(re.compile(r'Employee:\\s*"([^"]+)"'), "\\x1b[1m\\x1b[33m"),
            (re.compile(r"\\bIntentional Failure\\b"), "\\x1b[31m")]

def run(name, state, deps=(), fail=False):
    logger.info(f'{name} Employee: "{state["names"][0]}" running in {state.get("env", "-")}')
    if fail:
        assert False, "Intentional Failure"
    return "|".join([f"{name}.{state['results'].get(d, '--no-result--')}" for d in deps] or [name])

@mark(tags="layer1")
def task_a(state): return run("task_a", state)

@mark(after=["task_a"], tags="layer2")
def task_b(state): return run("task_b", state, deps=["task_a"])

@mark(after=["task_a"], tags="layer2")
def task_c(state): return run("task_c", state, deps=["task_a"])

@mark(after=["task_c"], tags="layer3")
def task_d(state): return run("task_d", state, deps=["task_c"], fail=True)

@mark(after=["task_c"], tags="layer3")
def task_e(state): return run("task_e", state, deps=["task_c"])

@mark(after=["task_b", "task_d"], tags="layer4")
def task_f(state): return run("task_f", state, deps=["task_b", "task_d"])
'''


@pytest.fixture
def module(write_module):
    return write_module(MODULE, "example4c.py")


def test_tdrun_module_as_1x_ran_it(tdrun_main, module):
    result = tdrun_main(module, "--plain", "--skip-deps", "--env=dev", "--region=us-west")
    assert result.code == 1
    assert re.search(r"task_d \.+ FAILED", result.out)
    assert re.search(r"task_f \.+ SKIPPED", result.out)  # 1.x ran it unless --skip-deps
    assert "4 passed, 1 failed, 1 skipped" in result.out
    # --no-skip-deps: what 1.x did without --skip-deps
    result = tdrun_main(module, "--plain", "--no-skip-deps")
    assert "5 passed, 1 failed, 0 skipped" in result.out


def test_tdrun_single_task_with_mocked_result_and_state(tdrun_main, module, tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"names": ["Brown"], "env": "qa"}), encoding="utf-8")
    result = tdrun_main(f"{module}::task_b", "--plain", "--result-task_a=mock_value",
                        "--state-file", state, "--json-report", tmp_path / "r.json", "--log")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    task_b = next(t for t in report["tasks"] if t["name"] == "task_b")
    assert task_b["status"] == "PASSED"
    assert 'task_b Employee: "Brown" running in qa' in result.out


def test_tdrun_tags_and_graph(tdrun_main, module):
    result = tdrun_main(module, "--plain", "--tags=layer1")
    assert result.code == 0 and "1 passed" in result.out
    result = tdrun_main(module, "--graph")
    assert result.code == 0
    assert "task_a -> task_c -> task_d -> task_f" in result.out


def test_tdrun_ansi_highlights_render_as_colours(tdrun_proc, module):
    # --viewer draws on a terminal-like console even into a pipe: the log lines shown with
    # --log carry the module's colours, converted from the ANSI escapes it returned
    result = tdrun_proc(module, "--viewer", "--log", "--workers=1")
    assert result.code == 1, result.err
    out = result.out
    assert '\x1b[1;33mEmployee: "Smith"\x1b[0m running' in out, out[-3000:]


def test_tdrun_1x_module_as_a_real_process(tdrun_proc, module):
    result = tdrun_proc(module, "--skip-deps", "--region=us-west", CI="true")
    assert result.code == 1, result.err
    assert re.search(r"\[thread_\d\] task_d \.+ FAILED", result.out)
    assert "AssertionError: Intentional Failure" in result.out
    assert "task_f" in result.out and "dependency 'task_d' failed" in result.out


# ---------------------------------------------------------------------------- the README

#: the names thread-order 1.x exported from its package (its __all__), and its Scheduler's
#: constructor keywords and methods
V1_NAMES = ["Scheduler", "DAGraph", "configure_logging", "ThreadProxyLogger", "dmark", "mark",
            "default_workers", "load_and_collect_functions", "register_functions",
            "validate_highlights"]
V1_KEYWORDS = ["workers", "setup_logging", "add_stream_handler", "state", "store_results",
               "clear_results_on_start", "verbose", "skip_dependents", "add_file_handler", "highlights"]
V1_METHODS = ["register", "dregister", "start", "on_task_start", "on_task_run", "on_task_done",
              "on_scheduler_start", "on_scheduler_done", "sanitize_state", "graph", "sanitized_state"]


def test_every_1x_name_is_here_or_in_the_readme_section():
    import inspect

    import thread_order

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Coming from thread-order 1.x", 1)[1].split("\n## ", 1)[0]
    for name in V1_NAMES:
        assert name in thread_order.__all__ or f"`{name}" in section, name
    params = inspect.signature(Scheduler).parameters
    assert all(k in params for k in V1_KEYWORDS)
    assert all(hasattr(Scheduler, m) for m in V1_METHODS)
    for path in ("thread_order.scheduler", "thread_order.graph", "thread_order.logger",
                 "thread_order.cli.app", "thread_order.ui.app"):
        assert f"`{path}" in section, path  # each 1.x module path, with where it went


def test_what_replaces_load_and_collect_functions_and_register_functions(module):
    from thread_order.engine.collect import collect

    # 1.x: module, functions, single = load_and_collect_functions(target, ["layer2"]);
    #      register_functions(scheduler, functions, ["layer2"], single)
    collection = collect([str(module)], tags="layer2")
    scheduler = Scheduler(workers=2, state={"names": ["Lee"]})
    collection.register_into(scheduler)
    summary = scheduler.start()
    # tags keep task_b and task_c; their dependency on task_a, filtered out, is dropped
    assert sorted(summary["passed"]) == ["task_b", "task_c"]
    assert scheduler.state["results"]["task_b"] == "task_b.--no-result--"


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_tdrun_plain_output_on_a_terminal_draws_ansi_highlights(module, tmp_path):
    import os
    import pty
    import select

    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "thread_order", str(module), "--plain", "--log",
                             "--workers=1"], stdout=follower, stderr=follower, stdin=subprocess.DEVNULL,
                            cwd=tmp_path, env=tdrun_env(TERM="xterm-256color", COLUMNS="200"))
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                break
            try:
                data = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(leader)
        assert proc.wait(30) == 1
    out = b"".join(chunks).decode("utf-8", "replace")
    assert '\x1b[1;33mEmployee: "Smith"\x1b[0m running in -' in out, out[-2000:]
