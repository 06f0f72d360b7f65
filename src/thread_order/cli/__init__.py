"""tdrun: the command line, its live view, plain output and CI reports (JSON, JUnit)."""
