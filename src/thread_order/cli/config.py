"""A suite's defaults: ``[tool.tdrun]`` in ``pyproject.toml``, and ``tdrun --show-config``.

The file is found from the current directory upwards, as pytest finds its
ini: the first ``pyproject.toml`` holding a ``[tool.tdrun]`` table. The command
line wins over the file (its ``addopts`` come first, so a later option on the
command line overrides them), the file over the built-in defaults.

Keys that stand for one option (``check_state``, ``shuffle``, ``order``, ``async_limit``,
``executor``, ``otel``: ``OPTION_KEYS``) become the words of that option and go through
tdrun's own parser, so the file is checked by the option's rules; ``--no-check-state``,
``--no-shuffle`` and ``--no-otel`` turn the file's on/off settings off for one run.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.errors import PoolError, UsageError
from ..engine.pools import parse_pools
from ..engine.model import parse_tags

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["Config", "find_config", "KEYS", "OPTION_KEYS", "add_config_options", "show_config"]

#: key -> what it may hold (said in the error for a bad value)
KEYS = {
    "workers": "a whole number >= 1",
    "tags": "tag names: a string 'a,b' or a list of strings",
    "pattern": "a glob for the files a directory collects, such as 'test_*.py'",
    "history": "a file path, or false for no history",
    "addopts": "tdrun options: a string or a list of strings",
    "pools": "a table of pool name = size, or {size = N, rate = \"N/s\"}",
    "check_state": "true or false",
    "shuffle": "true (a new seed each run), a whole number seed >= 0, or false",
    "order": "'declared' or 'critical-path'",
    "async_limit": "a whole number >= 1",
    "executor": "'local', 'dask' or 'dask://HOST:PORT'",
    "otel": "true or false",
}

#: the keys that stand for one tdrun option each: key -> (the argparse attribute, the option,
#: the option that turns the file's setting off for one run, or None). Their values are
#: checked by the option's own parser (see ``_option_tokens``), not a second one.
OPTION_KEYS = {
    "check_state": ("check_state", "--check-state", "--no-check-state"),
    "shuffle": ("shuffle", "--shuffle", "--no-shuffle"),
    "order": ("order", "--order", None),
    "async_limit": ("async_limit", "--async-limit", None),
    "executor": ("executor", "--executor", None),
    "otel": ("otel", "--otel", "--no-otel"),
}


@dataclass
class Config:
    """The settings of one ``[tool.tdrun]`` table (``path`` None: no file was found)."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def addopts(self) -> list[str]:
        return list(self.values.get("addopts", []))

    def where(self, key: str) -> str:
        return f"{_shown(self.path)} [tool.tdrun] {key}"


def _shown(path: Path | None) -> str:
    if path is None:
        return "pyproject.toml"
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def find_config(start: Path | None = None) -> Config:
    """The ``[tool.tdrun]`` settings in force from ``start`` (default: the current directory).

    Raises:
        UsageError: the file is not TOML, or an unknown key or a bad value (one line
            naming the file, the key and what is allowed).
    """
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{_shown(path)}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{_shown(path)}: invalid TOML: {exc}") from None
        table = data.get("tool", {}).get("tdrun") if isinstance(data.get("tool"), dict) else None
        if table is None:
            continue
        if not isinstance(table, dict):
            raise UsageError(f"{_shown(path)}: [tool.tdrun] must be a table")
        return Config(path, _check(path, table))
    return Config()


def _check(path: Path, table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise UsageError(f"{_shown(path)}: [tool.tdrun] unknown key {key!r}; "
                             f"allowed: {', '.join(sorted(KEYS))}")
        bad = UsageError(f"{_shown(path)}: [tool.tdrun] {key}: expected {KEYS[key]}, got {value!r}")
        if key == "workers":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad
        elif key == "tags":
            try:
                tags = parse_tags(value)
            except TypeError:
                raise bad from None
            if not tags:
                raise bad
            value = ",".join(tags)
        elif key == "pattern":
            if not isinstance(value, str) or not value.strip():
                raise bad
        elif key == "history":
            if value is True:
                continue
            if value is not False and (not isinstance(value, str) or not value.strip()):
                raise bad
            if isinstance(value, str):  # relative to the file, wherever tdrun runs from below it
                value = str(path.parent / value)
        elif key == "pools":
            try:
                value = parse_pools(value, f"{_shown(path)}: [tool.tdrun] pools")
            except PoolError as exc:
                raise UsageError(str(exc)) from None
        elif key == "addopts":
            if isinstance(value, str):
                try:
                    value = shlex.split(value)
                except ValueError as exc:
                    raise UsageError(f"{_shown(path)}: [tool.tdrun] addopts: {exc}") from None
            elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad
        elif key in OPTION_KEYS and _option_tokens(key, value) is None:
            raise bad
        out[key] = value
    return out


def _option_tokens(key: str, value: Any) -> list[str] | None:
    """The command-line words a file setting stands for (None: the TOML type is wrong).
    What the words say is checked by tdrun's parser, as if they were typed."""
    option = OPTION_KEYS[key][1]
    if key in ("check_state", "otel"):
        return ([option] if value else []) if isinstance(value, bool) else None
    if key == "shuffle":
        if isinstance(value, bool):
            return [option] if value else []
        return [f"{option}={value}"] if isinstance(value, int) else None
    if key == "async_limit":
        return [option, str(value)] if isinstance(value, int) and not isinstance(value, bool) else None
    return [option, value] if isinstance(value, str) else None


def show_config(rows: list[tuple[str, str, str]], config: Config) -> str:
    """The text of ``--show-config``: each setting, its value and where it came from."""
    head = (f"settings from {_shown(config.path)} [tool.tdrun] and the command line"
            if config.path else "no pyproject.toml with [tool.tdrun] from here upwards; "
                                "built-in defaults and the command line")
    width = max(len(name) for name, _, _ in rows)
    vwidth = max(len(value) for _, value, _ in rows)
    lines = [head]
    lines += [f"  {name:<{width}}  {value:<{vwidth}}  {source}" for name, value, source in rows]
    return "\n".join(lines) + "\n"


#: setting -> (the argparse attribute, the option on the command line)
_SETTINGS = [("workers", "workers", "--workers"), ("tags", "tags", "--tags"),
             ("pattern", "pattern", "--pattern"), ("-k", "keyword", "-k")]


def apply_config(args: Any, config: Config, argv: list[str], parse: Any) -> list[tuple[str, str, str]]:
    """Fill ``args`` (parsed from the file's addopts + ``argv``) with the file's settings
    where neither the command line nor addopts gave one; returns ``--show-config``'s rows
    ``(setting, value, where it came from)``. ``parse`` is tdrun's option parser."""
    from ..engine.scheduler import default_workers

    def layer(opts: list[str]) -> Any:
        try:
            return parse([*opts, "--show-config"])[0] if opts else None
        except (UsageError, SystemExit):
            return None

    layers = [("command line", layer(argv)), (f"{_shown(config.path)} [tool.tdrun] addopts",
                                              layer(config.addopts))]

    def source(attr: str, default: Any = None) -> str | None:
        for name, ns in layers:
            if ns is not None and getattr(ns, attr, default) != default:
                return name
        return None

    rows = []
    for setting, attr, _ in _SETTINGS:
        where = source(attr)
        if where is None and setting in config.values:
            setattr(args, attr, config.values[setting])
            where = config.where(setting)
        value = getattr(args, attr)
        shown = {"workers": f"min({default_workers}, number of tasks)", "pattern": "*.py"}.get(setting, "-")
        rows.append((setting, shown if value is None else str(value), where or "default"))

    off = os.environ.get("TDRUN_HISTORY", "").lower() in ("off", "0", "no", "false")
    where = source("history") or source("no_history", False)
    if where is None and "history" in config.values:
        where = config.where("history")
        if config.values["history"] is False:
            args.no_history = True
        elif not off:
            args.history = config.values["history"]
        else:
            where = "TDRUN_HISTORY=off (the environment wins over the file)"
    if args.no_history:
        value = "off"
    elif args.history:
        value = args.history
    elif off:
        value, where = "off", where or "TDRUN_HISTORY=off"
    else:
        value = ".tdrun/history.db"
    rows.append(("history", value, where or "default"))
    rows.extend(_pool_rows(args, config, layers))
    rows.extend(_option_rows(args, config, [(name, opts) for (name, _), opts in
                                            zip(layers, (argv, config.addopts))], parse))
    rows.append(("addopts", " ".join(map(shlex.quote, config.addopts)) or "-",
                 config.where("addopts") if config.addopts else "default"))
    return rows


def _pool_rows(args: Any, config: Config, layers: list) -> list[tuple[str, str, str]]:
    """``args.pools`` becomes the pools the file and the command line declare (the command
    line wins, pool by pool); one row per pool. A module's ``POOLS`` comes under both."""
    pools: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, pool in config.values.get("pools", {}).items():
        pools[name], where[name] = pool, config.where("pools")
    for source, ns in reversed(layers):  # addopts first, the command line over them
        for name, pool in (getattr(ns, "pools", None) or []) if ns is not None else []:
            pools[name], where[name] = pool, source
    args.pools = list(pools.items())
    if not pools:
        return [("pools", "-", "default (and each module's POOLS)")]
    return [(f"pool {name}", pool.describe(), where[name]) for name, pool in pools.items()]


def add_config_options(parser: Any) -> None:
    """The options that turn a file's on/off setting off for one run (``--no-check-state``...)."""
    group = parser.add_argument_group("turning a pyproject.toml [tool.tdrun] setting off for one run")
    for key, (attr, option, off) in OPTION_KEYS.items():
        if off is not None:
            group.add_argument(off, dest=f"no_{attr}", action="store_true",
                               help=f"no {option} even if [tool.tdrun] {key} turns it on")


def _given(opts: list[str], option: str | None) -> bool:
    return option is not None and any(o == option or o.startswith(option + "=") for o in opts)


def _turned_off(opts: list[str], option: str, off: str) -> bool:
    """The last of ``option`` and its ``--no-`` form in one layer is the ``--no-`` form."""
    last = [o for o in opts if _given([o], option) or o == off]
    return bool(last) and last[-1] == off


def _option_rows(args: Any, config: Config, layers: list[tuple[str, list[str]]],
                 parse: Any) -> list[tuple[str, str, str]]:
    """Apply the file's option keys where no layer names the option (nor its ``--no-``
    form); returns one ``--show-config`` row per key."""
    where: dict[str, str] = {}
    for key, (attr, option, off) in OPTION_KEYS.items():
        for name, opts in layers:  # the command line first, then addopts
            if _given(opts, option) or _given(opts, off):
                where[key] = name
                break
    # one start order: --order typed drops the file's shuffle, --shuffle typed its order
    ordered = {"shuffle": "order", "order": "shuffle"}
    typed = set(where)
    for key, (attr, option, off) in OPTION_KEYS.items():
        if key not in config.values or key in where:
            continue
        if ordered.get(key) in typed:
            where[key] = f"{where[ordered[key]]} ({OPTION_KEYS[ordered[key]][1]} over the file's {key})"
            continue
        tokens = _option_tokens(key, config.values[key])
        try:
            ns = parse([*tokens, "--show-config"])[0]
        except UsageError:
            raise UsageError(f"{_shown(config.path)}: [tool.tdrun] {key}: expected {KEYS[key]}, "
                             f"got {config.values[key]!r}") from None
        setattr(args, attr, getattr(ns, attr))
        where[key] = config.where(key)
    if args.shuffle is not None and args.order == "critical-path":
        raise UsageError(f"{_shown(config.path)}: [tool.tdrun] shuffle and order = 'critical-path' "
                         "cannot be used together")
    rows = []
    for key, (attr, option, off) in OPTION_KEYS.items():
        if off is not None and _turned_off(dict(layers).get(where.get(key, ""), []), option, off):
            setattr(args, attr, None if key == "shuffle" else False)
        value = getattr(args, attr)
        if key == "shuffle" and value is not None:
            typed = dict(layers).get(where.get(key, ""), [])
            fresh = "--shuffle" in typed or (config.values.get("shuffle") is True
                                             and where.get(key) == config.where(key))
            shown = "on, a new seed each run" if fresh else str(value)
        elif isinstance(value, bool) or (key == "shuffle" and value is None):
            shown = "on" if value else "off"
        else:
            shown = "declared" if value is None else str(value)
        rows.append((key, shown, where.get(key, "default")))
    return rows
