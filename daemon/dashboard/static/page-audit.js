// The audit trail (Audit.ListAudit, role admin): who changed what, oldest first within the window.
import * as api from "./api.js";
import { h, clear, when, table } from "./dom.js";
import { errorBanner, Pager } from "./ui.js";

const WINDOWS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "90d": 90 * 86400e3 };

export async function auditPage(main, { params, go }) {
  const f = { principal: params.get("principal") || "", method: params.get("method") || "", target: params.get("target") || "", window: params.get("window") || "24h" };
  const inputs = {
    principal: h("input", { type: "text", id: "a-principal", value: f.principal, size: 14 }),
    method: h("input", { type: "text", id: "a-method", value: f.method, placeholder: "PauseTask", size: 14 }),
    target: h("input", { type: "text", id: "a-target", value: f.target, placeholder: "task or execution id", size: 28 }),
    window: h("select", { id: "a-window" }, Object.keys(WINDOWS).map((w) => h("option", { value: w, selected: w === f.window }, `last ${w}`))),
  };
  const form = h("form", { class: "filters" },
    h("label", { class: "field" }, "Principal", inputs.principal),
    h("label", { class: "field" }, "Method", inputs.method),
    h("label", { class: "field" }, "Target", inputs.target),
    h("label", { class: "field" }, "Since", inputs.window),
    h("button", { type: "submit", class: "primary" }, "Filter"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go("audit", [], { principal: inputs.principal.value.trim(), method: inputs.method.value.trim(), target: inputs.target.value.trim(), window: inputs.window.value === "24h" ? "" : inputs.window.value });
  });
  const area = h("div", { id: "audit-area" });
  main.append(h("h1", {}, "Audit trail"), h("section", { class: "card" }, form), h("section", { class: "card" }, area));
  const since = Math.max(0, Date.now() - (WINDOWS[f.window] || WINDOWS["24h"]));
  const pager = new Pager(() => load());
  async function load() {
    try {
      const page = await api.get("/audit", { principal: f.principal, method: f.method, target_id: f.target, since_ms: since, page_size: 100, page_token: pager.token });
      clear(area).append(
        table(
          [
            { title: "Time", cell: (r) => when(r.time, r.time_ms), sort: (r) => r.time_ms },
            { title: "Principal", cell: (r) => r.principal, sort: (r) => r.principal },
            { title: "Method", cell: (r) => h("code", {}, r.method), sort: (r) => r.method },
            { title: "Targets", cell: (r) => [r.targets.map((t) => h("div", {}, h("code", {}, t))), r.targets_omitted ? `+${r.targets_omitted} more` : ""] },
            { title: "Outcome", cell: (r) => [h("span", { class: `badge s-${r.outcome === "ok" ? "ok" : "bad"}` }, r.outcome), r.error ? h("div", { class: "small" }, r.error) : null] },
            { title: "Peer", cell: (r) => h("code", {}, r.peer), class: "wide-only" },
          ],
          page.records,
          { empty: page.next_page_token ? "No match in this stretch; try the next page." : "No record in this window." },
        ),
        pager.view(page.next_page_token, page.records.length),
      );
    } catch (err) {
      if (err.status === 401) throw err;
      clear(area).append(errorBanner(err));
    }
  }
  await load();
  return null;
}
