// Tasks: filter by name prefix, state, tags and namespace, a page at a time from the server (fast at a
// million tasks: ListTasks reads an index, never the whole table); the columns sort the page shown.
import * as api from "./api.js";
import { h, clear, badge, when, schedule, table } from "./dom.js";
import { errorBanner, Pager } from "./ui.js";

const STATES = ["", "scheduled", "paused", "completed", "cancelled"];
const KINDS = { "": "any schedule", cron: "cron", at: "one time", fixed_rate: "fixed rate", fixed_delay: "fixed delay" };
// The last run's outcome (ListTasks last_outcomes): "failed" is any failure.
const LAST = { "": "any last run", failed: "last run failed", succeeded: "last run succeeded", cancelled: "last run cancelled" };
const LAST_STATES = { failed: ["failed", "timed_out", "lost", "expired"], succeeded: ["succeeded"], cancelled: ["cancelled"] };
const ORDERS = { "": "creation (by name with a name filter)", next: "next fire first (scheduled only)" };

export async function tasksPage(main, { params, go }) {
  const f = {
    q: params.get("q") || "",
    state: params.get("state") || "",
    tag: params.get("tag") || "",
    ns: params.get("ns") || "",
    all: params.get("all") === "1",
    size: params.get("size") || "50",
    kind: params.get("kind") || "",
    last: params.get("last") || "",
    order: params.get("order") || "",
  };
  const choice = (id, options, value) => h("select", { id, name: id }, Object.entries(options).map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
  const kindSelect = choice("f-kind", KINDS, f.kind);
  const lastSelect = choice("f-last", LAST, f.last);
  const orderSelect = choice("f-order", ORDERS, f.order);
  const nameInput = h("input", { type: "search", name: "q", id: "f-name", value: f.q, placeholder: "name starts with…", autocomplete: "off" });
  const stateSelect = h("select", { name: "state", id: "f-state" }, STATES.map((s) => h("option", { value: s, selected: s === f.state }, s || "any state")));
  const tagInput = h("input", { type: "text", name: "tag", id: "f-tag", value: f.tag, placeholder: "team=data, env=prod", autocomplete: "off" });
  const nsInput = h("input", { type: "text", name: "ns", id: "f-ns", value: f.ns, placeholder: "default", autocomplete: "off", size: 12 });
  const allBox = h("input", { type: "checkbox", name: "all", id: "f-all", checked: f.all });
  const sizeSelect = h("select", { name: "size", id: "f-size" }, ["20", "50", "100", "200"].map((s) => h("option", { value: s, selected: s === f.size }, `${s} per page`)));
  const form = h("form", { class: "filters", id: "task-filters", role: "search" },
    h("label", { class: "field" }, "Name", nameInput),
    h("label", { class: "field" }, "State", stateSelect),
    h("label", { class: "field" }, "Tags", tagInput),
    h("label", { class: "field" }, "Schedule", kindSelect),
    h("label", { class: "field" }, "Last run", lastSelect),
    h("label", { class: "field" }, "Order", orderSelect),
    h("label", { class: "field" }, "Namespace", nsInput),
    h("label", { class: "check" }, allBox, "all namespaces"),
    h("label", { class: "field" }, "Page", sizeSelect),
    h("button", { type: "submit", class: "primary", id: "f-apply" }, "Filter"),
    h("button", { type: "button", id: "f-clear", onclick: () => go("tasks") }, "Clear"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go("tasks", [], { q: nameInput.value.trim(), state: stateSelect.value, tag: tagInput.value.trim(), ns: nsInput.value.trim(), all: allBox.checked ? "1" : "", size: sizeSelect.value === "50" ? "" : sizeSelect.value,
      kind: kindSelect.value, last: lastSelect.value, order: orderSelect.value });
  });
  const area = h("div", { id: "tasks-area" });
  main.append(h("h1", {}, "Tasks"), h("section", { class: "card" }, form), h("section", { class: "card" }, area));

  const tags = f.tag.split(",").map((t) => t.trim()).filter(Boolean);
  const pager = new Pager(() => load());
  async function load() {
    try {
      const page = await api.get("/tasks", {
        name_prefix: f.q, state: f.state, tag: tags, namespace: f.ns, all_namespaces: f.all ? "true" : "", page_size: f.size, page_token: pager.token,
        kind: f.kind, last_outcome: LAST_STATES[f.last] || [], next_after_ms: f.order === "next" ? 1 : "",
      });
      clear(area).append(
        table(
          [
            { title: "Name", cell: (t) => h("a", { href: `#/task/${encodeURIComponent(t.task_id)}`, class: "task-name" }, t.spec.name || "(no name)"), sort: (t) => t.spec.name },
            { title: "State", cell: (t) => badge(t.state), sort: (t) => t.state },
            { title: "Namespace", cell: (t) => t.namespace, class: "wide-only", sort: (t) => t.namespace },
            { title: "Schedule", cell: (t) => h("code", {}, schedule(t.spec.schedule)) },
            { title: "Next fire", cell: (t) => when(t.next_fire, t.next_fire_ms), sort: (t) => t.next_fire_ms || Infinity },
            { title: "Last finished", cell: (t) => when(t.last_finished, t.last_finished_ms), class: "wide-only", sort: (t) => t.last_finished_ms },
            { title: "Last run", cell: (t) => (t.last_outcome && t.last_outcome !== "unspecified" ? h("a", { href: `#/execution/${encodeURIComponent(t.last_execution_id)}` }, badge(t.last_outcome)) : h("span", { class: "muted" }, "—")), class: "wide-only", sort: (t) => t.last_outcome || "" },
            { title: "Fires", cell: (t) => String(t.fire_count), class: "num wide-only", sort: (t) => t.fire_count },
            { title: "Tags", cell: (t) => Object.entries(t.spec.tags || {}).map(([k, v]) => `${k}=${v}`).join(", "), class: "wide-only" },
          ],
          page.tasks,
          {
            onRow: (t) => go("task", [t.task_id]),
            empty: page.next_page_token ? "No match in this stretch of the index; try the next page." : "No task matches.",
          },
        ),
        pager.view(page.next_page_token, page.tasks.length),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      clear(area).append(errorBanner(err));
    }
  }
  await load();
  return null;
}
