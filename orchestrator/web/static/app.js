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

function when(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "–";
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
  source.addEventListener("error", () => setLive("reconnecting…", false));
  return source;
}

async function getJson(path) {
  const response = await fetch(path, { credentials: "omit" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
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

function spillState(pools) {
  // Pools in routing order: the first with room takes new work; a later pool taking
  // work while the ones before it are full is the spillover this service exists for.
  const lines = [];
  pools.forEach((pool, i) => {
    const before = pools.slice(0, i);
    if (i > 0 && before.length && before.every((p) => p.free === 0 && p.capacity > 0) && pool.in_flight > 0) {
      lines.push(before.map((p) => p.name).join(", ") + " full → " + pool.name + " taking " + pool.in_flight);
    }
  });
  return lines;
}

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
    pool.workers.length ? h("details", {},
      h("summary", {}, plural(pool.workers.length, "worker")),
      table(["worker", "host", "slots", "running", "heartbeat"], pool.workers.map((w) => h("tr", {},
        h("td", {}, w.id + (w.draining ? " (draining)" : "")), h("td", {}, w.host), h("td", {}, w.slots),
        h("td", {}, w.running), h("td", {}, ago(w.heartbeat_age) + " ago"))))) : null);
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
    h("td", { class: "num" }, batch.failed + batch.dead_lettered),
    h("td", { class: "num" }, batch.cancelled),
    h("td", { class: "num" }, batch.pending),
    h("td", {}, h("span", { class: "badge " + batch.state, "data-field": "state" }, batch.state)),
    h("td", {}, when(batch.created_at)),
    h("td", { "data-field": "expires" }, batch.kept_forever ? "never" : when(batch.expires_at)));
}

const BATCH_HEADERS = ["batch", "backlog", "progress", "done", "failed", "cancelled", "pending", "state", "created", "leaves Redis"];

function drawOverview(s, refresh) {
  const spill = spillState(s.pools);
  const noWorker = Object.entries(s.no_worker || {});
  replace(main,
    h("div", { class: "summary" },
      h("span", { id: "spill", class: spill.length ? "spill on" : "spill", "data-field": "spill" },
        spill.length ? spill.join("; ") : s.pools.length > 1 ? s.pools[0].name + " has room: no spillover" : "one pool"),
      h("span", {}, "namespace " + s.namespace),
      s.redis ? h("span", { class: "caption" }, "Redis " + s.redis.url + " (" + s.redis.origin + ")") : null),
    noWorker.length ? h("p", { class: "warning" }, noWorker.map(([task, w]) => w.jobs + " " + task + " jobs wait: no live worker runs that task. ")) : null,
    section("Pools, in routing order", h("div", { class: "pools" }, s.pools.map((p, i) => poolCard(p, i, s.pools, refresh)))),
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

function overview() {
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
      h("p", { class: "caption" }, "backlog " + b.backlog + " · manifest " + (b.manifest || "–") + " · dispatched " + when(b.created_at) +
        (b.cancelled_at ? " · cancelled " + when(b.cancelled_at) : "") +
        (b.expires_at ? " · archived and removed from Redis after " + when(b.expires_at) : "") + (b.complete ? "" : " · counted from the first receipts only")),
      progress([["done", c.succeeded], ["failed", failures], ["cancelled", c.cancelled], ["running", c.running]], Math.max(b.total, b.queued)),
      h("div", { class: "stats" }, STATES.map((s) => stat(s.replace("_", " "), c[s], s)), stat("pending", c.pending, "pending"),
        stat("of", b.total, "total")),
      h("div", { class: "columns" },
        section("Durations of successes", b.durations ? h("div", { class: "stats" },
          stat("p50", secs(b.durations.p50)), stat("p95", secs(b.durations.p95)), stat("max", secs(b.durations.max))) : h("p", {}, "none yet")),
        section("Per pool", table(["pool", ...STATES.map((s) => SHORT[s])], Object.entries(b.pools).map(([pool, n]) => h("tr", { "data-pool": pool },
          h("td", {}, pool), STATES.map((s) => h("td", { class: "num" }, n[s] || 0)))))),
        section("Per task", table(["task", ...STATES.map((s) => SHORT[s])], Object.entries(b.tasks).map(([task, n]) => h("tr", {},
          h("td", {}, task), STATES.map((s) => h("td", { class: "num" }, n[s] || 0))))))),
      section("Jobs",
        h("div", { class: "filters" }, h("label", {}, "show ",
          h("select", { id: "state-filter", onchange: (e) => go(e.target.value, 0) },
            h("option", { value: "", selected: !state }, "all"),
            STATES.map((s) => h("option", { value: s, selected: s === state }, s.replace("_", " ") + " (" + c[s] + ")"))))),
        table(["job", "task", "state", "pool", "worker", "attempt", "duration", "error"], jobs.rows.map((j) => h("tr", { "data-job": j.id },
          h("td", { class: "mono" }, j.id), h("td", {}, j.task), h("td", {}, h("span", { class: "badge " + j.state }, j.state.replace("_", " "))),
          h("td", {}, j.pool || "–"), h("td", { class: "mono" }, j.worker || "–"), h("td", { class: "num" }, j.attempt || "–"),
          h("td", { class: "num" }, secs(j.duration)), h("td", { class: "error" }, j.error || "")))),
        h("nav", { class: "pager" },
          offset > 0 ? button("← previous", () => go(state, Math.max(0, offset - 100)), "small") : null,
          h("span", {}, jobs.total ? (offset + 1) + "–" + Math.min(jobs.total, offset + jobs.rows.length) + " of " + jobs.total : "no jobs"),
          offset + jobs.rows.length < jobs.total ? button("next →", () => go(state, offset + 100), "small") : null)));
  }
}

// --- dead letters ----------------------------------------------------------------------

function deadLetters() {
  const params = new URLSearchParams(location.search);
  const offset = Math.max(0, parseInt(params.get("offset") || "0", 10) || 0);
  const view = poll("/api/dead?offset=" + offset, (reply) => {
    replace(main,
      section("Dead letters, newest first (" + reply.total + ")",
        table(["job", "task", "batch", "reason", "error", "when", ""], reply.letters.map((d) => h("tr", { "data-ref": d.ref },
          h("td", { class: "mono" }, link("/dead/" + enc(d.ref), d.ref)),
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

// --- start ---------------------------------------------------------------------------

function start() {
  takeTokenFromUrl();
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
  else replace(main, h("p", {}, "No such page. ", link("/", "Overview")));
}

start();
