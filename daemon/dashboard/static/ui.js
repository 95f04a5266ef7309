// Shared pieces of the pages: error banners (with the leader's link on a follower), the confirmation
// dialog every action goes through, and the pager of server-side pages.
import { h, clear } from "./dom.js";

export function errorBanner(err) {
  const parts = [];
  if (err.status === 403) parts.push(h("strong", {}, "Permission denied: "));
  else if (err.status === 401) parts.push(h("strong", {}, "Not signed in: "));
  else if (err.status === 404) parts.push(h("strong", {}, "Not found: "));
  else if (err.status === 400) parts.push(h("strong", {}, "Invalid request: "));
  parts.push(err.message);
  if (err.field) parts.push(" ", h("span", { class: "field" }, `(field ${err.field})`));
  if (err.leader) parts.push(h("div", {}, leaderHint(err.leader)));
  return h("div", { class: "banner error", role: "alert", dataset: { status: String(err.status || "") } }, parts);
}

export function leaderHint(leader) {
  const name = leader.node_id || leader.grpc_address;
  if (leader.http_address) {
    const url = `${location.protocol}//${leader.http_address}/${location.hash}`;
    return ["This node is a follower; writes go to the leader, ", name, ": ", h("a", { href: url, class: "leader-link" }, `open the leader's dashboard (${leader.http_address})`), "."];
  }
  return [`This node is a follower; writes go to the leader, ${name} (gRPC ${leader.grpc_address}): open the dashboard on that node.`];
}

export function notice(area, kind, ...content) {
  clear(area).append(h("div", { class: `banner ${kind}`, role: kind === "error" ? "alert" : "status" }, ...content));
}

export function showError(area, err) {
  clear(area).append(errorBanner(err));
}

// Ask before acting. Resolves to true only if the user pressed the action's button.
export function confirmAction({ title, body, action, danger = false }) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title" });
    const finish = (ok) => {
      dialog.close();
      dialog.remove();
      resolve(ok);
    };
    dialog.append(
      h("h2", { id: "confirm-title" }, title),
      h("div", {}, body),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "cancel", onclick: () => finish(false) }, "Cancel"),
        h("button", { type: "button", class: danger ? "danger solid confirm-ok" : "primary confirm-ok", onclick: () => finish(true) }, action),
      ),
    );
    dialog.addEventListener("cancel", (e) => { e.preventDefault(); finish(false); });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector(".confirm-ok").focus();
  });
}

// Server-side paging: tokens of the pages seen, so that "Previous" goes back without the server
// keeping anything.
export class Pager {
  constructor(onChange) {
    this.tokens = [""];
    this.onChange = onChange;
  }
  get token() {
    return this.tokens[this.tokens.length - 1];
  }
  reset() {
    this.tokens = [""];
  }
  view(nextToken, shown) {
    const page = this.tokens.length;
    return h("div", { class: "pager" },
      h("button", { type: "button", class: "prev", disabled: page <= 1, onclick: () => { this.tokens.pop(); this.onChange(); } }, "← Previous"),
      h("span", { class: "muted small" }, `page ${page}${shown !== undefined ? `, ${shown} shown` : ""}`),
      h("button", { type: "button", class: "next", disabled: !nextToken, onclick: () => { this.tokens.push(nextToken); this.onChange(); } }, "Next →"),
    );
  }
}

// Run `fn` every `ms` while the page is shown; returns the stop function the router calls.
export function every(ms, fn) {
  let timer = null;
  let stopped = false;
  const loop = async () => {
    if (stopped) return;
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(loop, ms);
    }
  };
  timer = setTimeout(loop, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
