// Executions across tasks (ListExecutions without a task): by state, a window of fire or end times, worker,
// tags and namespace, newest first, a page at a time from the server's search indexes.
import * as api from "./api.js";
import { h, clear, badge, duration, table, when } from "./dom.js";
import { errorBanner, Pager } from "./ui.js";

const STATES = {
  "": "any state", running: "running", pending: "pending", succeeded: "succeeded",
  failures: "failed, timed out, lost or expired", cancelled: "cancelled",
};
const STATE_SETS = { failures: ["failed", "timed_out", "lost", "expired"] };
const WINDOWS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, all: 0 };

export async function executionsPage(main, { params, go }) {
  const f = {
    state: params.get("state") || "", window: params.get("window") || "24h", ended: params.get("ended") === "1",
    worker: params.get("worker") || "", tag: params.get("tag") || "", ns: params.get("ns") || "", all: params.get("all") === "1",
    task: params.get("task") || "",
  };
  const choice = (id, options, value, label = (k, v) => v) => h("select", { id }, Object.entries(options).map(([k, v]) => h("option", { value: k, selected: k === value }, label(k, v))));
  const stateSelect = choice("x-state", STATES, f.state);
  const windowSelect = choice("x-window", WINDOWS, f.window, (k) => (k === "all" ? "any time" : `last ${k}`));
  const endedBox = h("input", { type: "checkbox", id: "x-ended", checked: f.ended });
  const workerInput = h("input", { type: "text", id: "x-worker", value: f.worker, size: 12 });
  const tagInput = h("input", { type: "text", id: "x-tag", value: f.tag, placeholder: "team=data", size: 14 });
  const nsInput = h("input", { type: "text", id: "x-ns", value: f.ns, placeholder: "default", size: 10 });
  const allBox = h("input", { type: "checkbox", id: "x-all", checked: f.all });
  const taskInput = h("input", { type: "text", id: "x-task", value: f.task, placeholder: "task id", size: 28 });
  const form = h("form", { class: "filters", role: "search" },
    h("label", { class: "field" }, "State", stateSelect),
    h("label", { class: "field" }, "Fired", windowSelect),
    h("label", { class: "check" }, endedBox, "window on end times"),
    h("label", { class: "field" }, "Worker", workerInput),
    h("label", { class: "field" }, "Tags", tagInput),
    h("label", { class: "field" }, "Namespace", nsInput),
    h("label", { class: "check" }, allBox, "all namespaces"),
    h("label", { class: "field" }, "Task", taskInput),
    h("button", { type: "submit", class: "primary", id: "x-apply" }, "Search"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go("executions", [], {
      state: stateSelect.value, window: windowSelect.value === "24h" ? "" : windowSelect.value, ended: endedBox.checked ? "1" : "",
      worker: workerInput.value.trim(), tag: tagInput.value.trim(), ns: nsInput.value.trim(), all: allBox.checked ? "1" : "", task: taskInput.value.trim(),
    });
  });
  const area = h("div", { id: "executions-area" });
  main.append(h("h1", {}, "Executions"), h("section", { class: "card" }, form), h("section", { class: "card" }, area));
  const span = WINDOWS[f.window] ?? WINDOWS["24h"];
  const since = span ? Math.max(0, Date.now() - span) : "";
  const tags = f.tag.split(",").map((t) => t.trim()).filter(Boolean);
  const pager = new Pager(() => load());
  async function load() {
    try {
      const page = await api.get("/executions", {
        state: STATE_SETS[f.state] || (f.state ? [f.state] : []), since_ms: since, by_completed: f.ended ? "true" : "",
        worker_id: f.worker, tag: tags, namespace: f.ns, all_namespaces: f.all ? "true" : "", task_id: f.task,
        page_size: 50, page_token: pager.token,
      });
      clear(area).append(
        table(
          [
            { title: "Nominal time", cell: (e) => h("a", { href: `#/execution/${encodeURIComponent(e.execution_id)}` }, when(e.nominal_time, e.nominal_time_ms)), sort: (e) => e.nominal_time_ms },
            { title: "Task", cell: (e) => h("a", { href: `#/task/${encodeURIComponent(e.task_id)}` }, h("code", {}, e.task_id.slice(0, 12) + "…")) },
            { title: "State", cell: (e) => [badge(e.state), e.manual ? " manual" : ""], sort: (e) => e.state },
            { title: "Attempt", cell: (e) => String(e.attempt), class: "num wide-only" },
            { title: "Duration", cell: (e) => (e.started_at_ms && e.finished_at_ms ? duration(e.finished_at_ms - e.started_at_ms) : "—"), class: "num", sort: (e) => (e.finished_at_ms || 0) - (e.started_at_ms || 0) },
            { title: "Worker", cell: (e) => e.worker_id || "—", class: "wide-only", sort: (e) => e.worker_id },
            { title: "Namespace", cell: (e) => e.namespace, class: "wide-only" },
            { title: "Error", cell: (e) => e.error || e.waiting_reason || "", class: "wide-only" },
          ],
          page.executions,
          { onRow: (e) => go("execution", [e.execution_id]), empty: page.next_page_token ? "No match in this stretch of the index; try the next page." : "No execution matches." },
        ),
        pager.view(page.next_page_token, page.executions.length),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      clear(area).append(errorBanner(err));
    }
  }
  await load();
  return null;
}
