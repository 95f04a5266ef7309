// Charts drawn as inline SVG, by hand: the durations of runs over time (one dot per execution) and their
// outcomes over time (stacked bars per time bucket). Colours are SVG presentation attributes (the CSP
// allows no inline style); each mark has a <title> for its exact values.
import { h, duration, formatLocal } from "./dom.js";

const COLOURS = { ok: "#1f7a3a", bad: "#b3261e", warn: "#a15c00", idle: "#6b7380", run: "#2457c5" };
const CLASS_OF = {
  succeeded: "ok", failed: "bad", lost: "bad", expired: "bad", timed_out: "warn", cancelled: "idle",
  running: "run", pending: "run", buffered: "run",
};
export const OUTCOME_LABELS = { ok: "succeeded", bad: "failed, lost, expired", warn: "timed out", idle: "cancelled", run: "not finished" };

export function outcomeClass(state) {
  return CLASS_OF[state] || "idle";
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function frame(width, height, m) {
  return { w: width - m.l - m.r, hgt: height - m.t - m.b, m };
}

function timeAxis(svg, f, t0, t1, height) {
  const y = height - f.m.b;
  svg.append(h("svg:line", { class: "axis", x1: f.m.l, x2: f.m.l + f.w, y1: y, y2: y }));
  const label = (t) => {
    const s = formatLocal(new Date(t));
    return t1 - t0 < 86400000 ? s.slice(11, 16) : s.slice(5, 16);
  };
  svg.append(
    h("svg:text", { x: f.m.l, y: y + 16, "text-anchor": "start" }, label(t0)),
    h("svg:text", { x: f.m.l + f.w, y: y + 16, "text-anchor": "end" }, label(t1)),
  );
}

// points: [{t, d, state, id}], t the run's start (or fire) time, d its duration in ms (null: not finished)
export function durationChart(points, { onPoint, width = 640, height = 220 } = {}) {
  const m = { l: 56, r: 12, t: 10, b: 24 };
  const f = frame(width, height, m);
  const svg = h("svg:svg", { class: "chart duration-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Run durations over time" });
  const done = points.filter((p) => p.d !== null && p.d !== undefined);
  let t0 = Math.min(...points.map((p) => p.t));
  let t1 = Math.max(...points.map((p) => p.t));
  if (t0 === t1) { t0 -= 60000; t1 += 60000; }
  const top = niceMax(Math.max(1, ...done.map((p) => p.d)));
  const x = (t) => m.l + ((t - t0) / (t1 - t0)) * f.w;
  const y = (d) => m.t + f.hgt - (d / top) * f.hgt;
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.append(h("svg:line", { class: i ? "grid" : "axis", x1: m.l, x2: m.l + f.w, y1: y(v), y2: y(v) }));
    svg.append(h("svg:text", { x: m.l - 6, y: y(v) + 4, "text-anchor": "end" }, duration(v)));
  }
  timeAxis(svg, f, t0, t1, height);
  for (const p of points) {
    const cls = outcomeClass(p.state);
    const unfinished = p.d === null || p.d === undefined;
    const dot = h("svg:circle", {
      cx: x(p.t).toFixed(1), cy: (unfinished ? y(0) : y(p.d)).toFixed(1), r: unfinished ? 3 : 4,
      fill: unfinished ? "none" : COLOURS[cls], stroke: COLOURS[cls], "stroke-width": 1.5, class: `dot c-${cls}`,
    }, h("svg:title", {}, `${formatLocal(new Date(p.t))} · ${unfinished ? "not finished" : duration(p.d)} · ${p.state.replace(/_/g, " ")}`));
    if (onPoint) {
      dot.addEventListener("click", () => onPoint(p));
      dot.setAttribute("cursor", "pointer");
    }
    svg.append(dot);
  }
  return svg;
}

// Outcomes per time bucket, stacked: at most `buckets` bars over the span of the points.
export function outcomeChart(points, { buckets = 24, width = 640, height = 140 } = {}) {
  const m = { l: 56, r: 12, t: 8, b: 24 };
  const f = frame(width, height, m);
  const svg = h("svg:svg", { class: "chart outcome-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Run outcomes over time" });
  let t0 = Math.min(...points.map((p) => p.t));
  let t1 = Math.max(...points.map((p) => p.t));
  if (t0 === t1) { t0 -= 60000; t1 += 60000; }
  const n = Math.max(1, Math.min(buckets, points.length));
  const span = (t1 - t0) / n;
  const counts = Array.from({ length: n }, () => ({ ok: 0, bad: 0, warn: 0, idle: 0, run: 0 }));
  for (const p of points) counts[Math.min(n - 1, Math.floor((p.t - t0) / span))][outcomeClass(p.state)]++;
  const top = niceMax(Math.max(1, ...counts.map((c) => Object.values(c).reduce((a, b) => a + b, 0))));
  const bw = f.w / n;
  for (const v of [0, top / 2, top]) {
    const yy = m.t + f.hgt - (v / top) * f.hgt;
    svg.append(h("svg:line", { class: v ? "grid" : "axis", x1: m.l, x2: m.l + f.w, y1: yy, y2: yy }));
    svg.append(h("svg:text", { x: m.l - 6, y: yy + 4, "text-anchor": "end" }, String(v)));
  }
  counts.forEach((c, i) => {
    let base = m.t + f.hgt;
    for (const cls of ["ok", "warn", "bad", "idle", "run"]) {
      if (!c[cls]) continue;
      const hh = (c[cls] / top) * f.hgt;
      base -= hh;
      svg.append(h("svg:rect", { x: (m.l + i * bw + 1).toFixed(1), y: base.toFixed(1), width: Math.max(1, bw - 2).toFixed(1), height: hh.toFixed(1), fill: COLOURS[cls], class: `bar c-${cls}` },
        h("svg:title", {}, `${formatLocal(new Date(t0 + i * span))}: ${c[cls]} ${OUTCOME_LABELS[cls]}`)));
    }
  });
  timeAxis(svg, f, t0, t1, height);
  return svg;
}

export function legend() {
  return h("div", { class: "legend" }, Object.entries(OUTCOME_LABELS).map(([cls, label]) => h("span", {}, h("span", { class: `key c-${cls}` }), label)));
}

// An execution's attempts on one time line: a bar per attempt from start to end, marks at fire and lease.
export function timeline(ex, { width = 640 } = {}) {
  const rows = ex.attempts.length + 1;
  const height = 26 * rows + 30;
  const m = { l: 100, r: 12, t: 8, b: 24 };
  const f = frame(width, height, m);
  const now = Date.now();
  const times = [ex.fired_at_ms, ex.leased_at_ms, ex.started_at_ms, ex.finished_at_ms, ...ex.attempts.flatMap((a) => [a.started_at_ms, a.finished_at_ms])].filter(Boolean);
  let t0 = Math.min(...times);
  let t1 = Math.max(...times, ex.finished_at_ms ? 0 : now);
  if (!Number.isFinite(t0)) return null;
  if (t1 - t0 < 1000) t1 = t0 + 1000;
  const x = (t) => m.l + ((t - t0) / (t1 - t0)) * f.w;
  const svg = h("svg:svg", { class: "chart timeline", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Attempts over time" });
  const mark = (t, label, yy) => {
    if (!t) return;
    svg.append(h("svg:line", { x1: x(t), x2: x(t), y1: yy - 9, y2: yy + 9, stroke: COLOURS.run, "stroke-width": 2 }, h("svg:title", {}, `${label} ${formatLocal(new Date(t))}`)));
  };
  const y0 = m.t + 13;
  svg.append(h("svg:text", { x: 4, y: y0 + 4 }, "fired / leased"));
  mark(ex.fired_at_ms, "fired", y0);
  mark(ex.leased_at_ms, "leased", y0);
  const attempts = ex.attempts.length ? ex.attempts : [];
  attempts.forEach((a, i) => {
    const yy = m.t + 13 + 26 * (i + 1);
    const cls = { succeeded: "ok", failed: "bad", refused: "bad", lost: "bad", timed_out: "warn", cancelled: "idle", not_started: "idle" }[a.outcome] || "idle";
    const start = a.started_at_ms || a.finished_at_ms;
    const end = a.finished_at_ms || now;
    svg.append(h("svg:text", { x: 4, y: yy + 4 }, `attempt ${a.attempt}`));
    svg.append(h("svg:rect", { x: x(start).toFixed(1), y: yy - 8, width: Math.max(2, x(end) - x(start)).toFixed(1), height: 16, rx: 3, fill: COLOURS[cls], class: `attempt c-${cls}` },
      h("svg:title", {}, `attempt ${a.attempt} on ${a.worker_id || "?"}: ${a.outcome.replace(/_/g, " ")} after ${duration(end - start)}${a.error ? ` (${a.error})` : ""}`)));
  });
  if (ex.state === "running" && ex.started_at_ms) {
    const yy = m.t + 13 + 26 * (attempts.length + 1);
    svg.setAttribute("viewBox", `0 0 ${width} ${height + 26}`);
    svg.append(h("svg:text", { x: 4, y: yy + 4 }, `attempt ${ex.attempt}`));
    svg.append(h("svg:rect", { x: x(ex.started_at_ms).toFixed(1), y: yy - 8, width: Math.max(2, x(now) - x(ex.started_at_ms)).toFixed(1), height: 16, rx: 3, fill: "none", stroke: COLOURS.run, "stroke-dasharray": "4 3" },
      h("svg:title", {}, `attempt ${ex.attempt}: running for ${duration(now - ex.started_at_ms)}`)));
    timeAxis(svg, f, t0, t1, height + 26);
  } else {
    timeAxis(svg, f, t0, t1, height);
  }
  return svg;
}

// Executions ended per minute (the cluster's last hour): a bar per minute, its failures drawn over it.
export function throughputChart(points, { width = 640, height = 140 } = {}) {
  const m = { l: 44, r: 12, t: 8, b: 24 };
  const f = frame(width, height, m);
  const svg = h("svg:svg", { class: "chart throughput-chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Executions ended per minute" });
  const top = niceMax(Math.max(1, ...points.map((p) => p.runs)));
  const bw = f.w / Math.max(1, points.length);
  for (const v of [0, top / 2, top]) {
    const yy = m.t + f.hgt - (v / top) * f.hgt;
    svg.append(h("svg:line", { class: v ? "grid" : "axis", x1: m.l, x2: m.l + f.w, y1: yy, y2: yy }));
    svg.append(h("svg:text", { x: m.l - 6, y: yy + 4, "text-anchor": "end" }, String(v)));
  }
  points.forEach((p, i) => {
    const x = (m.l + i * bw + 0.5).toFixed(1);
    const w = Math.max(1, bw - 1).toFixed(1);
    const tip = `${formatLocal(new Date(p.minute_ms)).slice(11, 16)}: ${p.runs} ended, ${p.failures} failed`;
    for (const [n, colour] of [[p.runs, COLOURS.ok], [p.failures, COLOURS.bad]]) {
      if (!n) continue;
      const hh = (n / top) * f.hgt;
      svg.append(h("svg:rect", { x, y: (m.t + f.hgt - hh).toFixed(1), width: w, height: hh.toFixed(1), fill: colour }, h("svg:title", {}, tip)));
    }
  });
  if (points.length) timeAxis(svg, f, points[0].minute_ms, points[points.length - 1].minute_ms, height);
  return svg;
}
