"""Per-task capture of stdout, stderr and logging; ThreadProxyLogger; configure_logging."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading

import pytest

from thread_order import Scheduler, TaskStatus, ThreadProxyLogger, configure_logging

WAIT = 10.0
LOG_LINE = r"\d\d:\d\d:\d\d\.\d{3} (?P<level>[A-Z]+) +(?P<logger>\S+): (?P<msg>.*)"


@pytest.fixture
def app_logger():
    """A logger that lets DEBUG through whatever the root level is; restored afterwards."""
    logger = logging.getLogger("thread_order_tests.app")
    old = logger.level
    logger.setLevel(logging.DEBUG)
    yield logger
    logger.setLevel(old)


@pytest.fixture
def root_logging():
    """Restore the root logger's level and handlers after a test that configures logging."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield root
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_concurrent_tasks_never_see_each_others_output(app_logger):
    names = ["alpha", "beta", "gamma", "delta"]
    barrier = threading.Barrier(len(names), timeout=WAIT)

    def task(name):
        def fn():
            for i in range(5):
                barrier.wait()  # every task writes each line at the same moment
                print(f"{name} out {i}")
                sys.stderr.write(f"{name} err {i}\n")
                app_logger.debug("%s log %d", name, i)
            return name
        return fn

    s = Scheduler(workers=len(names))
    for name in names:
        s.register(task(name), name)
    summary = s.start()
    assert sorted(summary["passed"]) == sorted(names)
    for name in names:
        lines = summary["tasks"][name]["output"].splitlines()
        assert len(lines) == 15, lines
        assert lines[0::3] == [f"{name} out {i}" for i in range(5)]
        assert lines[1::3] == [f"{name} err {i}" for i in range(5)]
        for i, line in enumerate(lines[2::3]):
            m = re.fullmatch(LOG_LINE, line)
            assert m, line
            assert m["level"] == "DEBUG" and m["logger"] == "thread_order_tests.app"
            assert m["msg"] == f"{name} log {i}"


def test_output_goes_into_the_record_and_the_event(app_logger):
    s = Scheduler(workers=1)
    records = []
    s.subscribe(lambda e: records.append(e.record), "task_finished")

    def noisy():
        print("hello", "world")
        print("to stderr", file=sys.stderr)
        app_logger.warning("careful")
        sys.stdout.writelines(["a\n", "b\n"])
        sys.stdout.flush()

    s.register(noisy, "noisy")
    summary = s.start()
    out = summary["tasks"]["noisy"]["output"]
    lines = out.splitlines()
    assert lines[:2] == ["hello world", "to stderr"]
    assert re.fullmatch(LOG_LINE.replace("(?P<msg>.*)", "careful"), lines[2])
    assert lines[3:] == ["a", "b"]
    assert records[0].output == out == s.last_records[0].output


def test_output_of_a_failing_task_and_of_each_attempt_is_kept():
    attempts = {"n": 0}

    def flaky():
        attempts["n"] += 1
        print(f"attempt {attempts['n']}")
        raise RuntimeError("nope")

    s = Scheduler(workers=1)
    s.register(flaky, "flaky", retries=1)
    retrying = []
    s.subscribe(lambda e: retrying.append(e.record.output), "task_retrying")
    summary = s.start()
    assert summary["tasks"]["flaky"]["status"] == TaskStatus.FAILED
    assert summary["tasks"]["flaky"]["output"] == "attempt 2\n"
    assert retrying == ["attempt 1\n"]


def test_start_thread_output_is_not_captured_and_streams_are_restored(capsys):
    before_out, before_err = sys.stdout, sys.stderr
    s = Scheduler(workers=1)
    s.register(lambda: print("from the task"), "t")
    s.on_task_done(lambda *args: print("from the callback"))
    summary = s.start()
    assert sys.stdout is before_out and sys.stderr is before_err
    assert summary["tasks"]["t"]["output"] == "from the task\n"
    assert capsys.readouterr().out == "from the callback\n"


def test_capture_false_leaves_output_alone(capsys):
    s = Scheduler(workers=1, capture=False)
    s.register(lambda: print("straight through"), "t")
    s.register(lambda: print("to err", file=sys.stderr), "u")
    summary = s.start()
    assert summary["tasks"]["t"]["output"] == "" and summary["tasks"]["u"]["output"] == ""
    captured = capsys.readouterr()
    assert captured.out == "straight through\n" and captured.err == "to err\n"


def test_nested_schedulers_capture_their_own_tasks():
    before = sys.stdout

    def outer():
        print("outer before")
        inner = Scheduler(workers=2)
        inner.register(lambda: print("inner one"), "one")
        inner.register(lambda: print("inner two"), "two")
        result = inner.start()
        print("outer after")
        return {n: t["output"] for n, t in result["tasks"].items()}

    s = Scheduler(workers=1)
    s.register(outer, "outer")
    summary = s.start()
    assert s.state["results"]["outer"] == {"one": "inner one\n", "two": "inner two\n"}
    assert summary["tasks"]["outer"]["output"] == "outer before\nouter after\n"
    assert sys.stdout is before


def test_thread_proxy_logger_resolves_to_the_current_threads_logger():
    proxy = ThreadProxyLogger()
    names = {}

    def task(key):
        def fn():
            names[key] = proxy.name
            proxy.warning("via proxy %s", key)
        return fn

    s = Scheduler(workers=1)
    s.register(task("a"), "a")
    summary = s.start()
    assert names == {"a": "thread_0"}
    assert re.fullmatch(LOG_LINE.replace(r"(?P<logger>\S+)", "thread_0").replace("(?P<msg>.*)", "via proxy a"),
                        summary["tasks"]["a"]["output"].strip())

    seen = []
    t = threading.Thread(target=lambda: seen.append(proxy.name), name="custom-thread")
    t.start()
    t.join(WAIT)
    assert seen == ["custom-thread"]
    assert proxy.name == threading.current_thread().name
    assert proxy.getEffectiveLevel() == logging.getLogger(threading.current_thread().name).getEffectiveLevel()


def test_with_setup_logging_info_records_of_a_task_are_captured(root_logging):
    proxy = ThreadProxyLogger()
    s = Scheduler(workers=2, setup_logging=True)
    s.register(lambda: proxy.info("created %s", "net-1"), "create")
    s.register(lambda: logging.getLogger("lib").debug("hidden at INFO"), "quiet")
    summary = s.start()
    line = summary["tasks"]["create"]["output"].strip()
    m = re.fullmatch(LOG_LINE, line)
    assert m and m["level"] == "INFO" and m["msg"] == "created net-1", line
    assert m["logger"] == summary["tasks"]["create"]["thread"]
    assert summary["tasks"]["quiet"]["output"] == ""


def test_configure_logging_writes_thread_names_and_is_idempotent(root_logging):
    first = io.StringIO()
    second = io.StringIO()
    configure_logging(stream=first)
    assert root_logging.level == logging.INFO
    handler = configure_logging(verbose=True, stream=second)
    assert root_logging.level == logging.DEBUG
    assert handler in root_logging.handlers
    ours = [h for h in root_logging.handlers if getattr(h, "_thread_order_handler", False)]
    assert ours == [handler]

    t = threading.Thread(target=lambda: logging.getLogger("x").debug("hello %s", "there"), name="lane_7")
    t.start()
    t.join(WAIT)
    assert first.getvalue() == ""
    assert re.fullmatch(r"\d\d:\d\d:\d\d DEBUG +\[lane_7\] hello there\n", second.getvalue())


def test_scheduler_setup_logging_configures_root(root_logging):
    Scheduler(workers=1, setup_logging=True)
    assert root_logging.level == logging.INFO
    Scheduler(workers=1, setup_logging=True, verbose=True)
    assert root_logging.level == logging.DEBUG
    assert len([h for h in root_logging.handlers if getattr(h, "_thread_order_handler", False)]) == 1


def test_capture_does_not_swallow_warnings_logged_outside_tasks(capfd):
    """With nothing configured, Python prints warnings to stderr; a capturing run must not
    change that for records from outside its tasks (a timeout warning, a failing callback)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()  # a plain script: no handler anywhere
    try:
        s = Scheduler(workers=1)
        s.register(lambda: None, "a")
        s.on_task_done(lambda *args: logging.getLogger("app").warning("seen outside any task"))
        s.start()
    finally:
        root.handlers[:] = saved
    assert "seen outside any task" in capfd.readouterr().err
