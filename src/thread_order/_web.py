"""tdrun-ui: placeholder entry point until the web UI lands."""


def console_main() -> None:
    raise SystemExit("tdrun-ui is not built yet")
