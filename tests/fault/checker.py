"""The fault harness's checker: a run directory in, a verdict out (fault-testing.md §2.3, rules R1-R9).

    .venv/bin/python -m tests.fault.checker RUN_DIR        # prints report.md, writes verdict.json
                                                          # and report.md, exits 1 on a failed rule

Pure and deterministic: it reads only the files described in tests/fault/history.py, compares times
only on the harness clock, and runs in about linear time (single passes with dicts; the few sorts are
of things that are nearly sorted already or small).

Definitions used by every rule
------------------------------
- A fire is (task_id, nominal_ms). Its due instant is nominal_ms converted to the harness clock.
- F, the judged fires: the fires of every acknowledged create (ok), and of every indeterminate create
  (info, or an invoke with no completion) whose name is in the final read, whose due instant lies in
  [window_start, window_end]. "at": one fire at at_ms; "every": anchor + k*period (k >= 0), strictly
  before until_ms when set. Cancels: a fire due after the *invoke* of an ok or indeterminate cancel is
  not judged (the cancel may have taken effect any time from its invoke on); a failed cancel changes
  nothing. This is slightly more lenient than "everything before the ok is expected", which would
  call a fire lost when the cancel legitimately applied before it came due.
- Fault windows: each nemesis start is paired with the next stop of the same (fault, target); an
  unpaired start lasts until the end of the run. A fire is "in a fault" when its due instant lies in
  [start - tau_normal, stop + recovery_budget] of any fault (the look-back covers a fire that came due
  just before the fault and had not started yet).
- Manual executions (audit fire records with manual=true, final executions with manual=true) are
  excluded from the ledger before any rule looks at it.
- Audit apply logs are deduplicated per node by index (a replay after a restart repeats indexes;
  differing content at one index is itself a finding, R9). The "merged log" is the union over nodes by
  index; it fills the gaps a node has when it installed a snapshot.
- A lease (execution_id, token) is current from its grant until superseded: the first later apply
  record for that execution that is another grant, or an accepted complete/expire carrying that token.
  Its supersede instant is the earliest apply of that record on any node.

Rules (see each `_rN` function for the exact counts)
--------------------------------------------------
R1 on-time: each fire in F needs a ledger start with start - due in [-eps, tau] (tau = tau_fault in a
   fault window, else tau_normal). on_time / late (has starts, none in range; `early` is the subset
   whose first start was too early) / lost (no start at all). Lateness (first start - due) p50/p99/max.
   Pass: n(F) > 0, lost == 0, on_time/n >= 99.99 %. Reports whether n supports the 99.99 % claim
   (Clopper-Pearson bound of the miss rate <= 1e-4; about 29,956 fires when nothing is missed).
R2 fires committed twice (0 allowed): on any node, more than one non-manual fire apply for one fire;
   more than one accepted complete under one lease; an accepted complete after a successful
   one, or a grant after a successful complete, for one execution; in the final read, more than one
   non-manual execution for one fire. (Several accepted completes for one execution are legitimate
   when earlier ones reported a failure and the execution was retried under a new lease: the state
   machine puts it back to PENDING and a new grant follows.)
R3 fencing (0 allowed): on each node and on the merged log, each accepted complete/expire must carry
   the token of the latest grant of its execution at that point, and that lease must not already have
   ended (accepted complete/expire); grant tokens per execution must strictly increase, compared as
   (term, index). A node that lacks the latest grant because of a snapshot gap is not judged on it
   (the merged log is). Informational: accepts with no grant anywhere before them (`unjudged_accepts`),
   grants whose token is not (current epoch term, own index), and how many stale results the state
   machine rejected.
R4 duplicate execution: a fire of F with more than one distinct (execution_id, token) among its
   ledger starts. dup_exec / n(F) with its one-sided 95 % Clopper-Pearson bound. Each extra start is
   classified by what happened to the previous lease of the same execution (merged log): a retry after
   an accepted failed completion, a re-dispatch after an accepted expiry, a lease superseded without
   an accepted end, or a second execution of the fire. A re-dispatch after an expiry whose holder was
   itself under a fault (killed, paused, isolated, or a cut link it ends) while the attempt ran is
   `redispatch_after_worker_fault`: the at-least-once contract. Pass: the rate of *unwanted*
   duplicates (all but retries after a reported failure and re-dispatches after a worker fault)
   < 1e-4; both rates and bounds are reported.
R5 no task loss: lost_tasks (acknowledged creates absent from the final read), recovered
   (indeterminate ones present), unexpected (final tasks whose name was never invoked),
   failed_but_present (a create answered `fail` whose name is in the final read; Jepsen's definite
   failure). Pass: lost_tasks == unexpected == failed_but_present == 0. Informational:
   fired_after_cancel (a ledger start after a cancel's ok for a fire due after that ok).
R6 concurrent holders (0 allowed): for each fire (all of the ledger, not only F), each ledger start
   holds [start, min(end, supersede instant of its lease)); a start without an end is conservatively
   held until the run's end or its lease's supersede instant, whichever is first (we never assume the
   process died earlier). Two held intervals with different leases that overlap = a violation.
R7 one dispatcher per term (0 allowed): dispatch records grouped by raft_term naming more than one
   node; a dispatch whose grant had not been applied on the dispatching node yet (neither earlier in
   its audit file nor at an earlier mono_ns). Informational: dispatches of a lease already superseded
   somewhere (`stale_dispatches`); quorum confirmation itself is not observable in the records.
R8 recovery: for each nemesis start with was_leader=true whose fault deposes a leader (kill, pause,
   isolate, ...; meta "leader_loss_faults" overrides): recovery = the first dispatch after the fault
   start with raft_term > the fault's term (when the term is null: the target's last known term, and
   failing that, a dispatch from another node), or, for a fault too short to depose the leader (a
   pause below the election timeout), its own first dispatch in the same term after the fault
   stopped. Backlog drained = the latest first start among the
   judged fires due in [start - tau_fault, start + recovery] that first started after the fault
   start; a lost one leaves it undrained. p50/p99/max per fault type. Pass: every leader fault
   recovered and drained, both maxima < recovery_budget_s.
R9 convergence (0 allowed): every node in meta.nodes reported an applied index, all equal to the
   maximum, and the non-null digests at that index agree (nodes outside the majority digest are
   diverged); no apply index carries different content on two nodes or twice on one node.

Rules whose inputs are missing (no audit logs, no final read) fail with a note saying so: a broken
collector must not look like a clean run.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.fault import stats
from tests.fault.history import (
    AuditRecord,
    LedgerRecord,
    Meta,
    NemesisEvent,
    RunData,
    Schedule,
    Token,
    format_token,
    load_run,
)

NS_PER_S = 1_000_000_000
MAX_EXAMPLES = 10
TARGET_RATE = 1e-4
ON_TIME_TARGET = 0.9999
CONFIDENCE = 0.95
DEFAULT_LEADER_LOSS_FAULTS = frozenset({"kill", "pause", "isolate", "partition", "stop", "sigstop", "freeze"})

FireKey = tuple[str, int]
LeaseKey = tuple[str, Token]

RULE_TITLES = {
    "R1": "on-time execution",
    "R2": "fires committed at most once",
    "R3": "fencing",
    "R4": "duplicate executions",
    "R5": "no task loss",
    "R6": "no concurrent holders",
    "R7": "one dispatcher per term",
    "R8": "recovery time",
    "R9": "convergence",
}


# ----------------------------------------------------------------------------------------- verdict


@dataclass
class RuleResult:
    rule: str
    title: str
    passed: bool = True
    counts: dict[str, Any] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def example(self, **fields: Any) -> None:
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(fields)

    @classmethod
    def new(cls, rule: str) -> RuleResult:
        return cls(rule, RULE_TITLES[rule])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuleResult:
        return cls(
            rule=str(d["rule"]),
            title=str(d.get("title", "")),
            passed=bool(d.get("passed", False)),
            counts=dict(d.get("counts") or {}),
            examples=list(d.get("examples") or []),
            notes=list(d.get("notes") or []),
        )


@dataclass
class Verdict:
    run_dir: str
    scenario: str
    seed: int
    profile: str
    mode: str
    ok: bool
    summary: dict[str, Any]
    rules: dict[str, RuleResult]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rules"] = {k: asdict(v) for k, v in self.rules.items()}
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, default=str)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        return cls(
            run_dir=str(d.get("run_dir", "")),
            scenario=str(d.get("scenario", "")),
            seed=int(d.get("seed", 0)),
            profile=str(d.get("profile", "")),
            mode=str(d.get("mode", "")),
            ok=bool(d.get("ok", False)),
            summary=dict(d.get("summary") or {}),
            rules={k: RuleResult.from_dict(v) for k, v in (d.get("rules") or {}).items()},
            warnings=list(d.get("warnings") or []),
        )

    @classmethod
    def from_json(cls, text: str) -> Verdict:
        obj = json.loads(text)
        if not isinstance(obj, dict):
            raise ValueError("verdict.json: not an object")
        return cls.from_dict(obj)


# ------------------------------------------------------------------------------------ preparation


@dataclass
class _Call:
    req: str
    op: str
    name: str | None = None
    schedule: Schedule | None = None
    task_id: str | None = None
    invoke_ns: int | None = None
    status: str = "open"  # ok | fail | info | open (an invoke with no completion)
    done_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Fire:
    task_id: str
    nominal_ms: int
    due_ns: int
    in_fault: bool

    @property
    def key(self) -> FireKey:
        return (self.task_id, self.nominal_ms)


@dataclass
class _Start:
    rec: LedgerRecord
    end_ns: int | None = None


@dataclass
class _Audit:
    """The audit logs, prepared once for every rule."""

    applies: dict[str, list[AuditRecord]] = field(default_factory=dict)  # node -> by index, deduped
    merged: list[AuditRecord] = field(default_factory=list)  # union over nodes, by index
    dispatches: list[AuditRecord] = field(default_factory=list)  # all nodes, by mono_ns
    replay_conflicts: list[dict[str, Any]] = field(default_factory=list)
    conflicted_indexes: set[int] = field(default_factory=set)
    log_conflicts: list[dict[str, Any]] = field(default_factory=list)
    grants_merged: dict[str, list[tuple[int, Token]]] = field(default_factory=dict)  # exec -> [(idx, tok)]
    supersede_ns: dict[LeaseKey, int] = field(default_factory=dict)  # min over nodes
    grant_ns: dict[LeaseKey, int] = field(default_factory=dict)  # first apply over nodes
    lease_end: dict[LeaseKey, str] = field(default_factory=dict)  # success | failure | expired
    manual_execs: set[str] = field(default_factory=set)
    epoch_terms: set[int] = field(default_factory=set)
    role_terms: set[int] = field(default_factory=set)


def _is_success(outcome: Any) -> bool:
    if isinstance(outcome, bool):
        return outcome
    if isinstance(outcome, int):
        return outcome == 1  # AttemptOutcome.ATTEMPT_SUCCEEDED
    text = str(outcome or "").strip().upper()
    return text.endswith("SUCCEEDED") or text in {"SUCCESS", "OK", "1"}


def _lease(rec: AuditRecord) -> LeaseKey | None:
    ex, tok = rec.execution_id, rec.token
    return None if ex is None or tok is None else (ex, tok)


def _prepare_audit(data: RunData) -> _Audit:
    a = _Audit()
    # One log entry is a batch of commands, so one index can carry several apply records (a fire and
    # its grant, say), written one after the other. A record's identity is (index, its position among
    # the records of that index); a replay after a restart writes the same group again.
    merged: dict[tuple[int, int], tuple[dict[str, Any], AuditRecord, str]] = {}
    for node in sorted(data.audit):
        seen: dict[tuple[int, int], tuple[dict[str, Any], AuditRecord]] = {}
        group_index, pos = -1, 0
        for rec in data.audit[node]:
            if rec.ev == "dispatch":
                a.dispatches.append(rec)
                continue
            if rec.ev == "role":
                term = rec.get_int("term")
                if term is not None:
                    a.role_terms.add(term)
                continue
            if rec.ev != "apply" or rec.index is None:
                continue
            body = rec.body()
            if rec.index != group_index:
                group_index, pos = rec.index, 0
            else:
                pos += 1
            key = (rec.index, pos)
            prev = seen.get(key)
            if prev is not None:
                if prev[0] != body:
                    a.replay_conflicts.append(
                        {
                            "node": node,
                            "index": rec.index,
                            "first": prev[1].content_key(),
                            "again": rec.content_key(),
                        }
                    )
                continue
            seen[key] = (body, rec)
        ordered = [r for _, r in seen.values()]
        if any((ordered[i].index or 0) > (ordered[i + 1].index or 0) for i in range(len(ordered) - 1)):
            ordered.sort(key=lambda r: r.index or 0)
        a.applies[node] = ordered
        for key, (body, rec) in seen.items():
            idx = key[0]
            m = merged.get(key)
            if m is None:
                merged[key] = (body, rec, node)
            elif m[0] != body and idx not in a.conflicted_indexes:
                a.conflicted_indexes.add(idx)
                a.log_conflicts.append(
                    {"index": idx, "nodes": [m[2], node], "contents": [m[1].content_key(), rec.content_key()]}
                )
    a.merged = [merged[i][1] for i in sorted(merged)]
    a.dispatches.sort(key=lambda r: (r.mono_ns, r.node, r.seq))

    for rec in a.merged:
        ex = rec.execution_id
        if rec.kind == "epoch":
            term = rec.get_int("term")
            if term is not None:
                a.epoch_terms.add(term)
        elif rec.kind == "fire" and ex is not None and rec.data.get("manual") is True:
            a.manual_execs.add(ex)
        elif rec.kind == "grant" and rec.accepted and ex is not None and rec.token is not None:
            a.grants_merged.setdefault(ex, []).append((rec.index or 0, rec.token))
        elif rec.kind in ("complete", "expire") and rec.accepted:
            lease = _lease(rec)
            if lease is not None and lease not in a.lease_end:
                if rec.kind == "expire":
                    a.lease_end[lease] = "expired"
                else:
                    a.lease_end[lease] = "success" if _is_success(rec.data.get("outcome")) else "failure"

    # Supersede and first-grant instants: per node in apply order, the minimum over nodes.
    for recs in a.applies.values():
        current: dict[str, Token | None] = {}
        for rec in recs:
            if rec.kind not in ("grant", "complete", "expire") or not rec.accepted:
                continue
            lease = _lease(rec)
            if lease is None:
                continue
            ex, tok = lease
            cur = current.get(ex)
            if rec.kind == "grant":
                if lease not in a.grant_ns or rec.mono_ns < a.grant_ns[lease]:
                    a.grant_ns[lease] = rec.mono_ns
                if cur is not None and cur != tok:
                    _set_min(a.supersede_ns, (ex, cur), rec.mono_ns)
                current[ex] = tok
            elif cur == tok:
                _set_min(a.supersede_ns, lease, rec.mono_ns)
                current[ex] = None
    return a


def _set_min(d: dict[LeaseKey, int], key: LeaseKey, value: int) -> None:
    old = d.get(key)
    if old is None or value < old:
        d[key] = value


def _pair_history(data: RunData, warnings: list[str]) -> tuple[list[_Call], dict[str, dict[str, int]]]:
    calls: dict[str, _Call] = {}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    conflicting = 0
    for h in data.history:
        counts[h.op][h.type] += 1
        c = calls.get(h.req)
        if c is None:
            c = calls[h.req] = _Call(h.req, h.op)
        if h.type == "invoke":
            c.invoke_ns = h.mono_ns if c.invoke_ns is None else min(c.invoke_ns, h.mono_ns)
        elif h.type in ("ok", "fail", "info"):
            if c.status in ("open", "info") and (c.status == "open" or h.type != "info"):
                c.status, c.done_ns = h.type, h.mono_ns
            elif c.status != h.type:
                conflicting += 1
        c.name = c.name or h.name
        c.schedule = c.schedule or h.schedule
        c.task_id = c.task_id or h.task_id
    if conflicting:
        warnings.append(
            f"history: {conflicting} request(s) with conflicting completions (the first definite kept)"
        )
    out = {op: dict(sorted(cnt.items())) for op, cnt in sorted(counts.items())}
    return list(calls.values()), out


def _fault_windows(data: RunData, t_end: int) -> tuple[list[tuple[int, int]], list[tuple[NemesisEvent, int]]]:
    """Merged fault windows (extended) and every fault start with its stop instant."""
    meta = data.meta
    open_: dict[tuple[str, str], list[NemesisEvent]] = defaultdict(list)
    spans: list[tuple[NemesisEvent, int]] = []
    for ev in sorted(data.nemesis, key=lambda e: e.mono_ns):
        key = (ev.fault, ev.target)
        if ev.phase == "start":
            open_[key].append(ev)
        elif ev.phase == "stop" and open_[key]:
            spans.append((open_[key].pop(0), ev.mono_ns))
    for starts in open_.values():
        spans.extend((s, t_end) for s in starts)
    spans.sort(key=lambda s: s[0].mono_ns)
    before = int(meta.tau_normal_s * NS_PER_S)
    after = int(meta.recovery_budget_s * NS_PER_S)
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted((s.mono_ns - before, e + after) for s, e in spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged, spans


def _in_windows(windows: list[tuple[int, int]], starts: list[int], t: int) -> bool:
    i = bisect.bisect_right(starts, t) - 1
    return i >= 0 and windows[i][0] <= t <= windows[i][1]


def _due_fires(meta: Meta, sched: Schedule, hi_ns: int) -> Iterator[tuple[int, int]]:
    """(nominal_ms, due_ns) of a schedule's fires due in [window_start, hi_ns]."""
    lo_ns = meta.window_start_mono_ns
    if hi_ns < lo_ns:
        return
    if sched.kind == "at" and sched.at_ms is not None:
        due = meta.wall_ms_to_mono_ns(sched.at_ms)
        if lo_ns <= due <= hi_ns:
            yield sched.at_ms, due
        return
    if sched.kind != "every" or sched.anchor_ms is None or not sched.period_ms:
        return
    anchor, period = sched.anchor_ms, sched.period_ms
    k = max(0, (meta.mono_ns_to_wall_ms(lo_ns) - anchor) // period - 1)
    while True:
        nominal = anchor + k * period
        if sched.until_ms is not None and nominal >= sched.until_ms:
            return
        due = meta.wall_ms_to_mono_ns(nominal)
        if due > hi_ns:
            return
        if due >= lo_ns:
            yield nominal, due
        k += 1


@dataclass
class _Run:
    data: RunData
    meta: Meta
    t_end: int
    warnings: list[str]
    calls: list[_Call]
    api_counts: dict[str, dict[str, int]]
    final_ids: set[str]
    final_by_name: dict[str, str]
    fires: dict[FireKey, Fire]
    fault_spans: list[tuple[NemesisEvent, int]]
    audit: _Audit
    starts: dict[FireKey, list[_Start]]  # non-manual ledger starts per fire, in file order
    ledger_counts: dict[str, int]
    cancel_ok_ns: dict[str, int]


def _prepare(data: RunData) -> _Run:
    meta = data.meta
    warnings = list(data.warnings)
    t_end = data.t_end_mono_ns
    calls, api_counts = _pair_history(data, warnings)
    fs = data.final_state
    final_ids = {t.task_id for t in fs.tasks} if fs else set()
    final_by_name = {t.name: t.task_id for t in fs.tasks if t.name is not None} if fs else {}

    # Cancels: fires due after the first (ok or indeterminate) cancel's invoke are not judged.
    cancel_cut: dict[str, int] = {}
    cancel_ok: dict[str, int] = {}
    for c in calls:
        if c.op != "cancel" or c.status == "fail" or c.task_id is None:
            continue
        at = c.invoke_ns if c.invoke_ns is not None else c.done_ns
        if at is not None and (c.task_id not in cancel_cut or at < cancel_cut[c.task_id]):
            cancel_cut[c.task_id] = at
        if c.status == "ok" and c.done_ns is not None:
            cancel_ok[c.task_id] = min(c.done_ns, cancel_ok.get(c.task_id, c.done_ns))

    windows, spans = _fault_windows(data, t_end)
    w_starts = [w[0] for w in windows]
    fires: dict[FireKey, Fire] = {}
    no_id = no_sched = 0
    for c in calls:
        if c.op != "create":
            continue
        if c.status == "ok":
            tid = c.task_id or (final_by_name.get(c.name) if c.name else None)
        elif c.status in ("info", "open"):
            tid = final_by_name.get(c.name) if c.name else None
            if tid is None:
                continue
        else:
            continue
        if tid is None:
            no_id += 1
            continue
        if c.schedule is None:
            no_sched += 1
            continue
        hi = min(meta.window_end_mono_ns, cancel_cut.get(tid, meta.window_end_mono_ns))
        for nominal, due in _due_fires(meta, c.schedule, hi):
            fires[(tid, nominal)] = Fire(tid, nominal, due, _in_windows(windows, w_starts, due))
    if no_id:
        warnings.append(f"history: {no_id} acknowledged create(s) with no task_id and no match by name")
    if no_sched:
        warnings.append(
            f"history: {no_sched} create(s) with no readable schedule (their fires are not judged)"
        )

    audit = _prepare_audit(data)
    manual = set(audit.manual_execs)
    if fs:
        manual.update(e.execution_id for e in fs.executions if e.manual)

    starts: dict[FireKey, list[_Start]] = {}
    open_starts: dict[tuple[str, Token | None, str, int], list[_Start]] = defaultdict(list)
    ends: list[LedgerRecord] = []
    n_start = n_end = n_manual = 0
    for r in data.ledger:
        if r.execution_id in manual:
            n_manual += 1
            continue
        if r.ph == "start":
            n_start += 1
            s = _Start(r)
            starts.setdefault((r.task_id, r.nominal_ms), []).append(s)
            open_starts[(r.execution_id, r.token, r.worker, r.pid)].append(s)
        elif r.ph == "end":
            n_end += 1
            ends.append(r)
    unmatched_ends = 0
    for r in ends:
        cands = open_starts.get((r.execution_id, r.token, r.worker, r.pid))
        match = next((s for s in cands or () if s.end_ns is None and s.rec.mono_ns <= r.mono_ns), None)
        if match is None:
            unmatched_ends += 1
        else:
            match.end_ns = r.mono_ns
    ledger_counts = {
        "starts": n_start,
        "ends": n_end,
        "starts_without_end": sum(1 for ss in starts.values() for s in ss if s.end_ns is None),
        "ends_without_start": unmatched_ends,
        "manual_records_ignored": n_manual,
    }
    return _Run(
        data=data,
        meta=meta,
        t_end=t_end,
        warnings=warnings,
        calls=calls,
        api_counts=api_counts,
        final_ids=final_ids,
        final_by_name=final_by_name,
        fires=fires,
        fault_spans=spans,
        audit=audit,
        starts=starts,
        ledger_counts=ledger_counts,
        cancel_ok_ns=cancel_ok,
    )


def _s(ns: float | None) -> float | None:
    return None if ns is None else round(ns / NS_PER_S, 3)


def _pcts(values: list[float]) -> dict[str, float | None]:
    values.sort()
    return {
        "p50": stats.percentile(values, 50),
        "p99": stats.percentile(values, 99),
        "max": values[-1] if values else None,
    }


# ------------------------------------------------------------------------------------------ rules


def _r1(run: _Run) -> RuleResult:
    r = RuleResult.new("R1")
    meta = run.meta
    eps = int(meta.epsilon_s * NS_PER_S)
    tau_n, tau_f = int(meta.tau_normal_s * NS_PER_S), int(meta.tau_fault_s * NS_PER_S)
    final_state: dict[FireKey, str] = {}
    if run.data.final_state:
        for e in run.data.final_state.executions:
            if not e.manual:
                final_state[(e.task_id, e.nominal_ms)] = e.state
    on_time = late = early = lost = in_fault = 0
    lateness: list[float] = []
    for key, fire in run.fires.items():
        in_fault += fire.in_fault
        tau = tau_f if fire.in_fault else tau_n
        ss = run.starts.get(key)
        if not ss:
            lost += 1
            r.example(
                kind="lost",
                task_id=fire.task_id,
                nominal_ms=fire.nominal_ms,
                due_s=_s(fire.due_ns - meta.t0_mono_ns),
                final_state=final_state.get(key, "absent"),
            )
            continue
        first = min(s.rec.mono_ns for s in ss)
        lateness.append((first - fire.due_ns) / NS_PER_S)
        if any(-eps <= s.rec.mono_ns - fire.due_ns <= tau for s in ss):
            on_time += 1
            continue
        late += 1
        if first - fire.due_ns < -eps:
            early += 1
        r.example(
            kind="early" if first - fire.due_ns < -eps else "late",
            task_id=fire.task_id,
            nominal_ms=fire.nominal_ms,
            lateness_s=_s(first - fire.due_ns),
            tau_s=tau / NS_PER_S,
            in_fault=fire.in_fault,
        )
    n = len(run.fires)
    missed = n - on_time
    rate = on_time / n if n else None
    upper_miss = stats.clopper_pearson_upper(missed, n, CONFIDENCE) if n else 1.0
    r.counts = {
        "fires": n,
        "fires_in_fault_windows": in_fault,
        "on_time": on_time,
        "late": late,
        "early": early,
        "lost": lost,
        "on_time_rate": rate,
        "lateness_s": _pcts(lateness),
        "miss_rate_upper95": upper_miss,
        "n_needed_for_99_99": stats.n_needed(TARGET_RATE, CONFIDENCE),
        "sample_supports_claim": upper_miss <= TARGET_RATE,
    }
    r.passed = n > 0 and lost == 0 and rate is not None and rate >= ON_TIME_TARGET
    if n == 0:
        r.notes.append("no fire was due in the judged window: the run proves nothing")
    if n and upper_miss > TARGET_RATE:
        r.notes.append(
            f"n = {n}: the 95 % bound of the miss rate is {upper_miss:.2e}, so this run cannot claim "
            f"99.99 % on time (needs about {stats.n_needed(TARGET_RATE, CONFIDENCE):,} fires with no miss)"
        )
    return r


def _r2(run: _Run) -> RuleResult:
    r = RuleResult.new("R2")
    dup_fires: set[FireKey] = set()
    dup_lease: set[LeaseKey] = set()
    done_twice: set[str] = set()
    regrant: set[str] = set()
    for node, recs in run.audit.applies.items():
        fired: dict[FireKey, int] = {}
        accepted: set[LeaseKey] = set()
        succeeded: dict[str, int] = {}
        for rec in recs:
            if not rec.accepted:
                continue
            ex = rec.execution_id
            if rec.kind == "fire" and rec.data.get("manual") is not True:
                tid, nom = rec.get_str("task_id"), rec.get_int("nominal_ms")
                if tid is None or nom is None:
                    continue
                prev = fired.get((tid, nom))
                if prev is not None:
                    if (tid, nom) not in dup_fires:
                        r.example(
                            kind="fire_twice",
                            node=node,
                            task_id=tid,
                            nominal_ms=nom,
                            indexes=[prev, rec.index],
                        )
                    dup_fires.add((tid, nom))
                else:
                    fired[(tid, nom)] = rec.index or 0
            elif rec.kind in ("complete", "expire") and ex is not None:
                lease = _lease(rec)
                if lease is not None and rec.kind == "complete":
                    if lease in accepted and lease not in dup_lease:
                        dup_lease.add(lease)
                        r.example(
                            kind="lease_committed_twice",
                            node=node,
                            execution_id=ex,
                            token=format_token(lease[1]),
                            index=rec.index,
                        )
                    accepted.add(lease)
                if rec.kind == "complete":
                    if ex in succeeded and ex not in done_twice:
                        done_twice.add(ex)
                        r.example(kind="completed_after_success", node=node, execution_id=ex, index=rec.index)
                    if _is_success(rec.data.get("outcome")):
                        succeeded.setdefault(ex, rec.index or 0)
            elif rec.kind == "grant" and ex is not None and ex in succeeded and ex not in regrant:
                regrant.add(ex)
                r.example(kind="granted_after_success", node=node, execution_id=ex, index=rec.index)
    final_dups = 0
    if run.data.final_state is not None:
        per_fire: Counter[FireKey] = Counter(
            (e.task_id, e.nominal_ms) for e in run.data.final_state.executions if not e.manual
        )
        for key, cnt in per_fire.items():
            if cnt > 1:
                final_dups += 1
                r.example(kind="final_executions_for_one_fire", task_id=key[0], nominal_ms=key[1], count=cnt)
    else:
        r.notes.append("final/state.json missing: the final-read part was not checked")
    dup_complete = len({lease[0] for lease in dup_lease} | done_twice | regrant)
    r.counts = {
        "dup_fire_commits": len(dup_fires),
        "dup_complete_accepts": dup_complete,
        "leases_committed_twice": len(dup_lease),
        "completed_after_success": len(done_twice),
        "granted_after_success": len(regrant),
        "final_dup_fires": final_dups,
        "dup_commits": len(dup_fires) + dup_complete + final_dups,
    }
    r.passed = r.counts["dup_commits"] == 0
    if not run.audit.applies:
        r.passed = False
        r.notes.append("no audit logs: the apply-log part was not checked")
    return r


def _fence_log(
    recs: Iterable[AuditRecord],
    audit: _Audit,
    *,
    node: str,
    merged: bool,
    stale: dict[tuple[str, int], dict[str, Any]],
    regress: dict[tuple[str, int], dict[str, Any]],
    inconsistent: dict[tuple[str, int], dict[str, Any]],
    counters: Counter[str],
) -> None:
    latest: dict[str, tuple[Token, int]] = {}  # exec -> (token, grant index)
    live: dict[str, Token | None] = {}
    epoch_term: int | None = None
    for rec in recs:
        if rec.kind == "epoch":
            epoch_term = rec.get_int("term")
            continue
        if rec.kind not in ("grant", "complete", "expire"):
            continue
        ex, tok, idx = rec.execution_id, rec.token, rec.index or 0
        if ex is None:
            continue
        if rec.kind == "grant":
            if not rec.accepted or tok is None:
                continue
            prev = latest.get(ex)
            if prev is not None and tok <= prev[0]:
                regress.setdefault(
                    (ex, idx),
                    {
                        "node": node,
                        "execution_id": ex,
                        "index": idx,
                        "token": format_token(tok),
                        "previous": format_token(prev[0]),
                    },
                )
            if tok[1] != idx or (epoch_term is not None and tok[0] != epoch_term):
                inconsistent.setdefault(
                    (ex, idx),
                    {
                        "node": node,
                        "execution_id": ex,
                        "index": idx,
                        "token": format_token(tok),
                        "epoch_term": epoch_term,
                    },
                )
            latest[ex] = (tok, idx)
            live[ex] = tok
            continue
        if not rec.accepted:
            if merged:
                counters[f"rejected_{rec.kind}s"] += 1
            continue
        prev = latest.get(ex)
        problem: str | None = None
        if prev is None:
            if merged:
                counters["unjudged_accepts"] += 1
            continue
        if tok != prev[0]:
            if not merged:
                grants = audit.grants_merged.get(ex, [])
                j = bisect.bisect_left(grants, (idx,)) - 1
                if j < 0 or grants[j][0] != prev[1]:
                    counters["gap_unjudged"] += 1  # this node missed a grant (snapshot gap)
                    continue
            problem = "token is not the latest grant's"
        elif live.get(ex) is None:
            problem = "lease had already ended"
        else:
            live[ex] = None  # a stale accept is reported once, and does not end the current lease here
        if problem is not None:
            stale.setdefault(
                (ex, idx),
                {
                    "node": node,
                    "execution_id": ex,
                    "index": idx,
                    "record": rec.kind,
                    "token": format_token(tok),
                    "current": format_token(prev[0]),
                    "why": problem,
                },
            )


def _r3(run: _Run) -> RuleResult:
    r = RuleResult.new("R3")
    stale: dict[tuple[str, int], dict[str, Any]] = {}
    regress: dict[tuple[str, int], dict[str, Any]] = {}
    inconsistent: dict[tuple[str, int], dict[str, Any]] = {}
    counters: Counter[str] = Counter()
    for node, recs in run.audit.applies.items():
        _fence_log(
            recs,
            run.audit,
            node=node,
            merged=False,
            stale=stale,
            regress=regress,
            inconsistent=inconsistent,
            counters=counters,
        )
    _fence_log(
        run.audit.merged,
        run.audit,
        node="(merged)",
        merged=True,
        stale=stale,
        regress=regress,
        inconsistent=inconsistent,
        counters=counters,
    )
    for d in list(stale.values())[:MAX_EXAMPLES]:
        r.example(kind="stale_accept", **d)
    for d in list(regress.values())[:MAX_EXAMPLES]:
        r.example(kind="token_regression", **d)
    r.counts = {
        "stale_accepts": len(stale),
        "token_regressions": len(regress),
        "rejected_completes": counters["rejected_completes"],
        "rejected_expires": counters["rejected_expires"],
        "unjudged_accepts": counters["unjudged_accepts"],
        "gap_unjudged": counters["gap_unjudged"],
        "grant_token_inconsistent": len(inconsistent),
    }
    if inconsistent:
        first = next(iter(inconsistent.values()))
        r.notes.append(
            f"{len(inconsistent)} grant(s) whose token is not (epoch term, own index), e.g. {first} "
            "(informational)"
        )
    r.passed = not stale and not regress
    if not run.audit.applies:
        r.passed = False
        r.notes.append("no audit logs: fencing was not checked")
    return r


# Re-executions the delivery contract allows: a retry after a reported failure, and a re-dispatch after
# the lease of a worker that was killed, paused or partitioned mid-attempt expired (at-least-once).
EXPECTED_DUP_CAUSES = frozenset({"retry_after_failure", "redispatch_after_worker_fault"})


def _worker_fault_spans(run: _Run) -> dict[str, list[tuple[int, int]]]:
    """Per worker, the spans of faults aimed at it (kill, pause, isolate, a cut link it ends)."""
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    workers = set(run.meta.workers)
    for ev, stop in run.fault_spans:
        for part in ev.target.replace("<->", ",").split(","):
            if part.strip() in workers:
                spans[part.strip()].append((ev.mono_ns, stop))
    return spans


def _holder_faulted(spans: dict[str, list[tuple[int, int]]], start: _Start, until_ns: int) -> bool:
    """Was the holder of this attempt's lease under a fault between the attempt's start and the end of
    its lease (`until_ns`: the expiry's apply)? A result finished just before a cut and never delivered
    loses the lease as surely as a kill mid-run."""
    lo = start.rec.mono_ns
    hi = max(until_ns, start.end_ns or 0)
    return any(a <= hi and lo <= b for a, b in spans.get(start.rec.worker, ()))


def _r4(run: _Run) -> RuleResult:
    r = RuleResult.new("R4")
    causes: Counter[str] = Counter()
    worker_spans = _worker_fault_spans(run)
    dup = unwanted = restarts = unjudged = 0
    for key, ss in run.starts.items():
        if key not in run.fires:
            unjudged += len(ss)
            continue
        leases: dict[tuple[str, Token | None], int] = {}
        for s in ss:
            lk = (s.rec.execution_id, s.rec.token)
            leases[lk] = leases.get(lk, 0) + 1
        restarts += sum(c - 1 for c in leases.values())
        if len(leases) < 2:
            continue
        dup += 1
        ordered = sorted(leases, key=lambda lk: (lk[0], lk[1] or (-1, -1)))
        fire_causes: list[str] = []
        for prev, cur in itertools.pairwise(ordered):
            if prev[0] != cur[0]:
                cause = "second_execution"
            elif prev[1] is None:
                cause = "unreadable_token"
            else:
                end = run.audit.lease_end.get((prev[0], prev[1]))
                cause = {
                    "failure": "retry_after_failure",
                    "expired": "redispatch_after_lost_lease",
                    "success": "rerun_after_success",
                }.get(end or "", "superseded_without_end")
                if cause == "redispatch_after_lost_lease":
                    # At-least-once by contract: the holder was killed, paused or cut off mid-attempt,
                    # so its lease expired and the execution ran again elsewhere.
                    held = [x for x in ss if (x.rec.execution_id, x.rec.token) == prev]
                    until = run.audit.supersede_ns.get((prev[0], prev[1]), run.t_end)
                    if held and _holder_faulted(worker_spans, held[0], until):
                        cause = "redispatch_after_worker_fault"
            fire_causes.append(cause)
        causes.update(fire_causes)
        if any(c not in EXPECTED_DUP_CAUSES for c in fire_causes):
            unwanted += 1
        r.example(
            task_id=key[0],
            nominal_ms=key[1],
            leases=[f"{ex}@{format_token(t)}" for ex, t in ordered],
            causes=fire_causes,
        )
    n = len(run.fires)
    r.counts = {
        "fires": n,
        "dup_exec": dup,
        "rate": dup / n if n else None,
        "upper95": stats.clopper_pearson_upper(dup, n, CONFIDENCE) if n else None,
        "unwanted_dup_exec": unwanted,
        "unwanted_rate": unwanted / n if n else None,
        "unwanted_upper95": stats.clopper_pearson_upper(unwanted, n, CONFIDENCE) if n else None,
        "extra_starts_by_cause": dict(sorted(causes.items())),
        "same_lease_restarts": restarts,
        "unjudged_starts": unjudged,
        "n_needed_for_1e-4": stats.n_needed(TARGET_RATE, CONFIDENCE),
    }
    r.passed = n > 0 and unwanted / n < TARGET_RATE
    if n and stats.clopper_pearson_upper(unwanted, n, CONFIDENCE) > TARGET_RATE:
        r.notes.append(
            f"n = {n}: the 95 % bound {r.counts['unwanted_upper95']:.2e} does not support a rate < 1e-4 "
            f"(needs about {stats.n_needed(TARGET_RATE, CONFIDENCE):,} fires with no duplicate)"
        )
    if restarts:
        r.notes.append(f"{restarts} ledger start(s) repeated an already started lease (same token)")
    return r


def _r5(run: _Run) -> RuleResult:
    r = RuleResult.new("R5")
    fs = run.data.final_state
    lost = recovered = failed_present = 0
    invoked: set[str] = set()
    for c in run.calls:
        if c.op != "create":
            continue
        if c.name:
            invoked.add(c.name)
        present = (c.task_id is not None and c.task_id in run.final_ids) or (
            c.name is not None and c.name in run.final_by_name
        )
        if c.status == "ok" and not present:
            lost += 1
            r.example(kind="lost_task", name=c.name, task_id=c.task_id)
        elif c.status in ("info", "open") and present:
            recovered += 1
        elif c.status == "fail" and present:
            failed_present += 1
            r.example(kind="failed_but_present", name=c.name)
    unexpected = 0
    if fs is not None:
        for t in fs.tasks:
            if t.name is None or t.name not in invoked:
                unexpected += 1
                r.example(kind="unexpected", task_id=t.task_id, name=t.name)
    after_cancel = 0
    for key, ss in run.starts.items():
        ok_ns = run.cancel_ok_ns.get(key[0])
        if ok_ns is None:
            continue
        due = run.meta.wall_ms_to_mono_ns(key[1])
        if due > ok_ns and any(s.rec.mono_ns > ok_ns for s in ss):
            after_cancel += 1
    r.counts = {
        "acknowledged": sum(1 for c in run.calls if c.op == "create" and c.status == "ok"),
        "indeterminate": sum(1 for c in run.calls if c.op == "create" and c.status in ("info", "open")),
        "lost_tasks": lost,
        "recovered": recovered,
        "unexpected": unexpected,
        "failed_but_present": failed_present,
        "final_tasks": len(fs.tasks) if fs else None,
        "fired_after_cancel": after_cancel,
    }
    r.passed = fs is not None and lost == 0 and unexpected == 0 and failed_present == 0
    if fs is None:
        r.notes.append("final/state.json missing: task loss was not checked")
    if after_cancel:
        r.notes.append(f"{after_cancel} fire(s) due after a cancel's ok started after it (informational)")
    return r


def _r6(run: _Run) -> RuleResult:
    r = RuleResult.new("R6")
    sup = run.audit.supersede_ns
    bad = open_ = 0
    for key, ss in run.starts.items():
        if len(ss) < 2:
            continue
        held: list[tuple[int, int, str, Token | None]] = []
        for s in ss:
            tok = s.rec.token
            end = s.end_ns
            if end is None:
                open_ += 1
                end = run.t_end
            if tok is not None:
                end = min(end, sup.get((s.rec.execution_id, tok), end))
            held.append((s.rec.mono_ns, end, s.rec.execution_id, tok))
        held.sort(key=lambda h: h[0])
        found: tuple[Any, ...] | None = None
        for i, (start, end_i, ex, tok) in enumerate(held):
            for p_start, p_end, p_ex, p_tok in held[:i]:
                # p_start <= start: they overlap while both are held iff start < min(p_end, _end).
                if start < min(p_end, end_i) and (p_ex, p_tok) != (ex, tok):
                    found = (p_ex, p_tok, p_start, p_end, ex, tok, start)
                    break
            if found:
                break
        if found:
            bad += 1
            p_ex, p_tok, p_start, p_end, ex, tok, start = found
            r.example(
                task_id=key[0],
                nominal_ms=key[1],
                first=f"{p_ex}@{format_token(p_tok)}",
                first_held_s=[_s(p_start - run.meta.t0_mono_ns), _s(p_end - run.meta.t0_mono_ns)],
                second=f"{ex}@{format_token(tok)}",
                second_start_s=_s(start - run.meta.t0_mono_ns),
            )
    r.counts = {"concurrent_dup": bad, "open_intervals_in_multi_start_fires": open_}
    r.passed = bad == 0
    if not run.audit.applies:
        r.notes.append("no audit logs: leases were never superseded, ledger intervals compared as they are")
    return r


def _r7(run: _Run) -> RuleResult:
    r = RuleResult.new("R7")
    by_term: dict[int, set[str]] = defaultdict(set)
    before_grant = stale = 0
    grant_ns_node: dict[tuple[str, LeaseKey], int] = {}
    for node, recs in run.audit.applies.items():
        for rec in recs:
            lease = _lease(rec)
            if rec.kind == "grant" and rec.accepted and lease is not None:
                grant_ns_node.setdefault((node, lease), rec.mono_ns)
    for node in sorted(run.data.audit):
        granted: set[LeaseKey] = set()
        for rec in run.data.audit[node]:
            lease = _lease(rec)
            if rec.ev == "apply" and rec.kind == "grant" and rec.accepted and lease is not None:
                granted.add(lease)
                continue
            if rec.ev != "dispatch":
                continue
            term = rec.get_int("raft_term")
            if term is not None:
                by_term[term].add(node)
            if lease is None:
                continue
            applied_ns = grant_ns_node.get((node, lease))
            if lease not in granted and (applied_ns is None or applied_ns > rec.mono_ns):
                before_grant += 1
                r.example(
                    kind="dispatch_before_grant",
                    node=node,
                    execution_id=lease[0],
                    token=format_token(lease[1]),
                    raft_term=term,
                )
            sup = run.audit.supersede_ns.get(lease)
            if sup is not None and sup < rec.mono_ns:
                stale += 1
    multi = {t: sorted(nodes) for t, nodes in by_term.items() if len(nodes) > 1}
    for t, nodes in sorted(multi.items())[:MAX_EXAMPLES]:
        r.example(kind="multi_dispatch_term", raft_term=t, nodes=nodes)
    r.counts = {
        "dispatches": len(run.audit.dispatches),
        "dispatch_terms": len(by_term),
        "multi_dispatch_terms": len(multi),
        "dispatch_before_grant": before_grant,
        "stale_dispatches": stale,
    }
    r.passed = not multi and before_grant == 0
    if stale:
        r.notes.append(f"{stale} dispatch(es) of a lease already superseded somewhere (informational)")
    if not run.data.audit:
        r.passed = False
        r.notes.append("no audit logs: dispatchers were not checked")
    return r


def _r8(run: _Run) -> RuleResult:
    r = RuleResult.new("R8")
    meta = run.meta
    faults = (
        frozenset(meta.leader_loss_faults)
        if meta.leader_loss_faults is not None
        else DEFAULT_LEADER_LOSS_FAULTS
    )
    budget = meta.recovery_budget_s
    disp = run.audit.dispatches
    disp_ns = [d.mono_ns for d in disp]
    # Last known term of each node before an instant: from its dispatch and role records.
    node_terms: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for node, recs in run.data.audit.items():
        for rec in recs:
            term = (
                rec.get_int("raft_term")
                if rec.ev == "dispatch"
                else rec.get_int("term")
                if rec.ev == "role"
                else None
            )
            if term is not None:
                node_terms[node].append((rec.mono_ns, term))
    for lst in node_terms.values():
        lst.sort()
    fires = sorted(run.fires.values(), key=lambda f: f.due_ns)
    dues = [f.due_ns for f in fires]
    tau_f = int(meta.tau_fault_s * NS_PER_S)
    per_type: dict[str, dict[str, list[float]]] = defaultdict(lambda: {"recovery_s": [], "backlog_s": []})
    unrecovered = undrained = judged = 0
    for ev, stop in run.fault_spans:
        if not ev.was_leader or ev.fault not in faults:
            continue
        judged += 1
        term = ev.term
        if term is None:
            known = node_terms.get(ev.target, [])
            j = bisect.bisect_right(known, (ev.mono_ns, 1 << 62)) - 1
            term = known[j][1] if j >= 0 else None
        rec_ns: int | None = None
        for k in range(bisect.bisect_right(disp_ns, ev.mono_ns), len(disp)):
            d = disp[k]
            dterm = d.get_int("raft_term")
            # A new leader's first dispatch; or, when the fault was too short to depose it (a pause
            # below the election timeout), the same leader's first dispatch after the fault ended.
            if (
                (term is not None and dterm is not None and dterm > term)
                or (term is None and d.node != ev.target)
                or (d.node == ev.target and d.mono_ns >= stop and (term is None or dterm == term))
            ):
                rec_ns = d.mono_ns - ev.mono_ns
                break
        entry: dict[str, Any] = {
            "fault": ev.fault,
            "target": ev.target,
            "start_s": _s(ev.mono_ns - meta.t0_mono_ns),
        }
        if rec_ns is None:
            unrecovered += 1
            entry["recovery_s"] = None
            r.example(**entry, why="no dispatch under a newer term before the run ended")
            continue
        per_type[ev.fault]["recovery_s"].append(rec_ns / NS_PER_S)
        lo = bisect.bisect_left(dues, ev.mono_ns - tau_f)
        hi = bisect.bisect_right(dues, ev.mono_ns + rec_ns)
        drained_at = ev.mono_ns
        never = False
        for f in fires[lo:hi]:
            ss = run.starts.get(f.key)
            if not ss:
                never = True
                break
            drained_at = max(drained_at, min(s.rec.mono_ns for s in ss))
        if never:
            undrained += 1
            r.example(**entry, recovery_s=_s(rec_ns), why="a fire due before recovery never started")
            continue
        backlog_ns = drained_at - ev.mono_ns
        per_type[ev.fault]["backlog_s"].append(backlog_ns / NS_PER_S)
        if rec_ns / NS_PER_S >= budget or backlog_ns / NS_PER_S >= budget:
            r.example(**entry, recovery_s=_s(rec_ns), backlog_s=_s(backlog_ns), why="over budget")
    all_rec: list[float] = []
    all_back: list[float] = []
    table: dict[str, Any] = {}
    for ftype, vals in sorted(per_type.items()):
        all_rec += vals["recovery_s"]
        all_back += vals["backlog_s"]
        table[ftype] = {
            "n": len(vals["recovery_s"]),
            "recovery_s": _pcts(list(vals["recovery_s"])),
            "backlog_s": _pcts(list(vals["backlog_s"])),
        }
    rec_all, back_all = _pcts(all_rec), _pcts(all_back)
    r.counts = {
        "leader_faults": judged,
        "unrecovered": unrecovered,
        "undrained": undrained,
        "recovery_s": rec_all,
        "backlog_s": back_all,
        "per_fault": table,
        "budget_s": budget,
    }
    rmax, bmax = rec_all["max"], back_all["max"]
    r.passed = (
        unrecovered == 0
        and undrained == 0
        and (rmax is None or rmax < budget)
        and (bmax is None or bmax < budget)
    )
    if not judged:
        r.notes.append("no leader fault in this run")
    return r


def _r9(run: _Run) -> RuleResult:
    r = RuleResult.new("R9")
    nodes = list(run.meta.nodes) or sorted(run.data.final_nodes)
    finals = run.data.final_nodes
    applied: dict[str, int] = {}
    for n in nodes:
        idx = finals[n].applied_index if n in finals else None
        if idx is not None:
            applied[n] = idx
    diverged: dict[str, str] = {}
    top = max(applied.values(), default=None)
    for n in nodes:
        if n not in finals:
            diverged[n] = "no final report"
        elif n not in applied:
            diverged[n] = "no applied index"
        elif applied[n] != top:
            diverged[n] = f"applied {applied[n]} < {top}"
    at_top = {n: finals[n].digest for n in applied if applied[n] == top and finals[n].digest is not None}
    tally = Counter(at_top.values())
    if len(tally) > 1:
        (best, best_n), (_, second_n) = tally.most_common(2)
        for n, dg in at_top.items():
            if dg != best or best_n == second_n:
                diverged[n] = f"digest {dg} differs"
    unreported = sorted(n for n in applied if applied[n] == top and finals[n].digest is None)
    for n, why in sorted(diverged.items()):
        r.example(kind="diverged_node", node=n, why=why)
    for c in run.audit.log_conflicts[:MAX_EXAMPLES]:
        r.example(kind="log_conflict", **c)
    for c in run.audit.replay_conflicts[:MAX_EXAMPLES]:
        r.example(kind="replay_conflict", **c)
    r.counts = {
        "nodes": len(nodes),
        "max_applied_index": top,
        "diverged_nodes": len(diverged),
        "diverged": sorted(diverged),
        "digests_compared": len(at_top),
        "digest_missing": unreported,
        "log_conflicts": len(run.audit.log_conflicts),
        "replay_conflicts": len(run.audit.replay_conflicts),
    }
    r.passed = not diverged and not run.audit.log_conflicts and not run.audit.replay_conflicts
    if not finals:
        r.passed = False
        r.notes.append("no final/<node>.json: convergence was not checked")
    if unreported:
        r.notes.append(f"no digest from {', '.join(unreported)}: only applied indexes compared there")
    return r


RULES = (_r1, _r2, _r3, _r4, _r5, _r6, _r7, _r8, _r9)


def check_data(data: RunData) -> Verdict:
    """Judge an already loaded run."""
    run = _prepare(data)
    rules = {res.rule: res for res in (fn(run) for fn in RULES)}
    meta = data.meta
    terms = run.audit.epoch_terms
    summary: dict[str, Any] = {
        "fires": len(run.fires),
        "ledger": run.ledger_counts,
        "api_calls": run.api_counts,
        "tasks_judged": len({k[0] for k in run.fires}),
        "faults": Counter(ev.fault for ev, _ in run.fault_spans),
        "term_churn": len(terms),
        "epoch_terms": [min(terms), max(terms)] if terms else None,
        "raft_terms_seen": len(run.audit.role_terms),
        "harness_cpu_s": meta.harness_cpu_s,
        "window_s": _s(meta.window_end_mono_ns - meta.window_start_mono_ns),
        "run_s": _s(run.t_end - meta.t0_mono_ns),
        "lease_ttl_ms": meta.lease_ttl_ms,
        "audit_records": {n: len(v) for n, v in sorted(data.audit.items())},
        "files": {k: asdict(v) for k, v in sorted(data.files.items())},
    }
    summary["faults"] = dict(sorted(summary["faults"].items()))
    warnings = list(run.warnings)
    errors = meta.raw.get("scenario_errors")
    if isinstance(errors, list):
        warnings += [f"scenario error (from meta.json): {e}" for e in errors]
    return Verdict(
        run_dir=str(data.run_dir),
        scenario=meta.scenario,
        seed=meta.seed,
        profile=meta.profile,
        mode=meta.mode,
        ok=all(res.passed for res in rules.values()),
        summary=summary,
        rules=rules,
        warnings=warnings,
    )


def check(run_dir: Path) -> Verdict:
    """Judge one run directory (formats: tests/fault/history.py)."""
    return check_data(load_run(Path(run_dir)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tests.fault.checker", description="Judge a fault-run directory."
    )
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--no-write", action="store_true", help="do not write verdict.json and report.md")
    ap.add_argument("--json", action="store_true", help="print verdict.json instead of the report")
    args = ap.parse_args(argv)
    from tests.fault import report

    try:
        verdict = check(args.run_dir)
    except (FileNotFoundError, ValueError) as exc:
        print(f"checker: {exc}", file=sys.stderr)
        return 2
    if not args.no_write:
        report.write(args.run_dir, verdict)
    print(verdict.to_json() if args.json else report.render(verdict), end="" if not args.json else "\n")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
