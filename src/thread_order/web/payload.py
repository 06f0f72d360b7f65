"""JSON in and out of the web UI, typed state values included: finite numbers, nesting up to ``MAX_DEPTH``.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999`` (an infinite
float), which no JSON consumer accepts: stored as state, they made every
later response fail. Deeply nested input exhausts the parser's recursion and
anything that walks the value afterwards. Both are bad input, refused here
with a message naming the key; a value that is already inside (put there by
a module's ``setup_state`` or read from an old history file) is written out
with ``null`` in their place rather than failing the response.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..engine.errors import UsageError

__all__ = ["MAX_DEPTH", "loads", "problem", "dumps", "parse_value_text", "check_key"]

#: the deepest nesting of lists and objects accepted in a request or a state value
MAX_DEPTH = 100


class _NotJson(Exception):
    """Raised inside the parser's hooks; never leaves this module."""


def _constant(token: str) -> Any:
    raise _NotJson(f"{token} is not a JSON number")


def _float(token: str) -> float:
    value = float(token)
    if not math.isfinite(value):
        raise _NotJson(f"{token} is too large for a number")
    return value


def loads(text: str | bytes, what: str, *, finite: bool = True) -> Any:
    """``json.loads`` that refuses nesting deeper than ``MAX_DEPTH`` and (``finite``) NaN
    and infinities; ``what`` names the input in the message (``"state value 'x'"``).

    Raises:
        json.JSONDecodeError: not JSON at all (the caller words it).
        UsageError: JSON that must not be accepted, and why.
    """
    hooks = {"parse_constant": _constant, "parse_float": _float} if finite else {}
    try:
        value = json.loads(text, **hooks)
    except RecursionError:
        raise UsageError(f"{what}: nested deeper than {MAX_DEPTH} levels") from None
    except _NotJson as exc:
        raise UsageError(f"{what}: {exc}") from None
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError:
        raise UsageError(f"{what}: not UTF-8 text") from None
    except ValueError:  # an integer longer than sys.get_int_max_str_digits()
        raise UsageError(f"{what}: a number has too many digits") from None
    reason = problem(value, finite=finite)
    if reason is not None:
        raise UsageError(f"{what}: {reason}")
    return value


def problem(value: Any, path: str = "", *, finite: bool = True) -> str | None:
    """Why ``value`` cannot be accepted (a non-finite number, too deep), or None.

    ``path`` names the value in the reason when the problem is inside it
    (``NaN at cfg.limits[2]``).

    Walks without recursion, so a value nested 100,000 deep is judged, not crashed on.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if finite and isinstance(item, float) and not math.isfinite(item):
            token = "NaN" if math.isnan(item) else ("Infinity" if item > 0 else "-Infinity")
            return f"{token}{' at ' + where if depth else ''} is not a JSON number"
        if isinstance(item, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                return f"nested deeper than {MAX_DEPTH} levels"
            if isinstance(item, dict):
                children = ((v, f"{where}.{k}" if where else str(k)) for k, v in item.items())
            else:
                children = ((v, f"{where}[{i}]") for i, v in enumerate(item))
            stack.extend((child, at, depth + 1) for child, at in reversed(list(children)))
    return None


def _finite(value: Any) -> Any:
    """A copy of ``value`` with every non-finite float as None (only used once dumps failed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any, **kwargs: Any) -> str:
    """JSON text of a response: standard JSON always, non-finite numbers as ``null``."""
    try:
        return json.dumps(data, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_finite(data), allow_nan=False, **kwargs)


# --------------------------------------------------------------------------- state values

# keys a user may not type: the engine owns them
_RESERVED = {"results", "_state_lock"}
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_NOT_JSON_NUMBERS = {"NaN", "Infinity", "-Infinity"}


def parse_value_text(key: str, text: Any) -> Any:
    """Turn what a person typed into a state value.

    Text that parses as JSON is that value (``42``, ``true``, ``{"a": 1}``);
    text that looks like JSON but does not parse is an error; anything else
    is kept as a string. Non-string values (from the JSON API) are kept.

    Raises:
        UsageError: a bad key, or text that starts like JSON but is not.
    """
    check_key(key)
    if not isinstance(text, str):
        reason = problem(text)
        if reason is not None:
            raise UsageError(f"state value {key!r}: {reason}")
        return text
    stripped = text.strip()
    if stripped in _NOT_JSON_NUMBERS:  # not JSON, so text, as tdrun's --key=NaN is
        return text
    try:
        return loads(stripped, f"state value {key!r}")
    except json.JSONDecodeError as exc:
        if stripped[:1] in ('{', '[', '"'):
            raise UsageError(f"state value {key!r}: invalid JSON: {exc.msg} "
                             f"at line {exc.lineno} column {exc.colno}") from None
        return text


def check_key(key: Any) -> str:
    """Raises UsageError unless ``key`` is a usable state key."""
    if not isinstance(key, str) or not key.strip():
        raise UsageError("state key must be a non-empty string")
    if key in _RESERVED:
        raise UsageError(f"state key {key!r} is reserved for the engine")
    if not _KEY_RE.match(key):
        raise UsageError(f"state key {key!r}: use letters, digits, '_', '.' or '-', "
                         "starting with a letter or '_'")
    return key
