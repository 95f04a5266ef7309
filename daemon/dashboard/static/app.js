// The dashboard's entry: who is signed in, the hash router, the token login.
import * as api from "./api.js";
import { h, clear } from "./dom.js";
import { errorBanner } from "./ui.js";
import { clusterPage } from "./page-cluster.js";
import { tasksPage } from "./page-tasks.js";
import { taskPage } from "./page-task.js";
import { executionPage } from "./page-execution.js";
import { executionsPage } from "./page-executions.js";
import { deadLettersPage } from "./page-dead-letters.js";
import { auditPage } from "./page-audit.js";

const routes = {
  cluster: clusterPage,
  tasks: tasksPage,
  task: taskPage,
  execution: executionPage,
  executions: executionsPage,
  "dead-letters": deadLettersPage,
  audit: auditPage,
};

const state = { me: null, stop: null };

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "tasks", args: parts.slice(1), params: new URLSearchParams(query || "") };
}

export function go(page, args = [], params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "" && v !== false) q.set(k, String(v));
  const qs = q.toString();
  location.hash = `#/${[page, ...args.map(encodeURIComponent)].join("/")}${qs ? `?${qs}` : ""}`;
}

function showWho() {
  const who = clear(document.getElementById("who"));
  const me = state.me;
  if (!me) return;
  if (!me.auth) {
    who.append(h("span", { title: "This node has no [auth]: every caller holds every role" }, `${me.node_id} · authentication off`));
    return;
  }
  who.append(h("span", { class: "principal" }, `${me.principal} · ${me.node_id}`),
    h("button", { type: "button", class: "logout", onclick: () => { api.setToken(""); state.me = null; route(); } }, "Sign out"));
}

function loginPage(main, problem) {
  clear(document.getElementById("who"));
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "crt1_… or a JWT", required: true });
  const form = h("form", { class: "card login", id: "login" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "This node requires a token, as schedctl does (CRONRAFT_TOKEN). It is kept in this tab only (sessionStorage) and sent as a bearer header."),
    problem ? errorBanner(problem) : null,
    h("label", { class: "field", for: "token" }, "Token", input),
    h("p", {}, h("button", { type: "submit", class: "primary" }, "Sign in")),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    api.setToken(input.value.trim());
    await route();
  });
  clear(main).append(form);
  input.focus();
}

async function route() {
  if (state.stop) {
    state.stop();
    state.stop = null;
  }
  const main = document.getElementById("main");
  if (!state.me) {
    try {
      state.me = await api.get("/whoami");
    } catch (err) {
      if (err.status === 401) {
        const hadToken = Boolean(api.token());
        api.setToken("");
        loginPage(main, hadToken ? err : null); // a first visit is not an error
        return;
      }
      clear(main).append(errorBanner(err));
      return;
    }
  }
  showWho();
  const { page, args, params } = parseHash();
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.page === page || (a.dataset.page === "tasks" && page === "task"));
  }
  const render = routes[page] || tasksPage;
  clear(main);
  try {
    state.stop = (await render(main, { args, params, me: state.me, go, relogin: onUnauthenticated })) || null;
  } catch (err) {
    if (err.status === 401) return onUnauthenticated(err);
    main.append(errorBanner(err));
  }
}

function onUnauthenticated(err) {
  if (state.stop) {
    state.stop();
    state.stop = null;
  }
  api.setToken("");
  state.me = null;
  loginPage(document.getElementById("main"), err);
}

window.addEventListener("hashchange", route);
window.addEventListener("cronraft-unauthenticated", (e) => onUnauthenticated(e.detail));
route();
