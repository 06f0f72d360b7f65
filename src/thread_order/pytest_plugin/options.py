"""The pytest plugin's options (``--tdrun``, ``--tdrun-workers``, state, history, OpenTelemetry) and their checks.

Everything a user can get wrong on the command line is refused here, at
configure time, as one ``pytest.UsageError`` line (pytest exits 4), before
anything is collected or run.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
import pytest

__all__ = ["Settings", "add_options", "history_argv", "read_settings", "redacted_set_items"]

_HISTORY_OFF = ("off", "no", "false", "0", "none")


@dataclass
class Settings:
    """What the plugin was asked to do in this session (nothing at all when not ``active``)."""

    targets: list[str] = field(default_factory=list)    # --tdrun, as given
    globs: list[str] = field(default_factory=list)      # the tdrun_files ini option
    workers: int | None = None
    state_file: str | None = None
    values: dict[str, str] = field(default_factory=dict)  # --tdrun-set
    set_items: list[str] = field(default_factory=list)    # --tdrun-set, as given (redacted for the history)
    history: str | None = None
    no_history: bool = False
    labels: dict[str, str] = field(default_factory=dict)  # realpath -> module label, for --tdrun files
    otel: bool = False                                     # --tdrun-otel or the tdrun_otel ini option

    @property
    def active(self) -> bool:
        return bool(self.targets or self.globs)

    def is_task_file(self, path: Path, rootdir: Path) -> bool:
        """True for a file the plugin collects: one ``--tdrun`` names (or finds in a directory
        it names), or one matching a ``tdrun_files`` glob (its name, or its path below the
        rootdir when the glob holds a ``/``)."""
        if path.suffix != ".py" or path.name.startswith(("_", ".")) or path.name == "conftest.py":
            return False  # a conftest.py is pytest's own, even in a folder of task modules
        if os.path.realpath(path) in self.labels:
            return True
        if not self.globs:
            return False
        try:
            rel = path.relative_to(rootdir).as_posix()
        except ValueError:
            rel = path.as_posix()
        return any(fnmatch.fnmatch(rel if "/" in glob else path.name, glob) for glob in self.globs)


def add_options(parser: pytest.Parser) -> None:
    """Register the plugin's command-line and ini options."""
    group = parser.getgroup("tdrun", "thread-order task modules run as pytest items")
    group.addoption("--tdrun", action="append", default=[], dest="tdrun_targets", metavar="PATH",
                    help="collect this tdrun module (file.py, file.py::task) or directory of "
                         "modules as pytest items; repeatable")
    group.addoption("--tdrun-workers", dest="tdrun_workers", metavar="N",
                    help="worker threads for the tasks (default: as tdrun's)")
    group.addoption("--tdrun-state-file", dest="tdrun_state_file", metavar="FILE.json",
                    help="initial state values for the tasks, a JSON object")
    group.addoption("--tdrun-set", action="append", default=[], dest="tdrun_set", metavar="KEY=VALUE",
                    help="set state['KEY'] = 'VALUE' for the tasks; repeatable")
    group.addoption("--tdrun-history", dest="tdrun_history", metavar="PATH|off",
                    help="record the run in this SQLite file, or 'off' (default: .tdrun/history.db, "
                         "as tdrun)")
    group.addoption("--tdrun-otel", action="store_true", default=False, dest="tdrun_otel",
                    help="export the run live as OpenTelemetry spans, as tdrun --otel: configured by "
                         "the OTEL_* variables (needs thread-order[otel]); honours TRACEPARENT")
    parser.addini("tdrun_files", type="args", default=[],
                  help="glob(s) of the files collected as tdrun modules, e.g. tasks_*.py")
    parser.addini("tdrun_otel", type="bool", default=False,
                  help="true: export the tdrun run as OpenTelemetry spans, as --tdrun-otel")


def _usage(message: str) -> pytest.UsageError:
    return pytest.UsageError(message)


def read_settings(config: pytest.Config) -> Settings:
    """The session's settings, checked.

    Raises:
        pytest.UsageError: a missing ``--tdrun`` path, a bad worker count, ``--tdrun-set``
            or state file, a ``--tdrun-*`` option without anything to collect, or
            ``--tdrun-otel`` without the ``otel`` extra.
    """
    opt = config.option
    settings = Settings(targets=list(opt.tdrun_targets or []),
                        globs=[g for g in config.getini("tdrun_files") if g])
    given = [name for name, value in (("--tdrun-workers", opt.tdrun_workers),
                                      ("--tdrun-state-file", opt.tdrun_state_file),
                                      ("--tdrun-set", opt.tdrun_set),
                                      ("--tdrun-history", opt.tdrun_history),
                                      ("--tdrun-otel", opt.tdrun_otel)) if value]
    if not settings.active:
        if given:
            raise _usage(f"{given[0]} needs something to collect: --tdrun PATH or the ini option tdrun_files")
        return settings
    from ..cli import parse_set_values
    from ..engine.collect import read_state_file
    from ..engine.errors import UsageError
    from ..engine.suite import discover

    if getattr(opt, "numprocesses", None) or hasattr(config, "workerinput"):
        # each pytest-xdist worker would run the whole graph: a lifecycle created twice over
        raise _usage("tdrun tasks cannot run under pytest-xdist (-n): the task graph runs once, "
                     "in one process; drop -n or run the tasks in a session of their own")
    if opt.tdrun_workers is not None:
        try:
            settings.workers = int(opt.tdrun_workers)
        except ValueError:
            raise _usage(f"--tdrun-workers: expected a whole number of threads, got {opt.tdrun_workers!r}") from None
        if settings.workers < 1:
            raise _usage(f"--tdrun-workers: must be at least 1, got {opt.tdrun_workers!r}")
    try:
        settings.values = parse_set_values(list(opt.tdrun_set or []), option="--tdrun-set")
        settings.set_items = list(opt.tdrun_set or [])
        if opt.tdrun_state_file is not None:
            read_state_file(opt.tdrun_state_file)  # refused now, not after collection
            settings.state_file = opt.tdrun_state_file
    except UsageError as exc:
        raise _usage(str(exc)) from None
    history = opt.tdrun_history
    if history is not None:
        if history.lower() in _HISTORY_OFF:
            settings.no_history = True
        elif not history or Path(history).is_dir():
            raise _usage(f"--tdrun-history {history!r}: expected a file path or 'off'")
        else:
            settings.history = history
    base = Path(config.invocation_params.dir)
    for target in settings.targets:
        path = target.split("::", 1)[0]
        if not path or not (base / path).exists():
            raise _usage(f"--tdrun {target}: no such file or directory")
        if "::" in target and (base / path).is_dir():
            raise _usage(f"--tdrun {target}: '::task' needs a module file, not a directory; "
                         "select tasks with -k instead")
    if settings.targets:
        try:
            # tdrun's own discovery and module labels, so MODULE::TASK means what it means to tdrun
            modules = discover([str(base / t) for t in settings.targets])
        except UsageError as exc:
            raise _usage(f"--tdrun: {exc}") from None
        settings.labels = {os.path.realpath(m.path_str): m.label for m in modules}
    if opt.tdrun_otel or config.getini("tdrun_otel"):
        from ..trace import require_otel

        try:
            require_otel()  # the extra missing: one line, before any task module is imported
        except UsageError as exc:
            option = "--tdrun-otel" if opt.tdrun_otel else "the ini option tdrun_otel"
            raise _usage(str(exc).replace("--otel", option, 1)) from None
        settings.otel = True
    return settings


def redacted_set_items(items: list[str]) -> list[str]:
    """``--tdrun-set KEY=VALUE`` arguments for the history, secret-looking values hidden."""
    import re

    secret = re.compile(r"password|passwd|token|secret|key|auth|credential", re.I)
    out = []
    for item in items:
        key, eq, _ = item.partition("=")
        out.append(f"{key}=***redacted***" if eq and secret.search(key) else item)
    return out


def history_argv(config: pytest.Config) -> list[str]:
    """The pytest command line as the history records it (``pytest ...``, as the web UI's runs
    are ``tdrun ui ...``), ``--tdrun-set`` secrets hidden."""
    out: list[str] = ["pytest"]
    after_set = False
    for arg in config.invocation_params.args:
        arg = str(arg)
        if after_set:
            arg = redacted_set_items([arg])[0]
            after_set = False
        elif arg == "--tdrun-set":
            after_set = True
        elif arg.startswith("--tdrun-set="):
            arg = "--tdrun-set=" + redacted_set_items([arg[len("--tdrun-set="):]])[0]
        out.append(arg)
    return out
