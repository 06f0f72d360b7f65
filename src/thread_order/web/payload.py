"""JSON in and out of the web UI, typed state values included.

What may be read in (finite numbers, nesting up to ``MAX_DEPTH``) is judged
by the engine's ``jsonvalue``, so a state file is judged the same by
``tdrun`` and here; typed values are refused with a message naming the key.
A value that is already inside (put there by a module's ``setup_state`` or
read from an old history file) is written out with ``null`` in place of a
non-finite number rather than failing the response.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..engine.errors import UsageError
from ..engine.jsonvalue import MAX_DEPTH, loads, problem

__all__ = ["MAX_DEPTH", "loads", "problem", "dumps", "parse_value_text", "check_key"]


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
_RESERVED = {"results", "_state_lock", "_async_lock"}
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
