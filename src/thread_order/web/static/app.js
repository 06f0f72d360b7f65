// thread-order web UI: plain JavaScript, no build step. Talks to the JSON API of the server
// that served it; live runs arrive as server-sent events (a snapshot, then coalesced batches).
"use strict";

const TOKEN = document.querySelector('meta[name="tdrun-token"]').content;
const PAGE_SIZE = 100;
const FINAL = ["PASSED", "FAILED", "SKIPPED", "CANCELLED"];

// ------------------------------------------------------------------------------------ helpers

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// replaceChildren() would print "null" for the parts left out
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

let svgCount = 0;
// Several SVGs share one document: give each its own ids (arrow markers...) so a hidden
// one never swallows another's references.
function adoptSvg(container, markup) {
  container.innerHTML = markup;  // drawn by our own server from escaped names
  const n = ++svgCount;
  for (const el of container.querySelectorAll("[id]")) {
    const old = el.id;
    const fresh = `${old}-v${n}`;
    el.id = fresh;
    for (const ref of container.querySelectorAll("*")) {
      for (const attr of ref.getAttributeNames()) {
        const v = ref.getAttribute(attr);
        if (v.includes(`#${old})`) || v === `#${old}`) ref.setAttribute(attr, v.split(`#${old}`).join(`#${fresh}`));
      }
    }
  }
}

// a graph wider than its card is scaled down to fit, but never below MIN_TEXT_PX of text:
// past that it keeps that size and the card scrolls
const MIN_TEXT_PX = 10;
function fitSvg(container) {
  const svg = container.querySelector("svg");
  const avail = container.clientWidth - 2;
  const width = svg ? Number(svg.getAttribute("width")) : 0;
  if (!svg || avail <= 0 || width <= avail) return;
  const text = svg.querySelector("text");
  const fontPx = (text && parseFloat(getComputedStyle(text).fontSize)) || 12;
  const floor = Math.ceil(width * MIN_TEXT_PX / fontPx);
  svg.style.width = `${Math.max(avail, floor)}px`;
  svg.style.height = "auto";
}

// Python's f"{x:.{digits}f}": an exact half goes to the even neighbour, where toFixed goes up
// (33.625 is 33.62 in Python, 33.63 in JavaScript). toFixed(60) is the exact decimal value of
// every number rounded here (none has 60 binary digits after the point).
function pyFixed(x, digits) {
  const exact = x.toFixed(60);
  const cut = exact.indexOf(".") + 1 + digits;
  if (/^50*$/.test(exact.slice(cut))) {
    const kept = exact.slice(0, digits ? cut : cut - 1);
    if (Number(kept[kept.length - 1]) % 2 === 0) return kept;
  }
  return x.toFixed(digits);
}

// theme.format_seconds, digit for digit: the UI, the CLI and the report write durations alike
function formatSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "\u2014";
  if (seconds === 0) return "0s";
  if (seconds < 0.001) return `${pyFixed(seconds * 1e6, 0)}\u00b5s`;
  if (seconds < 1) {
    const ms = seconds * 1000;
    return ms < 10 && ms !== Math.trunc(ms) ? `${pyFixed(ms, 1)}ms` : `${pyFixed(ms, 0)}ms`;
  }
  if (seconds < 60) return `${pyFixed(seconds, 2)}s`;
  const total = Number(pyFixed(seconds, 0));
  const minutes = Math.floor(total / 60);
  const secs = total % 60;
  if (minutes < 60) return `${minutes}m${String(secs).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

// a duration in a table cell: blank when there is none
function fmtDur(s) {
  if (s === null || s === undefined || Number.isNaN(s)) return "";
  return formatSeconds(s);
}

function fmtClock(epoch) {
  if (!epoch) return "";
  const d = new Date(epoch * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function pill(status, cls) {
  return h("span", { class: `pill ${cls || "s-" + status}` }, String(status).toLowerCase());
}

class ApiError extends Error {
  constructor(message, status, data) {
    super(message);
    this.status = status;
    this.data = data;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-Tdrun-Token": TOKEN } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError("cannot reach the server: is tdrun ui still running?", 0, null);
  }
  const type = res.headers.get("content-type") || "";
  const data = type.includes("application/json") ? await res.json() : { error: await res.text() };
  if (!res.ok) throw new ApiError((data && data.error) || `HTTP ${res.status}`, res.status, data);
  return data;
}

let toastTimer = null;
function toast(message, bad) {
  const el = $("toast");
  el.textContent = message;
  el.classList.toggle("bad", !!bad);
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, bad ? 6000 : 2000);
}

function showError(el, message, trace) {
  el.replaceChildren(h("p", { class: "error-message", text: message }));
  if (trace) el.append(h("pre", { class: "trace", text: trace }));
  el.hidden = false;
}

// A table that shows one page of rows at a time: big runs stay responsive.
class PagedTable {
  constructor(el, columns, opts) {
    this.el = el;
    this.columns = columns;
    this.opts = opts || {};
    this.rows = [];
    this.page = 0;
  }
  setRows(rows, keepPage) {
    this.rows = rows;
    if (!keepPage) this.page = 0;
    this.page = Math.min(this.page, Math.max(0, Math.ceil(rows.length / PAGE_SIZE) - 1));
    this.render();
  }
  render() {
    const start = this.page * PAGE_SIZE;
    const slice = this.rows.slice(start, start + PAGE_SIZE);
    const head = h("tr", {}, this.columns.map((c) => h("th", { class: c.cls || null }, c.title)));
    const body = slice.map((row) => {
      const tr = h("tr", { class: this.opts.rowClass ? this.opts.rowClass(row) : null },
        this.columns.map((c) => h("td", { class: c.cls || null }, c.render(row))));
      if (this.opts.onClick) {
        tr.classList.add("clickable");
        tr.addEventListener("click", (e) => { if (!e.target.closest("input,a,button")) this.opts.onClick(row); });
      }
      return tr;
    });
    const table = h("table", { class: "table" }, h("thead", {}, head), h("tbody", {}, body));
    if (!this.rows.length) {
      this.el.replaceChildren(table, h("p", { class: "muted", text: this.opts.empty || "nothing to show" }));
      return;
    }
    const pages = Math.ceil(this.rows.length / PAGE_SIZE);
    const pager = h("div", { class: "pager" },
      h("span", {}, `${start + 1}–${start + slice.length} of ${this.rows.length.toLocaleString()}`),
      pages > 1 ? h("span", {},
        h("button", { type: "button", disabled: this.page === 0, onclick: () => { this.page--; this.render(); } }, "‹ Prev"),
        ` page ${this.page + 1} / ${pages} `,
        h("button", { type: "button", disabled: this.page >= pages - 1, onclick: () => { this.page++; this.render(); } }, "Next ›"),
      ) : null);
    this.el.replaceChildren(table, pager);
  }
}

function insertSvg(container, payload, noteEl) {
  if (!payload || !payload.svg) {
    container.replaceChildren(h("div", { class: "note", text: (payload && payload.reason) || "no graph" }));
    if (noteEl) noteEl.textContent = "";  // never the count of the module drawn before
    return new Map();
  }
  adoptSvg(container, payload.svg);
  fitSvg(container);
  const nodes = new Map();
  for (const g of container.querySelectorAll("g.node[data-task]")) nodes.set(g.dataset.task, g);
  if (noteEl) noteEl.textContent = `${nodes.size.toLocaleString()} tasks`;
  return nodes;
}

// ------------------------------------------------------------------------------------ app state

const app = {
  module: null,        // GET /api/module
  stateRows: [],       // the editor's rows: {key, text, source, orig}
  stateDirty: false,
  live: null,          // the live run model
  source: null,        // EventSource of the live run
  runGraphFor: null,   // live id whose graph is drawn
  runGraphNodes: new Map(),
  renderQueued: false,
  historySelected: new Set(),
};

// ------------------------------------------------------------------------------------ routing

const TABS = ["tasks", "state", "run", "history", "compare"];

function route() {
  const parts = location.hash.replace(/^#/, "").split("/").filter(Boolean);
  let tab = parts[0] || "tasks";
  if (!TABS.includes(tab)) tab = "tasks";
  const section = tab === "compare" ? "history" : tab;
  for (const name of ["tasks", "state", "run", "history"]) $(`view-${name}`).hidden = name !== section;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.tab === section);
  if (tab === "history") {
    if (parts[1]) showHistoryRun(parts[1]);
    else showHistoryList();
  } else if (tab === "compare") {
    showCompare(parts[1], parts[2]);
  } else if (tab === "state") {
    renderRunState();
  } else if (tab === "run") {
    renderLive();
  }
}

// ------------------------------------------------------------------------------------ module

const taskTable = new PagedTable(null, [
  { title: "#", cls: "num", render: (t) => String(t.index) },
  { title: "Task", cls: "name", render: (t) => [t.name, t.doc ? h("div", { class: "doc" }, t.doc) : null] },
  { title: "Depends on", render: (t) => h("span", { class: "deps" }, t.after.length ? t.after.join(", ") : "—") },
  { title: "Tags", render: (t) => t.tags.map((x) => h("span", { class: "tag" }, x)) },
  { title: "Options", render: (t) => [
    t.case ? h("span", { class: "flag", title: "a case of a parametrized task" },
      Object.entries(t.case).map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ")) : null,
    t.is_async ? h("span", { class: "flag", title: "an async def: runs on the run's event loop" }, "async") : null,
    t.always ? h("span", { class: "flag", title: "runs whatever its dependencies ended as" }, "always") : null,
    t.pools && t.pools.length ? h("span", { class: "flag", title: "starts only when every one of these pools has room" },
      `pool ${t.pools.join(", ")}`) : null,
    t.retries ? h("span", { class: "flag" }, `retries ${t.retries}`) : null,
    t.timeout ? h("span", { class: "flag" }, `timeout ${t.timeout}s`) : null,
  ] },
], { empty: "no task matches the filter" });

async function loadModule(path) {
  $("load-button").disabled = true;
  try {
    const info = await api("POST", "/api/module", { path });
    app.module = info;
    forgetOtherModulesRun();
    renderModule();
    refreshRecent();
    if (!location.hash.startsWith("#tasks")) location.hash = "#tasks";
    if (info.graph_error) toast(`${info.tasks.length} tasks in ${info.module} cannot run: ${info.graph_error}`, true);
    else toast(`loaded ${info.tasks.length} tasks from ${info.module}`);
  } catch (e) {
    if (e.status === 409) { toast(e.message, true); return; }
    app.module = { module: null, load_error: { target: path, error: e.message, traceback: e.data && e.data.traceback } };
    forgetOtherModulesRun();
    renderModule();
    location.hash = "#tasks";
  } finally {
    $("load-button").disabled = false;
  }
}

// A finished run of another module is not this module's result: the Run tab starts afresh
// (the run stays in the history).
function forgetOtherModulesRun() {
  const live = app.live;
  if (!live || !isDone(live) || (app.module && app.module.target === live.target)) return;
  if (app.source) { app.source.close(); app.source = null; }
  app.live = null;
  app.runGraphFor = null;
  app.runGraphNodes = new Map();
  $("run-graph").replaceChildren();
  $("run-graph-note").textContent = "";
  $("run-error").hidden = true;
  $("run-button").disabled = false;
  $("cancel-button").disabled = true;
  updatePill();
  renderLive();
}

function renderModule() {
  const m = app.module || { module: null };
  const err = m.load_error;
  $("module-error").hidden = !err;
  if (err) {
    $("module-error-target").textContent = err.target || "";
    $("module-error-message").textContent = err.error;
    $("module-error-trace").textContent = err.traceback || "";
    $("module-error-trace").hidden = !err.traceback;
  }
  const loaded = !!m.module;
  $("module-view").hidden = !loaded;
  $("module-empty").hidden = loaded || !!err;
  if (!loaded) return;
  if (!$("module-path").value) $("module-path").value = m.target;
  $("module-name").textContent = m.target;
  const meta = [`${m.tasks.length} tasks`];
  if (m.edges !== null) meta.push(`${m.edges} dependencies`, `${m.levels} levels`);
  if (m.has_setup_state) meta.push("has setup_state()");
  $("module-meta").textContent = meta.join(" · ");
  $("graph-error").hidden = !m.graph_error;
  if (m.graph_error) showError($("graph-error"), `the tasks do not form a valid graph: ${m.graph_error}`);
  $("module-tags").replaceChildren(...m.tags.map((t) => h("option", { value: t })));
  taskTable.el = $("task-table");
  filterTasks();
  $("module-graph").replaceChildren(h("div", { class: "note", text: "drawing…" }));
  $("module-graph-note").textContent = "";
  api("GET", "/api/module/graph").then((g) => insertSvg($("module-graph"), g, $("module-graph-note")))
    .catch((e) => $("module-graph").replaceChildren(h("div", { class: "note", text: e.message })));
  if (m.default_workers) $("run-workers").value = m.default_workers;  // as tdrun would choose
  $("setup-run").hidden = !!m.graph_error;
  if (!app.live || isDone(app.live)) $("run-button").disabled = !!m.graph_error;
  if (!app.live) $("run-empty").querySelector("p").textContent = m.graph_error
    ? `${m.target} cannot run: ${m.graph_error}`
    : `${m.tasks.length} tasks loaded from ${m.target}. Choose workers and press Run.`;
}

function filterTasks() {
  if (!app.module || !app.module.tasks) return;
  const q = $("task-filter").value.trim().toLowerCase();
  const rows = q ? app.module.tasks.filter((t) => t.name.toLowerCase().includes(q) || t.tags.some((x) => x.toLowerCase().includes(q)))
    : app.module.tasks;
  taskTable.setRows(rows);
}

async function refreshRecent() {
  try {
    const { recent } = await api("GET", "/api/modules/recent");
    $("recent-modules").replaceChildren(...recent.map((r) => h("option", { value: r })));
    $("recent-list").replaceChildren(...recent.slice(0, 8).map((r) =>
      h("button", { type: "button", class: "chip", onclick: () => { $("module-path").value = r; loadModule(r); } }, r)));
  } catch (e) { /* the list is a convenience */ }
}

// ------------------------------------------------------------------------------------ state

function displayText(value) {
  if (typeof value === "string") {
    try { JSON.parse(value); return JSON.stringify(value); } catch (e) { /* plain text */ }
    return /^\s*[[{"]/.test(value) ? JSON.stringify(value) : value;
  }
  if (value && typeof value === "object" && "__not_json__" in value) return `<${value.__not_json__}>`;
  return JSON.stringify(value);
}

async function loadState() {
  const view = await api("GET", "/api/state");
  setStateView(view);
}

function setStateView(view) {
  app.stateRows = view.entries.map((e) => ({ key: e.key, text: displayText(e.value), source: e.source, orig: displayText(e.value), origKey: e.key }));
  $("state-file-name").textContent = view.file ? `using ${view.file}` : "none loaded";
  setDirty(false);
  renderStateRows();
}

function setDirty(dirty) {
  app.stateDirty = dirty;
  $("state-dirty").textContent = dirty ? "unsaved changes" : "";
}

const KEY_RE = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

function renderStateRows() {
  const body = $("state-rows");
  if (!app.stateRows.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "muted", text: "No values yet: the run starts from setup_state() alone." })));
    return;
  }
  body.replaceChildren(...app.stateRows.map((row, i) => {
    const badge = h("span", {});
    const keyInput = h("input", { value: row.key, placeholder: "key", "aria-label": "state key", spellcheck: "false" });
    const valueInput = h("input", { value: row.text, placeholder: "value", "aria-label": `value of ${row.key || "new key"}`, spellcheck: "false" });
    const showSource = () => {
      const source = row.text !== row.orig || row.key !== row.origKey ? "typed in" : row.source;
      badge.className = `source source-${source.replace(/ /g, "-")}`;
      badge.textContent = source;
    };
    keyInput.addEventListener("input", () => { row.key = keyInput.value.trim(); setDirty(true); showSource(); checkKeys(); });
    valueInput.addEventListener("input", () => { row.text = valueInput.value; setDirty(true); showSource(); });
    showSource();
    row.keyInput = keyInput;
    const fromFile = row.source === "state file" && row.orig !== null;
    return h("tr", {},
      h("td", {}, keyInput), h("td", {}, valueInput), h("td", {}, badge),
      h("td", {}, fromFile ? null : h("button", { type: "button", class: "icon", title: "remove", "aria-label": `remove ${row.key}`,
        onclick: () => { app.stateRows.splice(i, 1); setDirty(true); renderStateRows(); } }, "×")));
  }));
  checkKeys();
}

// mark bad or duplicate keys in place (re-rendering would steal the focus while typing)
function checkKeys() {
  const seen = new Set();
  for (const row of app.stateRows) {
    if (!row.keyInput) continue;
    const dup = row.key !== "" && seen.has(row.key);
    seen.add(row.key);
    const bad = row.key !== "" && (!KEY_RE.test(row.key) || dup || row.key === "results");
    row.keyInput.classList.toggle("invalid", bad);
    row.keyInput.title = dup ? "duplicate key" : bad ? "letters, digits, _ . - ; starting with a letter or _" : "";
  }
}

async function saveState() {
  const values = {};
  for (const row of app.stateRows) {
    if (!row.key) continue;
    const edited = row.text !== row.orig || row.key !== row.origKey;
    if (row.source === "typed in" || edited) values[row.key] = row.text;
  }
  $("state-error").hidden = true;
  try {
    setStateView(await api("PUT", "/api/state", { values }));
    return true;
  } catch (e) {
    $("state-error").textContent = e.message;
    $("state-error").hidden = false;
    return false;
  }
}

async function loadStateFile(body) {
  $("state-file-error").hidden = true;
  try {
    setStateView(await api("PUT", "/api/state/file", body));
    toast("state file loaded");
  } catch (e) {
    $("state-file-error").textContent = e.message;
    $("state-file-error").hidden = false;
  }
}

function renderRunState() {
  const live = app.live;
  const card = $("run-state-card");
  if (!live || !live.state) { card.hidden = true; return; }
  card.hidden = false;
  $("run-state-note").textContent = live.history_id ? `run #${live.history_id}` : "";
  $("run-state-rows").replaceChildren(...(live.state.length ? live.state.map((e) => h("tr", {},
    h("td", { class: "name" }, e.key), h("td", { class: "value" }, e.text),
    h("td", {}, h("span", { class: `source source-${e.source.replace(/ /g, "-")}` }, e.source))))
    : [h("tr", {}, h("td", { colspan: 3, class: "muted", text: "empty" }))]));
}

// ------------------------------------------------------------------------------------ runs

async function startRun() {
  $("run-error").hidden = true;
  if (app.stateDirty && !(await saveState())) {
    showError($("run-error"), `fix the state first: ${$("state-error").textContent}`);
    return;
  }
  const body = {
    workers: Number($("run-workers").value),
    tags: $("run-tags").value.trim(),
    skip_dependents: $("run-skip").checked,
    check_state: $("run-check-state").checked,
    shuffle: $("run-shuffle").checked ? ($("run-seed").value.trim() || true) : false,
    order: $("run-order").value,
    async_limit: $("run-async-limit").value.trim(),
  };
  $("run-button").disabled = true;
  try {
    const snap = await api("POST", "/api/runs", body);
    applySnapshot(snap);
    location.hash = "#run";
    connect(snap.id);
  } catch (e) {
    showError($("run-error"), e.message, e.data && e.data.traceback);
    $("run-button").disabled = false;
  }
}

async function cancelRun() {
  if (!app.live) return;
  const force = app.live.phase === "cancelling";
  try {
    await api("POST", `/api/runs/${app.live.id}/cancel`, { force });
    toast(force ? "stopping now" : "cancelling: running tasks finish, teardown still runs");
  } catch (e) {
    toast(e.message, true);
  }
}

function connect(id) {
  if (app.source) app.source.close();
  const es = new EventSource(`/api/runs/${id}/events`);
  app.source = es;
  es.addEventListener("snapshot", (e) => applySnapshot(JSON.parse(e.data)));
  es.addEventListener("batch", (e) => applyBatch(JSON.parse(e.data)));
  es.onerror = () => {
    // EventSource reconnects by itself; the next snapshot catches the page up
    if (app.live && isDone(app.live)) es.close();
  };
}

function isDone(live) { return live.phase === "finished" || live.phase === "error"; }

function runOutcome(live) {
  if (live.phase === "error") return "failed";
  if (!live.summary) return live.phase;
  return live.summary.interrupted ? "interrupted" : live.counts.FAILED ? "failed" : "passed";
}

function failedNames(live) {
  return live.tasks.map((t) => t.name).filter((n) => live.statusMap.get(n) === "FAILED");
}

function teardownNotRun(live) {
  return live.teardown_not_run || (live.summary && live.summary.teardown_not_run) || [];
}

// the state checker's findings (--check-state); nothing when the run was not checked
function stateFindings(findings, id) {
  if (!findings) return null;
  if (!findings.length) return h("div", { class: "state-findings ok", id }, "state check: no findings");
  return h("div", { class: "error-panel state-findings", id },
    h("p", { class: "error-message" }, `state check: ${findings.length} finding${findings.length === 1 ? "" : "s"}`),
    h("ul", {}, findings.map((f) => h("li", {}, h("b", {}, `${f.kind}: `), f.message))));
}

function teardownHeading(names) {
  return `teardown did not run: ${names.join(", ")} \u2014 resources they clean up may remain`;
}

function whyText(rec) {
  if (!rec) return "";
  if (rec.status === "FAILED" || rec.error) return rec.error_type ? `${rec.error_type}: ${rec.error || ""}` : (rec.error || "");
  return rec.reason || "";
}

function keepRecords(live, records) {
  for (const rec of records || []) if (rec && rec.name && rec.status !== "RETRY") live.records.set(rec.name, rec);
}

function applySnapshot(s) {
  const live = app.live && app.live.id === s.id ? app.live : { recent: [], records: new Map() };
  Object.assign(live, s);
  live.statusMap = new Map(Object.entries(s.statuses));
  live.recent = s.recent.slice().reverse();
  keepRecords(live, s.recent);
  keepRecords(live, s.failures);
  live.offset = s.server_time * 1000 - Date.now();
  app.live = live;
  if (app.runGraphFor !== s.id) loadRunGraph(s.id);
  else recolourAll();
  afterUpdate();
}

function applyBatch(b) {
  const live = app.live;
  if (!live || live.id !== b.id) return;
  for (const [status, names] of Object.entries(b.changes)) {
    for (const name of names) {
      live.statusMap.set(name, status);
      const node = app.runGraphNodes.get(name);
      if (node) node.setAttribute("data-status", status);
    }
  }
  for (const rec of b.completed) live.recent.unshift(rec);
  live.recent.length = Math.min(live.recent.length, 30);
  keepRecords(live, b.completed);
  keepRecords(live, b.new_failures);
  const keep = { changes: 1, completed: 1, new_failures: 1 };
  for (const [k, v] of Object.entries(b)) if (!(k in keep)) live[k] = v;
  live.offset = b.server_time * 1000 - Date.now();
  afterUpdate();
}

async function fillRecordsFromHistory(live) {
  if (live.recordsFilled || !live.history_id) return;
  live.recordsFilled = true;
  try {
    const run = await api("GET", `/api/history/${live.history_id}`);
    for (const t of run.tasks || []) live.records.set(t.name, t);
    if (app.live === live) renderLive();
  } catch (e) { /* the table keeps what the stream sent */ }
}

function afterUpdate() {
  const live = app.live;
  if (isDone(live) && app.source) { app.source.close(); app.source = null; }
  if (isDone(live)) fillRecordsFromHistory(live);
  $("run-button").disabled = !isDone(live);
  $("cancel-button").disabled = isDone(live);
  $("cancel-button").textContent = live.phase === "cancelling" ? "Stop now" : "Cancel";
  updatePill();
  if (!app.renderQueued) {
    app.renderQueued = true;
    requestAnimationFrame(() => { app.renderQueued = false; renderLive(); });
  }
}

function updatePill() {
  const live = app.live;
  const el = $("run-pill");
  if (!live) { el.className = "pill phase-idle"; el.textContent = "idle"; return; }
  if (isDone(live)) {
    const outcome = runOutcome(live);  // the same word as the run card, not "idle"
    el.className = `pill s-${outcome}`;
    el.textContent = outcome;
    el.title = `the last run ${outcome === "error" ? "could not start" : outcome}; no run in progress`;
  } else {
    el.className = `pill phase-${live.phase}`;
    el.textContent = `${live.phase} ${live.finished}/${live.total}`;
  }
}

async function loadRunGraph(id) {
  app.runGraphFor = id;
  app.runGraphNodes = new Map();
  $("run-graph").replaceChildren(h("div", { class: "note", text: "drawing…" }));
  try {
    const g = await api("GET", `/api/runs/${id}/graph`);
    if (app.runGraphFor !== id) return;
    app.runGraphNodes = insertSvg($("run-graph"), g, $("run-graph-note"));
    recolourAll();
  } catch (e) {
    $("run-graph").replaceChildren(h("div", { class: "note", text: e.message }));
  }
}

function recolourAll() {
  const live = app.live;
  if (!live) return;
  for (const [name, node] of app.runGraphNodes) node.setAttribute("data-status", live.statusMap.get(name) || "WAITING");
}

function nowServer() { return (Date.now() + (app.live ? app.live.offset : 0)) / 1000; }

const runTaskTable = new PagedTable(null, [
  { title: "#", cls: "num", render: (t) => String(t.index) },
  { title: "Task", cls: "name", render: (t) => t.name },
  { title: "Status", render: (t) => pill(app.live.statusMap.get(t.name) || "WAITING") },
  { title: "Thread", render: (t) => (app.live.records.get(t.name) || {}).thread || "" },
  { title: "Duration", cls: "num", render: (t) => {
    const rec = app.live.records.get(t.name);
    if (!rec || !rec.thread) return "";
    // the time a pool kept it waiting before it started
    return rec.waited_for ? h("span", {}, fmtDur(rec.duration), h("span", { class: "muted waited" },
      ` · waited ${fmtDur(rec.waited)} for ${rec.waited_for}`)) : fmtDur(rec.duration);
  } },
  { title: "Error / reason", cls: "why", render: (t) => whyText(app.live.records.get(t.name)) },
  { title: "Depends on", render: (t) => h("span", { class: "deps" }, t.after.length ? t.after.join(", ") : "—") },
], { empty: "no task has this status", rowClass: (t) => `s-${app.live.statusMap.get(t.name) || "WAITING"}` });

function renderLive() {
  const live = app.live;
  $("run-empty").hidden = !!live;
  $("run-view").hidden = !live;
  if (!live || $("view-run").hidden) { renderRunState(); return; }
  const done = isDone(live);
  const phase = $("run-phase");
  if (live.phase === "finished" && live.summary) {
    // a finished run says how it ended, in the history's words and colours
    const outcome = runOutcome(live);
    phase.className = `pill s-${outcome}`;
    phase.textContent = outcome;
  } else {
    phase.className = `pill phase-${live.phase}`;
    phase.textContent = live.phase;
  }
  $("run-title").textContent = `${live.target} · ${live.workers} workers${live.tags.length ? " · tags " + live.tags.join(",") : ""}`;
  const pct = live.total ? Math.floor((live.finished / live.total) * 100) : 100;
  const share = (n) => `${live.total ? (n / live.total) * 100 : 0}%`;
  put($("progress-bar"), ...["PASSED", "FAILED", "SKIPPED", "CANCELLED"].map((st) =>
    h("div", { class: `seg s-${st}`, style: `width:${share(live.counts[st])}` })),
    h("div", { class: "seg s-RUNNING", style: `width:${share(live.running)}` }));
  $("progress-text").textContent = `${pct}% · ${live.finished.toLocaleString()} / ${live.total.toLocaleString()} tasks`;
  const waiting = Math.max(0, live.total - live.finished - live.running);
  const counters = [["PASSED", live.counts.PASSED], ["FAILED", live.counts.FAILED], ["SKIPPED", live.counts.SKIPPED],
    ["CANCELLED", live.counts.CANCELLED], ["RUNNING", live.running], ["WAITING", waiting]];
  $("counters").replaceChildren(...counters.map(([s, n]) =>
    h("div", { class: `counter s-${s}`, dataset: { status: s } }, h("span", { class: "dot" }), h("b", {}, n.toLocaleString()), h("span", {}, s.toLowerCase()))));
  // tasks waiting for each pool (a pool caps how many of its tasks run at once, or start per period)
  const pools = Object.entries(live.pool_waiting || {});
  $("pool-waiting").hidden = !pools.length || done;
  put($("pool-waiting"), "waiting for pools: ", ...pools.map(([name, n]) =>
    h("span", { class: `pool${n ? " busy" : ""}`, dataset: { pool: name } }, `${name} `, h("b", {}, String(n)))));
  const sum = $("run-summary");
  if (done) {
    sum.hidden = false;
    const interrupted = !!(live.summary && live.summary.interrupted);
    const findings = (live.summary && live.summary.state_findings) || [];
    sum.classList.toggle("bad", live.phase === "error" || !!live.counts.FAILED || findings.length > 0);
    sum.classList.toggle("warn", interrupted && !live.counts.FAILED);
    const parts = [live.error || (live.summary ? live.summary.text : "finished")];
    if (interrupted) parts.push("· the run was cancelled");
    const ordered = live.summary && orderText(live.summary.order);
    if (ordered) parts.push(`· ${ordered}`);
    const failed = failedNames(live);
    const leftBehind = teardownNotRun(live);
    put(sum, h("b", {}, parts.join(" ")), " ",
      live.history_id ? h("a", { href: `#history/${live.history_id}` }, `open run #${live.history_id} in the history →`) : null,
      live.history_error ? h("span", { class: "muted" }, ` ${live.history_error}`) : null,
      failed.length ? h("span", { class: "failed-names" },
        `failed: ${failed.slice(0, 10).join(", ")}${failed.length > 10 ? ` and ${failed.length - 10} more` : ""}`) : null,
      leftBehind.length ? h("span", { class: "teardown-not-run" }, teardownHeading(leftBehind)) : null,
      stateFindings(live.summary && live.summary.state_findings, "run-state-findings"));
  } else {
    sum.hidden = true;
  }
  renderFailures();
  renderLanes();
  renderRecent();
  runTaskTable.el = $("run-task-table");
  const want = $("run-task-status").value;
  const rows = want ? live.tasks.filter((t) => (live.statusMap.get(t.name) || "WAITING") === want) : live.tasks;
  runTaskTable.setRows(rows, true);
  tick();
}

// an idle lane names the task it finished last, as the terminal's live view does
function idleLane(live, thread) {
  const last = live.lane_last && live.lane_last[thread];
  const state = isDone(live) ? "done" : "idle";
  if (!last) return h("span", { class: "task idle" }, state);
  return h("span", { class: "task idle", title: `${last.task}: ${String(last.status).toLowerCase()}` },
    `${state} · last `, h("span", { class: `last s-${last.status}` }, last.task),
    ` ${String(last.status).toLowerCase()}`);
}

function renderLanes() {
  const live = app.live;
  const byThread = new Map(live.lanes.map((l) => [l.thread, l]));
  const names = [];
  // the worker lanes the run started, as the run view names them (a run of coroutines only
  // starts none; an executor names its own)
  if (live.lane_names) names.push(...live.lane_names);
  else for (let i = 0; i < live.lanes_count; i++) names.push(`thread_${i}`);
  const laneCount = names.length;
  for (const l of live.lanes) if (!names.includes(l.thread)) names.push(l.thread);
  const loop = live.loop;  // async tasks: the event loop thread, a lane group of its own
  const hasLoop = loop && (loop.running || (live.lane_last && live.lane_last[loop.thread]));
  $("lanes-note").textContent = `${laneCount} threads${hasLoop ? " + event loop" : ""}`;
  const rows = names.map((t) => {
    const lane = byThread.get(t);
    return h("div", { class: `lane${lane ? " busy" : ""}`, dataset: { thread: t } },
      h("span", { class: "thread" }, t),
      lane ? h("span", { class: "task", title: lane.task }, lane.task) : idleLane(live, t),
      h("span", { class: "elapsed", dataset: { since: lane ? lane.since : "" } }, ""));
  });
  if (hasLoop) {
    const names = loop.tasks.map((c) => c.task);
    const text = `${loop.running} coroutine${loop.running === 1 ? "" : "s"}: ${names.join(", ")}`;
    rows.push(h("div", { class: `lane loop${loop.running ? " busy" : ""}`, dataset: { thread: loop.thread } },
      h("span", { class: "thread" }, loop.thread),
      loop.running ? h("span", { class: "task", title: names.join("\n") }, text) : idleLane(live, loop.thread),
      h("span", { class: "elapsed", dataset: { since: loop.running ? loop.tasks[0].since : "" } }, "")));
  }
  for (const w of live.warnings || []) {
    rows.push(h("div", { class: "lane-warning" }, `warning: ${w.task}: ${w.warning}`));
  }
  $("lanes").replaceChildren(...rows);
}

// every failure so far, under the progress card: completions scroll on, failures stay
function renderFailures() {
  const live = app.live;
  const names = failedNames(live);
  $("run-failures").hidden = !names.length;
  if (!names.length) return;
  $("run-failures-title").textContent = `Failures (${names.length})`;
  put($("run-failures-list"), names.slice(0, 50).map((name) => {
    const rec = live.records.get(name);
    return h("li", { class: "s-FAILED", dataset: { task: name } },
      h("span", { class: "name" }, name),
      h("span", { class: "why" }, whyText(rec) || "failed"),
      h("span", { class: "meta" }, rec && rec.thread ? `${rec.thread} · ${fmtDur(rec.duration)}` : ""));
  }), names.length > 50 ? h("li", { class: "muted" }, `and ${names.length - 50} more: see the Tasks table`) : null);
}

function renderRecent() {
  const live = app.live;
  $("recent").replaceChildren(...live.recent.map((r) => h("li", { class: `s-${r.status}` },
    h("span", { class: "dot" }),
    h("span", { class: "body" }, h("span", { class: "name" }, r.name),
      r.status !== "PASSED" ? h("span", { class: "why" },
        r.status === "FAILED" ? `${r.error_type}: ${r.error}` : (r.reason || r.status.toLowerCase())) : null),
    h("span", { class: "meta" }, r.thread ? `${r.thread} · ${fmtDur(r.duration)}` : r.status.toLowerCase()))));
  if (!live.recent.length) $("recent").replaceChildren(h("li", { class: "muted" }, "nothing finished yet"));
}

function tick() {
  const live = app.live;
  if (!live) return;
  const now = nowServer();
  const end = live.finished_at || (isDone(live) ? now : null);
  const started = live.started_at;
  $("run-elapsed").textContent = started ? `elapsed ${fmtDur((end || now) - started)}` : "starting…";
  for (const el of document.querySelectorAll("#lanes .elapsed")) {
    const since = Number(el.dataset.since);
    el.textContent = since ? fmtDur(Math.max(0, now - since)) : "";
  }
}

setInterval(() => { if (app.live && !isDone(app.live) && !$("view-run").hidden) tick(); }, 200);

// ------------------------------------------------------------------------------------ history

const historyTable = new PagedTable(null, [
  { title: "", render: (r) => {
    const box = h("input", { type: "checkbox", "aria-label": `select run ${r.id}` });
    box.checked = app.historySelected.has(r.id);
    box.addEventListener("change", () => {
      if (box.checked) app.historySelected.add(r.id); else app.historySelected.delete(r.id);
      if (app.historySelected.size > 2) { app.historySelected.delete([...app.historySelected][0]); historyTable.render(); }
      updateCompareButton();
    });
    return box;
  } },
  { title: "Run", cls: "num", render: (r) => h("span", {}, h("a", { href: `#history/${r.id}` }, `#${r.id}`),
    r.replay_of != null ? h("a", { class: "replay-of muted", href: `#history/${r.replay_of}`, title: `a replay of run ${r.replay_of}` },
      ` ↻ #${r.replay_of}`) : null) },
  { title: "Started", render: (r) => fmtClock(r.started_at) },
  { title: "Module", cls: "name", render: (r) => r.target || r.module },
  { title: "Status", render: (r) => pill(r.status) },
  { title: "Passed", cls: "num", render: (r) => String(r.passed) },
  { title: "Failed", cls: "num", render: (r) => String(r.failed) },
  { title: "Skipped", cls: "num", render: (r) => String(r.skipped) },
  { title: "Cancelled", cls: "num", render: (r) => String(r.cancelled) },
  { title: "Duration", cls: "num", render: (r) => fmtDur(r.duration) },
  { title: "Workers", cls: "num", render: (r) => String(r.workers ?? "") },
  { title: "What differed", cls: "differs", render: (r) => r.differs_text
    ? h("span", { title: "state values, tags and workers that vary between the runs of this module" }, r.differs_text)
    : h("span", { class: "muted" }, "") },
], { empty: "no runs recorded yet (or none match the filters)", onClick: (r) => { location.hash = `#history/${r.id}`; } });

function updateCompareButton() {
  const n = app.historySelected.size;
  $("compare-button").disabled = n !== 2;
  $("compare-button").textContent = n === 2 ? "Compare 2 runs" : `Compare selected (${n}/2)`;
}

async function showHistoryList() {
  $("history-list-view").hidden = false;
  $("history-detail").hidden = true;
  $("compare-view").hidden = true;
  $("history-error").hidden = true;
  historyTable.el = $("history-table");
  const q = new URLSearchParams();
  if ($("history-module").value) q.set("module", $("history-module").value);
  if ($("history-status").value) q.set("status", $("history-status").value);
  try {
    const data = await api("GET", `/api/history?${q}`);
    const select = $("history-module");
    const chosen = select.value;
    select.replaceChildren(h("option", { value: "" }, "all modules"), ...data.modules.map((m) => h("option", { value: m }, m)));
    select.value = chosen;
    $("history-path").textContent = data.history;
    historyTable.setRows(data.runs);
    updateCompareButton();
  } catch (e) {
    showError($("history-error"), e.message);
    historyTable.setRows([]);
  }
}

function statusCounters(counts) {
  return h("div", { class: "counters" }, counts.map(([s, n]) =>
    h("div", { class: `counter s-${s}` }, h("span", { class: "dot" }), h("b", {}, String(n ?? 0)), h("span", {}, s.toLowerCase()))));
}

// the start order as tdrun show names it (theme.order_text); "" for the declared order
function orderText(o) {
  if (!o || typeof o !== "object") return "";
  if (o.order === "shuffle") return `shuffled, seed ${o.seed} (repeat: --shuffle=${o.seed})`;
  if (o.order === "critical-path") return "critical-path order";
  if (o.order === "replay") return (o.replay_of != null ? `replay of run ${o.replay_of}` : "replay") + (o.serial ? ", serial" : "");
  return "";
}

function boundText(b) {
  if (!b || typeof b.lower_bound !== "number") return "";
  return `${fmtDur(b.lower_bound)} (critical path ${fmtDur(b.critical_path)}; work ${fmtDur(b.total_work)} / ${b.workers} workers)`;
}

// links between a replay and the run it replays, both ways
function replayLinks(run) {
  const parts = [];
  if (run.replay_of != null) parts.push("a replay of ", h("a", { href: `#history/${run.replay_of}` }, `run #${run.replay_of}`));
  if ((run.replays || []).length) {
    if (parts.length) parts.push(" · ");
    parts.push("replayed by ");
    run.replays.forEach((id, i) => parts.push(i ? ", " : "", h("a", { href: `#history/${id}` }, `run #${id}`)));
  }
  return parts.length ? h("p", { class: "replay-links", id: "history-replay-links" }, ...parts) : null;
}

function metaGrid(pairs) {
  return h("div", { class: "meta-grid" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => h("div", {}, h("span", {}, k), h("b", {}, String(v)))));
}

async function showHistoryRun(id) {
  $("history-list-view").hidden = true;
  $("compare-view").hidden = true;
  const el = $("history-detail");
  el.hidden = false;
  el.replaceChildren(h("p", { class: "muted" }, "loading…"));
  let run;
  try {
    run = await api("GET", `/api/history/${encodeURIComponent(id)}`);
  } catch (e) {
    el.replaceChildren(h("a", { href: "#history" }, "← all runs"), h("div", { class: "error-panel" }, h("p", { class: "error-message" }, e.message)));
    return;
  }
  const tasks = run.tasks || [];
  const failed = tasks.filter((t) => t.status === "FAILED");
  const notRun = tasks.filter((t) => t.status === "SKIPPED" || t.status === "CANCELLED");
  const graphBox = h("div", { class: "graph" });
  const counts = [["PASSED", run.passed], ["FAILED", run.failed], ["SKIPPED", run.skipped], ["CANCELLED", run.cancelled]];
  put(el,
    h("div", { class: "detail-head" },
      h("a", { href: "#history" }, "← all runs"),
      h("h2", {}, `Run #${run.id}`), pill(run.status),
      h("span", { class: "run-title" }, run.target || run.module),
      h("span", { class: "spacer" }),
      h("a", { class: "button", href: `/api/history/${run.id}/report`, target: "_blank" }, "HTML report"),
      h("a", { class: "button", href: `/api/history/${run.id}/trace`, download: `tdrun-trace-${run.id}.json`,
        title: "a Chrome Trace Event file: open it in Perfetto or chrome://tracing" }, "Trace (JSON)")),
    h("div", { class: "card" },
      metaGrid([["Started", fmtClock(run.started_at)], ["Finished", fmtClock(run.finished_at)], ["Duration", fmtDur(run.duration)],
        ["Workers", run.workers], ["Host", run.host], ["Tags", (run.tags || []).join(", ")], ["Tasks", run.total],
        ["Command", (run.argv || []).join(" ")], ["Start order", orderText(run.ordering)],
        ["Lower bound", boundText(run.lower_bound)]]),
      replayLinks(run),
      statusCounters(counts)),
    Object.keys(run.pools || {}).length ? h("div", { class: "card", id: "history-pools" },
      h("div", { class: "card-head" }, h("h3", {}, "Pools"), h("span", { class: "muted" }, "how long tasks waited for each")),
      h("table", { class: "table" }, h("thead", {}, h("tr", {}, ...["Pool", "Size", "Rate", "Tasks that waited", "Longest wait", "All waits"].map((t) => h("th", {}, t)))),
        h("tbody", {}, Object.entries(run.pools).map(([name, p]) => h("tr", { dataset: { pool: name } },
          h("td", { class: "name" }, name), h("td", { class: "num" }, p.size == null ? "—" : String(p.size)),
          h("td", {}, p.rate || "—"), h("td", { class: "num" }, String(p.waited || 0)),
          h("td", { class: "num" }, p.waited ? fmtDur(p.longest) : "—"), h("td", { class: "num" }, p.waited ? fmtDur(p.total) : "—")))))) : null,
    // failures first: the reason to open a run, and not below the fold
    failed.length ? h("div", { class: "card", id: "failures" }, h("div", { class: "card-head" }, h("h3", {}, `Failures (${failed.length})`)),
      failed.map((t) => h("div", { class: "failure" },
        h("h4", {}, t.name, h("span", { class: "muted" }, `  ${t.thread || ""} · attempt ${t.attempts} · ${fmtDur(t.duration)}`)),
        h("p", { class: "error-message" }, `${t.error_type}: ${t.error}`),
        t.traceback ? h("pre", { class: "trace", text: t.traceback }) : null,
        t.output ? h("details", {}, h("summary", {}, "captured output"), h("pre", { class: "trace output", text: t.output })) : null,
        earlierAttempts(t)))) : null,
    (run.teardown_not_run || []).length ? h("div", { class: "error-panel", id: "history-teardown-not-run" },
      h("p", { class: "error-message" }, teardownHeading(run.teardown_not_run))) : null,
    stateFindings(run.state_findings, "history-state-findings"),
    h("div", { class: "card", id: "history-state" }, h("div", { class: "card-head" }, h("h3", {}, "Initial state"),
      h("span", { class: "muted" }, "as recorded: secrets redacted")),
      Object.keys(run.state || {}).length
        ? h("table", { class: "table" }, h("tbody", {}, Object.entries(run.state).map(([k, v]) =>
          h("tr", {}, h("td", { class: "name" }, k), h("td", { class: "value mono" }, displayText(v))))))
        : h("p", { class: "muted" }, "no initial state")),
    h("div", { class: "card" }, h("div", { class: "card-head" }, h("h3", {}, "Timeline")),
      run.timeline_svg ? (() => { const d = h("div", { class: "timeline" }); adoptSvg(d, run.timeline_svg); return d; })()
        : h("p", { class: "muted" }, "no task ran")),
    h("div", { class: "card" }, h("div", { class: "card-head" }, h("h3", {}, "Graph")), graphBox),
    notRun.length ? h("div", { class: "card" }, h("div", { class: "card-head" }, h("h3", {}, `Skipped and cancelled (${notRun.length})`)),
      h("table", { class: "table" }, h("tbody", {}, notRun.slice(0, 500).map((t) =>
        h("tr", {}, h("td", { class: "name" }, t.name), h("td", {}, pill(t.status)), h("td", { class: "deps" }, t.reason || "")))))) : null,
    (() => {
      const box = h("div", {});
      new PagedTable(box, [
        { title: "Task", cls: "name", render: (t) => t.name },
        { title: "Status", render: (t) => pill(t.status) },
        { title: "Thread", render: (t) => t.thread || "" },
        { title: "Attempts", cls: "num", render: (t) => (t.earlier_attempts || []).length && t.status !== "FAILED"
          ? h("div", {}, String(t.attempts ?? ""), earlierAttempts(t)) : String(t.attempts ?? "") },
        { title: "Duration", cls: "num", render: (t) => t.thread ? fmtDur(t.duration) : "" },
        ...(tasks.some((t) => t.waited_for) ? [{ title: "Waited for pool", cls: "num",
          render: (t) => t.waited_for ? `${fmtDur(t.waited)} ${t.waited_for}` : "" }] : []),
        { title: "Output", render: (t) => t.output ? h("details", {}, h("summary", {}, `${t.output.length} chars`), h("pre", { class: "trace output", text: t.output })) : "" },
      ]).setRows(tasks);
      return h("div", { class: "card" }, h("div", { class: "card-head" }, h("h3", {}, "All tasks")), box);
    })(),
  );
  insertSvg(graphBox, run.graph_view);
}

// a retried task's failed attempts before its last, each with its error and traceback
function earlierAttempts(t) {
  const tries = t.earlier_attempts || [];
  if (!tries.length) return null;
  return h("div", { class: "earlier-attempts" }, tries.map((a) => h("details", { class: "attempt" },
    h("summary", {}, `attempt ${a.attempt} `, pill(a.status), ` ${a.thread || ""} · ${fmtDur(a.duration)} · ${a.error_type || "error"}: ${a.error || ""}`),
    a.traceback ? h("pre", { class: "trace", text: a.traceback }) : null)));
}

async function showCompare(a, b) {
  $("history-list-view").hidden = true;
  $("history-detail").hidden = true;
  const el = $("compare-view");
  el.hidden = false;
  el.replaceChildren(h("p", { class: "muted" }, "loading…"));
  let data;
  try {
    data = await api("GET", `/api/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  } catch (e) {
    el.replaceChildren(h("a", { href: "#history" }, "← all runs"), h("div", { class: "error-panel" }, h("p", { class: "error-message" }, e.message)));
    return;
  }
  const side = (r, label) => h("div", { class: "card" },
    h("div", { class: "card-head" }, h("h3", {}, h("a", { href: `#history/${r.id}` }, `${label}: run #${r.id}`)), pill(r.status)),
    h("div", { class: "run-title" }, r.target || r.module),
    h("div", { class: "muted stats" }, `started ${fmtClock(r.started_at)} · ${fmtDur(r.duration)} · ${r.workers ?? "?"} workers`),
    statusCounters([["PASSED", r.passed], ["FAILED", r.failed], ["SKIPPED", r.skipped], ["CANCELLED", r.cancelled]]));
  const onlyChanges = h("input", { type: "checkbox", id: "compare-only" });
  const changed = data.tasks.filter((t) => t.change !== "same");
  onlyChanges.checked = changed.length > 0;
  const box = h("div", {});
  const table = new PagedTable(box, [
    { title: "Task", cls: "name", render: (t) => t.name },
    { title: `Run #${data.a.id}`, render: (t) => t.status_a ? pill(t.status_a) : "—" },
    { title: `Run #${data.b.id}`, render: (t) => t.status_b ? pill(t.status_b) : "—" },
    { title: "Change", render: (t) => h("span", { class: `change-${t.change}` }, t.change === "same" ? "" : t.change) },
    { title: "Duration A", cls: "num", render: (t) => fmtDur(t.duration_a) },
    { title: "Duration B", cls: "num", render: (t) => fmtDur(t.duration_b) },
    { title: "Δ", cls: "num", render: (t) => t.delta === null ? "" : `${t.delta >= 0 ? "+" : "−"}${fmtDur(Math.abs(t.delta))}` },
    { title: "Error / reason in B", render: (t) => h("span", { class: "deps" }, t.error_b || "") },
  ], { empty: "no differences" });
  const refresh = () => table.setRows(onlyChanges.checked ? changed : data.tasks);
  onlyChanges.addEventListener("change", refresh);
  const c = data.changes;
  put(el,
    h("div", { class: "detail-head" }, h("a", { href: "#history" }, "← all runs"), h("h2", {}, `Compare run #${data.a.id} with run #${data.b.id}`)),
    h("div", { class: "compare-head" }, side(data.a, "A"), side(data.b, "B")),
    h("div", { class: "card" },
      h("div", { class: "card-head" },
        h("h3", {}, `${c.broken} broken · ${c.fixed} fixed · ${c.changed} changed · ${c.added} added · ${c.removed} removed · ${c.same} the same`),
        h("label", { class: "check" }, onlyChanges, " only differences")),
      box));
  refresh();
}

// ------------------------------------------------------------------------------------ start-up

function wire() {
  $("load-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const path = $("module-path").value.trim();
    if (path) loadModule(path);
  });
  $("task-filter").addEventListener("input", filterTasks);
  $("state-add").addEventListener("click", () => {
    app.stateRows.push({ key: "", text: "", source: "typed in", orig: null, origKey: null });
    setDirty(true);
    renderStateRows();
    const inputs = $("state-rows").querySelectorAll("input");
    if (inputs.length >= 2) inputs[inputs.length - 2].focus();
  });
  $("state-save").addEventListener("click", async () => { if (await saveState()) toast("state saved"); });
  $("state-upload").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    await loadStateFile({ name: file.name, content: await file.text() });
    e.target.value = "";
  });
  $("state-path-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const path = $("state-path").value.trim();
    if (path) loadStateFile({ path });
  });
  $("state-file-clear").addEventListener("click", async () => {
    try { setStateView(await api("DELETE", "/api/state/file")); } catch (e) { toast(e.message, true); }
  });
  $("run-form").addEventListener("submit", (e) => { e.preventDefault(); startRun(); });
  $("cancel-button").addEventListener("click", cancelRun);
  $("run-task-status").addEventListener("change", () => renderLive());
  $("history-module").addEventListener("change", showHistoryList);
  $("history-status").addEventListener("change", showHistoryList);
  $("compare-button").addEventListener("click", () => {
    const [x, y] = [...app.historySelected].sort((p, q) => p - q);
    location.hash = `#compare/${x}/${y}`;
  });
  window.addEventListener("hashchange", route);
}

async function init() {
  wire();
  try {
    const [info, module] = await Promise.all([api("GET", "/api/info"), api("GET", "/api/module")]);
    app.module = module;
    renderModule();
    if (module.module) $("module-path").value = module.target;
    else if (module.load_error) $("module-path").value = module.load_error.target || "";
    await loadState();
    refreshRecent();
    const runId = info.current_run || info.last_run;
    if (runId) connect(runId);
  } catch (e) {
    toast(e.message, true);
  }
  route();
  document.body.dataset.ready = "1";
}

init();
