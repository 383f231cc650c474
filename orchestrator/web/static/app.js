// The dashboard's pages, drawn from the JSON API (/api/...).
//
// Every element is built by `h` from text nodes, never from HTML strings, so whatever a
// job carries (arguments, errors, ids) is shown as text and never interpreted.
// Actions are POSTs carrying the token in a header, which the page keeps from the URL
// it was opened with (`#token=…`) or asks for.
"use strict";

const TOKEN_KEY = "orchestrator-token";
const REFRESH_MS = 1000;
const STATES = ["succeeded", "failed", "dead_lettered", "cancelled", "retrying", "running"];
const main = document.getElementById("main");

// --- DOM ---------------------------------------------------------------------------

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function replace(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

function bar(value, max, label) {
  const share = max > 0 ? Math.min(1, value / max) : 0;
  const fill = h("span", { class: "fill" });
  fill.style.width = (share * 100).toFixed(1) + "%";
  if (share >= 1) fill.classList.add("full");
  return h("span", { class: "bar", role: "img", "aria-label": label, title: label }, fill);
}

function progress(parts, total) {
  // parts: [[className, count], ...] stacked in one bar
  const el = h("span", { class: "bar stacked", role: "img" });
  const label = [];
  for (const [name, count] of parts) {
    if (!count) continue;
    const seg = h("span", { class: "fill " + name });
    seg.style.width = ((count / Math.max(total, 1)) * 100).toFixed(2) + "%";
    el.append(seg);
    label.push(count + " " + name.replace("_", " "));
  }
  el.setAttribute("aria-label", label.join(", ") || "nothing yet");
  el.title = label.join(", ");
  return el;
}

function table(headers, rows, attrs) {
  return h("div", { class: "scroll" },
    h("table", attrs || {},
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "none")))));
}

function stat(name, value, field) {
  return h("div", { class: "stat" }, h("span", { class: "value", "data-field": field || null }, value), h("span", { class: "name" }, name));
}

function section(title, ...body) {
  return h("section", {}, h("h2", {}, title), body);
}

// --- formatting ----------------------------------------------------------------------

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

// A moment as people read it on a live page: "3 s ago", the exact time on hover.
function when(unix) {
  if (!unix) return "–";
  return h("time", { datetime: new Date(unix * 1000).toISOString(), title: new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC"), class: "rel" }, relative(unix));
}

function relative(unix) {
  const s = Date.now() / 1000 - unix;
  const future = s < 0;
  const a = Math.abs(s);
  const text = a < 1 ? "now" : a < 60 ? Math.floor(a) + " s" : a < 3600 ? Math.floor(a / 60) + " min" :
    a < 86400 ? Math.floor(a / 3600) + " h" : Math.floor(a / 86400) + " d";
  return text === "now" ? text : future ? "in " + text : text + " ago";
}

function secs(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(value < 10 ? 2 : 1) + " s";
}

function money(value) {
  return value === null || value === undefined ? "–" : "$" + Number(value).toFixed(2);
}

function plural(count, one, many) {
  return count + " " + (count === 1 ? one : many || one + "s");
}

const SHORT = { succeeded: "ok", failed: "failed", dead_lettered: "dead", cancelled: "cancelled", retrying: "retrying", running: "running" };

function link(href, text) {
  return h("a", { href }, text);
}

function enc(part) {
  return encodeURIComponent(part);
}

// --- token and actions ---------------------------------------------------------------

function takeTokenFromUrl() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    localStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function askToken() {
  const given = prompt("The dashboard token: in the URL `orchestrator up` (or `orchestrator web`) printed, after #token=; or your ORCHESTRATOR_WEB_TOKEN");
  if (given !== null && given.trim()) localStorage.setItem(TOKEN_KEY, given.trim());
  return localStorage.getItem(TOKEN_KEY);
}

function notify(text, kind) {
  const notice = document.getElementById("notice");
  notice.className = "notice " + (kind || "ok");
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { notice.hidden = true; }, kind === "error" ? 12000 : 6000);
}

async function act(path, body, question) {
  if (question && !confirm(question)) return null;
  let token = localStorage.getItem(TOKEN_KEY) || askToken();
  if (!token) {
    notify("Actions need the dashboard token.", "error");
    return null;
  }
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-orchestrator-token": token },
    body: JSON.stringify(body || {}),
    credentials: "omit",
  });
  const reply = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 403 && /token/.test(reply.error || "")) {
    localStorage.removeItem(TOKEN_KEY);
  }
  if (!response.ok) {
    notify(reply.error || "refused (" + response.status + ")", "error");
    return null;
  }
  return reply.result;
}

function button(label, onclick, kind) {
  return h("button", { type: "button", class: kind || "", onclick: async (event) => {
    const el = event.currentTarget;
    el.disabled = true;
    try { await onclick(); } finally { el.disabled = false; }
  } }, label);
}

function pauseButton(kind, name, pausedAt, after) {
  const path = "/api/" + kind + "/" + enc(name) + (pausedAt ? "/resume" : "/pause");
  const noun = kind === "pools" ? "pool " + name : name;
  return button(pausedAt ? "Resume" : "Pause", async () => {
    const result = await act(path, {}, pausedAt ? null :
      kind === "pools" ? "Pause pool " + name + "? It gets no new jobs; jobs it has not started go elsewhere." :
        "Pause " + name + "? No conductor takes its jobs until it is resumed.");
    if (result) { notify((pausedAt ? "resumed " : "paused ") + noun); after(); }
  }, "small");
}

// --- live status ---------------------------------------------------------------------

let lastStatus = null;
// Pools whose worker list is open: a redraw (every refresh) keeps it open.
const openWorkers = new Set(JSON.parse(sessionStorage.getItem("open-workers") || "[]"));
window.addEventListener("pagehide", () => sessionStorage.setItem("open-workers", JSON.stringify([...openWorkers])));

function setLive(text, ok) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.className = "live " + (ok ? "ok" : "down");
}

function watchStatus(onStatus) {
  const source = new EventSource("/api/events");
  source.addEventListener("status", (event) => {
    lastStatus = JSON.parse(event.data);
    setLive("live", true);
    onStatus(lastStatus);
  });
  // The server answers but Redis does not: the stream stays open and says why.
  source.addEventListener("unavailable", (event) => setLive(redisDown(JSON.parse(event.data)), false));
  // The stream itself broke: this dashboard's server is gone (EventSource retries).
  source.addEventListener("error", () => setLive("reconnecting…", false));
  return source;
}

function redisDown(body) {
  return "Redis unavailable" + (body.reason ? ": " + body.reason : "");
}

async function getJson(path) {
  let response;
  try {
    response = await fetch(path, { credentials: "omit" });
  } catch (error) {
    throw new Error("reconnecting…"); // no answer from the dashboard's server
  }
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.redis === "unavailable" ? redisDown(body) : body.error || response.statusText);
  return body;
}

function poll(path, draw) {
  let stopped = false;
  async function once() {
    try {
      draw(await getJson(typeof path === "function" ? path() : path));
      setLive("live", true);
    } catch (error) {
      setLive(error.message, false);
    }
    if (!stopped) setTimeout(once, REFRESH_MS);
  }
  once();
  return { refresh: once, stop: () => { stopped = true; } };
}

// --- overview ------------------------------------------------------------------------

function poolCard(pool, index, pools, refresh) {
  const full = pool.capacity > 0 && pool.free === 0;
  const before = pools.slice(0, index);
  const spilling = index > 0 && pool.in_flight > 0 && before.every((p) => p.capacity > 0 && p.free === 0);
  const state = pool.paused_at ? "paused" : full ? "full" : spilling ? "spilling" : pool.in_flight > 0 ? "busy" : pool.slots ? "idle" : "no workers";
  const scaler = pool.scaler;
  return h("article", { class: "pool " + state.replace(" ", "-"), "data-pool": pool.name, "data-state": state },
    h("header", {},
      h("h3", {}, pool.name),
      h("span", { class: "badge " + state.replace(" ", "-"), "data-field": "state" }, state),
      pauseButton("pools", pool.name, pool.paused_at, refresh)),
    bar(pool.in_flight, pool.capacity, pool.in_flight + " of " + pool.capacity + " slots in use"),
    h("p", { class: "caption" }, pool.in_flight + " / " + pool.capacity + " slots in use"),
    h("div", { class: "stats" },
      stat("workers", pool.workers.length, "workers"),
      stat("slots", pool.slots, "slots"),
      stat("running", pool.running, "running"),
      stat("in flight", pool.in_flight, "in_flight"),
      stat("queued", pool.queued, "queued"),
      stat("free", pool.free, "free"),
      // short jobs: what the conductors may queue ahead of its free slots (capacity counters)
      pool.prefetch ? stat("prefetch", pool.prefetch, "prefetch") : null,
      pool.prefetch ? stat("finished /s", Math.round(pool.finish_rate), "finish_rate") : null,
      pool.waiting ? stat("pinned, waiting", pool.waiting, "waiting") : null),
    scaler ? h("div", { class: "scaler" },
      h("h4", {}, "cloud workers" + (scaler.running ? "" : " (scaler not running)")),
      scaler.workers ? h("div", { class: "stats" },
        stat("launching", scaler.workers.launching, "launching"),
        stat("active", scaler.workers.active, "active"),
        stat("idle", scaler.workers.idle, "idle"),
        stat("draining", scaler.workers.draining, "draining"),
        stat("target", scaler.target ?? "–", "target")) : null,
      h("p", { class: "spend", "data-field": "spend" },
        "today " + money(scaler.spend_today) + (scaler.budget !== null ? " of " + money(scaler.budget) + " budget" : " (no budget cap)") +
        (scaler.budget_reached ? " — budget reached" : ""),
        scaler.budget ? bar(scaler.spend_today, scaler.budget, "spend against budget") : null),
      scaler.decision ? h("p", { class: "caption" }, "last: " + scaler.decision.event + " — " + scaler.decision.reason) : null) : null,
    pool.workers.length ? h("details", { open: openWorkers.has(pool.name), "data-workers": pool.name,
      ontoggle: (e) => { if (e.target.open) openWorkers.add(pool.name); else openWorkers.delete(pool.name); } },
      h("summary", {}, plural(pool.workers.length, "worker")),
      table(["worker", "host", "slots", "running", "last beat"], pool.workers.map((w) => h("tr", { "data-worker": w.id },
        h("td", {}, w.id + (w.draining ? " (draining)" : "")), h("td", {}, w.host), h("td", {}, w.slots),
        h("td", {}, w.running), h("td", { title: ago(w.heartbeat_age) + " before this read" }, ago(w.heartbeat_age) + " ago"))))) : null);
}

function batchRow(batch) {
  const total = Math.max(batch.total, batch.queued);
  const ended = batch.done + batch.failed + batch.dead_lettered + batch.cancelled;
  return h("tr", { "data-batch": batch.id },
    h("td", {}, link("/batches/" + enc(batch.id), batch.id)),
    h("td", {}, batch.backlog),
    h("td", {}, progress([["done", batch.done], ["failed", batch.failed + batch.dead_lettered], ["cancelled", batch.cancelled], ["running", batch.running]], total),
      h("span", { class: "caption" }, " " + ended + " / " + total)),
    h("td", { class: "num" }, batch.done),
    // as `orchestrator status` counts them: failed for good, and dead-lettered apart
    h("td", { class: "num", "data-field": "failed" }, batch.failed),
    h("td", { class: "num", "data-field": "dead" }, batch.dead_lettered),
    h("td", { class: "num" }, batch.cancelled),
    h("td", { class: "num" }, batch.pending),
    h("td", {}, h("span", { class: "badge " + batch.state, "data-field": "state" }, batch.state)),
    h("td", {}, when(batch.created_at)),
    h("td", { "data-field": "expires" }, batch.kept_forever ? "never" : when(batch.expires_at)));
}

const BATCH_HEADERS = ["batch", "backlog", "progress", "done", "failed", "dead", "cancelled", "pending", "state", "created", "leaves Redis"];

function drawOverview(s, refresh) {
  const noWorker = Object.entries(s.no_worker || {});
  replace(main,
    h("div", { class: "summary" },
      // the same words as `orchestrator status` (status/verdict.py)
      h("span", { id: "spill", class: s.spillover.kind === "spillover" ? "spill on" : "spill", "data-field": "spill" },
        s.spillover.text),
      h("span", {}, "namespace " + s.namespace),
      s.redis ? h("span", { class: "caption" }, "Redis " + s.redis.url + " (" + s.redis.origin + ")") : null),
    noWorker.length ? h("p", { class: "warning" }, noWorker.map(([task, w]) => w.jobs + " " + task + " jobs wait: no live worker runs that task. ")) : null,
    section("Pools, in routing order", h("div", { class: "pools" }, s.pools.map((p, i) => poolCard(p, i, s.pools, refresh)))),
    historySection,
    h("div", { class: "columns" },
      section("Backlogs", table(["backlog", "depth", "priority levels", ""], s.backlogs.map((b) => h("tr", { "data-backlog": b.name },
        h("td", {}, b.name, b.paused_at ? h("span", { class: "badge paused" }, "paused") : null),
        h("td", { class: "num", "data-field": "depth" }, b.depth),
        h("td", {}, b.levels.map((l) => l.level + ": " + l.depth).join(", ") || "–"),
        h("td", {}, pauseButton("backlogs", b.name, b.paused_at, refresh)))))),
      section("Conductors",
        h("div", { class: "stats" },
          stat("alive", s.conductor.live.length, "conductors"),
          stat("taking", s.conductor.processing),
          stat("ready", s.conductor.ready),
          stat("deferred", s.conductor.deferred),
          s.conductor.orphaned ? stat("orphaned", s.conductor.orphaned) : null),
        s.conductor.next_due_in !== null ? h("p", { class: "caption" }, "next deferred job due in " + secs(s.conductor.next_due_in)) : null),
      section("Rate limits", table(["bucket", "rate", "burst", "tokens"], s.rate_limits.map((b) => h("tr", {},
        h("td", {}, b.name), h("td", { class: "num" }, b.rate + "/s"), h("td", { class: "num" }, b.burst),
        h("td", {}, bar(b.tokens, b.burst, b.tokens + " of " + b.burst + " tokens"), " " + b.tokens.toFixed(1)))))),
      section("Dead letters", h("p", {}, h("a", { href: "/dead", "data-field": "dead-letters" }, plural(s.dead_letters, "dead letter"))))),
    section("Latest batches", table(BATCH_HEADERS, s.batches.slice(0, 8).map(batchRow)),
      h("p", {}, link("/batches", "all " + plural(s.batches_total, "batch", "batches") + " →"))));
}

// The history charts: one node kept across the overview's redraws (its range choice
// with it), refreshed from /api/history on its own, slower clock.
const HISTORY_MS = 10000;
let historyMinutes = 60;
const historyBody = h("div", { id: "history" }, h("p", { class: "caption" }, "loading…"));
const historySection = h("section", {},
  h("div", { class: "title" }, h("h2", {}, "History"),
    h("span", { class: "actions" }, h("label", {}, "last ",
      h("select", { id: "history-range", onchange: (e) => { historyMinutes = Number(e.target.value); loadHistory(); } },
        [[60, "hour"], [360, "6 hours"], [1440, "day"]].map(([m, label]) => h("option", { value: m, selected: m === historyMinutes }, label)))))),
  historyBody);

async function loadHistory() {
  try {
    const hist = await getJson("/api/history?minutes=" + historyMinutes);
    replace(historyBody, historyCharts(hist));
  } catch (error) {
    replace(historyBody, h("p", { class: "caption" }, "history: " + error.message));
  }
}

function overview() {
  loadHistory();
  setInterval(loadHistory, HISTORY_MS);
  const source = watchStatus((s) => drawOverview(s, refresh));
  function refresh() {
    getJson("/api/status").then((s) => drawOverview(s, refresh)).catch(() => {});
  }
  window.addEventListener("beforeunload", () => source.close());
}

// --- batches -------------------------------------------------------------------------

function batches() {
  const params = new URLSearchParams(location.search);
  const page = Math.max(1, parseInt(params.get("page") || "1", 10) || 1);
  poll("/api/batches?page=" + page, (reply) => {
    const pages = Math.max(1, Math.ceil(reply.total / reply.page_size));
    replace(main,
      section("Batches, newest first",
        table(BATCH_HEADERS, reply.batches.map(batchRow), { id: "batches" }),
        h("nav", { class: "pager" },
          page > 1 ? link("/batches?page=" + (page - 1), "← newer") : null,
          h("span", {}, "page " + page + " of " + pages + " (" + reply.total + " batches)"),
          page < pages ? link("/batches?page=" + (page + 1), "older →") : null)));
  });
}

function batchPage(id) {
  const params = new URLSearchParams(location.search);
  let state = params.get("state") || "";
  let offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const path = () => "/api/batches/" + enc(id) + "?offset=" + offset + (state ? "&state=" + state : "");
  const view = poll(path, draw);

  function go(newState, newOffset) {
    state = newState;
    offset = newOffset;
    const query = new URLSearchParams();
    if (state) query.set("state", state);
    if (offset) query.set("offset", offset);
    history.replaceState(null, "", location.pathname + (query.toString() ? "?" + query : ""));
    view.refresh();
  }

  function draw(b) {
    const c = b.counts;
    const ended = c.succeeded + c.failed + c.dead_lettered + c.cancelled;
    const settled = b.dispatched && c.pending === 0 && c.running === 0 && c.retrying === 0;
    const failures = c.failed + c.dead_lettered;
    const jobs = b.jobs;
    replace(main,
      h("div", { class: "title" },
        h("h1", {}, "Batch ", h("span", { class: "mono", id: "batch-id" }, b.id)),
        h("span", { class: "badge " + (b.cancelled_at ? "cancelled" : settled ? (failures ? "failed" : "succeeded") : "running"), "data-field": "state" },
          b.cancelled_at ? "cancelled" : settled ? (failures ? "failed" : "succeeded") : "running"),
        h("span", { class: "actions" },
          b.cancelled_at || settled ? null : button("Cancel batch", async () => {
            const r = await act("/api/batches/" + enc(b.id) + "/cancel", {}, "Cancel batch " + b.id + "? Jobs not started will not run.");
            if (r) { notify("cancelled " + r.cancelled + " jobs of " + b.id); view.refresh(); }
          }, "danger"),
          failures ? button("Retry failures", async () => {
            const r = await act("/api/batches/" + enc(b.id) + "/retry", {}, "Run the " + failures + " failed jobs of " + b.id + " again?");
            if (r) { notify("requeued " + r.requeued + " jobs of " + b.id); view.refresh(); }
          }) : null)),
      h("p", { class: "caption" }, "backlog " + b.backlog + " · manifest " + (b.manifest || "–") + " · dispatched ", when(b.created_at),
        b.cancelled_at ? [" · cancelled ", when(b.cancelled_at)] : null,
        b.expires_at ? [" · leaves Redis for its archive ", when(b.expires_at)] : null,
        b.complete ? "" : " · counted from the first receipts only"),
      progress([["done", c.succeeded], ["failed", failures], ["cancelled", c.cancelled], ["running", c.running]], Math.max(b.total, b.queued)),
      h("div", { class: "stats" }, STATES.map((s) => stat(s.replace("_", " "), c[s], s)), stat("pending", c.pending, "pending"),
        stat("of", b.total, "total")),
      h("div", { class: "columns" },
        section("Durations of successes", b.durations ? h("div", { class: "stats" },
          stat("p50", secs(b.durations.p50)), stat("p95", secs(b.durations.p95)), stat("max", secs(b.durations.max))) : h("p", {}, "none yet")),
        section("Per pool", table(["pool", ...STATES.map((s) => SHORT[s])], Object.entries(b.pools).map(([pool, n]) => h("tr", { "data-pool": pool },
          h("td", {}, pool), STATES.map((s) => h("td", { class: "num" }, n[s] || 0))))))),
      section("Per task", table(["task", ...STATES.map((s) => SHORT[s])], Object.entries(b.tasks).map(([task, n]) => h("tr", {},
        h("td", { class: "task" }, task), STATES.map((s) => h("td", { class: "num" }, n[s] || 0)))), { id: "per-task" })),
      section("Jobs",
        h("div", { class: "filters" }, h("label", {}, "show ",
          h("select", { id: "state-filter", onchange: (e) => go(e.target.value, 0) },
            h("option", { value: "", selected: !state }, "all"),
            [...STATES, "pending"].map((s) => h("option", { value: s, selected: s === state }, s.replace("_", " ") + " (" + c[s] + ")"))))),
        table(["job", "task", "state", "pool", "worker", "attempt", "started", "duration", "error"], jobs.rows.map((j) => h("tr", { "data-job": j.id, "data-state": j.state },
          h("td", { class: "mono" }, link("/jobs/" + enc(j.id) + "?batch=" + enc(b.id), j.id)), h("td", {}, j.task),
          h("td", {}, h("span", { class: "badge " + j.state }, j.state.replace("_", " "))),
          h("td", {}, j.pool || "–"), h("td", { class: "mono" }, j.worker || "–"), h("td", { class: "num" }, j.attempt || "–"),
          h("td", {}, when(j.started_at)), h("td", { class: "num" }, secs(j.duration)),
          h("td", { class: j.where ? "caption" : "error" }, j.where ? "waits in " + j.where : j.error || "")))),
        h("nav", { class: "pager" },
          offset > 0 ? button("← previous", () => go(state, Math.max(0, offset - 100)), "small") : null,
          h("span", {}, jobs.total ? (offset + 1) + "–" + Math.min(jobs.total, offset + jobs.rows.length) + " of " + jobs.total : "no jobs"),
          offset + jobs.rows.length < jobs.total ? button("next →", () => go(state, offset + 100), "small") : null)));
  }
}

// --- dead letters ----------------------------------------------------------------------

// Bulk actions: every dead letter of a reason and/or a batch (the choices are what the
// page shows), requeued or purged; purging with neither chosen purges all.
let bulkReason = "", bulkBatch = "";

function bulkBar(reply, view) {
  const reasons = [...new Set(reply.letters.map((d) => d.reason))].sort();
  const batches = [...new Set(reply.letters.map((d) => d.batch).filter(Boolean))].sort();
  const which = () => [bulkReason ? "reason " + bulkReason : null, bulkBatch ? "batch " + bulkBatch : null].filter(Boolean).join(" and ");
  const body = () => Object.assign({}, bulkReason ? { reason: bulkReason } : {}, bulkBatch ? { batch: bulkBatch } : {});
  return h("div", { class: "bulk filters", id: "bulk" },
    h("label", {}, "reason ", h("select", { id: "bulk-reason", onchange: (e) => { bulkReason = e.target.value; } },
      h("option", { value: "" }, "any"), reasons.map((r) => h("option", { value: r, selected: r === bulkReason }, r)))),
    " ",
    h("label", {}, "batch ", h("select", { id: "bulk-batch", onchange: (e) => { bulkBatch = e.target.value; } },
      h("option", { value: "" }, "any"), batches.map((b) => h("option", { value: b, selected: b === bulkBatch }, b)))),
    " ",
    button("Requeue all matching", async () => {
      if (!bulkReason && !bulkBatch) { notify("Choose a reason or a batch to requeue.", "error"); return; }
      const r = await act("/api/dead/requeue", body(), "Requeue every dead letter of " + which() + "? They run again.");
      if (r) { notify("requeued " + r.requeued + " of " + r.matched + " dead letters (" + which() + ")"); view.refresh(); }
    }, "small"),
    " ",
    button("Purge all matching", async () => {
      const all = !bulkReason && !bulkBatch;
      const r = await act("/api/dead/purge", all ? { all: true } : body(),
        "Delete " + (all ? "every dead letter" : "every dead letter of " + which()) + "? They will not run again.");
      if (r) { notify("purged " + r.purged + " dead letters" + (all ? "" : " (" + which() + ")")); view.refresh(); }
    }, "small danger"));
}

function deadLetters() {
  const params = new URLSearchParams(location.search);
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  let bar = null;
  const view = poll("/api/dead?offset=" + offset, (reply) => {
    // the bar is drawn once per set of choices, so a refresh never closes an open select
    const key = JSON.stringify([reply.letters.map((d) => [d.reason, d.batch])]);
    if (!bar || bar.key !== key) bar = { key, el: bulkBar(reply, view) };
    replace(main,
      section("Dead letters, newest first (" + reply.total + ")",
        reply.total ? bar.el : null,
        table(["dead letter", "job", "task", "batch", "reason", "error", "when", ""], reply.letters.map((d) => h("tr", { "data-ref": d.ref },
          h("td", { class: "mono" }, link("/dead/" + enc(d.ref), d.ref)),
          h("td", {}, d.job_id ? link("/jobs/" + enc(d.job_id) + (d.batch ? "?batch=" + enc(d.batch) : ""), "job →") : "–"),
          h("td", {}, d.task || "–"),
          h("td", {}, d.batch ? link("/batches/" + enc(d.batch), d.batch) : "–"),
          h("td", {}, d.reason),
          h("td", { class: "error" }, d.error),
          h("td", {}, when(d.at)),
          h("td", {}, requeueButton(d.ref, view))))),
        h("nav", { class: "pager" },
          offset > 0 ? link("/dead?offset=" + Math.max(0, offset - reply.page_size), "← newer") : null,
          offset + reply.letters.length < reply.total ? link("/dead?offset=" + (offset + reply.page_size), "older →") : null)));
  });
}

function requeueButton(ref, view) {
  return button("Requeue", async () => {
    const r = await act("/api/dead/" + enc(ref) + "/requeue", {}, null);
    if (r) { notify("requeued " + ref + " (" + r.task + "): it runs again"); view.refresh(); }
  }, "small");
}

function deadLetter(ref) {
  const view = poll("/api/dead/" + enc(ref), (d) => {
    replace(main,
      h("div", { class: "title" },
        h("h1", {}, "Dead letter ", h("span", { class: "mono" }, d.ref)),
        h("span", { class: "actions" }, requeueButton(d.ref, { refresh: () => { location.href = "/dead"; } }))),
      h("dl", { class: "fields" },
        h("dt", {}, "task"), h("dd", {}, d.task || "–"),
        h("dt", {}, "job"), h("dd", {}, d.job_id ? link("/jobs/" + enc(d.job_id) + (d.batch ? "?batch=" + enc(d.batch) : ""), d.job_id) : "–"),
        h("dt", {}, "batch"), h("dd", {}, d.batch ? link("/batches/" + enc(d.batch), d.batch) : "–"),
        h("dt", {}, "reason"), h("dd", {}, d.reason),
        h("dt", {}, "when"), h("dd", {}, when(d.at)),
        h("dt", {}, "records"), h("dd", {}, d.records)),
      section("Last error", h("pre", { class: "error", id: "last-error" }, d.error || "–")),
      section("Payload", h("pre", { id: "payload" }, typeof d.payload === "string" ? d.payload : JSON.stringify(d.payload, null, 2))),
      d.receipt ? section("Receipt", h("pre", {}, JSON.stringify(d.receipt, null, 2))) : null);
  });
  return view;
}

// --- jobs ----------------------------------------------------------------------------

function jobSearch(where) {
  const input = h("input", { type: "search", id: where + "-job-id", name: "job", placeholder: "a job id, e.g. mybatch_01:3", size: 36, required: true });
  return h("form", { class: "search", id: where + "-job-search", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const id = input.value.trim();
    if (id) location.href = "/jobs/" + enc(id);
  } }, h("label", {}, "Job ", input), " ", h("button", { type: "submit" }, "Find"));
}

function jobsIndex() {
  replace(main, section("Find a job", jobSearch("page"),
    h("p", { class: "caption" }, "Any job: waiting, running, finished or dead-lettered. Jobs are also linked from their batch's page and from the dead letters.")));
}

function pretty(value) {
  return value === null || value === undefined ? "–" : typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function jobPage(id) {
  const batch = new URLSearchParams(location.search).get("batch");
  poll("/api/jobs/" + enc(id) + (batch ? "?batch=" + enc(batch) : ""), (j) => {
    replace(main,
      h("div", { class: "title" },
        h("h1", {}, "Job ", h("span", { class: "mono", id: "job-title" }, j.id)),
        h("span", { class: "badge " + j.state, "data-field": "state" }, j.state.replace("_", " "))),
      h("dl", { class: "fields" },
        h("dt", {}, "task"), h("dd", { "data-field": "task" }, j.task || "–"),
        h("dt", {}, "batch"), h("dd", {}, j.batch ? link("/batches/" + enc(j.batch), j.batch) : "–"),
        h("dt", {}, "dispatched"), h("dd", {}, when(j.dispatched_at)),
        h("dt", {}, "in a pool's queue"), h("dd", {}, j.in_arq ? "yes (arq holds it)" : "no")),
      h("div", { class: "columns" },
        section("Arguments", h("pre", { id: "job-args" }, j.args === null ? "not kept once it ran (see its manifest)" :
          pretty({ args: j.args, kwargs: j.kwargs, meta: j.meta }))),
        j.error ? section("Error", h("pre", { class: "error", id: "job-error" }, j.error)) :
          section("Result", h("pre", { id: "job-result" }, pretty(j.result)))),
      section("Runs, latest first",
        table(["attempt", "status", "pool", "worker", "started", "ended", "duration", "error"], j.runs.map((r) => h("tr", { "data-attempt": r.attempt },
          h("td", { class: "num" }, r.attempt ?? "–"), h("td", {}, h("span", { class: "badge " + r.status }, r.status)),
          h("td", {}, r.pool || "–"), h("td", { class: "mono" }, r.worker || "–"), h("td", {}, when(r.started_at)),
          h("td", {}, when(r.ended_at)), h("td", { class: "num" }, secs(r.duration)), h("td", { class: "error" }, r.error || "")))),
        h("p", { class: "caption" }, "Runs a retry followed are kept for 7 days; a run whose worker died left no record but its attempt number.")),
      j.dead_letters.length ? section("Dead letters",
        table(["reason", "error", "when", ""], j.dead_letters.map((d) => h("tr", {},
          h("td", {}, d.reason), h("td", { class: "error" }, d.error), h("td", {}, when(d.at)),
          h("td", {}, link("/dead/" + enc(j.id), "dead letter →")))))) : null,
      j.receipt ? section("Receipt", h("pre", { id: "job-receipt" }, pretty(j.receipt))) : null);
  });
}

// --- queues and workers ----------------------------------------------------------------

function queues() {
  poll("/api/queues?first=10", (reply) => {
    replace(main,
      h("p", { class: "caption" }, "The first " + reply.first + " jobs waiting in each place, in the order a job passes them: backlogs (highest priority level first), the conductors' lists, then each pool's queue."),
      reply.places.map((place) => h("section", { "data-place": place.label },
        h("h2", {}, place.label + " — " + plural(place.total, "job")),
        place.total ? table(["#", "job", "batch", "task", "priority", place.kind === "deferred" ? "due" : ""], place.jobs.map((j) => h("tr", { "data-job": j.id || "" },
          h("td", { class: "num" }, j.position),
          h("td", { class: "mono" }, j.id ? link("/jobs/" + enc(j.id) + (j.batch ? "?batch=" + enc(j.batch) : ""), j.id) : "(a line not taken yet)"),
          h("td", {}, j.batch ? link("/batches/" + enc(j.batch), j.batch) : "–"), h("td", {}, j.task || "–"),
          h("td", { class: "num" }, j.priority ?? 0), h("td", {}, j.due ? when(j.due) : "")))) : null)));
  });
}

function workersPage() {
  poll("/api/workers", (reply) => {
    replace(main, reply.pools.map((pool) => h("section", { "data-pool": pool.name },
      h("h2", {}, pool.name + " — " + plural(pool.workers.length, "worker")),
      table(["worker", "host", "slots", "running", "runs now", "last beat"], pool.workers.map((w) => h("tr", { "data-worker": w.id },
        h("td", { class: "mono" }, w.id + (w.draining ? " (draining)" : "")), h("td", {}, w.host + " · pid " + w.pid),
        h("td", { class: "num" }, w.slots), h("td", { class: "num" }, w.running),
        h("td", { class: "jobs" }, w.jobs.length ? w.jobs.map((j) => h("div", {},
          link("/jobs/" + enc(j.id) + (j.batch ? "?batch=" + enc(j.batch) : ""), j.id), j.task ? " " + j.task : "")) : "idle"),
        h("td", {}, when(w.beat_at))))))));
  });
}

// --- schedules and held batches ------------------------------------------------------

function schedulesPage() {
  const view = poll("/api/schedules", (reply) => {
    const refresh = () => view.refresh();
    replace(main,
      section("Schedules",
        reply.schedules.length ? table(["schedule", "workflow", "onto", "when", "next tick", "last tick", "last batch", "outcome", ""],
          reply.schedules.map((s) => h("tr", { "data-schedule": s.name },
            h("td", { class: "mono" }, s.name), h("td", {}, s.workflow), h("td", {}, s.backlog), h("td", {}, s.timing),
            h("td", { "data-field": "next" }, s.paused ? "paused" : when(s.next_tick)), h("td", {}, when(s.last_tick)),
            h("td", {}, s.last_batch ? link("/batches/" + enc(s.last_batch), s.last_batch) : "–"),
            h("td", { "data-field": "outcome", title: s.detail || "" }, s.outcome ? s.outcome + (s.detail ? ": " + s.detail : "") : "not fired yet"),
            h("td", {},
              button("Run now", async () => {
                const r = await act("/api/schedules/" + enc(s.name) + "/run", {}, "Run " + s.name + " now? It plans and dispatches a batch at once.");
                if (r) { notify(s.name + ": " + r.outcome + (r.batch ? " (batch " + r.batch + ")" : "")); refresh(); }
              }, "small"),
              button(s.paused ? "Resume" : "Pause", async () => {
                const r = await act("/api/schedules/" + enc(s.name) + (s.paused ? "/resume" : "/pause"), {},
                  s.paused ? null : "Pause " + s.name + "? Its ticks pass unfired until it is resumed.");
                if (r) { notify((s.paused ? "resumed " : "paused ") + s.name); refresh(); }
              }, "small"))))) :
          h("p", {}, "No schedules: add [[schedules]] to orchestrator.toml.")),
      section("Held batches (dispatch --after)",
        reply.held.length ? table(["batch", "state", "waiting for", "if one fails", "backlog", ""],
          reply.held.map((b) => h("tr", { "data-held": b.batch },
            h("td", {}, link("/batches/" + enc(b.batch), b.batch)), h("td", {}, b.held),
            h("td", {}, b.waiting_for || b.after), h("td", {}, b.after_policy), h("td", {}, b.backlog),
            h("td", {}, button("Release", async () => {
              const r = await act("/api/held/" + enc(b.batch) + "/release", {}, "Release " + b.batch + " now, whatever it waits for?");
              if (r) { notify(b.batch + ": " + r.state); refresh(); }
            }, "small"))))) :
          h("p", {}, "No batch waits for another.")));
  });
}

// --- start ---------------------------------------------------------------------------

function start() {
  takeTokenFromUrl();
  document.getElementById("search-slot").replaceChildren(jobSearch("top"));
  document.getElementById("token-button").addEventListener("click", () => {
    if (askToken()) notify("token kept for this browser");
  });
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const section = path === "/" ? "overview" : path.split("/")[1];
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
  }
  let match;
  if (path === "/") overview();
  else if (path === "/batches") batches();
  else if ((match = /^\/batches\/(.+)$/.exec(path))) batchPage(decodeURIComponent(match[1]));
  else if (path === "/dead") deadLetters();
  else if ((match = /^\/dead\/(.+)$/.exec(path))) deadLetter(decodeURIComponent(match[1]));
  else if (path === "/jobs") jobsIndex();
  else if ((match = /^\/jobs\/(.+)$/.exec(path))) jobPage(decodeURIComponent(match[1]));
  else if (path === "/queues") queues();
  else if (path === "/workers") workersPage();
  else if (path === "/schedules") schedulesPage();
  else replace(main, h("p", {}, "No such page. ", link("/", "Overview")));
}

start();
