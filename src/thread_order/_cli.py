"""tdrun: placeholder entry point until the command-line runner lands."""


def console_main() -> None:
    raise SystemExit("tdrun is not built yet")
