// A task's page: its run as a waterfall, its children, tokens and cost, input, result and error,
// and the actions (cancel, resume, replay). Live while the task runs: /agent/stream's events
// trigger a fresh read of /dashboard/api/tasks/{id}, and a slow poll picks up calls between events.
"use strict";

(() => {
  const I = Interlock;
  const {esc, when, duration, between, number, dollars, badge, progress, jsonBlock} = I;
  const COLOR = {
    queue: "#cbd5e1", backoff: "#fbbf24", children: "#c4b5fd",
    attempt: {running: "#93c5fd", SUCCESS: "#86efac", retry: "#fca5a5", lost: "#fca5a5", FAILURE: "#fca5a5",
              CANCELLED: "#d1d5db", suspended: "#bfdbfe", ended: "#d1d5db"},
    step: {completed: "#2f6fed", failed: "#dc2626", running: "#60a5fa", unfinished: "#94a3b8"},
    llm: {completed: "#7c3aed", failed: "#f87171", running: "#a78bfa", abandoned: "#cbd5e1"},
    tool: {completed: "#0d9488", failed: "#f87171", running: "#5eead4", abandoned: "#cbd5e1"},
    child: {SUCCESS: "#34d399", FAILURE: "#f87171", CANCELLED: "#cbd5e1", PROCESSING: "#60a5fa", PENDING: "#e2e8f0",
            RETRY: "#fbbf24"},
  };
  const MARKS = {soft_limit: ["#d97706", "soft limit"], hard_limit: ["#dc2626", "hard limit"]};

  function color(row) {
    const entry = COLOR[row.kind];
    if (typeof entry === "string") return entry;
    return (entry && (entry[row.status] || Object.values(entry)[0])) || "#94a3b8";
  }
  function rowLabel(row) {
    const indent = "\u2003".repeat(row.depth * 2);
    const kind = {llm: "LLM ", tool: "tool ", child: "child "}[row.kind] || "";
    return `${indent}${kind}${row.label}`;
  }

  // Vertical lines where each attempt's soft and hard limits fall, drawn when they are in view.
  const limitLines = {
    id: "limitLines",
    afterDatasetsDraw(chart, _args, options) {
      const {ctx, chartArea, scales} = chart;
      for (const mark of options.marks || []) {
        const style = MARKS[mark.kind];
        if (!style || mark.at < scales.x.min || mark.at > scales.x.max) continue;
        const x = scales.x.getPixelForValue(mark.at);
        ctx.save();
        ctx.strokeStyle = style[0];
        ctx.setLineDash([5, 4]);
        ctx.lineWidth = 1.5;
        ctx.beginPath(); ctx.moveTo(x, chartArea.top); ctx.lineTo(x, chartArea.bottom); ctx.stroke();
        ctx.fillStyle = style[0];
        ctx.font = "11px system-ui, sans-serif";
        ctx.textAlign = "right";
        ctx.fillText(`${style[1]} (attempt ${mark.attempt})`, x - 4, chartArea.top + 12);
        ctx.restore();
      }
    },
  };

  // After the task ends, the worker still writes how its last run ended (a cancelled call, the
  // failed step, the lease released): read the task a few more times to show it.
  const SETTLE_MS = [1000, 3000, 8000];

  I.pages.task = async (app, taskId) => {
    app.innerHTML = `
      <div class="crumbs" id="crumbs"><a href="#/">Overview</a> › task</div>
      <section class="card" id="task" data-task-id="${esc(taskId)}"><div class="task-head" id="head"></div></section>
      <div class="tiles" id="tiles"></div>
      <section class="card"><div class="card-head"><h2>Timeline</h2><span class="muted" id="timeline-note"></span></div>
        <div class="waterfall" id="waterfall-box"><canvas id="waterfall" role="img" aria-label="the run as a waterfall"></canvas></div>
        <div class="legend" id="legend"></div>
        <details class="fold" id="spans-fold" open><summary>Every span</summary>
          <table class="spans"><thead><tr><th>Span</th><th class="num">Starts at</th><th class="num">Took</th>
            <th class="num">Tokens</th><th class="num">Est. cost</th><th>Details</th></tr></thead><tbody id="spans"></tbody></table></details>
      </section>
      <section class="card" id="children-card"><div class="card-head"><h2>Child tasks</h2><span class="muted" id="children-note"></span></div>
        <div id="children"></div></section>
      <div class="grid2">
        <section class="card"><div class="card-head"><h2>Input</h2></div><div class="panel" id="input"></div></section>
        <section class="card"><div class="card-head"><h2 id="outcome-title">Result</h2></div><div class="panel" id="outcome"></div></section>
      </div>
      <section class="card"><div class="card-head"><h2>Checkpoints</h2><span class="muted">durable steps, as stored</span></div>
        <table><thead><tr><th>Step</th><th>State</th><th class="num">Took</th><th>Written</th><th>Error</th></tr></thead>
        <tbody id="checkpoints"></tbody></table></section>
      <section class="card"><details class="fold"><summary>Event log</summary><table><tbody id="events"></tbody></table></details></section>`;
    const byId = id => document.getElementById(id);
    let chart = null, source = null, poll = null, data = null, lastEvent = 0, pending = null, stopped = false;
    let settling = null;

    async function refresh() {
      data = await I.getJSON(`/dashboard/api/tasks/${encodeURIComponent(taskId)}`);
      if (stopped) return;
      head(data);
      tiles(data);
      timeline(data.timeline);
      children(data);
      panels(data);
      checkpoints(data.checkpoints);
      await events();
      if (!I.terminal(data.task.state)) { settling = null; live(); return; }
      const wasLive = source !== null;
      quiet();
      if (wasLive && settling === null) {
        settling = SETTLE_MS.map(ms => setTimeout(() => refresh().catch(() => {}), ms));
      }
    }
    // Many events arrive at once: read the task once for them.
    function soon() { clearTimeout(pending); pending = setTimeout(() => refresh().catch(() => {}), 150); }

    function head({task, actions, timeline: line}) {
      byId("crumbs").innerHTML = `<a href="#/">Overview</a> › ${task.parent_id
        ? `<a href="#/task/${esc(task.parent_id)}">parent ${esc(task.parent_id.slice(0, 8))}</a> › ` : ""}task <code>${esc(task.task_id)}</code>`;
      byId("head").innerHTML = `
        <div><h1>${esc(task.workflow)} <span id="task-state" class="badge ${esc(task.state)}">${esc(task.state)}</span>
          ${line.running ? `<span class="live" id="live">live</span>` : ""}</h1>
          <div class="facts"><span class="mono">${esc(task.task_id)}</span><span>queue <code>${esc(task.queue)}</code></span>
            <span>tenant <code>${esc(task.tenant)}</code></span><span>submitted ${when(task.created_at)}</span>
            ${task.finished_at ? `<span>ended ${when(task.finished_at)}</span>` : ""}</div>
          <div class="facts">${progress(task, true)} <span>${esc(task.progress)}%</span>
            <span>${task.current_step ? `step <code>${esc(task.current_step)}</code>` : ""}</span></div></div>
        <div class="actions" id="actions">
          ${actions.cancel ? `<button type="button" class="danger" id="cancel-button">Cancel task</button>` : ""}
          ${actions.resume ? `<button type="button" id="resume-button" title="Run it again from the first step without a checkpoint">Resume</button>` : ""}
          ${actions.replay ? `<button type="button" id="replay-button" title="Take its message out of the dead-letter queue and run it again">Replay from dead letters</button>` : ""}
        </div>`;
      const act = (method, path, done) => I.request(method, path).then(result => { I.notice(done(result)); return refresh(); })
        .catch(error => I.notice(error.message, true));
      const id = encodeURIComponent(task.task_id);
      if (actions.cancel) I.armed(byId("cancel-button"), "Cancel it and its children?",
        () => act("POST", `/agent/cancel/${id}`, r => r.children_cancelled.length
          ? `Cancelled, with ${r.children_cancelled.length} child task(s)` : "Cancelled"));
      if (actions.resume) byId("resume-button").addEventListener("click",
        () => act("POST", `/agent/resume/${id}`, r => r.resumed_from_stage ? `Resumed from step ${r.resumed_from_stage}` : "Resumed"));
      if (actions.replay) byId("replay-button").addEventListener("click",
        () => act("POST", `/dlq/${id}/replay`, () => "Replayed from the dead-letter queue"));
    }

    function tiles({task, usage, timeline: line}) {
      const rows = line.rows;
      const queued = rows.filter(r => r.kind === "queue").reduce((a, r) => a + r.end - r.start, 0);
      const waited = rows.filter(r => r.kind === "children").reduce((a, r) => a + r.end - r.start, 0);
      const own = usage.task, all = usage.with_children;
      const tile = (label, value, sub = "", id = "") => `<div class="tile" ${id ? `id="${id}"` : ""}><div class="label">${esc(label)}</div>
        <div class="value">${value}</div><div class="sub">${sub}</div></div>`;
      byId("tiles").innerHTML = [
        tile("Duration", esc(duration(between(task.created_at, task.finished_at) ?? line.end)), line.running ? "so far" : "submitted → ended"),
        tile("In queue", esc(duration(queued)), waited ? `${esc(duration(waited))} waiting for children` : ""),
        tile("Attempts", number(task.attempts), `${rows.filter(r => r.kind === "step").length} step run(s)`),
        tile("LLM calls", number(own.llm_calls), data.descendants ? `${number(all.llm_calls)} with children` : ""),
        tile("Tokens", number(own.total_tokens), data.descendants ? `${number(all.total_tokens)} with children`
          : `${number(own.prompt_tokens)} prompt · ${number(own.completion_tokens)} completion`, "tokens-tile"),
        tile("Est. cost", esc(dollars(own.cost_usd)), usage.priced ? (data.descendants ? `${esc(dollars(all.cost_usd))} with children` : "")
          : "set INTERLOCK_LLM_PRICES"),
      ].join("");
      byId("tokens-tile").dataset.tokens = String(own.total_tokens);
    }

    function timeline(line) {
      const rows = line.rows;
      const inView = line.marks.filter(m => MARKS[m.kind] && m.at <= line.end * 1.25);
      const max = Math.max(line.end, ...inView.map(m => m.at)) * 1.02 || 1;
      byId("waterfall-box").style.height = `${Math.max(90, rows.length * 24 + 48)}px`;
      const config = {
        type: "bar",
        data: {labels: rows.map(rowLabel), datasets: [{data: rows.map(r => [r.start, Math.max(r.end, r.start + max / 400)]),
          backgroundColor: rows.map(color), borderRadius: 3, borderSkipped: false, barPercentage: 0.78, categoryPercentage: 0.95}]},
        options: {
          indexAxis: "y",
          scales: {x: {type: "linear", min: 0, max, position: "top", ticks: {callback: v => duration(v)}},
                   y: {ticks: {autoSkip: false, font: {family: "ui-monospace, Menlo, monospace", size: 11}}, grid: {display: false}}},
          plugins: {legend: {display: false}, limitLines: {marks: line.marks},
                    tooltip: {callbacks: {title: items => rows[items[0].dataIndex].label, label: item => describe(rows[item.dataIndex])}}},
          onClick: (_event, elements) => {  // a child's bar opens its page; any other shows its row below
            const row = elements.length && rows[elements[0].index];
            if (row && row.task_id) location.hash = `#/task/${encodeURIComponent(row.task_id)}`;
            else if (row) byId(`span-${elements[0].index}`).scrollIntoView({block: "center"});
          },
        },
        plugins: [limitLines],
      };
      if (chart) { chart.data = config.data; chart.options = config.options; chart.update(); }
      else chart = new Chart(byId("waterfall"), config);
      const beyond = line.marks.filter(m => MARKS[m.kind] && !inView.includes(m));
      const limits = `soft limit ${duration(line.limits.soft_time_limit)}, hard limit ${duration(line.limits.time_limit)} after each attempt starts`;
      byId("timeline-note").textContent = beyond.length && !inView.length ? `${limits} (beyond this run)` : limits;
      byId("legend").innerHTML = [["queue", COLOR.queue], ["attempt", COLOR.attempt.SUCCESS], ["step", COLOR.step.completed],
        ["LLM call", COLOR.llm.completed], ["tool call", COLOR.tool.completed], ["retry backoff", COLOR.backoff],
        ["waiting for children", COLOR.children], ["child task", COLOR.child.SUCCESS], ["failed", COLOR.step.failed]]
        .map(([name, c]) => `<span><span class="swatch" data-color="${c}"></span>${esc(name)}</span>`).join("");
      for (const swatch of byId("legend").querySelectorAll(".swatch")) swatch.style.background = swatch.dataset.color;
      byId("spans").innerHTML = rows.map((r, i) => `<tr id="span-${i}" class="span d${r.depth} ${esc(r.status)}" data-kind="${esc(r.kind)}"
          data-label="${esc(r.label)}" data-status="${esc(r.status)}">
        <td class="name"><span class="kind">${esc(r.kind)}</span>${r.task_id ? `<a href="#/task/${esc(r.task_id)}">${esc(r.label)}</a>`
          : esc(r.label)}${r.status === "running" ? ` <span class="live">running</span>` : ""}</td>
        <td class="num">+${esc(duration(r.start))}</td><td class="num">${esc(duration(r.end - r.start))}</td>
        <td class="num">${r.kind !== "llm" ? "" : r.status === "running" ? "…" : r.status !== "completed" ? "—"
          : `${number(r.prompt_tokens)} + ${number(r.completion_tokens)}`}</td>
        <td class="num">${r.kind === "llm" && r.status === "completed" ? esc(dollars(r.cost_usd)) : ""}</td>
        <td>${details(r)}</td></tr>`).join("");
    }

    function describe(row) {
      const parts = [`+${duration(row.start)}, took ${duration(row.end - row.start)}`, row.status];
      if (row.kind === "llm") parts.push(`${number(row.prompt_tokens)} + ${number(row.completion_tokens)} tokens`, dollars(row.cost_usd));
      if (row.planned_ms) parts.push(`backoff ${duration(row.planned_ms / 1000)}`);
      if (row.error) parts.push(row.error.slice(0, 120));
      return parts.join(" · ");
    }
    function details(row) {
      const bits = [];
      if (row.worker) bits.push(`<span class="muted">on ${esc(row.worker)}</span>`);
      if (row.planned_ms) bits.push(`<span class="muted">backoff ${esc(duration(row.planned_ms / 1000))}</span>`);
      if (row.error) bits.push(`<div class="err">${esc(row.error)}</div>`);
      return bits.join(" ");
    }

    function children({children: roots, descendants}) {
      byId("children-note").textContent = descendants ? `${descendants} below this task` : "";
      const node = n => `<li class="child" data-task-id="${esc(n.task_id)}" data-state="${esc(n.state)}"><div class="node">
          <a class="mono" href="#/task/${esc(n.task_id)}">${esc(n.task_id.slice(0, 8))}</a> <strong>${esc(n.workflow)}</strong>
          ${badge(n.state)} ${progress(n)} <span class="muted">${esc(n.current_step || "")}</span>
          <span class="muted">${esc(duration(between(n.created_at, n.finished_at)))}</span>
          <span class="muted">${n.usage.total_tokens ? `${number(n.usage.total_tokens)} tokens` : ""}</span></div>
          ${n.children.length ? `<ul>${n.children.map(node).join("")}</ul>` : ""}</li>`;
      byId("children").innerHTML = roots.length ? `<ul class="tree" id="tree">${roots.map(node).join("")}</ul>`
        : `<p class="empty">This task started no child tasks.</p>`;
    }

    function panels({task, checkpoints: stored}) {
      byId("input").innerHTML = jsonBlock(task.input);
      const title = byId("outcome-title"), box = byId("outcome");
      if (task.state === "SUCCESS") {
        title.textContent = "Result";
        box.innerHTML = `<div id="result">${jsonBlock(task.result)}</div>`;
      } else if (task.error) {
        title.textContent = task.state === "RETRY" ? "Last error (it will be retried)" : "Error";
        const traceback = stored.map(c => c.traceback).filter(Boolean).pop();
        const [first, ...rest] = String(task.error).split("\n");
        box.innerHTML = `<pre class="text error-text" id="error">${esc(first)}</pre>
          ${rest.length ? `<details class="fold"><summary>the rest of the error</summary><pre class="text">${esc(rest.join("\n"))}</pre></details>` : ""}
          ${traceback ? `<details class="fold"><summary>traceback of the failed step</summary><pre class="text">${esc(traceback)}</pre></details>` : ""}`;
      } else {
        title.textContent = "Result";
        box.innerHTML = `<p class="muted">Not finished yet.</p>`;
      }
    }

    function checkpoints(stored) {
      byId("checkpoints").innerHTML = stored.map(c => `<tr><td><code>${esc(c.stage)}</code></td><td>${badge(c.state)}</td>
        <td class="num">${esc(duration((c.duration_ms ?? 0) / 1000))}</td><td class="nowrap">${when(c.updated_at)}</td>
        <td>${c.error ? `<details class="fold"><summary class="error-text">${esc(c.error.split("\n")[0].slice(0, 140))}</summary>
          <pre class="text">${esc(c.traceback || c.error)}</pre></details>` : ""}
          ${(c.failures || []).length ? `<span class="muted">${c.failures.length} failed run(s)</span>` : ""}</td></tr>`).join("")
        || `<tr><td colspan="5" class="empty">No durable steps.</td></tr>`;
    }

    async function events() {
      const {events: fresh} = await I.getJSON(`/dashboard/api/tasks/${encodeURIComponent(taskId)}/events?after=${lastEvent}`);
      if (!fresh.length) return;
      lastEvent = fresh[fresh.length - 1].id;
      byId("events").insertAdjacentHTML("beforeend", fresh.map(e => `<tr class="event"><td class="mono">${e.id}</td>
        <td>${esc(e.kind)}</td><td>${badge(e.state)}</td><td>${e.progress >= 0 ? `${e.progress}%` : ""}</td><td>${esc(e.step || "")}</td>
        <td class="mono">${esc(e.data ? JSON.stringify(e.data).slice(0, 300) : "")}</td><td class="nowrap">${when(e.created_at)}</td></tr>`).join(""));
    }

    function live() {
      if (!source) {
        source = new EventSource(`/agent/stream/${encodeURIComponent(taskId)}`);
        for (const kind of ["state", "progress", "waiting", "stopped", "soft_time_limit", "message"]) source.addEventListener(kind, soon);
        source.onerror = () => { if (data && I.terminal(data.task.state)) quiet(); };
      }
      if (!poll) poll = setInterval(soon, 2000);  // calls between events, and the running bars' growth
    }
    function quiet() {
      if (source) source.close();
      clearInterval(poll);
      source = poll = null;
    }

    await refresh();
    return () => {
      stopped = true;
      quiet();
      clearTimeout(pending);
      (settling || []).forEach(clearTimeout);
      if (chart) chart.destroy();
    };
  };
})();
