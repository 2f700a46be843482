// Interlock dashboard: shared helpers and the router. Pages live in overview.js and task.js.
// The page runs under a strict Content-Security-Policy: no inline handlers or style attributes;
// markup is built from escaped strings and sizes are set through element.style from here.
"use strict";

const Interlock = (() => {
  const app = document.getElementById("app");
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "your time zone";
  const pages = {};
  let cleanup = null;
  let me = {operator: false, scopes: [], filters: {workflows: [], tenants: [], states: []}};

  const entities = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
  const esc = value => String(value ?? "").replace(/[&<>"']/g, c => entities[c]);

  class ApiError extends Error {
    constructor(status, title, description) {
      super(description ? `${title}: ${description}` : title);
      this.status = status;
    }
  }

  async function request(method, path, body) {
    const headers = {accept: "application/json"};
    if (method !== "GET") headers["x-csrf-token"] = csrf;  // signed in by cookie: unsafe requests carry it
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      throw new ApiError(response.status, (data && data.title) || `${response.status} ${response.statusText}`,
                         data && data.description);
    }
    return data;
  }
  const getJSON = path => request("GET", path);

  let noticeTimer = null;
  function notice(message, isError = false) {
    const box = document.getElementById("notice");
    box.textContent = message;
    box.classList.toggle("error", isError);
    box.classList.remove("hidden");
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => box.classList.add("hidden"), isError ? 9000 : 5000);
  }

  // -- times and numbers ----------------------------------------------------------------------
  const exactFormat = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "medium"});
  function exact(iso) { return iso ? `${exactFormat.format(new Date(iso))} (${zone})` : ""; }
  function ago(iso, now = Date.now()) {
    if (!iso) return "";
    const seconds = (now - new Date(iso).getTime()) / 1000;
    const future = seconds < 0, s = Math.abs(seconds);
    let text;
    if (s < 1.5) return "just now";
    else if (s < 90) text = `${Math.round(s)} s`;
    else if (s < 5400) text = `${Math.round(s / 60)} min`;
    else if (s < 129600) text = `${Math.round(s / 3600)} h`;
    else text = `${Math.round(s / 86400)} d`;
    return future ? `in ${text}` : `${text} ago`;
  }
  // A relative time that stays current: "12 s ago", the exact local time on hover.
  const when = iso => iso ? `<time class="rel" datetime="${esc(iso)}" title="${esc(exact(iso))}">${esc(ago(iso))}</time>` : "";
  setInterval(() => {
    const now = Date.now();
    for (const node of document.querySelectorAll("time.rel")) node.textContent = ago(node.getAttribute("datetime"), now);
  }, 1000);

  function duration(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
    const s = Math.max(0, seconds);
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} m ${String(Math.round(s % 60)).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.round((s % 3600) / 60)).padStart(2, "0")} m`;
  }
  const between = (a, b) => a && b ? (new Date(b) - new Date(a)) / 1000 : null;
  const number = n => (n ?? 0).toLocaleString();
  function dollars(value) {
    if (value === null || value === undefined) return "—";
    if (value === 0) return "$0";
    return value < 0.01 ? `$${value.toFixed(5)}` : `$${value.toFixed(value < 10 ? 3 : 2)}`;
  }

  // -- pieces of markup -----------------------------------------------------------------------
  const badge = state => `<span class="badge ${esc(state)}">${esc(state)}</span>`;
  function progress(task, wide = false) {
    const p = Math.max(0, Math.min(100, task.progress || 0));
    return `<span class="track ${wide ? "wide" : ""} ${esc(task.state)}" title="${p}%"><span class="bar" data-progress="${p}"></span></span>`;
  }
  // The policy refuses style attributes in markup: progress bars get their width here.
  new MutationObserver(() => {
    for (const bar of document.querySelectorAll(".bar[data-progress]")) bar.style.width = `${bar.dataset.progress}%`;
  }).observe(app, {childList: true, subtree: true});

  // JSON, pretty-printed and foldable: objects and arrays are <details>, open near the top.
  function json(value, depth = 0, key = null) {
    const label = key === null ? "" : `<span class="k">${esc(JSON.stringify(key))}</span>: `;
    if (value === null || typeof value !== "object") {
      const kind = value === null ? "z" : typeof value === "string" ? "s" : typeof value === "number" ? "n" : "b";
      return `<div>${label}<span class="${kind}">${esc(JSON.stringify(value))}</span></div>`;
    }
    const array = Array.isArray(value);
    const entries = array ? value.map((v, i) => [i, v]) : Object.entries(value);
    if (!entries.length) return `<div>${label}${array ? "[]" : "{}"}</div>`;
    const inner = entries.map(([k, v]) => json(v, depth + 1, array ? null : k)).join("");
    const count = `<span class="count">${array ? `[${entries.length}]` : `{${entries.length}}`}</span>`;
    return `<details ${depth < 2 ? "open" : ""}><summary>${label}${count}</summary>${inner}</details>`;
  }
  const jsonBlock = value => `<div class="json">${json(value)}</div>`;

  // -- routing --------------------------------------------------------------------------------
  function route() {
    if (cleanup) cleanup();
    cleanup = null;
    const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
    const params = new URLSearchParams(query || "");
    let page = pages.overview, arg = null, nav = "overview";
    if (path.startsWith("task/")) { page = pages.task; arg = decodeURIComponent(path.slice(5)); nav = ""; }
    else if (path === "workers") { page = pages.workers; nav = "workers"; }
    else if (path === "dead-letters") { page = pages.deadLetters; nav = "dead-letters"; }
    for (const link of document.querySelectorAll("header nav a")) link.classList.toggle("active", link.dataset.nav === nav);
    app.innerHTML = "";
    window.scrollTo(0, 0);
    Promise.resolve(page(app, arg, params)).then(stop => { cleanup = stop || null; }).catch(error => {
      app.insertAdjacentHTML("afterbegin", `<section class="card error-text">${esc(error.message)}</section>`);
    });
  }

  async function start() {
    document.getElementById("time-zone").textContent = zone;
    if (csrf) document.getElementById("sign-out").classList.remove("hidden");
    try {
      me = await getJSON("/dashboard/api/overview?filters=true");
    } catch (error) {
      notice(error.message, true);
    }
    for (const node of document.querySelectorAll(".operator-only")) node.classList.toggle("hidden", !me.operator);
    document.getElementById("broker-ui").innerHTML = me.broker_ui
      ? `<a href="${esc(me.broker_ui)}" target="_blank" rel="noopener">RabbitMQ ↗</a>` : "";
    window.addEventListener("hashchange", route);
    route();
  }

  return {
    pages, esc, request, getJSON, notice, when, ago, exact, duration, between, number, dollars, badge, progress,
    jsonBlock, start, zone, ApiError,
    get me() { return me; },
    set me(value) { me = {...value, filters: value.filters || me.filters}; },
    can: scope => me.scopes.includes("admin") || me.scopes.includes(scope),
    terminal: state => ["SUCCESS", "FAILURE", "CANCELLED"].includes(state),
  };
})();
