// Execution detail: its state and times, a timeline of its attempts, cancel (confirmed), the stdout and
// stderr of an attempt followed live while it runs (GetExecutionLogs from the last offsets, every
// second), its return value and stored result.
import * as api from "./api.js";
import { h, append, clear, badge, dl, duration, table, when } from "./dom.js";
import { confirmAction, errorBanner, notice, every } from "./ui.js";
import { timeline } from "./chart.js";

const KEEP_CHARS = 256 * 1024; // what a pane keeps of a long output (its end)
const LIVE = new Set(["pending", "running", "buffered"]);

export async function executionPage(main, { args }) {
  const id = args[0] || "";
  const path = `/executions/${encodeURIComponent(id)}`;
  let ex;
  try {
    ex = await api.get(path);
  } catch (err) {
    if (err.status === 401) throw err;
    main.append(h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")), errorBanner(err));
    return null;
  }
  const head = h("div");
  const messages = h("div", { id: "messages" });
  const summary = h("section", { class: "card", id: "execution-summary" });
  const attempts = h("section", { class: "card", id: "execution-attempts" });
  const logs = h("section", { class: "card", id: "execution-logs" });
  const result = h("section", { class: "card", id: "execution-result" });
  main.append(head, messages, summary, attempts, logs, result);

  const cancel = async () => {
    const ok = await confirmAction({
      title: "Cancel this execution?",
      body: ex.state === "running" ? "Its worker kills the running attempt (after the kill grace)." : "It ends at once, without running.",
      action: "Cancel execution",
      danger: true,
    });
    if (!ok) return;
    try {
      ex = await api.post(`${path}/cancel`, { reason: "cancelled from the dashboard" });
      draw();
      notice(messages, "ok", "Cancel requested.");
    } catch (err) {
      if (err.status === 401) throw err;
      clear(messages).append(errorBanner(err));
    }
  };

  const draw = () => {
    clear(head).append(
      h("p", { class: "small" }, h("a", { href: `#/task/${encodeURIComponent(ex.task_id)}` }, "← Task")),
      h("div", { class: "row spread" },
        h("h1", {}, "Execution ", h("code", {}, ex.execution_id), " ", h("span", { id: "execution-state" }, badge(ex.state))),
        LIVE.has(ex.state) && !ex.cancel_requested_at_ms ? h("button", { type: "button", class: "danger", id: "act-cancel-exec", onclick: cancel }, "Cancel") : null,
      ),
    );
    clear(summary).append(
      h("h2", {}, "Summary"),
      dl([
        ["Task", h("a", { href: `#/task/${encodeURIComponent(ex.task_id)}` }, h("code", {}, ex.task_id))],
        ["Namespace", ex.namespace],
        ["Nominal time", when(ex.nominal_time, ex.nominal_time_ms)],
        ["Fired", [when(ex.fired_at, ex.fired_at_ms), ex.manual ? " (manual)" : ""]],
        ["Leased", when(ex.leased_at, ex.leased_at_ms)],
        ["Started", when(ex.started_at, ex.started_at_ms)],
        ["Finished", when(ex.finished_at, ex.finished_at_ms)],
        ["Duration", ex.started_at_ms && ex.finished_at_ms ? duration(ex.finished_at_ms - ex.started_at_ms) : ex.started_at_ms ? `${duration(Date.now() - ex.started_at_ms)} so far` : "—"],
        ["Worker", ex.worker_id || "—"],
        ["Attempt", String(ex.attempt)],
        ["Exit code", ex.finished_at_ms ? String(ex.exit_code) : "—"],
        ["Error", ex.error || null],
        ["Waiting", ex.waiting_reason || undefined],
        ["Not before", ex.not_before_ms ? when(ex.not_before, ex.not_before_ms) : undefined],
        ["Cancel requested", ex.cancel_requested_at_ms ? [when(ex.cancel_requested_at, ex.cancel_requested_at_ms), ex.cancel_reason ? ` — ${ex.cancel_reason}` : ""] : undefined],
        ["Dead-lettered", ex.dead_lettered ? badge("bad", "yes") : undefined],
        ["Guarantee / priority", `${ex.guarantee} / ${ex.priority}`],
      ], { two: true }),
    );
    const line = timeline(ex, { width: Math.max(300, Math.round(attempts.getBoundingClientRect().width) - 34) });
    append(clear(attempts), [
      h("h2", {}, "Attempts"),
      line,
      table(
        [
          { title: "Attempt", cell: (a) => String(a.attempt), class: "num" },
          { title: "Outcome", cell: (a) => badge(a.outcome === "succeeded" ? "ok" : a.outcome === "timed_out" ? "warn" : a.outcome === "cancelled" || a.outcome === "not_started" ? "idle" : "bad", a.outcome.replace(/_/g, " ")) },
          { title: "Worker", cell: (a) => a.worker_id || "—" },
          { title: "Started", cell: (a) => when(a.started_at, a.started_at_ms) },
          { title: "Duration", cell: (a) => (a.started_at_ms && a.finished_at_ms ? duration(a.finished_at_ms - a.started_at_ms) : "—"), class: "num" },
          { title: "Exit", cell: (a) => String(a.exit_code), class: "num wide-only" },
          { title: "Error", cell: (a) => a.error || "", class: "wide-only" },
        ],
        ex.attempts,
        { empty: LIVE.has(ex.state) ? "No attempt has finished yet." : "No attempt ran." },
      ),
    ]);
  };
  draw();

  // Logs of one attempt, followed from the offsets returned by the previous read.
  const attemptSelect = h("select", { id: "log-attempt", "aria-label": "Attempt" });
  const fillAttempts = () => {
    const chosen = attemptSelect.value || "0";
    clear(attemptSelect).append(h("option", { value: "0", selected: chosen === "0" }, "latest attempt"));
    for (let a = ex.attempt; a >= 1; a--) attemptSelect.append(h("option", { value: String(a), selected: String(a) === chosen }, `attempt ${a}`));
  };
  fillAttempts();
  const stdout = h("pre", { class: "out", id: "stdout", "aria-live": "off" });
  const stderr = h("pre", { class: "out", id: "stderr", "aria-live": "off" });
  const status = h("span", { class: "muted small", id: "log-status" });
  logs.append(
    h("div", { class: "row spread" }, h("h2", {}, "Output"), h("div", { class: "row" }, status, attemptSelect)),
    h("div", { class: "panes" }, h("div", {}, h("h2", { class: "small muted" }, "stdout"), stdout), h("div", {}, h("h2", { class: "small muted" }, "stderr"), stderr)),
  );
  let offsets = { out: 0, err: 0, finished: false, attempt: 0, seen: 0 };
  const reset = () => {
    offsets = { out: 0, err: 0, finished: false, attempt: Number(attemptSelect.value) || 0, seen: 0 };
    clear(stdout);
    clear(stderr);
  };
  const add = (pane, text) => {
    if (!text) return;
    const atEnd = pane.scrollTop + pane.clientHeight >= pane.scrollHeight - 4;
    let all = (pane.textContent || "") + text;
    if (all.length > KEEP_CHARS) all = "…" + all.slice(all.length - KEEP_CHARS);
    pane.textContent = all;
    if (atEnd) pane.scrollTop = pane.scrollHeight;
  };
  const readLogs = async () => {
    for (let i = 0; i < 8; i++) { // catch up a long output, a bounded number of reads per tick
      const r = await api.get(`${path}/logs`, { attempt: offsets.attempt, stdout_offset: offsets.out, stderr_offset: offsets.err });
      if (offsets.seen && r.attempt !== offsets.seen) { // following the latest attempt, and a retry began
        reset();
        offsets.seen = r.attempt;
        continue;
      }
      offsets.seen = r.attempt;
      add(stdout, r.stdout);
      add(stderr, r.stderr);
      const moved = r.stdout_next_offset !== offsets.out || r.stderr_next_offset !== offsets.err;
      offsets.out = r.stdout_next_offset;
      offsets.err = r.stderr_next_offset;
      offsets.finished = r.finished;
      status.textContent = r.finished ? (r.truncated ? "complete (truncated: the attempt wrote more than is kept)" : "complete") : "live: following the output…";
      if (!moved || r.finished) break;
    }
    if (offsets.finished && !stdout.textContent && !stderr.textContent) {
      // No full log kept (retention, or older data): the tails of the result, if this is the last attempt.
      if (offsets.attempt === 0 || offsets.attempt === ex.attempt) {
        add(stdout, ex.stdout_tail);
        add(stderr, ex.stderr_tail);
        if (ex.stdout_tail || ex.stderr_tail) status.textContent = "complete (the result's tails)";
      }
      if (!stdout.textContent && !stderr.textContent) status.textContent = "no output";
    }
  };
  attemptSelect.addEventListener("change", () => { reset(); readLogs().catch(() => {}); });
  reset();
  try {
    await readLogs();
  } catch (err) {
    if (err.status === 401) throw err;
    logs.append(errorBanner(err));
  }

  const drawResult = async () => {
    clear(result).append(h("h2", {}, "Result"));
    let r = null;
    try {
      r = await api.get(`${path}/result`);
    } catch (err) {
      if (err.status === 401) throw err;
      if (err.status !== 501 && err.status !== 404) result.append(errorBanner(err));
    }
    if (r && r.size) {
      const what = r.return_value ? "The handler's return value" : "The result file ($CRONRAFT_RESULT_FILE)";
      result.append(
        h("p", { class: "muted small" }, `${what}, ${r.size} bytes${r.truncated ? " (the first 256 KiB shown; schedctl execution result prints it whole)" : ""}:`),
        h("pre", { class: "json", id: "result" }, r.text),
      );
    } else if (!r && ex.return_value) { // a node without the result RPC: the return value it stores
      result.append(h("p", { class: "muted small" }, "Return value (first 64 KiB):"), h("pre", { class: "json", id: "return-value" }, ex.return_value));
    } else {
      result.append(h("p", { class: "empty" }, LIVE.has(ex.state) ? "Not finished yet." : "No result kept."));
    }
  };
  await drawResult();

  // While it is live: the summary every 2 s, the output every second.
  const stopSummary = every(2000, async () => {
    if (!LIVE.has(ex.state)) return;
    ex = await api.get(path);
    draw();
    fillAttempts();
    if (!LIVE.has(ex.state)) drawResult();
  });
  const stopLogs = every(1000, async () => {
    if (!offsets.finished || LIVE.has(ex.state)) await readLogs();
  });
  return () => {
    stopSummary();
    stopLogs();
  };
}
