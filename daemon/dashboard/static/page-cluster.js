// Cluster: this node's view of the members, the leader, terms, indexes, clocks, storage, and the
// workers connected to the leader with their load. Refreshed every 5 s. Needs role admin (Cluster.Status).
import * as api from "./api.js";
import { h, clear, badge, bytes, card, dl, table } from "./dom.js";
import { errorBanner, every } from "./ui.js";

export async function clusterPage(main) {
  const area = h("div");
  main.append(h("div", { class: "row spread" }, h("h1", {}, "Cluster"), h("span", { class: "muted small" }, "refreshed every 5 s")), area);
  const draw = async () => {
    try {
      const st = await api.get("/cluster");
      clear(area).append(...view(st));
    } catch (err) {
      if (err.status === 401) throw err;
      clear(area).append(errorBanner(err));
    }
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

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "label" }, label), h("span", { class: "value" }, value));
}

function load(w) {
  const pct = Math.min(100, Math.round((100 * w.running) / Math.max(1, w.capacity)));
  const bar = h("div", { class: pct >= 100 ? "bar full" : "bar", title: `${pct} %`, role: "img", "aria-label": `${pct} percent busy` }, h("span"));
  bar.firstChild.style.width = `${pct}%`; // CSSOM, allowed by the CSP (no inline style attribute)
  return bar;
}
