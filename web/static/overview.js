// The overview (charts, the task list, queues, events), the workers and the dead letters.
"use strict";

(() => {
  const I = Interlock;
  const {esc, when, duration, between, number, dollars, badge, progress} = I;
  const RANGES = [["15m", 900], ["1h", 3600], ["6h", 21600], ["24h", 86400], ["7d", 604800]];
  const COLORS = {blue: "#2f6fed", green: "#16a34a", red: "#dc2626", grey: "#98a2b3", amber: "#d97706",
                  violet: "#7c3aed", teal: "#0d9488", sky: "#7aa7ff", navy: "#1e3a8a"};
  const SERIES = ["#2f6fed", "#0d9488", "#7c3aed", "#d97706", "#db2777", "#0891b2", "#65a30d", "#9333ea"];

  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', sans-serif";
  Chart.defaults.font.size = 11;
  Chart.defaults.color = "#6b7385";
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 10;

  // Two clicks to do something that cannot be undone: the first arms the button for a few seconds.
  function armed(button, label, action) {
    const original = button.textContent;
    let timer = null;
    button.addEventListener("click", () => {
      if (!button.classList.contains("solid")) {
        button.classList.add("solid");
        button.textContent = label;
        timer = setTimeout(() => { button.classList.remove("solid"); button.textContent = original; }, 4000);
        return;
      }
      clearTimeout(timer);
      button.classList.remove("solid");
      button.textContent = original;
      action();
    });
  }
  I.armed = armed;

  // "per minute", "per 5 minutes", "per hour": how long one bar of a chart is.
  function per(step) {
    const unit = step % 86400 === 0 ? [86400, "day"] : step % 3600 === 0 ? [3600, "hour"] : [60, "minute"];
    const n = step / unit[0];
    return n === 1 ? `per ${unit[1]}` : `per ${n} ${unit[1]}s`;
  }

  function slotLabel(t, step, span) {
    const d = new Date(t * 1000);
    const time = d.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"});
    return span > 86400 || step >= 86400 ? `${d.toLocaleDateString(undefined, {month: "short", day: "numeric"})} ${time}` : time;
  }

  // -- the overview ---------------------------------------------------------------------------
  I.pages.overview = async (app, _arg, params) => {
    const operator = I.me.operator;
    const state = {
      range: Number(params.get("range")) || 3600, since: params.get("since"), until: params.get("until"),
      filters: {state: params.get("state") || "", workflow: params.get("workflow") || "", tenant: params.get("tenant") || "",
                q: params.get("q") || "", children: params.get("children") === "1"},
      cursors: [null],
    };
    app.innerHTML = `
      <div class="tiles" id="tiles"></div>
      <section class="card" id="activity">
        <div class="card-head"><h2>Activity</h2><span class="muted" id="range-text"></span><span class="spacer"></span>
          <div class="segmented" id="ranges">${RANGES.map(([name, s]) => `<button type="button" data-range="${s}">${name}</button>`).join("")}</div>
          <input type="datetime-local" id="since" aria-label="from"> <span class="muted">to</span>
          <input type="datetime-local" id="until" aria-label="until"> <button type="button" id="apply-range">Show</button>
        </div>
        <div class="grid2">
          ${chartCard("throughput", "Tasks per minute", "submitted, and how they ended")}
          ${chartCard("durations", "Duration by workflow", "submitted → ended, p50 / p95 / p99")}
          ${chartCard("queues", "Queue depth", operator ? "messages waiting, per queue" : "for operators only")}
          ${chartCard("tokens", "Tokens and cost", "")}
        </div>
      </section>
      <section class="card" id="tasks-card">
        <div class="card-head"><h2>Tasks</h2><span class="spacer"></span>
          ${I.can("submit") ? `<form class="inline" id="submit"><input type="text" id="query" placeholder="Ask the agent something" required size="40">
            <button type="submit" class="primary">Run</button></form>` : ""}
        </div>
        <form class="filters" id="filters">
          <select id="f-state" aria-label="state"><option value="">All states</option>
            ${I.me.filters.states.map(s => `<option>${esc(s)}</option>`).join("")}</select>
          <select id="f-workflow" aria-label="workflow"><option value="">All workflows</option>
            ${I.me.filters.workflows.map(w => `<option>${esc(w)}</option>`).join("")}</select>
          ${operator ? `<select id="f-tenant" aria-label="tenant"><option value="">All tenants</option>
            ${I.me.filters.tenants.map(t => `<option>${esc(t)}</option>`).join("")}</select>` : ""}
          <input type="search" id="f-q" placeholder="Search the query or a task id" aria-label="search">
          <label class="muted"><input type="checkbox" id="f-children"> child tasks too</label>
        </form>
        <table><thead><tr><th>Task</th><th>Workflow</th><th>State</th><th>Progress</th><th>Query</th>
          ${operator ? "<th>Tenant</th>" : ""}<th>Submitted</th><th class="num">Took</th></tr></thead>
          <tbody id="tasks"></tbody></table>
        <div class="pager"><span class="muted" id="page-info"></span>
          <button type="button" id="newer">← Newer</button><button type="button" id="older">Older →</button></div>
      </section>
      <div class="grid2">
        <section class="card"><h2>Queues</h2><table><thead><tr><th>Queue</th><th class="num">Ready</th>
          <th class="num">Delayed</th><th class="num">Dead letters</th></tr></thead><tbody id="queues"></tbody></table></section>
        <section class="card"><h2>Recent events</h2><table><tbody id="events"></tbody></table></section>
      </div>
      <section class="card"><h2>Limits and circuit breakers</h2><div id="limits"></div></section>`;

    const charts = {};
    const byId = id => document.getElementById(id);
    // Filters from the address, so a filtered list can be bookmarked and shared.
    byId("f-state").value = state.filters.state;
    byId("f-workflow").value = state.filters.workflow;
    if (operator) byId("f-tenant").value = state.filters.tenant;
    byId("f-q").value = state.filters.q;
    byId("f-children").checked = state.filters.children;

    function remember() {
      const query = new URLSearchParams();
      for (const [k, v] of Object.entries(state.filters)) if (v) query.set(k, k === "children" ? "1" : v);
      if (state.since && state.until) { query.set("since", state.since); query.set("until", state.until); }
      else if (state.range !== 3600) query.set("range", state.range);
      history.replaceState(null, "", `#/${query.toString() ? "?" + query : ""}`);
    }

    // -- charts
    function markRange() {
      for (const button of byId("ranges").querySelectorAll("button")) {
        button.classList.toggle("on", !state.since && Number(button.dataset.range) === state.range);
      }
    }
    byId("ranges").addEventListener("click", event => {
      const button = event.target.closest("button");
      if (!button) return;
      state.range = Number(button.dataset.range);
      state.since = state.until = null;
      markRange(); remember(); refreshCharts();
    });
    byId("apply-range").addEventListener("click", () => {
      const since = byId("since").value, until = byId("until").value;
      if (!since || !until) { I.notice("Choose both ends of the range.", true); return; }
      state.since = new Date(since).toISOString();
      state.until = new Date(until).toISOString();
      markRange(); remember(); refreshCharts();
    });
    markRange();

    async function refreshCharts() {
      const query = state.since && state.until
        ? `since=${encodeURIComponent(state.since)}&until=${encodeURIComponent(state.until)}` : `range=${state.range}`;
      const data = await I.getJSON(`/dashboard/api/charts?${query}`);
      const span = (new Date(data.until) - new Date(data.since)) / 1000;
      byId("range-text").textContent = `${I.exact(data.since).replace(/ \(.*\)$/, "")} – ${I.exact(data.until)}`;
      drawThroughput(data, span);
      drawDurations(data);
      drawQueues(data, span);
      drawTokens(data, span);
      tiles(data);
    }

    function draw(name, config, total) {
      const card = byId(`card-${name}`);
      card.dataset.total = String(total);
      card.querySelector(".none").classList.toggle("hidden", total > 0);
      if (charts[name] && charts[name].config.type === config.type) {
        charts[name].data = config.data;
        charts[name].options = config.options;
        charts[name].update();
      } else {
        if (charts[name]) charts[name].destroy();
        charts[name] = new Chart(byId(`chart-${name}`), config);
      }
    }
    const sum = values => values.reduce((a, b) => a + (b || 0), 0);

    function drawThroughput(data, span) {
      const rows = data.throughput;
      const labels = rows.map(r => slotLabel(r.t, data.step, span));
      const set = (label, key, color) => ({label, data: rows.map(r => r[key]), backgroundColor: color, stack: "ended"});
      byId("card-throughput").querySelector("h3").firstChild.textContent = `Tasks ${per(data.step)}`;
      draw("throughput", {
        type: "bar",
        data: {labels, datasets: [
          {type: "line", label: "submitted", data: rows.map(r => r.submitted), borderColor: COLORS.blue,
           backgroundColor: COLORS.blue, pointRadius: 0, borderWidth: 2, tension: 0.25, order: 0},
          set("succeeded", "succeeded", COLORS.green), set("failed", "failed", COLORS.red),
          set("cancelled", "cancelled", COLORS.grey)]},
        options: {scales: {x: {stacked: true, ticks: {maxTicksLimit: 8, maxRotation: 0}, grid: {display: false}},
                           y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}},
                  interaction: {mode: "index", intersect: false}},
      }, sum(rows.map(r => r.submitted + r.succeeded + r.failed + r.cancelled)));
    }

    function drawDurations(data) {
      const rows = data.durations;
      const set = (label, key, color) => ({label, data: rows.map(r => r[key]), backgroundColor: color});
      draw("durations", {
        type: "bar",
        data: {labels: rows.map(r => r.workflow), datasets: [set("p50", "p50", COLORS.sky), set("p95", "p95", COLORS.blue),
                                                             set("p99", "p99", COLORS.navy)]},
        options: {scales: {y: {beginAtZero: true, ticks: {callback: v => duration(v)}}, x: {grid: {display: false}}},
                  plugins: {tooltip: {callbacks: {
                    label: c => `${c.dataset.label}: ${duration(c.parsed.y)}`,
                    afterBody: items => items.length ? `${rows[items[0].dataIndex].count} task(s) ended` : ""}}}},
      }, sum(rows.map(r => r.count)));
    }

    function drawQueues(data, span) {
      if (!data.queues) { byId("card-queues").querySelector(".none").textContent = "Queue depths are shown to operators."; draw("queues", {type: "line", data: {labels: [], datasets: []}, options: {}}, 0); return; }
      const series = data.queues.series;
      const times = [...new Set(Object.values(series).flat().map(p => p.t))].sort((a, b) => a - b);
      const datasets = [];
      // Queues that held messages in the range, one line each; all of them as one line when none did.
      const busy = Object.entries(series).filter(([, points]) => points.some(p => p.ready + p.delayed > 0));
      if (!busy.length && times.length) {
        datasets.push({label: "all queues (empty)", data: times.map(t => sum(Object.values(series).map(points =>
          { const p = points.find(x => x.t === t); return p ? p.ready + p.delayed : 0; }))),
          borderColor: COLORS.grey, backgroundColor: COLORS.grey, pointRadius: 0, borderWidth: 2});
      }
      busy.forEach(([queue, points], i) => {
        const at = new Map(points.map(p => [p.t, p]));
        datasets.push({label: queue, data: times.map(t => at.has(t) ? at.get(t).ready + at.get(t).delayed : null),
                       borderColor: SERIES[i % SERIES.length], backgroundColor: SERIES[i % SERIES.length],
                       pointRadius: 0, borderWidth: 2, tension: 0.2, spanGaps: true});
      });
      const dead = times.map(t => sum(Object.values(series).map(points => (points.find(p => p.t === t) || {}).dead)));
      if (dead.some(v => v > 0)) {
        datasets.push({label: "dead letters (all)", data: dead, borderColor: COLORS.red, backgroundColor: COLORS.red,
                       borderDash: [5, 4], pointRadius: 0, borderWidth: 2});
      }
      draw("queues", {
        type: "line",
        data: {labels: times.map(t => slotLabel(t, data.queues.step, span)), datasets},
        options: {scales: {y: {beginAtZero: true, ticks: {precision: 0}}, x: {ticks: {maxTicksLimit: 8, maxRotation: 0}, grid: {display: false}}},
                  interaction: {mode: "index", intersect: false}},
      }, times.length);
    }

    function drawTokens(data, span) {
      const slots = data.tokens.slots;
      const rows = data.tokens.rows;
      const at = key => slots.map(t => sum(rows.filter(r => r.t === t).map(r => r[key])));
      const cost = slots.map(t => { const mine = rows.filter(r => r.t === t); return mine.length ? sum(mine.map(r => r.cost_usd)) : 0; });
      byId("card-tokens").querySelector("h3").firstChild.textContent = `Tokens and cost ${per(data.tokens.step)}`;
      byId("card-tokens").querySelector(".note").textContent = data.priced ? "estimated from INTERLOCK_LLM_PRICES"
        : "set INTERLOCK_LLM_PRICES for cost";
      const datasets = [
        {label: "prompt tokens", data: at("prompt_tokens"), backgroundColor: COLORS.violet, stack: "t", yAxisID: "y"},
        {label: "completion tokens", data: at("completion_tokens"), backgroundColor: "#b69cf5", stack: "t", yAxisID: "y"}];
      if (data.priced) datasets.push({type: "line", label: "cost (USD)", data: cost, borderColor: COLORS.amber,
        backgroundColor: COLORS.amber, yAxisID: "cost", pointRadius: 2, borderWidth: 2, order: 0});
      draw("tokens", {
        type: "bar",
        data: {labels: slots.map(t => slotLabel(t, data.tokens.step, span)), datasets},
        options: {scales: {x: {stacked: true, ticks: {maxTicksLimit: 8, maxRotation: 0}, grid: {display: false}},
                           y: {stacked: true, beginAtZero: true, ticks: {callback: v => number(v)}},
                           cost: {display: data.priced, position: "right", beginAtZero: true, grid: {display: false},
                                  ticks: {callback: v => dollars(v)}}},
                  interaction: {mode: "index", intersect: false},
                  plugins: {tooltip: {callbacks: {label: c => c.dataset.yAxisID === "cost"
                    ? `cost: ${dollars(c.parsed.y)}` : `${c.dataset.label}: ${number(c.parsed.y)}`}}}},
      }, sum(at("prompt_tokens")) + sum(at("completion_tokens")));
    }

    function tiles(data) {
      const ended = data.throughput.reduce((a, r) => ({ok: a.ok + r.succeeded, failed: a.failed + r.failed, n: a.n + r.submitted}),
                                           {ok: 0, failed: 0, n: 0});
      const tokens = sum(data.tokens.rows.map(r => r.prompt_tokens + r.completion_tokens));
      const cost = data.priced ? sum(data.tokens.rows.map(r => r.cost_usd)) : null;
      const tile = (label, value, sub = "") => `<div class="tile"><div class="label">${esc(label)}</div>
        <div class="value">${value}</div><div class="sub">${sub}</div></div>`;
      byId("tiles").innerHTML = [
        tile("Running", number(data.active.PROCESSING), "tasks on a worker now"),
        tile("Waiting", number(data.active.PENDING + data.active.RETRY), `${number(data.active.RETRY)} waiting to retry`),
        tile("Submitted", number(ended.n), "in the range"),
        tile("Succeeded", number(ended.ok), "in the range"),
        tile("Failed", number(ended.failed), ended.ok + ended.failed ? `${Math.round(100 * ended.failed / (ended.ok + ended.failed))}% of ended` : ""),
        tile("Tokens", number(tokens), "in the range"),
        tile("Est. cost", dollars(cost), data.priced ? "in the range" : "no prices set"),
      ].join("");
    }

    // -- the task list
    let filterTimer = null;
    byId("filters").addEventListener("input", () => {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(() => {
        state.filters = {state: byId("f-state").value, workflow: byId("f-workflow").value,
                         tenant: operator ? byId("f-tenant").value : "", q: byId("f-q").value.trim(),
                         children: byId("f-children").checked};
        state.cursors = [null];
        remember();
        refreshTasks().catch(error => I.notice(error.message, true));
      }, 250);
    });
    byId("filters").addEventListener("submit", event => event.preventDefault());
    byId("older").addEventListener("click", () => { if (state.next) { state.cursors.push(state.next); refreshTasks(); } });
    byId("newer").addEventListener("click", () => { if (state.cursors.length > 1) { state.cursors.pop(); refreshTasks(); } });

    async function refreshTasks() {
      const query = new URLSearchParams({limit: "25"});
      for (const [k, v] of Object.entries(state.filters)) if (v) query.set(k, k === "children" ? "true" : v);
      const cursor = state.cursors[state.cursors.length - 1];
      if (cursor) query.set("cursor", cursor);
      const {tasks, next} = await I.getJSON(`/dashboard/api/tasks?${query}`);
      state.next = next;
      byId("tasks").innerHTML = tasks.map(t => `
        <tr class="task" data-task-id="${esc(t.task_id)}" data-state="${esc(t.state)}">
          <td><a class="mono" href="#/task/${esc(t.task_id)}">${esc(t.task_id.slice(0, 8))}</a></td>
          <td>${esc(t.workflow)}</td><td>${badge(t.state)}</td>
          <td class="nowrap">${progress(t)} <span class="muted">${esc(t.current_step || "")}</span></td>
          <td class="query" title="${esc(t.query || "")}">${esc(t.query || "")}</td>
          ${operator ? `<td>${esc(t.tenant)}</td>` : ""}
          <td class="nowrap">${when(t.created_at)}</td>
          <td class="num nowrap">${esc(duration(between(t.created_at, t.finished_at)))}</td></tr>`).join("")
        || `<tr><td colspan="8" class="empty">No task matches.</td></tr>`;
      byId("page-info").textContent = `page ${state.cursors.length}`;
      byId("newer").disabled = state.cursors.length <= 1;
      byId("older").disabled = !next;
    }

    const submit = byId("submit");
    if (submit) submit.addEventListener("submit", async event => {
      event.preventDefault();
      try {
        const task = await I.request("POST", "/agent/execute", {query: byId("query").value});
        byId("query").value = "";
        I.notice(`Submitted task ${task.task_id.slice(0, 8)}`);
        state.cursors = [null];
        await refreshTasks();
      } catch (error) { I.notice(error.message, true); }
    });

    // -- queues, events, limits
    async function refreshSystem() {
      const overview = await I.getJSON("/dashboard/api/overview");
      I.me = overview;
      byId("queues").innerHTML = !overview.operator
        ? `<tr><td colspan="4" class="empty">Shown to operators only (keys of the system tenant).</td></tr>`
        : overview.queues === null ? `<tr><td colspan="4" class="empty">The broker cannot be reached.</td></tr>`
        : overview.queues.map(q => `<tr><td>${esc(q.queue)}</td><td class="num">${number(q.ready)}</td>
            <td class="num">${number(q.delayed)}</td><td class="num">${q.dead_letters
              ? `<a href="#/dead-letters">${number(q.dead_letters)}</a>` : "0"}</td></tr>`).join("");
      byId("events").innerHTML = overview.events.map(e => `<tr><td>${esc(e.type)}</td><td class="muted">${esc(e.source)}</td>
        <td>${e.tasks} task(s)</td><td class="nowrap">${when(e.at)}</td></tr>`).join("")
        || `<tr><td class="empty">No events yet.</td></tr>`;
      const limits = Object.entries(overview.rate_limits).map(([k, v]) => `<code>${esc(k)}</code> ${esc(v)}`).join(", ") || "none";
      const breakers = overview.breakers === null ? "shown to operators only"
        : overview.breakers.map(b => `<code>${esc(b.target)}</code> ${badge(b.state)}`).join(" ") || "all closed";
      byId("limits").innerHTML = `<p>Start limits: ${limits}</p><p>Circuit breakers: ${breakers}</p>`;
    }

    await Promise.all([refreshCharts(), refreshTasks(), refreshSystem()]);
    const quick = setInterval(() => Promise.all([refreshTasks(), refreshSystem()]).catch(() => {}), 3000);
    const slow = setInterval(() => refreshCharts().catch(() => {}), 15000);
    return () => { clearInterval(quick); clearInterval(slow); Object.values(charts).forEach(c => c.destroy()); };
  };

  function chartCard(name, title, note) {
    return `<div class="chart-card" id="card-${name}"><h3>${esc(title)}<span class="note">${esc(note)}</span></h3>
      <div class="chart-box"><canvas id="chart-${name}" role="img" aria-label="${esc(title)}"></canvas>
      <div class="none hidden">Nothing in this range yet.</div></div></div>`;
  }

  // -- workers --------------------------------------------------------------------------------
  I.pages.workers = async app => {
    app.innerHTML = `<div class="tiles" id="worker-tiles"></div>
      <section class="card"><div class="card-head"><h2>Worker processes</h2><span class="muted">from their heartbeats</span></div>
      <table><thead><tr><th>Host</th><th>Process</th><th>Status</th><th>Queues</th><th class="num">Threads</th>
        <th class="num">In flight</th><th class="num">Runs done</th><th>Started</th><th>Last heartbeat</th></tr></thead>
      <tbody id="workers"></tbody></table></section>`;
    async function refresh() {
      const data = await I.getJSON("/dashboard/api/workers");
      const now = new Date(data.now).getTime();
      const status = w => w.stopped_at ? "stopped"
        : (now - new Date(w.heartbeat_at).getTime()) / 1000 > 3 * data.heartbeat_seconds + 2 ? "silent" : "alive";
      const alive = data.workers.filter(w => status(w) === "alive");
      document.getElementById("worker-tiles").innerHTML = [
        ["Processes alive", alive.length], ["Threads", sum(alive.map(w => w.threads))],
        ["Tasks in flight", sum(alive.map(w => w.in_flight))], ["Hosts", new Set(alive.map(w => w.host)).size],
      ].map(([l, v]) => `<div class="tile"><div class="label">${esc(l)}</div><div class="value">${number(v)}</div></div>`).join("");
      document.getElementById("workers").innerHTML = data.workers.map(w => `<tr class="worker" data-worker="${esc(w.id)}">
        <td>${esc(w.host)}</td><td class="mono">${esc(w.pid)}</td><td>${`<span class="badge ${status(w)}">${status(w)}</span>`}</td>
        <td>${w.queues.map(q => `<code>${esc(q)}</code>`).join(" ")}</td><td class="num">${number(w.threads)}</td>
        <td class="num">${number(w.in_flight)}</td><td class="num">${number(w.tasks_done)}</td>
        <td class="nowrap">${when(w.started_at)}</td><td class="nowrap">${when(w.heartbeat_at)}</td></tr>`).join("")
        || `<tr><td colspan="9" class="empty">No worker has reported in the last day.</td></tr>`;
    }
    const sum = values => values.reduce((a, b) => a + (b || 0), 0);
    await refresh();
    const timer = setInterval(() => refresh().catch(() => {}), 3000);
    return () => clearInterval(timer);
  };

  // -- dead letters ---------------------------------------------------------------------------
  I.pages.deadLetters = async app => {
    app.innerHTML = `<section class="card"><div class="card-head"><h2>Dead letters</h2>
      <span class="muted">messages that ran out of retries, or kept killing their worker</span></div><div id="dlq"></div></section>`;
    const box = document.getElementById("dlq");
    async function refresh() {
      let data;
      try {
        data = await I.getJSON("/dlq");
      } catch (error) {
        box.innerHTML = `<p class="empty">${esc(error.status === 403 ? "Dead letters need a key with the admin scope." : error.message)}</p>`;
        return;
      }
      const full = data.queues.filter(q => q.messages.length), empty = data.queues.filter(q => !q.messages.length);
      box.innerHTML = full.map(q => `<div class="dlq-queue" data-queue="${esc(q.queue)}">
        <div class="card-head"><h3><code>${esc(q.queue)}</code> <span class="note">${q.messages.length} dead letter(s)</span></h3>
          <span class="spacer"></span><button type="button" class="replay-all">Replay all</button>
          <button type="button" class="danger purge-all">Purge all</button></div>
        <table><thead><tr><th>Task</th><th>Actor</th><th>State</th><th class="num">Attempts</th>
          <th>Error</th><th>Dead since</th><th></th></tr></thead><tbody>${q.messages.map(m => `
          <tr class="letter" data-task-id="${esc(m.task_id)}"><td><a class="mono" href="#/task/${esc(m.task_id)}">${esc((m.task_id || "").slice(0, 8))}</a></td>
          <td>${esc(m.actor)}</td><td>${m.state ? badge(m.state) : ""}</td><td class="num">${esc(m.attempts ?? "")}</td>
          <td class="query" title="${esc(m.error || "")}">${esc(m.error || "")}</td><td class="nowrap">${when(m.dead_at)}</td>
          <td class="nowrap"><button type="button" class="replay">Replay</button> <button type="button" class="danger purge">Purge</button></td>
          </tr>`).join("")}</tbody></table></div>`).join("")
        + (empty.length ? `<p class="empty">${full.length ? "No dead letters in" : "No dead letters. Queues:"}
            ${empty.map(q => `<code>${esc(q.queue)}</code>`).join(", ")}.</p>` : "");
      for (const queue of box.querySelectorAll(".dlq-queue")) {
        const name = encodeURIComponent(queue.dataset.queue);
        const act = (method, path, done) => I.request(method, path).then(r => { I.notice(done(r)); refresh(); })
          .catch(error => I.notice(error.message, true));
        const all = queue.querySelector(".replay-all");
        if (all) all.addEventListener("click", () => act("POST", `/dlq/replay?queue=${name}`, r => `Replayed ${r.replayed.length} task(s)`));
        const purge = queue.querySelector(".purge-all");
        if (purge) armed(purge, "Really purge all?", () => act("DELETE", `/dlq?queue=${name}`, r => `Purged ${r.purged} message(s)`));
        for (const row of queue.querySelectorAll("tr.letter")) {
          const id = encodeURIComponent(row.dataset.taskId);
          row.querySelector(".replay").addEventListener("click", () => act("POST", `/dlq/${id}/replay`, () => "Replayed; the task runs again"));
          armed(row.querySelector(".purge"), "Really purge?", () => act("DELETE", `/dlq/${id}`, () => "Purged"));
        }
      }
    }
    await refresh();
  };
})();
