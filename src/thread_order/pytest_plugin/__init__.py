"""The pytest plugin (``pytest11`` entry point): tdrun modules collected and reported as pytest items.

``pytest --tdrun PATH`` or the ini option ``tdrun_files = tasks_*.py`` turns it
on; otherwise it does nothing. Each task (each case) is an item; the selected
graph runs once, concurrently, on the Scheduler; the ``tdrun_state`` fixture
reads what the run left.
"""

from .hooks import (pytest_addoption, pytest_collect_file, pytest_configure, pytest_runtest_makereport,
                    pytest_runtest_protocol, pytest_runtestloop, pytest_sessionfinish,
                    pytest_terminal_summary, tdrun_state)
from .view import TdrunState

__all__ = [
    "TdrunState",
    "pytest_addoption",
    "pytest_collect_file",
    "pytest_configure",
    "pytest_runtest_makereport",
    "pytest_runtest_protocol",
    "pytest_runtestloop",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "tdrun_state",
]
