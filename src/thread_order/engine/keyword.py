"""``-k EXPR``: selecting tasks by name with ``and``, ``or``, ``not`` and parentheses.

As pytest's ``-k``: each word matches a task whose full name
(``compute/vms::create_vm[eu]``) contains it, ignoring case; ``not`` binds
tightest, then ``and``, then ``or``.
"""

from __future__ import annotations

import re
from typing import Callable

from .errors import UsageError

__all__ = ["compile_keyword"]

# a word: what pytest allows in -k, plus what task names and case ids hold
_TOKEN = re.compile(r"\s*(?:(\()|(\))|([^\s()]+))")
_KEYWORDS = ("and", "or", "not")

Matcher = Callable[[str], bool]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []  # (kind, value, column)
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:  # only trailing spaces are left
                break
            column = m.start(m.lastindex) + 1
            if m.group(1):
                self.tokens.append(("(", "(", column))
            elif m.group(2):
                self.tokens.append((")", ")", column))
            else:
                word = m.group(3)
                kind = word if word in _KEYWORDS else "word"
                self.tokens.append((kind, word, column))
            pos = m.end()
        self.i = 0

    def fail(self, what: str) -> UsageError:
        if self.i < len(self.tokens):
            _, value, column = self.tokens[self.i]
            found = f"found {value!r} at column {column}"
        else:
            found = "found the end"
        return UsageError(f"-k {self.text!r}: expected {what}, {found}")

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def expr(self) -> Matcher:
        parts = [self.and_expr()]
        while self.peek() == "or":
            self.i += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda name: any(p(name) for p in parts))

    def and_expr(self) -> Matcher:
        parts = [self.not_expr()]
        while self.peek() == "and":
            self.i += 1
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else (lambda name: all(p(name) for p in parts))

    def not_expr(self) -> Matcher:
        kind = self.peek()
        if kind == "not":
            self.i += 1
            inner = self.not_expr()
            return lambda name: not inner(name)
        if kind == "(":
            self.i += 1
            inner = self.expr()
            if self.peek() != ")":
                raise self.fail("')'")
            self.i += 1
            return inner
        if kind == "word":
            word = self.tokens[self.i][1].lower()
            self.i += 1
            return lambda name: word in name.lower()
        raise self.fail("a name, 'not' or '('")


def compile_keyword(text: str) -> Matcher:
    """A function telling whether a full task name matches ``text``.

    Raises:
        UsageError: an empty or malformed expression, naming where it goes wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise UsageError("-k: expected an expression such as 'subnet and not delete'")
    parser = _Parser(text)
    match = parser.expr()
    if parser.i != len(parser.tokens):
        raise parser.fail("'and', 'or' or the end")
    return match
