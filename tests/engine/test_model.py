"""Task specs, statuses, records, and the mark/dmark decorators."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thread_order import TaskRecord, TaskSpec, TaskStatus, dmark, mark
from thread_order.engine.model import MARK_ATTR, parse_tags


def noop():
    return None


def test_task_status_is_a_str_enum_with_four_members():
    assert [s.value for s in TaskStatus] == ["PASSED", "FAILED", "SKIPPED", "CANCELLED"]
    assert TaskStatus.PASSED == "PASSED"
    assert str(TaskStatus.SKIPPED) == "SKIPPED"
    assert f"{TaskStatus.CANCELLED}" == "CANCELLED"
    assert TaskStatus("FAILED") is TaskStatus.FAILED
    assert json.dumps({"s": TaskStatus.PASSED}) == '{"s": "PASSED"}'


def test_records_built_on_the_hot_paths_have_every_field():
    """The dispatcher builds passed records with new_record (every field, positionally): a
    field added to TaskRecord must be added there too, or records come out short."""
    import asyncio

    from thread_order import Scheduler

    async def coro():
        await asyncio.sleep(0)
        return 2

    s = Scheduler(workers=2)
    s.register(noop, "thread_task")
    s.register(coro, "async_task")
    s.start()
    for rec in s.last_records:
        assert len(rec) == len(TaskRecord._fields)
        assert rec == TaskRecord(**rec._asdict())
        assert (rec.waited, rec.waited_for) == (0.0, None)
    assert [r.is_async for r in s.last_records] == [False, True]


def test_task_record_is_frozen_and_serialises():
    rec = TaskRecord("a", TaskStatus.FAILED, "thread_1", 10.0, 10.5, 0.5, 2,
                     "ValueError", "bad", "Traceback...", "out\n", None, ("api", "slow"))
    with pytest.raises(AttributeError):  # FrozenInstanceError, or slots' own refusal on 3.11
        rec.status = TaskStatus.PASSED  # type: ignore[misc]
    assert rec.to_dict() == {
        "name": "a", "status": "FAILED", "thread": "thread_1", "started_at": 10.0,
        "finished_at": 10.5, "duration": 0.5, "attempts": 2, "error_type": "ValueError",
        "error": "bad", "traceback": "Traceback...", "output": "out\n", "reason": None,
        "tags": ["api", "slow"], "is_async": False, "warning": None, "waited": 0.0, "waited_for": None,
    }
    json.dumps(rec.to_dict())  # JSON-ready


def test_task_record_defaults_describe_a_task_that_never_ran():
    rec = TaskRecord("b", TaskStatus.SKIPPED, reason="dependency 'a' failed")
    assert rec.thread is None and rec.started_at is None and rec.attempts == 0
    assert rec.output == "" and rec.tags == ()


@pytest.mark.parametrize(
    "tags, expected",
    [
        (None, ()),
        ("", ()),
        ("api", ("api",)),
        ("api, slow ,api,", ("api", "slow")),
        (["a", " b", "a"], ("a", "b")),
        (("x",), ("x",)),
    ],
)
def test_parse_tags(tags, expected):
    assert parse_tags(tags) == expected


def test_parse_tags_rejects_non_strings():
    with pytest.raises(TypeError, match=r"^tags must be a string or a list of strings, not 3$"):
        parse_tags(3)
    with pytest.raises(TypeError, match=r"^tags must be strings, got 1$"):
        parse_tags(["a", 1])


def test_task_spec_build_normalises_options():
    spec = TaskSpec.build(noop, "t", after="a", with_state=1, tags="x,y", always=1,
                          retries=2, retry_delay=1, timeout=3)
    assert spec == TaskSpec("t", noop, ("a",), True, ("x", "y"), True, 2, 1.0, 3.0)
    assert TaskSpec.build(noop, "t", after=["a", "b", "a"]).after == ("a", "b")
    assert TaskSpec.build(noop, "t").timeout is None


@pytest.mark.parametrize(
    "kwargs, exc, message",
    [
        (dict(name=""), TypeError, r"^task name must be a non-empty string, not ''$"),
        (dict(name=3), TypeError, r"^task name must be a non-empty string, not 3$"),
        (dict(fn=42), TypeError, r"^task 't': 42 is not callable$"),
        (dict(after=5), TypeError, r"^task 't': after must be a list of task names, not 5$"),
        (dict(after=["a", 1]), TypeError, r"^task 't': after must hold task names, got 1$"),
        (dict(after=[""]), TypeError, r"^task 't': after must hold task names, got ''$"),
        (dict(retries=-1), ValueError, r"^task 't': retries must be an integer >= 0, not -1$"),
        (dict(retries=1.5), ValueError, r"^task 't': retries must be an integer >= 0, not 1\.5$"),
        (dict(retries=True), ValueError, r"^task 't': retries must be an integer >= 0, not True$"),
        (dict(retry_delay=-0.1), ValueError,
         r"^task 't': retry_delay must be a finite number >= 0, not -0\.1$"),
        (dict(retry_delay="1"), ValueError, r"^task 't': retry_delay must be a finite number >= 0, not '1'$"),
        (dict(timeout=0), ValueError, r"^task 't': timeout must be a finite number > 0 or None, not 0$"),
        (dict(timeout=-2.5), ValueError, r"^task 't': timeout must be a finite number > 0 or None, not -2\.5$"),
    ],
)
def test_task_spec_build_rejects_bad_input(kwargs, exc, message):
    args = dict(fn=noop, name="t")
    args.update(kwargs)
    with pytest.raises(exc, match=message):
        TaskSpec.build(**args)


def test_mark_attaches_options_and_keeps_the_function_callable():
    @mark(after=["create"], tags="api, slow", always=True, retries=1, retry_delay=0.5, timeout=9)
    def teardown(state, extra=1):
        """Delete it."""
        return ("torn down", state, extra)

    assert teardown({"k": 1}, extra=2) == ("torn down", {"k": 1}, 2)
    assert teardown.__name__ == "teardown"
    assert teardown.__doc__ == "Delete it."
    assert getattr(teardown, MARK_ATTR) == {
        "after": ["create"], "with_state": True, "orig_name": "teardown", "tags": ["api", "slow"],
        "always": True, "retries": 1, "retry_delay": 0.5, "timeout": 9.0,
    }


def test_mark_defaults_and_dmark_defaults_differ_only_in_with_state():
    @mark()
    def a(state):
        return state

    @dmark()
    def b():
        return "b"

    @dmark(with_state=True, after="a")
    def c(state):
        return state

    assert a(5) == 5 and b() == "b"
    ma, mb, mc = (getattr(f, MARK_ATTR) for f in (a, b, c))
    assert ma["with_state"] is True and mb["with_state"] is False and mc["with_state"] is True
    assert ma["after"] == mb["after"] == [] and mc["after"] == ["a"]
    assert ma["tags"] == [] and ma["always"] is False and ma["retries"] == 0
    assert ma["retry_delay"] == 0.0 and ma["timeout"] is None


def test_mark_registers_nothing_and_is_keyword_only():
    with pytest.raises(TypeError):
        mark(["x"])  # type: ignore[misc]

    @mark(after="x")
    def t(state):
        return None

    # only metadata: no scheduler knows about it, and the function itself comes back unwrapped
    def plain(state):
        return "same"

    assert mark()(plain) is plain and plain(None) == "same"
    assert t.__name__ == "t" and not hasattr(t, "__wrapped__")


def test_mark_validates_options_at_decoration_naming_the_function():
    with pytest.raises(ValueError, match=r"^task 'broken': retries must be an integer >= 0, not -1$"):
        @mark(retries=-1)
        def broken(state):
            return None

    with pytest.raises(TypeError, match=r"^task 'bad_tags': tags must be strings, got 3$"):
        @dmark(tags=["ok", 3])
        def bad_tags():
            return None


_NAMES = st.sampled_from(["a", "b", "create vm", "é"])


@given(after=st.one_of(st.none(), _NAMES, st.lists(_NAMES, max_size=4), st.lists(_NAMES, max_size=4).map(tuple)),
       with_state=st.booleans(), use_mark=st.booleans())
def test_the_common_mark_stores_what_the_checked_one_does(after, with_state, use_mark):
    marker = mark if use_mark else dmark

    def quick():
        pass

    def checked():
        pass

    marker(after=after, with_state=with_state)(quick)
    marker(after=after, with_state=with_state, retry_delay=0)(checked)  # an int: the checked path
    expected = dict(getattr(checked, MARK_ATTR), orig_name="quick")
    assert getattr(quick, MARK_ATTR) == expected
    assert type(getattr(quick, MARK_ATTR)["retry_delay"]) is float


def test_the_common_mark_refuses_what_the_checked_one_refuses():
    with pytest.raises(TypeError, match=r"^task 'f': after must hold task names, got ''$"):
        @dmark(after=["a", ""])
        def f():
            pass

    class Callable:
        def __call__(self):
            pass

    one = Callable()
    one.__name__ = "one"
    assert dmark(after="a")(one) is one  # not a def: marked as the checked path marks it
    assert getattr(one, MARK_ATTR)["orig_name"] == "one" and getattr(one, MARK_ATTR)["after"] == ["a"]
    nameless, other = Callable(), Callable()
    dmark()(nameless)
    dmark(retry_delay=0)(other)  # the checked path: named by its repr
    assert getattr(nameless, MARK_ATTR)["orig_name"] == repr(nameless)
    assert dict(getattr(nameless, MARK_ATTR), orig_name="") == dict(getattr(other, MARK_ATTR), orig_name="")
