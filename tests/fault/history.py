"""The fault harness's run directory: its file formats, as dataclasses, and tolerant loaders.

The producer side (tests/fault/run.py, workload.py, probe.py, the cluster's nemesis and the daemons'
audit logs) writes these files; the checker (tests/fault/checker.py) only reads them. Every time the
checker compares is on the **harness clock**: CLOCK_MONOTONIC of the test host, shared by all network
namespaces and left alone by libfaketime. Wall-clock values appear only in task schedules.

Loaders are tolerant the way a crash demands: a JSONL file's last line may be cut short by a SIGKILL,
so a last line that is not valid JSON is skipped (counted as `truncated`). A bad line anywhere else is
skipped too and counted as `malformed` (the checker reports it), and so is a record that lacks a
required field (`invalid`). Unknown fields are ignored; unknown audit kinds/events are kept as raw
records and ignored by the rules.

Run directory layout
====================

meta.json (one object; required)
    {"scenario": str, "seed": int, "profile": str, "mode": "netns" | "proxy",
     "t0_mono_ns": int,            harness monotonic clock at t0
     "t0_wall_ns": int,            the harness's true wall clock read at t0_mono_ns
     "window_start_mono_ns": int,  fires due in [window_start, window_end] are judged
     "window_end_mono_ns": int,
     "t_end_mono_ns": int,         end of the run (after the quiet period and the final read);
                                   optional while the run is in progress (defaults to the latest
                                   mono_ns seen in any file)
     "lease_ttl_ms": int, "nodes": [str], "workers": [str],
     "tau_normal_s": 5.0, "tau_fault_s": 30.0, "recovery_budget_s": 30.0,
     optional: "epsilon_s": 0.5 (early tolerance), "harness_cpu_s": float,
               "leader_loss_faults": [str] (fault names that depose a leader; R8)}
    Wall to harness clock: mono_ns = wall_ms * 1e6 - (t0_wall_ns - t0_mono_ns)  (integers).

history.jsonl (workload API calls, Jepsen style; one object per line)
    {"mono_ns": int, "type": "invoke" | "ok" | "fail" | "info", "op": "create" | "cancel",
     "req": str,                    pairs an invoke with its completion
     "task_id": str | null,         known on ok (null on info/fail; on a cancel's invoke: the target)
     "name": str,                   unique task name chosen by the workload; present on invoke
     "schedule": {"kind": "at", "at_ms": int}
               | {"kind": "every", "anchor_ms": int, "period_ms": int, "until_ms": int | null}}
    ok = acknowledged, fail = definitely not applied, info = indeterminate; an invoke with no
    completion is indeterminate too. Fires of an "every" schedule: anchor + k*period, k >= 0,
    strictly before until_ms when set. A cancel's ok at mono_ns means no fire due after that instant
    is expected (the checker already stops requiring fires from the cancel's invoke on, since the
    cancel may take effect any time after it).

nemesis.jsonl (faults; one object per start and per stop)
    {"mono_ns": int, "fault": str ("kill", "pause", "isolate", "cut_link", "loss", "delay", "skew",
     "disk_full", "kill_workers", ...), "target": str, "phase": "start" | "stop",
     "was_leader": bool (the target led at start), "term": int | null (the leader's Raft term at start)}
    A start is paired with the next stop of the same (fault, target).

ledger.jsonl (written by the task payload, outside the system under test)
    {"ph": "start" | "end", "execution_id": str, "task_id": str, "nominal_ms": int, "attempt": int,
     "token": "T.I", "worker": str, "pid": int, "mono_ns": int}
    A start with no end: the process died or was killed while it ran.

audit/<node>.audit.jsonl (one file per daemon; records in the order the daemon wrote them)
    {"node": str, "mono_ns": int, "ev": NAME, ...} (flat: the event's fields sit beside "ev"), one of
      {"ev": "apply", "kind": "epoch", "index": int, "term": int}
      {"ev": "apply", "kind": "fire", "index": int, "execution_id", "task_id", "nominal_ms": int,
       "manual": bool}
      {"ev": "apply", "kind": "grant", "index": int, "execution_id", "task_id", "nominal_ms",
       "token": "T.I", "worker_id", "attempt": int}
      {"ev": "apply", "kind": "complete", "index": int, "execution_id", "token", "accepted": bool,
       "reason": str, "outcome": str}   (outcome: an AttemptOutcome name, e.g. "ATTEMPT_SUCCEEDED"
                                          or "SUCCEEDED"; anything ending in SUCCEEDED is success)
      {"ev": "apply", "kind": "expire", "index": int, "execution_id", "token", "accepted": bool}
      {"ev": "apply", "kind": "internal", "index": int, "command": str, "error": str}  (a command
                                                  that failed inside its handler: recorded, no effect)
      {"ev": "dispatch", "raft_term": int, "execution_id", "token", "worker_id"}  (a lease offer
                                                                                  sent by a leader)
      {"ev": "role", "leader": bool, "term": int}
      {"ev": "clock", ...}
    Other kinds and events may appear and are ignored. Apply records come in apply order; a node that
    restarts replays from its snapshot, so an index may appear twice in one file (same content
    expected). "fire" and "grant" records are written only for entries that took effect (a record
    carrying "accepted": false is ignored). The content of an apply record, for comparisons across
    replays and nodes, is its EV object without the keys "mono_ns", "wall_ms" and "node".

final/<node>.json (one per daemon, from the offline digest tool after the run)
    {"node": str, "applied_index": int | null, "digest": str | null}

final/state.json (read through the API after the quiet period)
    {"tasks": [{"task_id", "name"}],
     "executions": [{"execution_id", "task_id", "nominal_ms", "state": str, "attempt": int,
                     "token": "T.I", "manual": bool}]}
    It must list every task ever created (finished and cancelled ones included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Token = tuple[int, int]

APPLY_CONTENT_IGNORED = frozenset({"mono_ns", "wall_ms", "node"})


def parse_token(value: Any) -> Token | None:
    """ "T.I" (or [T, I], or {"term": T, "index": I}) -> (T, I); None when it cannot be read."""
    try:
        if type(value) is str:
            term, _, index = value.partition(".")
            return int(term), int(index)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return int(value[0]), int(value[1])
        if isinstance(value, dict):
            return int(value["term"]), int(value["index"])
    except (ValueError, KeyError, TypeError):
        return None
    return None


def format_token(token: Token | None) -> str:
    return "?" if token is None else f"{token[0]}.{token[1]}"


# ----------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Meta:
    scenario: str
    seed: int
    profile: str
    mode: str
    t0_mono_ns: int
    t0_wall_ns: int
    window_start_mono_ns: int
    window_end_mono_ns: int
    t_end_mono_ns: int | None
    lease_ttl_ms: int
    nodes: tuple[str, ...]
    workers: tuple[str, ...]
    tau_normal_s: float = 5.0
    tau_fault_s: float = 30.0
    recovery_budget_s: float = 30.0
    epsilon_s: float = 0.5
    harness_cpu_s: float | None = None
    leader_loss_faults: tuple[str, ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def wall_offset_ns(self) -> int:
        """wall_ns - mono_ns on the harness host."""
        return self.t0_wall_ns - self.t0_mono_ns

    def wall_ms_to_mono_ns(self, wall_ms: int) -> int:
        return wall_ms * 1_000_000 - self.wall_offset_ns

    def mono_ns_to_wall_ms(self, mono_ns: int) -> int:
        """The wall-clock millisecond containing `mono_ns` (floor)."""
        return (mono_ns + self.wall_offset_ns) // 1_000_000


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str  # "at" | "every"
    at_ms: int | None = None
    anchor_ms: int | None = None
    period_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryOp:
    mono_ns: int
    type: str  # invoke | ok | fail | info
    op: str  # create | cancel
    req: str
    task_id: str | None = None
    name: str | None = None
    schedule: Schedule | None = None


@dataclass(frozen=True, slots=True)
class NemesisEvent:
    mono_ns: int
    fault: str
    target: str
    phase: str  # start | stop
    was_leader: bool = False
    term: int | None = None


@dataclass(slots=True)
class LedgerRecord:
    ph: str  # start | end
    execution_id: str
    task_id: str
    nominal_ms: int
    attempt: int
    token: Token | None
    worker: str
    pid: int
    mono_ns: int


@dataclass(slots=True)  # not frozen: a frozen dataclass is slow to build, and there are many
class AuditRecord:
    node: str
    mono_ns: int
    ev: str  # apply | dispatch | role | clock | ...
    kind: str | None  # the apply kind, else None
    index: int | None  # the apply index, else None
    data: dict[str, Any]  # the EV object as read
    seq: int  # position in the node's file
    execution_id: str | None = None  # parsed once: every rule needs these three
    token: Token | None = None
    accepted: bool = True  # False only when the record says "accepted": false

    def get_str(self, key: str) -> str | None:
        v = self.data.get(key)
        return None if v is None else str(v)

    def get_int(self, key: str) -> int | None:
        v = self.data.get(key)
        if isinstance(v, bool) or v is None:
            return None
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    def body(self) -> dict[str, Any]:
        """The content of an apply record, for comparing replays and nodes (compare with ==)."""
        d = self.data
        if "mono_ns" not in d and "wall_ms" not in d and "node" not in d:  # APPLY_CONTENT_IGNORED
            return d
        return {k: v for k, v in self.data.items() if k not in APPLY_CONTENT_IGNORED}

    def content_key(self) -> str:
        """The content as canonical JSON (for reports)."""
        return json.dumps(self.body(), sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class FinalNode:
    node: str
    applied_index: int | None
    digest: str | None


@dataclass(frozen=True, slots=True)
class FinalTask:
    task_id: str
    name: str | None


@dataclass(frozen=True, slots=True)
class FinalExecution:
    execution_id: str
    task_id: str
    nominal_ms: int
    state: str
    attempt: int
    token: Token | None
    manual: bool


@dataclass(frozen=True, slots=True)
class FinalState:
    tasks: tuple[FinalTask, ...]
    executions: tuple[FinalExecution, ...]


@dataclass
class FileStats:
    lines: int = 0
    records: int = 0
    truncated: int = 0  # a cut-short last line (skipped silently)
    malformed: int = 0  # a bad line elsewhere (skipped, reported)
    invalid: int = 0  # valid JSON lacking a required field (skipped, reported)


@dataclass
class RunData:
    run_dir: Path
    meta: Meta
    history: list[HistoryOp]
    nemesis: list[NemesisEvent]
    ledger: list[LedgerRecord]
    audit: dict[str, list[AuditRecord]]  # node -> records in file order
    final_nodes: dict[str, FinalNode]
    final_state: FinalState | None
    files: dict[str, FileStats]  # relative path -> stats
    warnings: list[str]

    @property
    def t_end_mono_ns(self) -> int:
        """The end of the run: meta's, or else the latest instant seen in any file."""
        if self.meta.t_end_mono_ns is not None:
            return self.meta.t_end_mono_ns
        latest = self.meta.window_end_mono_ns
        for seq in (self.history, self.nemesis, self.ledger):
            for r in seq:
                latest = max(latest, r.mono_ns)
        for recs in self.audit.values():
            for a in recs:
                latest = max(latest, a.mono_ns)
        return latest


# ----------------------------------------------------------------------------------------- loaders


def read_jsonl(path: Path, stats: FileStats | None = None) -> list[dict[str, Any]]:
    """The objects of a JSONL file. A last line that does not parse (cut short) is skipped; so is any
    other bad line (counted in `stats.malformed`). A missing file reads as empty."""
    stats = stats if stats is not None else FileStats()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = text.split("\n")
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        stats.lines += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == last:
                stats.truncated += 1
            else:
                stats.malformed += 1
            continue
        if not isinstance(obj, dict):
            stats.malformed += 1
            continue
        out.append(obj)
    return out


def _int(v: Any) -> int:
    if type(v) is int:  # the fast path: nearly every value
        return v
    if isinstance(v, bool):
        raise TypeError("bool is not an int here")
    return int(v)


def _opt_int(v: Any) -> int | None:
    if v is None:
        return None
    return v if type(v) is int else _int(v)


def _opt_str(v: Any) -> str | None:
    return None if v is None else str(v)


def parse_schedule(obj: Any) -> Schedule | None:
    if not isinstance(obj, dict):
        return None
    kind = obj.get("kind")
    try:
        if kind == "at":
            return Schedule("at", at_ms=_int(obj["at_ms"]))
        if kind == "every":
            period = _int(obj["period_ms"])
            if period <= 0:
                return None
            return Schedule(
                "every",
                anchor_ms=_int(obj["anchor_ms"]),
                period_ms=period,
                until_ms=_opt_int(obj.get("until_ms")),
            )
    except (KeyError, TypeError, ValueError):
        return None
    return None


def parse_meta(obj: dict[str, Any]) -> Meta:
    """meta.json -> Meta; raises ValueError naming the field that is missing or wrong."""

    def req(key: str) -> Any:
        if key not in obj or obj[key] is None:
            raise ValueError(f"meta.json: '{key}' is required")
        return obj[key]

    try:
        lfaults = obj.get("leader_loss_faults")
        cpu = obj.get("harness_cpu_s")
        return Meta(
            scenario=str(req("scenario")),
            seed=_int(obj.get("seed", 0)),
            profile=str(obj.get("profile", "")),
            mode=str(obj.get("mode", "")),
            t0_mono_ns=_int(req("t0_mono_ns")),
            t0_wall_ns=_int(req("t0_wall_ns")),
            window_start_mono_ns=_int(req("window_start_mono_ns")),
            window_end_mono_ns=_int(req("window_end_mono_ns")),
            t_end_mono_ns=_opt_int(obj.get("t_end_mono_ns")),
            lease_ttl_ms=_int(obj.get("lease_ttl_ms", 0)),
            nodes=tuple(str(n) for n in obj.get("nodes") or ()),
            workers=tuple(str(w) for w in obj.get("workers") or ()),
            tau_normal_s=float(obj.get("tau_normal_s", 5.0)),
            tau_fault_s=float(obj.get("tau_fault_s", 30.0)),
            recovery_budget_s=float(obj.get("recovery_budget_s", 30.0)),
            epsilon_s=float(obj.get("epsilon_s", 0.5)),
            harness_cpu_s=None if cpu is None else float(cpu),
            leader_loss_faults=None if lfaults is None else tuple(str(f) for f in lfaults),
            raw=dict(obj),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith("meta.json"):
            raise
        raise ValueError(f"meta.json: a field has the wrong type ({exc})") from exc


def parse_history(obj: dict[str, Any]) -> HistoryOp:
    return HistoryOp(
        mono_ns=_int(obj["mono_ns"]),
        type=str(obj["type"]),
        op=str(obj["op"]),
        req=str(obj["req"]),
        task_id=_opt_str(obj.get("task_id")),
        name=_opt_str(obj.get("name")),
        schedule=parse_schedule(obj.get("schedule")),
    )


def parse_nemesis(obj: dict[str, Any]) -> NemesisEvent:
    return NemesisEvent(
        mono_ns=_int(obj["mono_ns"]),
        fault=str(obj["fault"]),
        target=str(obj.get("target", "")),
        phase=str(obj["phase"]),
        was_leader=bool(obj.get("was_leader", False)),
        term=_opt_int(obj.get("term")),
    )


def parse_ledger(obj: dict[str, Any]) -> LedgerRecord:
    return LedgerRecord(
        ph=str(obj["ph"]),
        execution_id=str(obj["execution_id"]),
        task_id=str(obj["task_id"]),
        nominal_ms=_int(obj["nominal_ms"]),
        attempt=_int(obj.get("attempt", 0)),
        token=parse_token(obj.get("token")),
        worker=str(obj.get("worker", "")),
        pid=_int(obj.get("pid", 0)),
        mono_ns=_int(obj["mono_ns"]),
    )


def parse_audit(obj: dict[str, Any], node: str, seq: int) -> AuditRecord:
    # The daemon writes flat records ({"node", "mono_ns", "ev": "apply", "kind": ...}); a nested
    # {"ev": {"ev": "apply", ...}} form is accepted too.
    ev = obj["ev"] if isinstance(obj["ev"], dict) else obj
    name = str(ev.get("ev", ""))
    kind = _opt_str(ev.get("kind")) if name == "apply" else None
    index = _opt_int(ev.get("index")) if name == "apply" else None
    if name == "apply" and index is None:
        raise KeyError("index")
    ex = ev.get("execution_id")
    return AuditRecord(
        node=str(obj.get("node") or node),
        mono_ns=_int(obj["mono_ns"]),
        ev=name,
        kind=kind,
        index=index,
        data=ev,
        seq=seq,
        execution_id=None if ex is None else str(ex),
        token=parse_token(ev["token"]) if "token" in ev else None,
        accepted=ev.get("accepted", True) is not False,
    )


def parse_final_state(obj: dict[str, Any]) -> FinalState:
    tasks = tuple(
        FinalTask(task_id=str(t["task_id"]), name=_opt_str(t.get("name")))
        for t in obj.get("tasks") or ()
        if isinstance(t, dict) and t.get("task_id") is not None
    )
    execs = []
    for e in obj.get("executions") or ():
        if not isinstance(e, dict):
            continue
        try:
            execs.append(
                FinalExecution(
                    execution_id=str(e["execution_id"]),
                    task_id=str(e["task_id"]),
                    nominal_ms=_int(e["nominal_ms"]),
                    state=str(e.get("state", "")),
                    attempt=_int(e.get("attempt", 0)),
                    token=parse_token(e.get("token")),
                    manual=bool(e.get("manual", False)),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return FinalState(tasks, tuple(execs))


def _load_records(path: Path, stats: FileStats, parse: Any) -> list[Any]:
    out = []
    for obj in read_jsonl(path, stats):
        try:
            out.append(parse(obj))
        except (KeyError, TypeError, ValueError):
            stats.invalid += 1
    stats.records = len(out)
    return out


def _read_json(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        warnings.append(f"{path.name}: unreadable JSON ({exc})")
        return None
    if not isinstance(obj, dict):
        warnings.append(f"{path.name}: not a JSON object")
        return None
    return obj


def load_run(run_dir: Path) -> RunData:
    """Everything the checker reads from one run directory. Only meta.json is required."""
    run_dir = Path(run_dir)
    warnings: list[str] = []
    meta_obj = _read_json(run_dir / "meta.json", warnings)
    if meta_obj is None:
        raise FileNotFoundError(f"{run_dir / 'meta.json'}: missing or unreadable")
    meta = parse_meta(meta_obj)
    files: dict[str, FileStats] = {}

    def stats(rel: str) -> FileStats:
        files[rel] = FileStats()
        return files[rel]

    history: list[HistoryOp] = _load_records(run_dir / "history.jsonl", stats("history.jsonl"), parse_history)
    nemesis: list[NemesisEvent] = _load_records(
        run_dir / "nemesis.jsonl", stats("nemesis.jsonl"), parse_nemesis
    )
    ledger: list[LedgerRecord] = _load_records(run_dir / "ledger.jsonl", stats("ledger.jsonl"), parse_ledger)
    for rel in ("history.jsonl", "ledger.jsonl"):
        if not (run_dir / rel).exists():
            warnings.append(f"{rel}: missing")

    audit: dict[str, list[AuditRecord]] = {}
    audit_dir = run_dir / "audit"
    for path in sorted(audit_dir.glob("*.audit.jsonl")) if audit_dir.is_dir() else ():
        node = path.name[: -len(".audit.jsonl")]
        st = stats(f"audit/{path.name}")
        recs: list[AuditRecord] = []
        for obj in read_jsonl(path, st):
            try:
                recs.append(parse_audit(obj, node, len(recs)))
            except (KeyError, TypeError, ValueError):
                st.invalid += 1
        st.records = len(recs)
        audit[node] = recs
    for node in meta.nodes:
        if node not in audit:
            warnings.append(f"audit/{node}.audit.jsonl: missing")

    final_nodes: dict[str, FinalNode] = {}
    final_dir = run_dir / "final"
    node_names = list(meta.nodes) or sorted(
        p.stem for p in final_dir.glob("*.json") if p.name != "state.json"
    )
    for node in node_names:
        fobj = _read_json(final_dir / f"{node}.json", warnings)
        if fobj is None:
            continue
        try:
            final_nodes[node] = FinalNode(
                node=str(fobj.get("node") or node),
                applied_index=_opt_int(fobj.get("applied_index")),
                digest=_opt_str(fobj.get("digest")),
            )
        except (TypeError, ValueError):
            warnings.append(f"final/{node}.json: applied_index is not an integer")
    state_obj = _read_json(final_dir / "state.json", warnings)
    final_state = None if state_obj is None else parse_final_state(state_obj)

    for rel, st in files.items():
        if st.malformed or st.invalid:
            warnings.append(f"{rel}: skipped {st.malformed} malformed and {st.invalid} incomplete line(s)")
    return RunData(
        run_dir=run_dir,
        meta=meta,
        history=history,
        nemesis=nemesis,
        ledger=ledger,
        audit=audit,
        final_nodes=final_nodes,
        final_state=final_state,
        files=files,
        warnings=warnings,
    )
