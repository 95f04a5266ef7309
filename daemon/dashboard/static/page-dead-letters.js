// Dead letters: executions that ran out of attempts. Select some to redrive (run again as new
// executions) or purge (forget them); purge all of a namespace. Every action is confirmed.
import * as api from "./api.js";
import { h, clear, when, table } from "./dom.js";
import { confirmAction, errorBanner, notice, Pager } from "./ui.js";

export async function deadLettersPage(main, { params, go }) {
  const ns = params.get("ns") || "";
  const taskId = params.get("task") || "";
  const all = params.get("all") === "1";
  const nsInput = h("input", { type: "text", id: "dl-ns", value: ns, placeholder: "default", size: 12 });
  const taskInput = h("input", { type: "text", id: "dl-task", value: taskId, placeholder: "task id", size: 28 });
  const allBox = h("input", { type: "checkbox", id: "dl-all", checked: all });
  const form = h("form", { class: "filters" },
    h("label", { class: "field" }, "Namespace", nsInput),
    h("label", { class: "field" }, "Task", taskInput),
    h("label", { class: "check" }, allBox, "all namespaces"),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go("dead-letters", [], { ns: nsInput.value.trim(), task: taskInput.value.trim(), all: allBox.checked ? "1" : "" });
  });
  const messages = h("div", { id: "messages" });
  const area = h("div", { id: "dl-area" });
  const selected = new Set();
  const redriveBtn = h("button", { type: "button", id: "dl-redrive", disabled: true }, "Redrive selected");
  const purgeBtn = h("button", { type: "button", id: "dl-purge", class: "danger", disabled: true }, "Purge selected");
  const purgeAllBtn = h("button", { type: "button", id: "dl-purge-all", class: "danger" }, taskId ? "Purge all of this task" : `Purge all in ${ns || "default"}`);
  const sync = () => {
    redriveBtn.disabled = purgeBtn.disabled = selected.size === 0;
  };
  main.append(
    h("h1", {}, "Dead letters"),
    h("section", { class: "card" }, form),
    messages,
    h("section", { class: "card" }, h("div", { class: "row" }, redriveBtn, purgeBtn, all ? null : purgeAllBtn), area),
  );

  const run = async (dialog, path, body, done) => {
    if (!(await confirmAction(dialog))) return;
    try {
      const out = await api.post(path, body);
      notice(messages, "ok", done(out));
      selected.clear();
      sync();
      pager.reset();
      await load();
    } catch (err) {
      if (err.status === 401) throw err;
      clear(messages).append(errorBanner(err));
    }
  };
  redriveBtn.addEventListener("click", () => run(
    { title: `Redrive ${selected.size} dead letter(s)?`, body: "Each runs again as a new execution of its task, with fresh attempts.", action: "Redrive" },
    "/dead-letters/redrive", { execution_ids: [...selected] }, (out) => `Redriven: ${out.executions.length} new execution(s).`));
  purgeBtn.addEventListener("click", () => run(
    { title: `Purge ${selected.size} dead letter(s)?`, body: "They are removed from the dead-letter queue for good (the executions stay in their task's history).", action: "Purge", danger: true },
    "/dead-letters/purge", { execution_ids: [...selected] }, (out) => `Purged ${out.purged}.`));
  purgeAllBtn.addEventListener("click", () => run(
    { title: taskId ? "Purge every dead letter of this task?" : `Purge every dead letter of namespace ${ns || "default"}?`, body: "This cannot be undone (at most 1,000 per click).", action: "Purge all", danger: true },
    "/dead-letters/purge", taskId ? { task_id: taskId } : { namespace: ns }, (out) => `Purged ${out.purged}.`));

  const pager = new Pager(() => load());
  async function load() {
    try {
      const page = await api.get("/dead-letters", { namespace: ns, task_id: taskId, all_namespaces: all ? "true" : "", page_size: 50, page_token: pager.token });
      clear(area).append(
        table(
          [
            {
              title: "",
              cell: (d) => {
                const box = h("input", { type: "checkbox", class: "dl-pick", "aria-label": `select ${d.execution_id}`, checked: selected.has(d.execution_id), disabled: Boolean(d.redriven_as) });
                box.addEventListener("change", () => { if (box.checked) selected.add(d.execution_id); else selected.delete(d.execution_id); sync(); });
                return box;
              },
            },
            { title: "Task", cell: (d) => h("a", { href: `#/task/${encodeURIComponent(d.task_id)}` }, d.task_name || d.task_id), sort: (d) => d.task_name },
            { title: "Execution", cell: (d) => h("a", { href: `#/execution/${encodeURIComponent(d.execution_id)}` }, h("code", {}, d.execution_id.slice(0, 12) + "…")), class: "wide-only" },
            { title: "Dead since", cell: (d) => when(d.dead_at, d.dead_at_ms), sort: (d) => d.dead_at_ms },
            { title: "Attempts", cell: (d) => String(d.attempts), class: "num" },
            { title: "Reason", cell: (d) => d.reason },
            { title: "Redriven as", cell: (d) => (d.redriven_as ? h("a", { href: `#/execution/${encodeURIComponent(d.redriven_as)}` }, h("code", {}, d.redriven_as.slice(0, 12) + "…")) : "—"), class: "wide-only" },
          ],
          page.dead_letters,
          { empty: "No dead letter." },
        ),
        pager.view(page.next_page_token, page.dead_letters.length),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      clear(area).append(errorBanner(err));
    }
  }
  await load();
  return null;
}
