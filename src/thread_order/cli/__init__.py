"""tdrun: the command line, its live view, plain output and CI reports (JSON, JUnit)."""

from .main import parse_set_values

__all__ = ["parse_set_values"]
