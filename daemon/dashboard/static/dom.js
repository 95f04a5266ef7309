// DOM and formatting helpers. Text always goes in as text nodes (never innerHTML), so names, output and
// error messages from the cluster cannot inject markup.
const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" && !svg) el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function badge(state, text) {
  return h("span", { class: `badge s-${state || "idle"}` }, text || (state || "").replace(/_/g, " "));
}

// Times: the local time of the browser, the UTC instant in the tooltip.
export function when(iso, ms) {
  if (!ms) return h("span", { class: "muted" }, "—");
  const d = new Date(ms);
  // The absolute time goes on a phone's width; the relative one stays (app.css).
  return h("span", { title: iso || d.toISOString(), class: "when" },
    h("span", { class: "abs" }, formatLocal(d)), " ", h("span", { class: "rel" }, relative(ms)));
}

export function formatLocal(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function relative(ms, now = Date.now()) {
  const s = Math.round((ms - now) / 1000);
  const a = Math.abs(s);
  if (a < 1) return "now";
  const text = a < 60 ? `${a} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return Number.isInteger(s) ? `${s} s` : `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const parts = [];
  const whole = Math.round(s);
  const [hours, mins, secs] = [Math.floor(whole / 3600), Math.floor((whole % 3600) / 60), whole % 60];
  if (hours) parts.push(`${hours} h`);
  if (mins) parts.push(`${mins} min`);
  if (secs && hours < 10) parts.push(`${secs} s`);
  return parts.join(" ");
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function schedule(s) {
  if (!s) return "";
  switch (s.kind) {
    case "cron": return `cron ${s.expression}${s.time_zone ? ` (${s.time_zone})` : ""}`;
    case "at": return `once at ${s.at || ""}`;
    case "fixed_rate": return `every ${duration(s.period_ms)}`;
    case "fixed_delay": return `${duration(s.delay_ms)} after each run`;
    default: return s.kind || "";
  }
}

export function shortId(id) {
  return id ? id.slice(0, 10) + "…" : "";
}

export function dl(pairs, { two = false } = {}) {
  const out = h("dl", { class: two ? "kv two" : "kv" });
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    out.append(h("dt", {}, k), h("dd", {}, v === null || v === "" ? h("span", { class: "muted" }, "—") : v));
  }
  return out;
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

export function table(columns, rows, { onRow, empty = "Nothing here." } = {}) {
  // columns: [{title, cell(row) -> Node|string, class?, sort?(row) -> value}]
  if (!rows.length) return h("p", { class: "empty" }, empty);
  const body = h("tbody");
  const draw = (list) => {
    clear(body);
    for (const r of list) {
      const tr = h("tr", onRow ? { class: "link", tabindex: "0" } : {});
      if (onRow) {
        tr.addEventListener("click", (e) => { if (!e.target.closest("a,button,input")) onRow(r); });
        tr.addEventListener("keydown", (e) => { if (e.key === "Enter") onRow(r); });
      }
      for (const c of columns) tr.append(h("td", { class: c.class || null }, c.cell(r)));
      body.append(tr);
    }
  };
  let sorted = { col: null, dir: 1 };
  const head = h("tr", {}, columns.map((c) => {
    const th = h("th", { class: [c.class || "", c.sort ? "sortable" : ""].join(" ").trim() || null, scope: "col" }, c.title);
    if (c.sort) {
      th.title = "Sort this page";
      th.addEventListener("click", () => {
        sorted = { col: c, dir: sorted.col === c ? -sorted.dir : 1 };
        const key = c.sort;
        draw([...rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * sorted.dir));
        for (const t of head.children) t.removeAttribute("aria-sort");
        th.setAttribute("aria-sort", sorted.dir > 0 ? "ascending" : "descending");
      });
    }
    return th;
  }));
  draw(rows);
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), body));
}

export function link(href, text) {
  return h("a", { href }, text);
}
