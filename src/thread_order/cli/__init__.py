"""tdrun: the command line, its live view, plain output and CI reports (JSON, JUnit)."""

from .main import check_initial_state, parse_set_values

__all__ = ["check_initial_state", "parse_set_values"]
