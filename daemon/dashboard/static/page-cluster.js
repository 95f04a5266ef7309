// Cluster: this node's view of the members, the leader, terms, indexes, clocks, storage, and the
// workers connected to the leader with their load. Refreshed every 5 s. Needs role admin (Cluster.Status).
import * as api from "./api.js";
import { h, append, clear, badge, bytes, card, dl, duration, table } from "./dom.js";
import { errorBanner, every } from "./ui.js";
import { throughputChart } from "./chart.js";

export async function clusterPage(main) {
  const area = h("div");
  const statsArea = h("section", { class: "card", id: "cluster-stats" });
  main.append(h("div", { class: "row spread" }, h("h1", {}, "Cluster"), h("span", { class: "muted small" }, "refreshed every 5 s")), area, statsArea);
  const draw = async () => {
    const [st, stats] = await Promise.allSettled([api.get("/cluster"), api.get("/stats")]);
    if (st.status === "fulfilled") append(clear(area), view(st.value));
    else if (st.reason.status !== 401) clear(area).append(errorBanner(st.reason));
    clear(statsArea).append(h("h2", {}, "Executions, last 24 h"));
    if (stats.status === "fulfilled") append(statsArea, statsView(stats.value, statsArea));
    else if (stats.reason.status !== 401) statsArea.append(errorBanner(stats.reason));
  };
  await draw();
  return every(5000, draw);
}

function ms(v) {
  return v === null || v === undefined ? "—" : `${v} ms`;
}

function view(st) {
  const lag = st.commit_lag;
  const clock = st.clock_measured === null ? "not measured" : st.clock_healthy ? "healthy" : "OFF";
  const summary = h("div", { class: "grid" },
    stat("This node", [st.node_id, " ", st.is_leader ? badge("ok", "leader") : badge("idle", "follower")]),
    stat("Leader", st.leader_id || "none known"),
    stat("Term", `${st.term} (epoch ${st.epoch_term})`),
    stat("Commit / applied", `${st.commit_index} / ${st.applied_index}`),
    stat("Apply lag", [`${lag} entries `, lag > 100 ? badge("warn", "behind") : null]),
    stat("Ready", st.ready ? badge("ok", "yes") : badge("warn", "no")),
    stat("Clock", [badge(st.clock_healthy === false ? "bad" : "ok", clock), ` offset ${ms(st.clock_offset_ms)}, correction ${ms(st.clock_correction_ms)}`]),
    stat("Workers", String(st.connected_workers)),
  );
  const warnings = [];
  if (st.dispatch_held) warnings.push(h("div", { class: "banner error" }, `Dispatch held: ${st.versions_mismatch || "members disagree on schedule-result versions"}`));
  if (st.storage && st.storage.exhausted) warnings.push(h("div", { class: "banner error" }, `Storage exhausted: ${st.storage.reason}`));
  const members = table(
    [
      { title: "Node", cell: (m) => [m.node_id, " ", m.node_id === st.leader_id ? badge("ok", "leader") : null], sort: (m) => m.node_id },
      { title: "gRPC", cell: (m) => h("code", {}, m.grpc_address), class: "wide-only" },
      { title: "Raft", cell: (m) => h("code", {}, m.raft_address), class: "wide-only" },
      { title: "Connected", cell: (m) => (m.connected ? badge("ok", "yes") : badge("bad", "no")) },
      { title: "Clock offset", cell: (m) => ms(m.clock_offset_ms), class: "num" },
      { title: "RTT", cell: (m) => ms(m.clock_rtt_ms), class: "num wide-only" },
      { title: "Store used", cell: (m) => (m.storage ? `${bytes(m.storage.used_bytes)} of ${bytes(m.storage.max_map_size_bytes)}` : "—"), class: "num" },
      { title: "Disk free", cell: (m) => (m.storage ? bytes(m.storage.disk_free_bytes) : "—"), class: "num wide-only" },
      { title: "Storage", cell: (m) => (!m.storage ? "—" : m.storage.exhausted ? badge("bad", "exhausted") : badge("ok", "ok")) },
    ],
    st.members,
  );
  let workers;
  if (st.workers === null) {
    workers = h("p", { class: "muted" }, `Workers connect to the leader${st.leader_id ? ` (${st.leader_id})` : ""}; open its dashboard to see them.`);
  } else {
    workers = table(
      [
        { title: "Worker", cell: (w) => h("code", {}, w.worker_id), sort: (w) => w.worker_id },
        { title: "Load", cell: (w) => load(w), sort: (w) => w.running / w.capacity },
        { title: "Running", cell: (w) => `${w.running} / ${w.capacity}`, class: "num", sort: (w) => w.running },
        { title: "Queues", cell: (w) => w.queues.join(", ") },
        { title: "Labels", cell: (w) => Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(", ") || "—", class: "wide-only" },
        { title: "State", cell: (w) => (w.draining ? badge("warn", "draining") : w.silent ? badge("bad", "silent") : w.connected ? badge("ok", "connected") : badge("idle", "gone")) },
      ],
      st.workers,
      { empty: "No worker is connected." },
    );
  }
  return [
    ...warnings,
    card(null, summary),
    card("Members", members),
    card(`Workers (${st.workers ? st.workers.length : st.connected_workers})`, workers),
    st.versions ? card("Schedule-result versions", dl(Object.entries(st.versions).map(([k, v]) => [k, h("code", {}, v)]))) : null,
  ];
}

// GetClusterStats (reader in every namespace): what ended in the window, runs per minute over the last
// hour, the tasks failing most and the slowest.
function statsView(s, container) {
  const rate = (v) => `${Math.round(100 * v)} %`;
  const w = s.window;
  const ranked = (rows, value, title) => table(
    [
      { title: "Task", cell: (t) => h("a", { href: `#/task/${encodeURIComponent(t.task_id)}` }, t.name || t.task_id) },
      { title: "Namespace", cell: (t) => t.namespace, class: "wide-only" },
      { title, cell: value, class: "num" },
      { title: "Runs", cell: (t) => String(t.window.runs), class: "num" },
      { title: "Success", cell: (t) => rate(t.success_rate), class: "num" },
    ],
    rows,
    { empty: "None." },
  );
  const width = Math.max(300, Math.round(container.getBoundingClientRect().width) - 34);
  return [
    h("div", { class: "grid" },
      stat("Ended", String(w.runs)),
      stat("Succeeded", String(w.succeeded)),
      stat("Failed / timed out / lost", `${w.failed} / ${w.timed_out} / ${w.lost}`),
      stat("Success rate", w.runs ? rate(s.success_rate) : "—"),
      stat("Duration p50 / p95", w.runs ? `${duration(s.duration.p50_ms)} / ${duration(s.duration.p95_ms)}` : "—"),
      stat("Lateness p95", s.lateness.samples ? duration(s.lateness.p95_ms) : "—"),
    ),
    s.throughput.length ? [h("h2", {}, "Ended per minute, last hour (failures in red)"), throughputChart(s.throughput, { width })] : null,
    h("div", { class: "panes" },
      h("div", {}, h("h2", {}, "Most failures"), ranked(s.top_failing.filter((t) => t.failure_rate > 0), (t) => String(t.window.failed + t.window.timed_out + t.window.lost + t.window.expired), "Failures")),
      h("div", {}, h("h2", {}, "Slowest"), ranked(s.slowest, (t) => duration(t.duration.max_ms), "Longest run")),
    ),
  ];
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "label" }, label), h("span", { class: "value" }, value));
}

function load(w) {
  const pct = Math.min(100, Math.round((100 * w.running) / Math.max(1, w.capacity)));
  const bar = h("div", { class: pct >= 100 ? "bar full" : "bar", title: `${pct} %`, role: "img", "aria-label": `${pct} percent busy` }, h("span"));
  bar.firstChild.style.width = `${pct}%`; // CSSOM, allowed by the CSP (no inline style attribute)
  return bar;
}
