"""JSON read as values a run may hold: finite numbers only, nesting at most ``MAX_DEPTH`` deep.

Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999`` (an infinite
float), which no JSON consumer accepts: held as state, they make the JSON
report and every web response that carries them invalid. Deeply nested
input exhausts the parser's recursion and anything that walks the value
afterwards. Both are bad input, refused with a message naming the input.
Shared by state files (``tdrun --state-file``, the web UI's upload) and the
web UI's typed values, so a file is judged the same way everywhere.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import UsageError

__all__ = ["MAX_DEPTH", "loads", "problem"]

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
