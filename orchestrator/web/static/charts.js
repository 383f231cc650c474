// The overview's history charts (/api/history), drawn as plain SVG: no library, no
// network. Each chart is one <svg> with a line per series, its scale and a legend;
// `historyCharts` returns the element the overview shows.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fdb", "#7b4bd6", "#1f9d55", "#c77c02", "#0b8a8a", "#b83280", "#5d6777"];
const CHART_W = 420, CHART_H = 150, PAD_L = 50, PAD_R = 8, PAD_T = 10, PAD_B = 22;

function svgEl(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = Math.pow(10, Math.floor(Math.log10(value)));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function shortNumber(value, money) {
  if (money) return value === 0 ? "$0" : "$" + (value >= 1 ? value.toFixed(2) : value.toPrecision(2));
  if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (value >= 1e3) return (value / 1e3).toFixed(1) + "k";
  return String(Math.round(value * 100) / 100);
}

// series: [{name, values: [number|null], dashed?, color?}]; times: unix seconds per value
function lineChart(title, series, times, options) {
  const opts = options || {};
  const top = niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));
  const n = times.length;
  const x = (i) => PAD_L + (n > 1 ? (i / (n - 1)) * (CHART_W - PAD_L - PAD_R) : 0);
  const y = (v) => PAD_T + (1 - v / top) * (CHART_H - PAD_T - PAD_B);
  const svg = svgEl("svg", {
    viewBox: "0 0 " + CHART_W + " " + CHART_H, class: "chart", role: "img",
    "aria-label": title, preserveAspectRatio: "none",
  });
  for (const f of [0, 0.5, 1]) {
    svg.append(svgEl("line", { x1: PAD_L, x2: CHART_W - PAD_R, y1: y(top * f), y2: y(top * f), class: "grid" }));
    svg.append(svgEl("text", { x: PAD_L - 4, y: y(top * f) + 4, class: "tick", "text-anchor": "end" }, shortNumber(top * f, opts.money)));
  }
  if (n) {
    svg.append(svgEl("text", { x: PAD_L, y: CHART_H - 6, class: "tick" }, clock(times[0])));
    svg.append(svgEl("text", { x: CHART_W - PAD_R, y: CHART_H - 6, class: "tick", "text-anchor": "end" }, "now"));
  }
  const legend = [];
  series.forEach((s, index) => {
    const color = s.color || PALETTE[index % PALETTE.length];
    let d = "";
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1);
      pen = true;
    });
    const total = s.values.reduce((a, v) => a + (v || 0), 0);
    svg.append(svgEl("path", {
      d: d || "M0 0", fill: "none", stroke: color, "stroke-width": 2, "vector-effect": "non-scaling-stroke",
      "stroke-dasharray": s.dashed ? "5 3" : null, "data-series": s.name,
    }, svgEl("title", {}, s.name)));
    const swatch = h("span", { class: "swatch" + (s.dashed ? " dashed" : "") });
    swatch.style.borderColor = color;
    legend.push(h("span", { class: "key", "data-series": s.name }, swatch, s.name,
      opts.sum ? h("b", {}, " " + (opts.money ? money4(total) : String(Math.round(total)))) : null));
  });
  return h("figure", { class: "chart-card", "data-chart": opts.id || title },
    h("figcaption", {}, title),
    svg,
    h("div", { class: "legend" }, legend.length ? legend : h("span", { class: "caption" }, "nothing recorded yet")));
}

function clock(unix) {
  const d = new Date(unix * 1000);
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

function money4(value) {
  return "$" + Number(value).toFixed(4);
}

function historyCharts(hist) {
  const times = hist.points.map((p) => p.at);
  const throughput = [];
  hist.pools.forEach((pool, i) => {
    const color = PALETTE[i % PALETTE.length];
    throughput.push({ name: pool + " succeeded", color, values: hist.points.map((p) => p.succeeded[pool]) });
    // a pool's failures only when it had some: a flat dashed zero line is noise
    if (hist.totals.failed[pool]) throughput.push({ name: pool + " failed", color, dashed: true, values: hist.points.map((p) => p.failed[pool]) });
  });
  const depth = hist.backlogs.map((name) => ({ name, values: hist.points.map((p) => p.depth[name]) }));
  const spend = hist.spend_pools.map((pool) => ({ name: pool, values: hist.points.map((p) => p.spend[pool]) }));
  return h("div", { class: "charts", id: "history-charts" },
    lineChart("Jobs finished per minute", throughput, times, { id: "throughput", sum: true }),
    lineChart("Backlog depth", depth, times, { id: "depth" }),
    lineChart("Cloud spend per minute", spend, times, { id: "spend", money: true, sum: true }));
}
