"""``tdrun ui`` / ``tdrun-ui``: start the local web UI server and open the browser.

Starlette and uvicorn are optional (``thread-order[ui]``); they are imported
only here, after the command line is read, so a missing extra is one
friendly line and exit code 4.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import webbrowser
from pathlib import Path
from typing import Any, Callable

__all__ = ["main", "console_main", "serve", "build_server"]

EXIT_OK = 0
EXIT_USAGE = 4

#: seconds the server waits for a cancelled run's teardown when it stops
SHUTDOWN_WAIT = 60.0


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # usage errors are exit 4 everywhere in tdrun
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"tdrun ui: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(
        prog="tdrun ui",
        description="Start the thread-order web UI: load a task module, edit the initial state, "
                    "run it and watch it live, browse the run history. Loading a module runs its code.",
    )
    p.add_argument("module", nargs="?", help="a task module to load at start (path.py, path.py::task or a directory)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; others need --allow-remote)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default 0: a free port)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host; every request then needs the printed access token")
    p.add_argument("--history", metavar="PATH",
                   help="run history database (default .tdrun/history.db in this directory)")
    return p


def _missing_extras() -> str | None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        return (f"tdrun ui: the web UI needs its extras ({exc.name} is not installed): "
                "pip install \"thread-order[ui]\"")
    return None


def _history_path(explicit: str | None) -> Path | None:
    from ..history import resolve_history_path

    path = resolve_history_path(explicit, False)
    return None if path is None else Path(path).resolve()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def build_server(ui, sock: socket.socket, on_started: Callable[[], None] | None = None):
    """A uvicorn server for ``ui`` on the bound socket ``sock``; ``.run(sockets=[sock])`` serves.

    On stop it cancels the run in progress (as Ctrl-C does, so teardown runs),
    waits for it, then ends every event stream so no connection hangs.
    """
    import asyncio
    import contextlib

    import uvicorn

    from .api import create_app

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started and on_started is not None:
                on_started()

        def handle_exit(self, sig, frame) -> None:
            second = self.should_exit
            super().handle_exit(sig, frame)
            if second:  # a second Ctrl-C or SIGTERM: stop waiting for the run too
                self.force_exit = True
                ui.runs.cancel("current", force=True)

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    # uvicorn raises the signals it caught again once it has stopped, so a
                    # SIGTERM would end us with -15 after a clean stop; we stopped: exit 0
                    self._captured_signals.clear()

        async def shutdown(self, sockets=None) -> None:
            current = ui.runs.current
            if current is not None and not current.done:
                print("tdrun ui: cancelling the run in progress; teardown tasks still run "
                      "(Ctrl-C again to stop waiting)", file=sys.stderr, flush=True)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, ui.runs.shutdown, SHUTDOWN_WAIT)
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        create_app(ui), log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=3, ws="none",
    )
    return _Server(config)


def serve(ui, host: str, port: int, on_started: Callable[[str], None] | None = None) -> int:
    """Bind, serve until stopped; ``on_started(base_url)`` once it listens. Returns an exit code."""
    try:
        sock = _bind(host, port)
    except OSError as exc:
        print(f"tdrun ui: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    bound_port = sock.getsockname()[1]
    shown = host
    if host in ("0.0.0.0", "::", "[::]"):
        shown = socket.gethostname()
    elif ":" in host and not host.startswith("["):
        shown = f"[{host}]"
    base = f"http://{shown}:{bound_port}/"
    server = build_server(ui, sock, (lambda: on_started(base)) if on_started is not None else None)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Run ``tdrun ui``; returns the exit code (0 stopped, 4 bad usage or missing extras)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ui"]:
        argv = argv[1:]
    args = _parser().parse_args(argv)
    missing = _missing_extras()
    if missing:
        print(missing, file=sys.stderr)
        return EXIT_USAGE

    from ..engine.errors import HistoryError, UsageError
    from .api import UiServer
    from .security import is_loopback, new_token

    host = args.host.strip()
    if not is_loopback(host) and not args.allow_remote:
        print(f"tdrun ui: --host {host} is not a loopback address; add --allow-remote to accept "
              "connections from other machines (every request then needs the access token)",
              file=sys.stderr)
        return EXIT_USAGE
    if not 0 <= args.port <= 65535:
        print(f"tdrun ui: --port must be from 0 to 65535, not {args.port}", file=sys.stderr)
        return EXIT_USAGE
    try:
        history = _history_path(args.history)
    except (UsageError, HistoryError) as exc:
        print(f"tdrun ui: {exc}", file=sys.stderr)
        return EXIT_USAGE

    ui = UiServer(token=new_token(), remote=args.allow_remote, history_path=history, host=host)
    if args.module:
        try:
            ui.load(args.module)
        except UsageError as exc:  # shown in the page too
            trace = getattr(exc, "user_traceback", None)
            if trace:
                print(trace, end="" if trace.endswith("\n") else "\n", file=sys.stderr)
            print(f"tdrun ui: {exc}", file=sys.stderr)

    def started(base: str) -> None:
        url = f"{base}?token={ui.token}" if args.allow_remote else base
        print(f"thread-order UI: {url}", flush=True)
        if args.allow_remote:
            print("  remote access is on: every request needs the token above; keep it private",
                  flush=True)
        if history is not None:
            print(f"  run history: {_shorten(history)}", flush=True)
        print("  loading a module runs its code, as tdrun does. Ctrl-C stops the server.", flush=True)
        if not args.no_browser:
            threading.Thread(target=_open_browser, args=(url,), name="tdrun-ui-browser",
                             daemon=True).start()

    return serve(ui, host, args.port, started)


def _shorten(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _open_browser(url: str) -> Any:
    try:
        return webbrowser.open(url)
    except Exception:  # no browser is not an error: the URL is printed
        return False


def console_main() -> None:
    """Entry point of the ``tdrun-ui`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
