"""Task collection as tdrun sees it: source order, hooks, filters and the initial state."""

from __future__ import annotations

import re

import pytest

from thread_order.engine.collect import ModuleLoadError, build_state, collect, split_target
from thread_order.engine.errors import UsageError


def test_marked_functions_in_source_order_not_alphabetical(write_module):
    module = write_module("""
        from thread_order import dmark, mark

        @mark()
        def zebra(state): pass

        def helper(): pass

        @dmark(after=["zebra"])
        def apple(): pass

        @mark(after=["apple"], tags="slow, api", always=True, retries=2, retry_delay=0.5, timeout=3)
        def mango(state): pass

        class NotATask:
            @mark()
            def method(self, state): pass

        unmarked = lambda: None
    """)
    col = collect(str(module))
    assert col.names == ["zebra", "apple", "mango"]
    mango = col.specs[2]
    assert (mango.after, mango.tags, mango.always, mango.retries, mango.retry_delay, mango.timeout) == (
        ("apple",), ("slow", "api"), True, 2, 0.5, 3.0)
    assert col.specs[0].with_state and not col.specs[1].with_state
    assert col.target is None and col.path == module


def test_marked_functions_imported_from_elsewhere_are_not_collected(write_module):
    write_module("from thread_order import mark\n\n@mark()\ndef shared(state): pass\n", name="lib.py")
    module = write_module("from lib import shared\nfrom thread_order import mark\n\n@mark()\ndef own(state): pass\n")
    assert collect(str(module)).names == ["own"]


def test_split_target():
    assert split_target("a/b.py::task") == ("a/b.py", "task")
    assert split_target("a/b.py") == ("a/b.py", None)
    with pytest.raises(UsageError, match=r"^a\.py::: empty task name after '::'$"):
        split_target("a.py::")


def test_tags_drop_dependencies_on_filtered_tasks(write_module):
    module = write_module("""
        from thread_order import mark

        @mark(tags="setup")
        def a(state): pass

        @mark(after=["a"], tags="api")
        def b(state): pass

        @mark(after=["b", "a"], tags=["api", "slow"])
        def c(state): pass
    """)
    col = collect(str(module), tags="api")
    assert [(s.name, s.after) for s in col.specs] == [("b", ()), ("c", ("b",))]
    assert col.all_names == ["a", "b", "c"]
    assert collect(str(module), tags=["api", "slow"]).names == ["c"]
    with pytest.raises(UsageError, match=rf"^{re.escape(str(module))}: task 'a' does not have the tags 'api'$"):
        collect(f"{module}::a", tags="api")


def test_single_task_and_with_deps(write_module):
    module = write_module("""
        from thread_order import mark

        @mark()
        def a(state): pass

        @mark()
        def unrelated(state): pass

        @mark(after=["a"])
        def b(state): pass

        @mark(after=["b"])
        def c(state): pass
    """)
    only = collect(f"{module}::c")
    assert [(s.name, s.after) for s in only.specs] == [("c", ())]
    assert only.target == "c"
    upstream = collect(f"{module}::c", with_deps=True)
    assert [(s.name, s.after) for s in upstream.specs] == [("a", ()), ("b", ("a",)), ("c", ("b",))]


def test_logging_highlights_hook(write_module):
    module = write_module("""
        import re
        from thread_order import mark

        def add_logging_highlights():
            return [(re.compile(r"\\d+ ms"), "cyan")]

        @mark()
        def a(state): pass
    """)
    col = collect(str(module))
    assert [(p.pattern, c) for p, c in col.highlights] == [(r"\d+ ms", "cyan")]


def test_bad_logging_highlights_are_a_usage_error(write_module):
    module = write_module("""
        from thread_order import mark

        def add_logging_highlights():
            return [("not compiled", "red")]

        @mark()
        def a(state): pass
    """)
    with pytest.raises(UsageError, match=r"add_logging_highlights\(\) must return \[\(compiled_regex, color\), \.\.\.\], "
                                         r"got \('not compiled', 'red'\)$"):
        collect(str(module))


def test_import_failure_keeps_only_the_users_frames(write_module):
    module = write_module("""
        def boom():
            return 1 / 0

        boom()
    """)
    with pytest.raises(ModuleLoadError) as info:
        collect(str(module))
    tb = info.value.user_traceback
    assert tb.startswith("Traceback (most recent call last):\n")
    assert f'File "{module}", line 4, in <module>' in tb and "in boom" in tb
    assert "_collect.py" not in tb and "<frozen" not in tb
    assert str(info.value) == f"{module}: cannot import module: ZeroDivisionError: division by zero"


def test_build_state_order_and_sources(write_module, tmp_path):
    module_path = write_module("""
        def setup_state(state):
            state["token"] = "from-setup"
            state["derived"] = state["env"] + "-x"
    """)
    from thread_order.engine.collect import load_module

    module = load_module(str(module_path))
    state_file = tmp_path / "s.json"
    state_file.write_text('{"env": "file", "region": "eu", "token": "file"}')
    state, sources = build_state(module, str(state_file), {"env": "typed"}, {"a": "1"})
    assert {k: state[k] for k in ("env", "region", "token", "derived", "results")} == {
        "env": "typed", "region": "eu", "token": "from-setup", "derived": "typed-x", "results": {"a": "1"}}
    assert sources == {"env": "typed in", "region": "state file", "token": "setup_state",
                       "derived": "setup_state", "results": "typed in"}


@pytest.mark.parametrize("text, says", [
    ('{"a": ' + "[" * 6000 + "]" * 6000 + "}", "nested deeper than 100 levels"),
    ('{"a": ' + "[" * 150 + "]" * 150 + "}", "nested deeper than 100 levels"),
    ('{"n": ' + "1" * 5000 + "}", "a number has too many digits"),
    ('{"ratio": NaN}', "key 'ratio': NaN is not a JSON number"),
    ('{"cfg": {"limits": [1, Infinity]}}', "key 'cfg': Infinity at limits[1] is not a JSON number"),
], ids=["deep", "deeper-than-the-limit", "huge-int", "nan", "nested-infinity"])
def test_tdrun_refuses_a_state_file_it_cannot_parse_as_bad_input(tmp_path, tdrun_proc, text, says):
    module = tmp_path / "m.py"
    module.write_text("from thread_order import mark\n\n@mark()\ndef a(state):\n    pass\n")
    state = tmp_path / "deep.json"
    state.write_text(text)
    done = tdrun_proc(module, "--state-file", state)
    assert done.code == 4, done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tdrun: error: state file {state}: {says}"), done.err
