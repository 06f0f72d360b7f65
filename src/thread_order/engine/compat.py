"""What thread-order 1.x's Scheduler(setup_logging=True) did with logging: highlights, per-thread files.

1.x programs pass ``add_stream_handler``, ``add_file_handler`` and ``highlights``
to the constructor; this module gives those keywords their 1.x meaning with the
standard library alone (the engine's rule), so such a program runs unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["HighlightFormatter", "add_thread_log_files", "check_highlights", "sgr"]

#: the format 1.x gave its per-thread log files
FILE_FORMAT = "%(asctime)s %(levelname)-5s [%(threadName)s] %(funcName)s: %(message)s"
_RESET = "\x1b[0m"
#: one or more ANSI SGR escapes and nothing else: what colorama's Fore.RED + Style.BRIGHT is
_ANSI_ONLY = re.compile(r"^(?:\x1b\[[0-9;]*m)+$")
_SGR_NAMES = {
    "bold": "1", "dim": "2", "italic": "3", "underline": "4", "reverse": "7",
    "black": "30", "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35",
    "cyan": "36", "white": "37",
}


def sgr(color: str) -> str | None:
    """The ANSI escape text for a highlight colour, or None when it names no colour we know.

    ``color`` is either escapes already (``"\\x1b[31m\\x1b[1m"``, as colorama gives them) or
    words as rich spells the simple ones (``"bold red"``, ``"bright_cyan"``).
    """
    if _ANSI_ONLY.match(color):
        return color
    codes = []
    for word in color.lower().split():
        if word.startswith("bright_") and word[7:] in _SGR_NAMES and int(_SGR_NAMES[word[7:]]) >= 30:
            codes.append(str(int(_SGR_NAMES[word[7:]]) + 60))
        elif word in _SGR_NAMES:
            codes.append(_SGR_NAMES[word])
        else:
            return None
    return f"\x1b[{';'.join(codes)}m" if codes else None


def check_highlights(highlights: Any, where: str = "highlights") -> list[tuple[re.Pattern, str]]:
    """``highlights`` as a list of ``(compiled regex, colour string)`` pairs.

    Raises:
        TypeError: it is not a list/tuple of such pairs, naming ``where`` and the bad item.
    """
    if not isinstance(highlights, (list, tuple)):
        raise TypeError(f"{where} must be a list of (compiled_regex, color) pairs, "
                        f"not {type(highlights).__name__}")
    out = []
    for item in highlights:
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not isinstance(item[0], re.Pattern) or not isinstance(item[1], str)):
            raise TypeError(f"{where} must hold (compiled_regex, color) pairs, got {item!r}")
        out.append((item[0], item[1]))
    return out


class HighlightFormatter(logging.Formatter):
    """A formatter colouring, in each message, what the highlight patterns match."""

    def __init__(self, fmt: str, datefmt: str | None, highlights: Iterable[tuple[re.Pattern, str]]) -> None:
        super().__init__(fmt, datefmt)
        self.highlights = [(pattern, code) for pattern, color in highlights
                           if (code := sgr(color)) is not None]

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if not self.highlights:
            return super().formatMessage(record)
        message = record.message
        for pattern, code in self.highlights:
            message = pattern.sub(lambda m, code=code: f"{code}{m.group(0)}{_RESET}", message)
        coloured = logging.makeLogRecord(record.__dict__)  # other handlers see the record as it was
        coloured.message = message
        return super().formatMessage(coloured)


def colors_wanted(stream: Any) -> bool:
    """True when ``stream`` is a terminal and ``NO_COLOR`` is not set."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def add_thread_log_files(thread_names: Sequence[str], directory: str | os.PathLike | None = None,
                         prefix: str | None = None) -> list[logging.FileHandler]:
    """One log file per thread, as 1.x's ``add_file_handler=True`` wrote them.

    ``<prefix>_<thread>.log`` in ``directory`` (the current one), ``prefix`` being
    the running script's name without ``.py`` (``sys.argv[0]``): opened for appending,
    fed by the logger named after the thread (what ``ThreadProxyLogger`` logs to) at
    DEBUG and up, one ``time LEVEL [thread] function: message`` line per record.
    Calling it again adds no second handler for the same file.
    """
    if prefix is None:
        prefix = os.path.splitext(os.path.basename(sys.argv[0] or "python"))[0] or "python"
    folder = Path(directory) if directory is not None else Path.cwd()
    handlers = []
    for thread in thread_names:
        path = (folder / f"{prefix}_{thread}.log").resolve()
        logger = logging.getLogger(thread)
        logger.setLevel(logging.DEBUG)
        if any(isinstance(h, logging.FileHandler) and h.baseFilename == str(path) for h in logger.handlers):
            continue
        handler = logging.FileHandler(path, mode="a", encoding="utf-8", delay=True)
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
        logger.addHandler(handler)
        handlers.append(handler)
    return handlers
