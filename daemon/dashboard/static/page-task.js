// Task detail: its summary and spec, the actions (pause, resume, trigger, cancel, each confirmed), its
// next fires with their DST and calendar notes (PreviewTask), statistics and charts of recent runs, the
// fire ledger (ExplainTask) and its executions.
import * as api from "./api.js";
import { h, append, clear, badge, dl, duration, schedule, table, when } from "./dom.js";
import { confirmAction, errorBanner, notice, Pager } from "./ui.js";
import { durationChart, legend, outcomeChart } from "./chart.js";

const EXEC_STATES = ["", "pending", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "buffered", "expired"];
const WINDOWS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };

export async function taskPage(main, { args, params, go }) {
  const id = args[0] || "";
  const messages = h("div", { id: "messages" });
  let task;
  try {
    task = await api.get(`/tasks/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 401) throw err;
    main.append(h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")), errorBanner(err));
    return null;
  }
  const head = h("div");
  const drawHead = (t) => {
    clear(head).append(
      h("p", { class: "small" }, h("a", { href: "#/tasks" }, "← Tasks")),
      h("div", { class: "row spread" },
        h("h1", {}, t.spec.name || t.task_id, " ", h("span", { id: "task-state" }, badge(t.state))),
        actions(t),
      ),
    );
  };

  function actions(t) {
    const act = async (label, path, dialog, payload = {}) => {
      if (!(await confirmAction(dialog))) return;
      try {
        const out = await api.post(`/tasks/${encodeURIComponent(t.task_id)}/${path}`, payload);
        if (path === "trigger") {
          notice(messages, "ok", "Triggered: ", h("a", { href: `#/execution/${encodeURIComponent(out.execution_id)}` }, `execution ${out.execution_id}`));
        } else {
          task = out;
          drawHead(task);
          drawSummary(task);
          notice(messages, "ok", `${label}: the task is now ${task.state}.`);
        }
      } catch (err) {
        if (err.status === 401) throw err;
        clear(messages).append(errorBanner(err));
      }
    };
    const name = t.spec.name || t.task_id;
    const button = (id, text, onclick, cls) => h("button", { type: "button", id, class: cls || null, onclick }, text);
    const buttons = [];
    if (t.state === "scheduled") {
      buttons.push(button("act-pause", "Pause", () => act("Paused", "pause", {
        title: "Pause this task?", body: `${name} will not fire until it is resumed. Running executions go on.`, action: "Pause",
      }, { note: "paused from the dashboard" })));
    }
    if (t.state === "paused") {
      buttons.push(button("act-resume", "Resume", () => act("Resumed", "resume", {
        title: "Resume this task?", body: `${name} fires again from its next due time; fires missed while paused are not replayed.`, action: "Resume",
      })));
    }
    if (t.state === "scheduled" || t.state === "paused") {
      buttons.push(button("act-trigger", "Trigger now", () => act("Triggered", "trigger", {
        title: "Run this task now?", body: `A manual execution of ${name} is fired now, besides its schedule.`, action: "Run now",
      })));
      buttons.push(button("act-cancel", "Cancel task", () => act("Cancelled", "cancel", {
        title: "Cancel this task?", body: `${name} will never fire again (this cannot be undone; its history stays).`, action: "Cancel task", danger: true,
      }), "danger"));
    }
    return h("div", { class: "row", id: "task-actions" }, buttons);
  }

  const summary = h("section", { class: "card", id: "task-summary" });
  const drawSummary = (t) => {
    clear(summary).append(
      h("h2", {}, "Summary"),
      dl([
        ["Task id", h("code", {}, t.task_id)],
        ["Namespace", t.namespace],
        ["Schedule", h("code", {}, schedule(t.spec.schedule))],
        ["Next fire", when(t.next_fire, t.next_fire_ms)],
        ["Last fired (nominal)", when(t.last_fired_nominal, t.last_fired_nominal_ms)],
        ["Last finished", when(t.last_finished, t.last_finished_ms)],
        ["Fires", String(t.fire_count)],
        ["Stored executions", String(t.stored_executions)],
        ["Paused", t.state === "paused" ? [when(t.paused_at, t.paused_at_ms), t.pause_note ? ` — ${t.pause_note}` : ""] : undefined],
        ["Queue", t.spec.queue],
        ["Timeout", duration(t.spec.timeout_ms)],
        ["Attempts", String(t.spec.max_attempts)],
        ["Overlap / misfire", `${t.spec.overlap} / ${t.spec.misfire}`],
        ["Tags", Object.entries(t.spec.tags).map(([k, v]) => `${k}=${v}`).join(", ")],
        ["Created", when(t.created_at, t.created_at_ms)],
        ["Updated", when(t.updated_at, t.updated_at_ms)],
        ["Version", String(t.version)],
      ], { two: true }),
      h("details", {}, h("summary", {}, "Spec (JSON, as schedctl task get -o json shows it)"), h("pre", { class: "json" }, JSON.stringify(t.spec, null, 2))),
    );
  };
  drawHead(task);
  drawSummary(task);

  const preview = h("section", { class: "card", id: "task-preview" }, h("h2", {}, "Next fires"));
  const stats = h("section", { class: "card", id: "task-stats" }, h("h2", {}, "Runs"));
  const ledgerCard = h("section", { class: "card", id: "task-ledger" });
  const execCard = h("section", { class: "card", id: "task-executions" });
  main.append(head, messages, summary, preview, stats, ledgerCard, execCard);

  const base = `/tasks/${encodeURIComponent(id)}`;
  const loads = [
    drawPreview(preview, base),
    drawStats(stats, base, go),
    drawLedger(ledgerCard, base, params.get("window") || "24h", (w) => go("task", [id], { window: w })),
    drawExecutions(execCard, base, go),
  ];
  await Promise.all(loads);
  return null;
}

async function drawPreview(area, base) {
  try {
    const { fires } = await api.get(`${base}/preview`, { count: 10 });
    area.append(
      table(
        [
          { title: "Local time (schedule's zone)", cell: (f) => h("code", {}, f.local_time || "—") },
          { title: "Fires at (your time)", cell: (f) => when(f.actual, f.actual_ms) },
          { title: "Notes", cell: (f) => (f.notes.length ? f.notes.map((n) => badge(/dst/.test(n) ? "warn" : "idle", n)) : h("span", { class: "muted" }, "—")) },
        ],
        fires,
        { empty: "No fire ahead (the task is paused, ended, or its schedule has no instant left)." },
      ),
    );
  } catch (err) {
    if (err.status === 401) throw err;
    area.append(errorBanner(err));
  }
}

async function drawStats(area, base, go) {
  // The charts use the most recent executions (up to 200): one page of the task's executions.
  let recent = [];
  try {
    recent = (await api.get(`${base}/executions`, { page_size: 200 })).executions;
  } catch (err) {
    if (err.status === 401) throw err;
    area.append(errorBanner(err));
    return;
  }
  let server = null;
  try {
    server = await api.get(`${base}/stats`);
  } catch (err) {
    if (err.status === 401) throw err;
    if (err.status !== 501) area.append(errorBanner(err));
  }
  const points = recent.map((e) => ({
    t: e.started_at_ms || e.fired_at_ms || e.nominal_time_ms,
    d: e.finished_at_ms && e.started_at_ms ? e.finished_at_ms - e.started_at_ms : null,
    state: e.state,
    id: e.execution_id,
  }));
  const finished = points.filter((p) => p.d !== null);
  const ds = finished.map((p) => p.d).sort((a, b) => a - b);
  const pct = (q) => (ds.length ? ds[Math.min(ds.length - 1, Math.floor(q * ds.length))] : null);
  const ok = recent.filter((e) => e.state === "succeeded").length;
  const failed = recent.filter((e) => ["failed", "lost", "expired", "timed_out"].includes(e.state)).length;
  const ended = recent.filter((e) => !["pending", "running", "buffered"].includes(e.state)).length;
  if (server) area.append(serverStats(server));
  area.append(
    h("p", { class: "muted small" }, `The last ${recent.length} executions (the charts below):`),
    h("div", { class: "grid" },
      stat("Runs", String(recent.length)),
      stat("Success rate", ended ? `${Math.round((100 * ok) / ended)} %` : "—"),
      stat("Failure rate", ended ? `${Math.round((100 * failed) / ended)} %` : "—"),
      stat("Duration p50", duration(pct(0.5))),
      stat("Duration p95", duration(pct(0.95))),
      stat("Max", duration(ds.length ? ds[ds.length - 1] : null)),
    ),
  );
  if (points.length) {
    // Drawn at the width they are shown at, so that their text keeps its size (a phone's, a wide screen's).
    const width = Math.max(300, Math.round(area.getBoundingClientRect().width) - 34);
    area.append(
      h("h2", {}, "Duration over time"),
      durationChart(points, { onPoint: (p) => go("execution", [p.id]), width }),
      h("h2", {}, "Outcomes over time"),
      outcomeChart(points, { width }),
      legend(),
    );
  } else {
    area.append(h("p", { class: "empty" }, "No execution yet."));
  }
}

// The statistics the cluster keeps (every run since the task was created, and a window of hours), as
// `schedctl task stats` shows them; an answer of another shape is listed key by key.
function serverStats(st) {
  const num = (v) => Number(v || 0);
  const rate = (v) => `${Math.round(100 * num(v))} %`;
  const q = (x, k) => (x && x[k] !== undefined ? duration(num(x[k])) : "—");
  const box = h("div", { id: "cluster-stats" }, h("h2", {}, "Kept by the cluster (last 24 h)"));
  if (!st.window || !st.duration) return append(box, dl(flatten(st)));
  const w = st.window;
  box.append(
    h("div", { class: "grid" },
      stat("Runs", String(num(w.runs))),
      stat("Succeeded", String(num(w.succeeded))),
      stat("Failed / timed out", `${num(w.failed)} / ${num(w.timed_out)}`),
      stat("Success rate", rate(st.success_rate)),
      stat("Failure rate", rate(st.failure_rate)),
      stat("Duration p50 / p95 / p99", `${q(st.duration, "p50_ms")} / ${q(st.duration, "p95_ms")} / ${q(st.duration, "p99_ms")}`),
      stat("Longest run", q(st.duration, "max_ms")),
      stat("Lateness p95", q(st.lateness, "p95_ms")),
      stat("All runs since created", st.total ? String(num(st.total.runs)) : "—"),
      stat("Last outcome", st.last_outcome ? badge(String(st.last_outcome).toLowerCase().replace(/^execution_/, "")) : "—"),
    ),
  );
  return box;
}

function flatten(obj, prefix = "") {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, key));
    else out.push([key.replace(/_/g, " "), Array.isArray(v) ? JSON.stringify(v) : String(v)]);
  }
  return out;
}

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "label" }, label), h("span", { class: "value" }, value));
}

async function drawLedger(area, base, windowName, setWindow) {
  const span = WINDOWS[windowName] || WINDOWS["24h"];
  const select = h("select", { id: "ledger-window", "aria-label": "Ledger window" }, Object.keys(WINDOWS).map((w) => h("option", { value: w, selected: w === windowName }, `last ${w}`)));
  select.addEventListener("change", () => setWindow(select.value));
  area.append(h("div", { class: "row spread" }, h("h2", {}, "Fire ledger"), select));
  try {
    const ledger = await api.get(`${base}/ledger`, { from_ms: Math.max(0, Date.now() - span), limit: 200 });
    area.append(
      h("p", { class: "muted small" }, "Every nominal time of the window and what became of it (oldest first, at most 200)."),
      table(
        [
          { title: "Nominal time", cell: (r) => when(r.nominal_time, r.nominal_time_ms) },
          { title: "Outcome", cell: (r) => badge(r.outcome, r.outcome.replace(/_/g, " ")) },
          { title: "Late", cell: (r) => (r.late_ms ? duration(r.late_ms) : "—"), class: "num" },
          { title: "Reason", cell: (r) => r.reason || "—" },
          { title: "Execution", cell: (r) => (r.execution_id ? h("a", { href: `#/execution/${encodeURIComponent(r.execution_id)}` }, h("code", {}, r.execution_id.slice(0, 12) + "…")) : "—"), class: "wide-only" },
        ],
        ledger.records,
        { empty: "No nominal time in this window." },
      ),
    );
  } catch (err) {
    if (err.status === 401) throw err;
    area.append(errorBanner(err));
  }
}

async function drawExecutions(area, base, go) {
  const select = h("select", { id: "exec-state", "aria-label": "Execution state" }, EXEC_STATES.map((s) => h("option", { value: s }, s ? s.replace(/_/g, " ") : "any state")));
  const list = h("div");
  area.append(h("div", { class: "row spread" }, h("h2", {}, "Executions"), select), list);
  const pager = new Pager(() => load());
  select.addEventListener("change", () => { pager.reset(); load(); });
  async function load() {
    try {
      const page = await api.get(`${base}/executions`, { state: select.value, page_size: 25, page_token: pager.token });
      clear(list).append(
        table(
          [
            { title: "Nominal time", cell: (e) => h("a", { href: `#/execution/${encodeURIComponent(e.execution_id)}` }, when(e.nominal_time, e.nominal_time_ms)) },
            { title: "State", cell: (e) => [badge(e.state), e.manual ? " manual" : ""] },
            { title: "Attempt", cell: (e) => String(e.attempt), class: "num" },
            { title: "Duration", cell: (e) => (e.started_at_ms && e.finished_at_ms ? duration(e.finished_at_ms - e.started_at_ms) : "—"), class: "num" },
            { title: "Worker", cell: (e) => e.worker_id || "—", class: "wide-only" },
            { title: "Exit", cell: (e) => (e.finished_at_ms ? String(e.exit_code) : "—"), class: "num wide-only" },
            { title: "Error", cell: (e) => e.error || e.waiting_reason || "", class: "wide-only" },
          ],
          page.executions,
          { onRow: (e) => go("execution", [e.execution_id]), empty: "No execution." },
        ),
        pager.view(page.next_page_token, page.executions.length),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      clear(list).append(errorBanner(err));
    }
  }
  await load();
}
