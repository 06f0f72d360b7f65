"""The web UI's HTTP side: a Starlette app serving the page and the JSON API it uses.

Every handler answers JSON; our errors become 4xx with ``{"error": message}``
(409 for a second run, 404 for unknown runs), anything else is logged and
answered as a 500 without a traceback. User code (imports, ``setup_state``)
and SQLite reads run in the thread pool so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..engine.collect import ModuleLoadError, parse_state_text, read_state_file
from ..engine.errors import HistoryError, UsageError
from .payload import dumps, loads
from .runs import COALESCE, LiveRun, RunBusyError, RunManager, Workspace
from .security import Guard

__all__ = ["UiServer", "create_app", "STATIC_DIR"]

log = logging.getLogger("thread_order.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: graphs bigger than this are listed, not drawn (the page must stay responsive)
GRAPH_LIMIT = 800
#: the largest request body we read (a state file upload)
MAX_BODY = 5 * 2**20
#: seconds between keep-alive comments on an idle event stream
KEEPALIVE = 15.0


class SafeJSONResponse(JSONResponse):
    """Every JSON response of ours: standard JSON whatever the data: a stray NaN is ``null``, not a failed response."""

    def render(self, content: Any) -> bytes:
        return dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class NotFound(UsageError):
    """Something named in the request does not exist (404)."""


class TooLarge(UsageError):
    """The request body is larger than we accept (413)."""


@dataclass
class UiServer:
    """Everything one running UI shares between requests."""

    token: str
    remote: bool = False
    history_path: Path | None = None
    workspace: Workspace = field(default_factory=Workspace)
    runs: RunManager | None = None
    load_error: dict[str, Any] | None = None
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.runs is None:
            self.runs = RunManager(self._recorder if self.history_path is not None else None)

    def _recorder(self, scheduler, run_info: dict) -> Any:
        from ..history import HistoryRecorder

        recorder = HistoryRecorder(self.history_path)
        recorder.attach(scheduler, run_info)
        return recorder

    def load(self, target: str) -> dict[str, Any]:
        """Load a module for the page; an import error is kept to show, then raised."""
        try:
            info = self.workspace.load(target)
        except ModuleLoadError as exc:
            self.load_error = {"target": target, "error": str(exc), "traceback": exc.user_traceback}
            raise
        except UsageError as exc:
            self.load_error = {"target": target, "error": str(exc), "traceback": None}
            raise
        self.load_error = None
        return info


# --------------------------------------------------------------------------- plumbing

Handler = Callable[[Request], Awaitable[Response]]


def api(fn: Callable[[Request, UiServer], Awaitable[Any]]) -> Handler:
    """Wrap a handler: its dict result becomes JSON, our errors become 4xx."""

    async def endpoint(request: Request) -> Response:
        ui: UiServer = request.app.state.ui
        try:
            result = await fn(request, ui)
            return result if isinstance(result, Response) else SafeJSONResponse(result)
        except RunBusyError as exc:
            return SafeJSONResponse({"error": str(exc)}, status_code=409)
        except NotFound as exc:
            return SafeJSONResponse({"error": str(exc)}, status_code=404)
        except TooLarge as exc:
            return SafeJSONResponse({"error": str(exc)}, status_code=413)
        except ModuleLoadError as exc:
            return SafeJSONResponse({"error": str(exc), "traceback": exc.user_traceback}, status_code=400)
        except (UsageError, HistoryError) as exc:
            return SafeJSONResponse({"error": str(exc)}, status_code=400)
        except Exception as exc:
            log.exception("web UI: %s %s failed", request.method, request.url.path)
            return SafeJSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"},
                                status_code=500)

    endpoint.__name__ = fn.__name__
    return endpoint


async def json_body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise TooLarge(f"request body is larger than {MAX_BODY // 2**20} MiB")
    if not raw.strip():
        return {}
    try:
        # NaN is let through here so that the value it sits in can be named (state values)
        data = loads(raw, "request body", finite=False)
    except json.JSONDecodeError:
        raise UsageError("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    return data


def _live(ui: UiServer, live_id: str) -> LiveRun:
    live = ui.runs.get(live_id)
    if live is None:
        if live_id == "current":
            raise NotFound("no run has been started on this server")
        raise NotFound(f"no live run {live_id!r} on this server (finished runs are in the history)")
    return live


def _run_id(text: str) -> int | str:
    if text == "last":
        return text
    if not text.isdigit():
        raise NotFound(f"no run {text!r} in the history (run ids are numbers)")
    return int(text)


# --------------------------------------------------------------------------- page


async def index(request: Request) -> Response:
    ui: UiServer = request.app.state.ui
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{TOKEN}}", html.escape(ui.token)).replace("{{VERSION}}", html.escape(__version__))
    response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
    response.headers.append("set-cookie", request.app.state.guard.set_cookie_header())
    return response


@api
async def info(request: Request, ui: UiServer) -> dict[str, Any]:
    current = ui.runs.current
    return {
        "version": __version__,
        "cwd": str(Path.cwd()),
        "history": str(ui.history_path) if ui.history_path is not None else None,
        "remote": ui.remote,
        "current_run": current.id if current is not None and not current.done else None,
        "last_run": current.id if current is not None else None,
    }


# --------------------------------------------------------------------------- module


@api
async def get_module(request: Request, ui: UiServer) -> dict[str, Any]:
    out = ui.workspace.describe()
    out["load_error"] = ui.load_error
    return out


@api
async def load_module(request: Request, ui: UiServer) -> dict[str, Any]:
    body = await json_body(request)
    path = body.get("path")
    if not isinstance(path, str) or not path.strip():
        raise UsageError("'path' must name a Python file or a directory, e.g. {\"path\": \"tests.py\"}")
    current = ui.runs.current
    if current is not None and not current.done:
        raise RunBusyError("cannot load a module while a run is in progress; cancel it or wait")
    info = await run_in_threadpool(ui.load, path)
    info["load_error"] = None
    return info


@api
async def module_graph(request: Request, ui: UiServer) -> dict[str, Any]:
    _, _, graph, error = ui.workspace.loaded()
    if graph is None:
        return {"svg": None, "reason": error or "no module loaded"}
    return await run_in_threadpool(_graph_payload, graph.nodes, graph.edges, None)


def _graph_payload(nodes, edges, statuses, critical=None) -> dict[str, Any]:
    if len(nodes) > GRAPH_LIMIT:
        return {"svg": None, "reason": f"{len(nodes):,} tasks: the graph is drawn up to "
                                       f"{GRAPH_LIMIT:,} tasks; see the task table"}
    from ..report import graph_svg

    return {"svg": graph_svg(list(nodes), list(edges), statuses, critical=critical), "reason": None}


@api
async def recent_modules(request: Request, ui: UiServer) -> dict[str, Any]:
    recent = ui.workspace.recent_targets()
    if ui.history_path is not None:
        try:
            runs = await run_in_threadpool(_history_call, ui, "list_runs", 200)
        except HistoryError:
            runs = []
        for run in runs:
            target = run.get("target") or run.get("module")
            if target and target not in recent:
                recent.append(target)
    return {"recent": recent[:20]}


# --------------------------------------------------------------------------- state


@api
async def get_state(request: Request, ui: UiServer) -> dict[str, Any]:
    return ui.workspace.state_view()


@api
async def put_state(request: Request, ui: UiServer) -> dict[str, Any]:
    body = await json_body(request)
    if "values" not in body:
        raise UsageError("'values' is required: {\"values\": {\"key\": \"value\"}}")
    ui.workspace.set_values(body["values"])
    return ui.workspace.state_view()


@api
async def put_state_file(request: Request, ui: UiServer) -> dict[str, Any]:
    body = await json_body(request)
    if "path" in body:
        path = body["path"]
        if not isinstance(path, str) or not path.strip():
            raise UsageError("'path' must name a JSON file")
        values = await run_in_threadpool(read_state_file, path)
        name = path
    elif "content" in body:
        name = body.get("name") or "uploaded file"
        if not isinstance(name, str) or not isinstance(body["content"], str):
            raise UsageError("'name' and 'content' must be strings")
        values = parse_state_text(name, body["content"])
    else:
        raise UsageError("give the state file as {\"path\": ...} or {\"name\": ..., \"content\": ...}")
    ui.workspace.set_state_file(name, values)
    return ui.workspace.state_view()


@api
async def delete_state_file(request: Request, ui: UiServer) -> dict[str, Any]:
    ui.workspace.set_state_file(None, None)
    return ui.workspace.state_view()


# --------------------------------------------------------------------------- runs


@api
async def start_run(request: Request, ui: UiServer) -> Response:
    body = await json_body(request)
    live = await run_in_threadpool(ui.runs.start, ui.workspace, body)
    return SafeJSONResponse(live.snapshot(with_tasks=True), status_code=202)


@api
async def get_run(request: Request, ui: UiServer) -> dict[str, Any]:
    live = _live(ui, request.path_params["run"])
    return live.snapshot(with_tasks=request.query_params.get("tasks") == "1")


@api
async def cancel_run(request: Request, ui: UiServer) -> dict[str, Any]:
    live = _live(ui, request.path_params["run"])
    body = await json_body(request)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise UsageError(f"force must be true or false, not {force!r}")
    if live.done:
        raise RunBusyError(f"run {live.id} has already finished")
    if not ui.runs.cancel(live.id, force=force):
        raise RunBusyError(f"run {live.id} is not running")
    return {"cancelled": True, "force": force, "id": live.id}


@api
async def run_graph(request: Request, ui: UiServer) -> dict[str, Any]:
    live = _live(ui, request.path_params["run"])
    nodes = [t["name"] for t in live.tasks]
    edges = [(dep, t["name"]) for t in live.tasks for dep in t["after"]]
    statuses = live.snapshot()["statuses"] if request.query_params.get("statuses") == "1" else None
    return await run_in_threadpool(_graph_payload, nodes, edges, statuses)


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {dumps(data, separators=(',', ':'))}\n\n"


async def run_events(request: Request) -> Response:
    """Server-sent events: a ``snapshot``, then coalesced ``batch`` events until the run ends."""
    ui: UiServer = request.app.state.ui
    try:
        live = _live(ui, request.path_params["run"])
    except NotFound as exc:
        return SafeJSONResponse({"error": str(exc)}, status_code=404)
    loop = asyncio.get_running_loop()

    async def stream():
        bell = asyncio.Event()

        def ring() -> None:
            try:
                loop.call_soon_threadsafe(bell.set)
            except RuntimeError:  # the loop is gone: the server stopped
                pass

        waiter, snapshot = live.add_waiter(ring)
        try:
            yield "retry: 1500\n" + _sse("snapshot", snapshot)
            # decide from what was sent: the run may have ended since, with a batch still due
            if snapshot["phase"] in ("finished", "error") or live.closed:
                return
            while True:
                try:
                    await asyncio.wait_for(bell.wait(), KEEPALIVE)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                bell.clear()
                batch = live.read(waiter)
                yield _sse("batch", batch)
                if batch["phase"] in ("finished", "error") or live.closed:
                    return
                await asyncio.sleep(COALESCE)
        finally:
            live.remove_waiter(waiter)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --------------------------------------------------------------------------- history


def _history_call(ui: UiServer, method: str, *args, **kwargs):
    """Open the store read-only, call one method, close it (runs in the thread pool)."""
    if ui.history_path is None:
        raise UsageError("history is off for this server (TDRUN_HISTORY=off)")
    from ..history import HistoryStore

    if not Path(ui.history_path).exists():
        if method == "list_runs":
            return []
        raise NotFound(f"no run history yet at {ui.history_path}")
    store = HistoryStore(ui.history_path, readonly=True)
    try:
        return getattr(store, method)(*args, **kwargs)
    finally:
        store.close()


def _get_history_run(ui: UiServer, run_id: int | str) -> dict[str, Any]:
    try:
        return _history_call(ui, "get_run", run_id)
    except HistoryError as exc:
        if "no run" in str(exc) or "unknown run" in str(exc) or "not found" in str(exc):
            raise NotFound(str(exc)) from None
        raise


@api
async def list_history(request: Request, ui: UiServer) -> dict[str, Any]:
    q = request.query_params
    limit_text = q.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
        raise UsageError(f"limit must be a whole number from 1 to 10000, not {limit_text!r}")
    status = q.get("status") or None
    if status is not None and status not in ("passed", "failed", "interrupted", "running"):
        raise UsageError(f"status must be passed, failed, interrupted or running, not {status!r}")
    module = q.get("module") or None
    runs = await run_in_threadpool(_history_call, ui, "list_runs", int(limit_text), module, status)
    from ..history import differs_text

    for run in runs:  # worded as `tdrun history` words it
        run["differs_text"] = differs_text(run.get("differs") or {})
    all_runs = await run_in_threadpool(_history_call, ui, "list_runs", 1000)
    modules = sorted({r["module"] for r in all_runs if r.get("module")})
    return {"runs": runs, "modules": modules, "history": str(ui.history_path)}


@api
async def history_run(request: Request, ui: UiServer) -> dict[str, Any]:
    run_id = _run_id(request.path_params["run"])
    return await run_in_threadpool(_history_detail, ui, run_id)


def _history_detail(ui: UiServer, run_id: int | str) -> dict[str, Any]:
    from ..report import attempt_bars, critical_path, timeline_svg

    run = _get_history_run(ui, run_id)
    graph = run.get("graph") or {}
    nodes = graph.get("nodes") or []
    edges = [tuple(e) for e in graph.get("edges") or []]
    tasks = run.get("tasks") or []
    statuses = {t["name"]: t["status"] for t in tasks}
    critical = critical_path(tasks, edges)
    run["critical_path"] = critical
    run["graph_view"] = _graph_payload(nodes, edges, statuses, critical)
    ran = any(t.get("thread") for t in tasks)
    run["timeline_svg"] = timeline_svg(attempt_bars(tasks), critical=critical) if ran else None
    return run


async def history_report(request: Request) -> Response:
    ui: UiServer = request.app.state.ui

    def render():
        from ..report import render_report

        return render_report(_get_history_run(ui, _run_id(request.path_params["run"])))

    try:
        page = await run_in_threadpool(render)
    except NotFound as exc:
        return SafeJSONResponse({"error": str(exc)}, status_code=404)
    except (UsageError, HistoryError) as exc:
        return SafeJSONResponse({"error": str(exc)}, status_code=400)
    return HTMLResponse(page)


async def history_trace(request: Request) -> Response:
    """The run as a Chrome Trace Event file (what ``tdrun trace`` writes), as a download."""
    ui: UiServer = request.app.state.ui

    def render():
        from ..trace import trace_json

        run = _get_history_run(ui, _run_id(request.path_params["run"]))
        return run["id"], trace_json(run)

    try:
        run_id, text = await run_in_threadpool(render)
    except NotFound as exc:
        return SafeJSONResponse({"error": str(exc)}, status_code=404)
    except (UsageError, HistoryError) as exc:
        return SafeJSONResponse({"error": str(exc)}, status_code=400)
    return Response(text, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="tdrun-trace-{run_id}.json"'})


@api
async def compare(request: Request, ui: UiServer) -> dict[str, Any]:
    a, b = request.query_params.get("a"), request.query_params.get("b")
    if not a or not b:
        raise UsageError("compare needs two run ids: ?a=RUN&b=RUN")
    run_a = await run_in_threadpool(_get_history_run, ui, _run_id(a))
    run_b = await run_in_threadpool(_get_history_run, ui, _run_id(b))
    from ..history import compare_runs

    out = compare_runs(run_a, run_b)  # the same verdict as `tdrun compare`
    for key, run in (("a", run_a), ("b", run_b)):
        out[key]["workers"] = run.get("workers")
    out.update(compare_tasks(run_a, run_b))
    return out


def compare_tasks(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Every task side by side: status and duration in run ``a`` and ``b``, and what changed."""
    tasks_a = {t["name"]: t for t in a.get("tasks", [])}
    tasks_b = {t["name"]: t for t in b.get("tasks", [])}
    names = list(tasks_a) + [n for n in tasks_b if n not in tasks_a]
    rows = []
    changes = {"fixed": 0, "broken": 0, "changed": 0, "added": 0, "removed": 0, "same": 0}
    for name in names:
        ta, tb = tasks_a.get(name), tasks_b.get(name)
        sa = ta["status"] if ta else None
        sb = tb["status"] if tb else None
        if ta is None:
            change = "added"
        elif tb is None:
            change = "removed"
        elif sa == sb:
            change = "same"
        elif sb == "PASSED":
            change = "fixed"
        elif sa == "PASSED":
            change = "broken"
        else:
            change = "changed"
        changes[change] += 1
        ran_a = ta is not None and ta.get("started_at") is not None
        ran_b = tb is not None and tb.get("started_at") is not None
        da = ta.get("duration") if ran_a else None
        db = tb.get("duration") if ran_b else None
        rows.append({
            "name": name, "status_a": sa, "status_b": sb, "duration_a": da, "duration_b": db,
            "delta": (db - da) if da is not None and db is not None else None, "change": change,
            "error_b": (tb or {}).get("error") or (tb or {}).get("reason"),
        })
    return {"tasks": rows, "changes": changes}


# --------------------------------------------------------------------------- app


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = f"no such page or API endpoint: {request.url.path}"
    return SafeJSONResponse({"error": message}, status_code=status)


def create_app(ui: UiServer) -> Guard:
    """The ASGI app for ``ui``, wrapped in the security guard (``app.ui`` is ``ui``)."""
    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/module", get_module, methods=["GET"]),
        Route("/api/module", load_module, methods=["POST"]),
        Route("/api/module/graph", module_graph),
        Route("/api/modules/recent", recent_modules),
        Route("/api/state", get_state, methods=["GET"]),
        Route("/api/state", put_state, methods=["PUT"]),
        Route("/api/state/file", put_state_file, methods=["PUT"]),
        Route("/api/state/file", delete_state_file, methods=["DELETE"]),
        Route("/api/runs", start_run, methods=["POST"]),
        Route("/api/runs/{run}", get_run),
        Route("/api/runs/{run}/events", run_events),
        Route("/api/runs/{run}/graph", run_graph),
        Route("/api/runs/{run}/cancel", cancel_run, methods=["POST"]),
        Route("/api/history", list_history),
        Route("/api/history/{run}", history_run),
        Route("/api/history/{run}/report", history_report),
        Route("/api/history/{run}/trace", history_trace),
        Route("/api/compare", compare),
        Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"),
    ]
    inner = Starlette(routes=routes, exception_handlers={404: _http_error, 405: _http_error})
    inner.state.ui = ui
    guard = Guard(inner, token=ui.token, remote=ui.remote)
    inner.state.guard = guard
    guard.ui = ui
    return guard
