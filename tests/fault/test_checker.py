"""Unit tests of the fault checker: each rule passes a clean history and catches a hand-made violation;
Clopper-Pearson bounds against known values; tolerant loaders; the CLI and the report.

A small simulator (`Sim`) writes a consistent run directory the way a healthy cluster would: one
leader, every fire committed once, granted, dispatched, executed and completed on time. Each test
then breaks one thing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.fault import checker, report, stats
from tests.fault.history import load_run, parse_token, read_jsonl

NS = 1_000_000_000
MS = 1_000_000
T0_MONO = 5_000 * NS
T0_WALL = 1_700_000_000 * NS
OFFSET = T0_WALL - T0_MONO


def mono(wall_ms: int) -> int:
    return wall_ms * MS - OFFSET


def wall(mono_ns: int) -> int:
    return (mono_ns + OFFSET) // MS


class Sim:
    """Writes the files of one run; the methods play the cluster, the workload and the nemesis."""

    nodes = ("n1", "n2", "n3")

    def __init__(self) -> None:
        self.meta: dict[str, Any] = {
            "scenario": "T1",
            "seed": 7,
            "profile": "unit",
            "mode": "proxy",
            "t0_mono_ns": T0_MONO,
            "t0_wall_ns": T0_WALL,
            "window_start_mono_ns": T0_MONO + 2 * NS,
            "window_end_mono_ns": T0_MONO + 22 * NS,
            "t_end_mono_ns": T0_MONO + 40 * NS,
            "lease_ttl_ms": 3000,
            "nodes": list(self.nodes),
            "workers": ["w1", "w2"],
            "tau_normal_s": 5.0,
            "tau_fault_s": 30.0,
            "recovery_budget_s": 30.0,
            "harness_cpu_s": 12.5,
        }
        self.history: list[dict[str, Any]] = []
        self.nemesis: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.audit: dict[str, list[dict[str, Any]]] = {n: [] for n in self.nodes}
        self.tasks: list[dict[str, Any]] = []
        self.execs: list[dict[str, Any]] = []
        self.index = 0
        self.leader, self.term = "n1", 1
        self.outage: tuple[int, int] | None = None  # no dispatch in [a, b)
        self.apply({"kind": "epoch", "term": 1}, T0_MONO)
        self.digests: dict[str, tuple[int | None, str | None]] = {}

    # ------------------------------------------------------------------ the cluster's side
    def apply(self, ev: dict[str, Any], at: int, nodes: tuple[str, ...] | None = None) -> int:
        self.index += 1
        for i, n in enumerate(nodes or self.nodes):
            self.audit[n].append(
                {"node": n, "mono_ns": at + i * MS, "ev": {"ev": "apply", "index": self.index, **ev}}
            )
        return self.index

    def grant(self, ex: str, tid: str, nominal: int, at: int, *, worker: str = "w1", attempt: int = 1) -> str:
        token = f"{self.term}.{self.index + 1}"
        ev = {"kind": "grant", "execution_id": ex, "task_id": tid, "nominal_ms": nominal}
        self.apply({**ev, "token": token, "worker_id": worker, "attempt": attempt}, at)
        return token

    def dispatch(
        self, ex: str, token: str, at: int, node: str | None = None, term: int | None = None
    ) -> None:
        node = node or self.leader
        ev = {
            "ev": "dispatch",
            "raft_term": term or self.term,
            "execution_id": ex,
            "token": token,
            "worker_id": "w1",
        }
        self.audit[node].append({"node": node, "mono_ns": at, "ev": ev})

    def complete(
        self, ex: str, token: str, at: int, *, accepted: bool = True, outcome: str = "SUCCEEDED"
    ) -> None:
        ev = {"kind": "complete", "execution_id": ex, "token": token, "accepted": accepted}
        self.apply({**ev, "reason": "" if accepted else "stale_token", "outcome": outcome}, at)

    def expire(self, ex: str, token: str, at: int, *, accepted: bool = True) -> None:
        self.apply({"kind": "expire", "execution_id": ex, "token": token, "accepted": accepted}, at)

    def led(
        self, ph: str, ex: str, tid: str, nominal: int, token: str, *, at: int, worker: str = "w1"
    ) -> None:
        self.ledger.append(
            {
                "ph": ph,
                "execution_id": ex,
                "task_id": tid,
                "nominal_ms": nominal,
                "attempt": 1,
                "token": token,
                "worker": worker,
                "pid": 100,
                "mono_ns": at,
            }
        )

    def run_fire(
        self, tid: str, nominal: int, *, delay_ms: int = 100, sleep_ms: int = 200, ex: str | None = None
    ) -> tuple[str, str, int]:
        """Fire, grant, dispatch, execute and complete one fire; returns (execution, token, start)."""
        t = mono(nominal) + delay_ms * MS
        if self.outage and self.outage[0] <= t < self.outage[1]:
            t = self.outage[1] + 100 * MS
        ex = ex or f"e-{tid}-{nominal}"
        self.apply(
            {"kind": "fire", "execution_id": ex, "task_id": tid, "nominal_ms": nominal, "manual": False},
            t - 50 * MS,
        )
        token = self.grant(ex, tid, nominal, t - 20 * MS)
        self.dispatch(ex, token, t - 10 * MS)
        self.led("start", ex, tid, nominal, token, at=t)
        self.led("end", ex, tid, nominal, token, at=t + sleep_ms * MS)
        self.complete(ex, token, t + sleep_ms * MS + 10 * MS)
        self.execs.append(
            {
                "execution_id": ex,
                "task_id": tid,
                "nominal_ms": nominal,
                "state": "SUCCEEDED",
                "attempt": 1,
                "token": token,
                "manual": False,
            }
        )
        return ex, token, t

    # ------------------------------------------------------------------ the workload's side
    def create(
        self, name: str, schedule: dict[str, Any], at: int, status: str = "ok", in_final: bool = True
    ) -> str:
        tid = f"t-{name}"
        self.history.append(
            {"mono_ns": at, "type": "invoke", "op": "create", "req": name, "name": name, "schedule": schedule}
        )
        if status != "open":
            self.history.append(
                {
                    "mono_ns": at + 10 * MS,
                    "type": status,
                    "op": "create",
                    "req": name,
                    "name": name,
                    "task_id": tid if status == "ok" else None,
                }
            )
        if in_final:
            self.tasks.append({"task_id": tid, "name": name})
        return tid

    # ------------------------------------------------------------------ files
    def write(self, run_dir: Path) -> Path:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "meta.json").write_text(json.dumps(self.meta))
        for name, rows in (("history", self.history), ("nemesis", self.nemesis), ("ledger", self.ledger)):
            (run_dir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "audit").mkdir(exist_ok=True)
        for n, rows in self.audit.items():
            (run_dir / "audit" / f"{n}.audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (run_dir / "final").mkdir(exist_ok=True)
        for n in self.nodes:
            applied, digest = self.digests.get(n, (self.index, "d41d8c"))
            (run_dir / "final" / f"{n}.json").write_text(
                json.dumps({"node": n, "applied_index": applied, "digest": digest})
            )
        (run_dir / "final" / "state.json").write_text(
            json.dumps({"tasks": self.tasks, "executions": self.execs})
        )
        return run_dir


def clean_sim(
    *, skip: set[tuple[str, int]] | None = None, run: bool = True
) -> tuple[Sim, list[tuple[str, int]]]:
    """Three tasks every second and four one-shots, every fire run on time (except `skip`)."""
    sim = Sim()
    w0 = wall(T0_MONO)
    fires: list[tuple[str, int]] = []
    for i, period in enumerate((1000, 1000, 2000)):
        anchor = w0 + 1000 + 37 * i
        until = anchor + (21_000 // period) * period + period // 2
        tid = sim.create(
            f"rec-{i}",
            {"kind": "every", "anchor_ms": anchor, "period_ms": period, "until_ms": until},
            T0_MONO + 10 * MS * i,
        )
        fires += [(tid, anchor + k * period) for k in range((until - anchor + period - 1) // period)]
    for j, at_s in enumerate((3, 7.5, 12, 19)):
        at_ms = w0 + int(at_s * 1000)
        tid = sim.create(f"one-{j}", {"kind": "at", "at_ms": at_ms}, T0_MONO + NS + j * MS)
        fires.append((tid, at_ms))
    fires.sort(key=lambda f: f[1])
    if run:
        for tid, nominal in fires:
            if skip and (tid, nominal) in skip:
                continue
            sim.run_fire(tid, nominal)
    return sim, fires


def judged(fires: list[tuple[str, int]]) -> list[tuple[str, int]]:
    lo, hi = T0_MONO + 2 * NS, T0_MONO + 22 * NS
    return [f for f in fires if lo <= mono(f[1]) <= hi]


def verdict_of(sim: Sim, tmp_path: Path) -> checker.Verdict:
    return checker.check(sim.write(tmp_path / "run"))


def failed(v: checker.Verdict) -> list[str]:
    return [k for k, r in v.rules.items() if not r.passed]


# ================================================================================ clean history


def test_clean_history_passes_every_rule(tmp_path: Path) -> None:
    sim, fires = clean_sim()
    v = verdict_of(sim, tmp_path)
    assert failed(v) == [], v.to_json()
    assert v.ok
    n = len(judged(fires))
    assert n == 21 + 20 + 10 + 4  # fires due in [t0+2 s, t0+22 s]
    r1 = v.rules["R1"].counts
    assert (r1["fires"], r1["on_time"], r1["late"], r1["lost"]) == (n, n, 0, 0)
    assert r1["lateness_s"]["max"] == pytest.approx(0.1)
    assert r1["sample_supports_claim"] is False  # 57 fires cannot support 99.99 %
    assert v.rules["R4"].counts["dup_exec"] == 0
    assert v.rules["R4"].counts["upper95"] == pytest.approx(1 - 0.05 ** (1 / n))
    assert v.rules["R4"].counts["unjudged_starts"] == len(fires) - n  # the fire due at t0+1 s
    assert v.rules["R5"].counts["lost_tasks"] == 0
    assert v.rules["R7"].counts["multi_dispatch_terms"] == 0
    assert v.rules["R8"].counts["leader_faults"] == 0
    assert v.summary["term_churn"] == 1
    assert v.summary["harness_cpu_s"] == 12.5
    assert v.summary["api_calls"] == {"create": {"invoke": 7, "ok": 7}}
    assert v.summary["ledger"]["starts"] == len(fires)


def test_time_conversion_uses_harness_wall_offset(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    run = load_run(sim.write(tmp_path / "run"))
    assert run.meta.wall_ms_to_mono_ns(wall(T0_MONO + 3 * NS)) == T0_MONO + 3 * NS
    assert run.meta.mono_ns_to_wall_ms(T0_MONO) == T0_WALL // MS


def test_replayed_identical_applies_are_not_findings(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    # n2 restarts and replays its last 20 entries from its snapshot: same indexes, same content.
    replay = [dict(r, mono_ns=r["mono_ns"] + 30 * NS) for r in sim.audit["n2"] if r["ev"]["ev"] == "apply"][
        -20:
    ]
    sim.audit["n2"] += replay
    v = verdict_of(sim, tmp_path)
    assert v.ok, failed(v)
    assert v.rules["R2"].counts["dup_fire_commits"] == 0
    assert v.rules["R9"].counts["replay_conflicts"] == 0


# ================================================================================ R1


def test_r1_detects_lost_and_late_fires(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    j = judged(fires)
    lost, late = j[5], j[9]
    for tid, nominal in fires:
        if (tid, nominal) == lost:
            continue
        sim.run_fire(tid, nominal, delay_ms=6000 if (tid, nominal) == late else 100)
    v = verdict_of(sim, tmp_path)
    r1 = v.rules["R1"]
    assert not r1.passed
    assert (r1.counts["lost"], r1.counts["late"], r1.counts["on_time"]) == (1, 1, len(j) - 2)
    assert r1.counts["lateness_s"]["max"] == pytest.approx(6.0)
    kinds = {e["kind"] for e in r1.examples}
    assert kinds == {"lost", "late"}
    lost_ex = next(e for e in r1.examples if e["kind"] == "lost")
    assert lost_ex["final_state"] == "absent"


def test_r1_fault_window_allows_tau_fault(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    late = judged(fires)[9]
    sim.nemesis += [
        {
            "mono_ns": mono(late[1]) - NS,
            "fault": "delay",
            "target": "n1",
            "phase": "start",
            "was_leader": True,
            "term": 1,
        },
        {
            "mono_ns": mono(late[1]) + NS,
            "fault": "delay",
            "target": "n1",
            "phase": "stop",
            "was_leader": True,
            "term": 1,
        },
    ]
    for f in fires:
        sim.run_fire(*f, delay_ms=12_000 if f == late else 100)
    v = verdict_of(sim, tmp_path)
    assert v.rules["R1"].passed, v.rules["R1"]
    assert v.rules["R1"].counts["fires_in_fault_windows"] > 0
    assert v.rules["R8"].counts["leader_faults"] == 0  # a delay does not depose the leader


def test_r1_early_start_is_not_on_time(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    early = judged(fires)[3]
    for f in fires:
        sim.run_fire(*f, delay_ms=-900 if f == early else 100)
    r1 = verdict_of(sim, tmp_path).rules["R1"]
    assert not r1.passed
    assert (r1.counts["late"], r1.counts["early"]) == (1, 1)


def test_r1_no_fires_fails(tmp_path: Path) -> None:
    sim = Sim()
    v = verdict_of(sim, tmp_path)
    assert not v.rules["R1"].passed
    assert "proves nothing" in v.rules["R1"].notes[0]


def test_cancel_excludes_later_fires(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    tid = "t-rec-0"
    cancel_at = T0_MONO + 10 * NS
    sim.history += [
        {"mono_ns": cancel_at, "type": "invoke", "op": "cancel", "req": "c1", "task_id": tid},
        {"mono_ns": cancel_at + 500 * MS, "type": "ok", "op": "cancel", "req": "c1", "task_id": tid},
    ]
    for f in fires:
        if f[0] == tid and mono(f[1]) > cancel_at:
            continue  # the cancel took effect at its invoke
        sim.run_fire(*f)
    v = verdict_of(sim, tmp_path)
    assert v.rules["R1"].passed, v.rules["R1"]
    assert v.rules["R1"].counts["fires"] == len(judged(fires)) - 12
    assert v.rules["R5"].counts["fired_after_cancel"] == 0


# ================================================================================ R2


def test_r2_detects_a_fire_committed_twice(tmp_path: Path) -> None:
    sim, fires = clean_sim()
    tid, nominal = judged(fires)[4]
    sim.apply(
        {"kind": "fire", "execution_id": "e-again", "task_id": tid, "nominal_ms": nominal, "manual": False},
        mono(nominal) + 2 * NS,
    )
    sim.execs.append(
        {
            "execution_id": "e-again",
            "task_id": tid,
            "nominal_ms": nominal,
            "state": "PENDING",
            "attempt": 0,
            "token": "0.0",
            "manual": False,
        }
    )
    r2 = verdict_of(sim, tmp_path).rules["R2"]
    assert not r2.passed
    assert r2.counts["dup_fire_commits"] == 1
    assert r2.counts["final_dup_fires"] == 1


def test_r2_manual_fires_are_not_duplicates(tmp_path: Path) -> None:
    sim, fires = clean_sim()
    tid, nominal = judged(fires)[4]
    sim.apply(
        {"kind": "fire", "execution_id": "e-man", "task_id": tid, "nominal_ms": nominal, "manual": True},
        mono(nominal) + 2 * NS,
    )
    sim.execs.append(
        {
            "execution_id": "e-man",
            "task_id": tid,
            "nominal_ms": nominal,
            "state": "SUCCEEDED",
            "attempt": 1,
            "token": "1.999",
            "manual": True,
        }
    )
    sim.led("start", "e-man", tid, nominal, "1.999", at=mono(nominal) + 3 * NS)
    v = verdict_of(sim, tmp_path)
    assert v.ok, failed(v)
    assert v.summary["ledger"]["manual_records_ignored"] == 1


def test_r2_detects_a_lease_completed_twice_and_a_completion_after_success(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[6]
    for f in fires:
        ex, token, t = sim.run_fire(*f)
        if f == target:
            sim.complete(ex, token, t + NS)  # the same lease accepted a second time
    r2 = verdict_of(sim, tmp_path).rules["R2"]
    assert not r2.passed
    assert r2.counts["leases_committed_twice"] == 1
    assert r2.counts["completed_after_success"] == 1


def test_r2_retry_after_failure_is_legitimate(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[6]
    for f in fires:
        if f != target:
            sim.run_fire(*f)
            continue
        tid, nominal = f
        ex, t = f"e-{tid}-{nominal}", mono(nominal) + 100 * MS
        sim.apply(
            {"kind": "fire", "execution_id": ex, "task_id": tid, "nominal_ms": nominal, "manual": False}, t
        )
        tok1 = sim.grant(ex, tid, nominal, t)
        sim.dispatch(ex, tok1, t)
        sim.led("start", ex, tid, nominal, tok1, at=t + MS)
        sim.led("end", ex, tid, nominal, tok1, at=t + 100 * MS)
        sim.complete(ex, tok1, t + 110 * MS, outcome="ATTEMPT_FAILED")
        tok2 = sim.grant(ex, tid, nominal, t + 500 * MS, attempt=2)
        sim.dispatch(ex, tok2, t + 510 * MS)
        sim.led("start", ex, tid, nominal, tok2, at=t + 520 * MS)
        sim.led("end", ex, tid, nominal, tok2, at=t + 600 * MS)
        sim.complete(ex, tok2, t + 610 * MS)
        sim.execs.append(
            {
                "execution_id": ex,
                "task_id": tid,
                "nominal_ms": nominal,
                "state": "SUCCEEDED",
                "attempt": 2,
                "token": tok2,
                "manual": False,
            }
        )
    v = verdict_of(sim, tmp_path)
    assert v.ok, failed(v)
    r4 = v.rules["R4"].counts
    assert r4["dup_exec"] == 1
    assert r4["unwanted_dup_exec"] == 0
    assert r4["extra_starts_by_cause"] == {"retry_after_failure": 1}


# ================================================================================ R3 + R4 + R6


def _zombie(sim: Sim, fires: list[tuple[str, int]], target: tuple[str, int], *, late_accepted: bool) -> None:
    """The worker holding `target` stops beyond its TTL; the lease expires, a second worker runs the fire,
    and the first one's late completion arrives (rejected unless `late_accepted`)."""
    for f in fires:
        if f != target:
            sim.run_fire(*f)
            continue
        tid, nominal = f
        ex, t = f"e-{tid}-{nominal}", mono(nominal) + 100 * MS
        sim.apply(
            {"kind": "fire", "execution_id": ex, "task_id": tid, "nominal_ms": nominal, "manual": False}, t
        )
        tok1 = sim.grant(ex, tid, nominal, t)
        sim.dispatch(ex, tok1, t + MS)
        sim.led("start", ex, tid, nominal, tok1, at=t + 2 * MS)
        sim.expire(ex, tok1, t + 3 * NS)
        tok2 = sim.grant(ex, tid, nominal, t + 3 * NS + 100 * MS, worker="w2")
        sim.dispatch(ex, tok2, t + 3 * NS + 110 * MS)
        sim.led("start", ex, tid, nominal, tok2, at=t + 3 * NS + 120 * MS, worker="w2")
        sim.led("end", ex, tid, nominal, tok2, at=t + 3 * NS + 300 * MS, worker="w2")
        sim.complete(ex, tok2, t + 3 * NS + 310 * MS)
        sim.led("end", ex, tid, nominal, tok1, at=t + 8 * NS)  # the zombie wakes up and finishes
        sim.complete(ex, tok1, t + 8 * NS + 10 * MS, accepted=late_accepted)
        sim.execs.append(
            {
                "execution_id": ex,
                "task_id": tid,
                "nominal_ms": nominal,
                "state": "SUCCEEDED",
                "attempt": 2,
                "token": tok2,
                "manual": False,
            }
        )


def test_zombie_worker_counts_as_dup_exec_only(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    _zombie(sim, fires, judged(fires)[10], late_accepted=False)
    v = verdict_of(sim, tmp_path)
    assert v.rules["R3"].passed and v.rules["R6"].passed and v.rules["R2"].passed
    assert v.rules["R3"].counts["rejected_completes"] == 1
    r4 = v.rules["R4"]
    assert r4.counts["dup_exec"] == 1
    assert r4.counts["extra_starts_by_cause"] == {"redispatch_after_lost_lease": 1}
    assert not r4.passed  # 1 of 55 is far above 1e-4
    assert r4.counts["upper95"] == pytest.approx(stats.clopper_pearson_upper(1, 55))


def test_r3_detects_a_stale_accept(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    _zombie(sim, fires, judged(fires)[10], late_accepted=True)
    r3 = verdict_of(sim, tmp_path).rules["R3"]
    assert not r3.passed
    assert r3.counts["stale_accepts"] == 1
    assert r3.examples[0]["why"] == "token is not the latest grant's"


def test_r3_detects_an_accept_after_the_lease_expired(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[2]
    for f in fires:
        if f != target:
            sim.run_fire(*f)
            continue
        ex, t = f"e-{f[0]}-{f[1]}", mono(f[1]) + 100 * MS
        sim.apply(
            {"kind": "fire", "execution_id": ex, "task_id": f[0], "nominal_ms": f[1], "manual": False}, t
        )
        tok = sim.grant(ex, f[0], f[1], t)
        sim.dispatch(ex, tok, t)
        sim.led("start", ex, f[0], f[1], tok, at=t + MS)
        sim.expire(ex, tok, t + 3 * NS)
        sim.led("end", ex, f[0], f[1], tok, at=t + 4 * NS)
        sim.complete(ex, tok, t + 4 * NS + MS)  # accepted although its lease had expired
    r3 = verdict_of(sim, tmp_path).rules["R3"]
    assert r3.counts["stale_accepts"] == 1
    assert r3.examples[0]["why"] == "lease had already ended"


def test_r3_detects_a_token_regression(tmp_path: Path) -> None:
    sim, fires = clean_sim()
    tid, nominal = judged(fires)[1]
    ex = f"e-{tid}-{nominal}"
    sim.apply(
        {
            "kind": "grant",
            "execution_id": ex,
            "task_id": tid,
            "nominal_ms": nominal,
            "token": "1.2",
            "worker_id": "w1",
            "attempt": 2,
        },
        T0_MONO + 30 * NS,
    )
    r3 = verdict_of(sim, tmp_path).rules["R3"]
    assert not r3.passed
    assert r3.counts["token_regressions"] == 1
    assert r3.counts["grant_token_inconsistent"] == 1


def test_r3_snapshot_gap_on_one_node_is_not_a_stale_accept(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[2]
    for f in fires:
        if f != target:
            sim.run_fire(*f)
            continue
        ex, t = f"e-{f[0]}-{f[1]}", mono(f[1]) + 100 * MS
        sim.apply(
            {"kind": "fire", "execution_id": ex, "task_id": f[0], "nominal_ms": f[1], "manual": False}, t
        )
        tok1 = sim.grant(ex, f[0], f[1], t)
        sim.expire(ex, tok1, t + 3 * NS)
        tok2 = sim.grant(ex, f[0], f[1], t + 3 * NS + MS, worker="w2")
        sim.dispatch(ex, tok1, t)
        sim.dispatch(ex, tok2, t + 3 * NS + 2 * MS)
        sim.led("start", ex, f[0], f[1], tok2, at=t + 3 * NS + 5 * MS, worker="w2")
        sim.led("end", ex, f[0], f[1], tok2, at=t + 3 * NS + 50 * MS, worker="w2")
        sim.complete(ex, tok2, t + 3 * NS + 60 * MS)

        # n3 installed a snapshot over the expire and the second grant: they are not in its file.
        def hidden(ev: dict[str, Any], ex: str = ex, tok2: str = tok2) -> bool:
            mine = ev.get("execution_id") == ex
            return mine and (
                ev.get("kind") == "expire" or (ev.get("kind") == "grant" and ev.get("token") == tok2)
            )

        sim.audit["n3"] = [r for r in sim.audit["n3"] if not hidden(r["ev"])]
    v = verdict_of(sim, tmp_path)
    assert v.rules["R3"].passed, v.rules["R3"]
    assert v.rules["R3"].counts["gap_unjudged"] == 1


def test_r6_detects_concurrent_holders(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[8]
    for f in fires:
        ex, _token, t = sim.run_fire(*f, sleep_ms=2000 if f == target else 200)
        if f == target:
            # A second execution of the same fire, leased and started while the first one runs.
            ex2 = ex + "-b"
            sim.apply(
                {"kind": "fire", "execution_id": ex2, "task_id": f[0], "nominal_ms": f[1], "manual": False},
                t + 100 * MS,
            )
            tok2 = sim.grant(ex2, f[0], f[1], t + 200 * MS, worker="w2")
            sim.dispatch(ex2, tok2, t + 210 * MS)
            sim.led("start", ex2, f[0], f[1], tok2, at=t + 300 * MS, worker="w2")
    v = verdict_of(sim, tmp_path)
    r6 = v.rules["R6"]
    assert not r6.passed
    assert r6.counts["concurrent_dup"] == 1
    assert v.rules["R2"].counts["dup_fire_commits"] == 1
    assert v.rules["R4"].counts["extra_starts_by_cause"] == {"second_execution": 1}


def test_r6_start_before_its_grant_overlaps_the_current_lease(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[8]
    for f in fires:
        if f != target:
            sim.run_fire(*f)
            continue
        ex, t = f"e-{f[0]}-{f[1]}", mono(f[1]) + 100 * MS
        sim.apply(
            {"kind": "fire", "execution_id": ex, "task_id": f[0], "nominal_ms": f[1], "manual": False}, t
        )
        tok1 = sim.grant(ex, f[0], f[1], t)
        sim.dispatch(ex, tok1, t)
        sim.led("start", ex, f[0], f[1], tok1, at=t + MS)  # never ends: held until superseded
        sim.led("start", ex, f[0], f[1], f"1.{sim.index + 2}", at=t + NS, worker="w2")  # before its grant
        sim.expire(ex, tok1, t + 3 * NS)
        sim.grant(ex, f[0], f[1], t + 3 * NS + MS, worker="w2")
    r6 = verdict_of(sim, tmp_path).rules["R6"]
    assert r6.counts["concurrent_dup"] == 1


# ================================================================================ R5


def test_r5_lost_recovered_unexpected(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    sim.create("lost-one", {"kind": "at", "at_ms": wall(T0_MONO + 30 * NS)}, T0_MONO + 2 * NS, in_final=False)
    sim.create("maybe", {"kind": "at", "at_ms": wall(T0_MONO + 30 * NS)}, T0_MONO + 2 * NS, status="info")
    sim.create(
        "never-answered",
        {"kind": "at", "at_ms": wall(T0_MONO + 31 * NS)},
        T0_MONO + 2 * NS,
        status="open",
        in_final=False,
    )
    sim.tasks.append({"task_id": "t-ghost", "name": "ghost"})
    r5 = verdict_of(sim, tmp_path).rules["R5"]
    assert not r5.passed
    assert (r5.counts["lost_tasks"], r5.counts["recovered"], r5.counts["unexpected"]) == (1, 1, 1)
    assert r5.counts["indeterminate"] == 2


def test_r5_failed_create_that_appears_is_a_violation(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    sim.create("refused", {"kind": "at", "at_ms": wall(T0_MONO + 30 * NS)}, T0_MONO + 2 * NS, status="fail")
    r5 = verdict_of(sim, tmp_path).rules["R5"]
    assert not r5.passed
    assert r5.counts["failed_but_present"] == 1


def test_indeterminate_create_in_final_is_judged(tmp_path: Path) -> None:
    sim, fires = clean_sim()
    at_ms = wall(T0_MONO + 15 * NS)
    sim.create("maybe", {"kind": "at", "at_ms": at_ms}, T0_MONO + 2 * NS, status="info")
    sim.create("gone", {"kind": "at", "at_ms": at_ms}, T0_MONO + 2 * NS, status="info", in_final=False)
    v = verdict_of(sim, tmp_path)
    assert v.rules["R1"].counts["fires"] == len(judged(fires)) + 1  # "maybe" counts, "gone" does not
    assert v.rules["R1"].counts["lost"] == 1
    assert v.rules["R5"].passed


# ================================================================================ R7


def test_r7_detects_two_dispatchers_in_one_term(tmp_path: Path) -> None:
    sim, fires = clean_sim()
    tid, nominal = judged(fires)[3]
    sim.dispatch(f"e-{tid}-{nominal}", "1.5", mono(nominal) + NS, node="n2", term=1)
    r7 = verdict_of(sim, tmp_path).rules["R7"]
    assert not r7.passed
    assert r7.counts["multi_dispatch_terms"] == 1
    assert r7.counts["dispatch_before_grant"] == 1  # n2 never applied a grant with token 1.5


def test_r7_detects_a_dispatch_before_its_grant_applied(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    target = judged(fires)[3]
    for f in fires:
        if f != target:
            sim.run_fire(*f)
            continue
        ex, t = f"e-{f[0]}-{f[1]}", mono(f[1]) + 100 * MS
        sim.apply(
            {"kind": "fire", "execution_id": ex, "task_id": f[0], "nominal_ms": f[1], "manual": False}, t
        )
        sim.dispatch(ex, f"1.{sim.index + 1}", t + MS)
        tok = sim.grant(ex, f[0], f[1], t + 5 * MS)
        sim.led("start", ex, f[0], f[1], tok, at=t + 10 * MS)
        sim.led("end", ex, f[0], f[1], tok, at=t + 20 * MS)
        sim.complete(ex, tok, t + 30 * MS)
    r7 = verdict_of(sim, tmp_path).rules["R7"]
    assert not r7.passed
    assert (r7.counts["dispatch_before_grant"], r7.counts["multi_dispatch_terms"]) == (1, 0)


# ================================================================================ R8


def _leader_kill(
    sim: Sim, fires: list[tuple[str, int]], *, new_term_after_s: float, term: int | None = 1
) -> None:
    kill = T0_MONO + 10 * NS
    sim.nemesis += [
        {
            "mono_ns": kill,
            "fault": "kill",
            "target": "n1",
            "phase": "start",
            "was_leader": True,
            "term": term,
        },
        {
            "mono_ns": kill + 5 * NS,
            "fault": "kill",
            "target": "n1",
            "phase": "stop",
            "was_leader": True,
            "term": term,
        },
    ]
    elected = kill + int(new_term_after_s * NS)
    sim.outage = (kill, elected)
    done_switch = False
    for f in fires:
        t = mono(f[1]) + 100 * MS
        if not done_switch and t >= kill:
            sim.leader, sim.term = "n2", 2
            sim.apply({"kind": "epoch", "term": 2}, elected)
            done_switch = True
        sim.run_fire(*f)


def test_r8_measures_recovery_and_backlog(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    _leader_kill(sim, fires, new_term_after_s=2.0)
    v = verdict_of(sim, tmp_path)
    r8 = v.rules["R8"]
    assert r8.passed, r8
    assert r8.counts["leader_faults"] == 1
    # The first dispatch under term 2 goes out 2.09 s after the kill (outage end + 100 ms - 10 ms).
    assert r8.counts["recovery_s"]["max"] == pytest.approx(2.09)
    # Backlog: the last fire due before recovery (t0+12.037 s) starts at t0+12.137 s.
    assert r8.counts["backlog_s"]["max"] == pytest.approx(2.137)
    assert r8.counts["per_fault"]["kill"]["n"] == 1
    assert v.summary["term_churn"] == 2
    assert v.ok, failed(v)


def test_r8_null_term_uses_the_targets_last_known_term(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    _leader_kill(sim, fires, new_term_after_s=2.0, term=None)
    r8 = verdict_of(sim, tmp_path).rules["R8"]
    assert r8.passed and r8.counts["recovery_s"]["max"] == pytest.approx(2.09)


def test_r8_fails_over_budget(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    sim.meta["recovery_budget_s"] = 1.5
    _leader_kill(sim, fires, new_term_after_s=2.0)
    r8 = verdict_of(sim, tmp_path).rules["R8"]
    assert not r8.passed
    assert r8.examples[0]["why"] == "over budget"


def test_r8_fails_without_a_new_leader(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    sim.nemesis.append(
        {
            "mono_ns": T0_MONO + 21 * NS,
            "fault": "pause",
            "target": "n1",
            "phase": "start",
            "was_leader": True,
            "term": 1,
        }
    )
    r8 = verdict_of(sim, tmp_path).rules["R8"]
    assert not r8.passed
    assert r8.counts["unrecovered"] == 1


# ================================================================================ R9


@pytest.mark.parametrize(
    ("digests", "diverged"),
    [
        ({"n2": (0, "bad")}, ["n2"]),  # the minority digest at the top index
        ({"n3": (-4, "d41d8c")}, ["n3"]),  # lagging
        ({"n1": (0, "x"), "n3": (-4, "d41d8c")}, ["n1", "n2", "n3"]),  # 1:1 tie at the top, and a lag
        ({"n2": (None, None)}, ["n2"]),  # no applied index reported
    ],
)
def test_r9_detects_diverged_nodes(
    tmp_path: Path, digests: dict[str, tuple[int | None, str | None]], diverged: list[str]
) -> None:
    sim, _ = clean_sim()
    sim.digests = {n: (None if d is None else sim.index + d, dg) for n, (d, dg) in digests.items()}
    r9 = verdict_of(sim, tmp_path).rules["R9"]
    assert not r9.passed
    assert r9.counts["diverged"] == diverged


def test_r9_missing_digest_with_equal_index_is_not_divergence(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    sim.digests = {"n2": (sim.index, None)}
    r9 = verdict_of(sim, tmp_path).rules["R9"]
    assert r9.passed
    assert r9.counts["digest_missing"] == ["n2"]


def test_r9_detects_the_same_index_with_different_content(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    rec = next(r for r in sim.audit["n3"] if r["ev"].get("kind") == "complete")
    rec["ev"]["outcome"] = "ATTEMPT_FAILED"
    v = verdict_of(sim, tmp_path)
    assert not v.rules["R9"].passed
    assert v.rules["R9"].counts["log_conflicts"] == 1


def test_r9_detects_a_replay_with_different_content(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    rec = next(r for r in sim.audit["n2"] if r["ev"].get("kind") == "grant")
    again = json.loads(json.dumps(rec))
    again["ev"]["worker_id"] = "w9"
    sim.audit["n2"].append(again)
    r9 = verdict_of(sim, tmp_path).rules["R9"]
    assert r9.counts["replay_conflicts"] == 1 and not r9.passed


def test_missing_inputs_fail_the_rules_that_need_them(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    run_dir = sim.write(tmp_path / "run")
    for p in (run_dir / "audit").iterdir():
        p.unlink()
    (run_dir / "final" / "state.json").unlink()
    v = checker.check(run_dir)
    assert {"R2", "R3", "R5", "R7"} <= set(failed(v))
    assert v.rules["R1"].passed


# ================================================================================ loaders


def test_loader_skips_a_truncated_last_line_and_counts_bad_lines(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    run_dir = sim.write(tmp_path / "run")
    with (run_dir / "ledger.jsonl").open("a") as f:
        f.write('{"ph": "start", "execution_id": "e-x", "task_')  # SIGKILL mid-write
    text = (run_dir / "history.jsonl").read_text().split("\n")
    text.insert(2, "{not json")
    text.insert(3, '{"mono_ns": 1}')  # valid JSON, required fields missing
    (run_dir / "history.jsonl").write_text("\n".join(text))
    run = load_run(run_dir)
    assert run.files["ledger.jsonl"].truncated == 1
    assert run.files["ledger.jsonl"].malformed == 0
    assert run.files["history.jsonl"].malformed == 1
    assert run.files["history.jsonl"].invalid == 1
    v = checker.check(run_dir)
    assert v.ok, failed(v)
    assert any("history.jsonl" in w for w in v.warnings)


def test_read_jsonl_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}')
    assert [o["a"] for o in read_jsonl(p)] == [1, 2]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_parse_token() -> None:
    assert parse_token("3.17") == (3, 17)
    assert parse_token([3, 17]) == (3, 17)
    assert parse_token({"term": 3, "index": 17}) == (3, 17)
    assert parse_token("x") is None and parse_token(None) is None
    assert parse_token("2.10") > parse_token("2.9")  # type: ignore[operator]


# ================================================================================ statistics


@pytest.mark.parametrize(("n", "expected"), [(29_956, 1.0e-4), (3000, 9.98e-4), (300, 9.94e-3)])
def test_clopper_pearson_zero_events(n: int, expected: float) -> None:
    upper = stats.clopper_pearson_upper(0, n)
    assert upper == pytest.approx(1 - 0.05 ** (1 / n), rel=1e-9)
    assert upper == pytest.approx(expected, rel=2e-3)


def test_clopper_pearson_29956_bounds_at_1e_4() -> None:
    assert stats.clopper_pearson_upper(0, 29_956) <= 1.0e-4
    assert stats.clopper_pearson_upper(0, 29_955) > 1.0e-4
    assert stats.n_needed(1e-4, 0.95) == 29_956


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (1, 100, 0.04655981),  # R: binom.test(1, 100, alternative = "less")$conf.int[2]
        (5, 100, 0.10225338),  # R: binom.test(5, 100, alternative = "less")$conf.int[2]
        (10, 10, 1.0),
    ],
)
def test_clopper_pearson_known_values(k: int, n: int, expected: float) -> None:
    assert stats.clopper_pearson_upper(k, n) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("k", "n"), [(1, 29_956), (3, 3000), (50, 1000), (7, 40)])
def test_beta_quantile_agrees_with_the_exact_binomial_tail(k: int, n: int) -> None:
    upper = stats.clopper_pearson_upper(k, n)
    assert upper == pytest.approx(stats.clopper_pearson_upper_by_tail(k, n), rel=1e-9)
    assert stats.binom_cdf(k, n, upper) == pytest.approx(0.05, rel=1e-6)
    lower = stats.clopper_pearson_lower(k, n)
    assert 1 - stats.binom_cdf(k - 1, n, lower) == pytest.approx(0.05, rel=1e-6)


def test_betainc_closed_forms() -> None:
    assert stats.betainc(1, 1, 0.3) == pytest.approx(0.3)
    assert stats.betainc(2, 1, 0.5) == pytest.approx(0.25)
    assert stats.betainc(1, 29_956, 1e-4) == pytest.approx(1 - (1 - 1e-4) ** 29_956)
    assert stats.betainc(3.5, 2.5, 0.4) + stats.betainc(2.5, 3.5, 0.6) == pytest.approx(1.0)


def test_percentile_nearest_rank() -> None:
    vals = [float(i) for i in range(1, 101)]
    assert stats.percentile(vals, 50) == 50.0
    assert stats.percentile(vals, 99) == 99.0
    assert stats.percentile(vals, 100) == 100.0
    assert stats.percentile([], 50) is None
    assert math.isclose(stats.percentile([2.5], 99) or 0.0, 2.5)


# ================================================================================ CLI and report


def test_cli_writes_reports_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim, fires = clean_sim()
    good = sim.write(tmp_path / "good")
    assert checker.main([str(good)]) == 0
    out = capsys.readouterr().out
    assert "# Fault run T1: PASS" in out
    assert (good / "report.md").read_text() == out
    again = checker.Verdict.from_json((good / "verdict.json").read_text())
    assert again.ok and again.rules["R1"].counts["fires"] == len(judged(fires))

    sim2, _ = clean_sim(skip={judged(clean_sim(run=False)[1])[0]})
    bad = sim2.write(tmp_path / "bad")
    assert checker.main([str(bad), "--no-write"]) == 1
    assert not (bad / "verdict.json").exists()
    assert checker.main([str(tmp_path / "nothing")]) == 2


def test_aggregate_table(tmp_path: Path) -> None:
    sim, _ = clean_sim()
    a = sim.write(tmp_path / "a")
    report.write(a, checker.check(a))
    for p in a.iterdir():  # a passed run keeps only its verdict and report
        if p.name not in ("verdict.json", "report.md"):
            if p.is_dir():
                for q in p.iterdir():
                    q.unlink()
                p.rmdir()
            else:
                p.unlink()
    sim_b, fires_b = clean_sim(run=False)
    _zombie(sim_b, fires_b, judged(fires_b)[10], late_accepted=True)
    sim_b.meta["scenario"] = "S8"
    b = sim_b.write(tmp_path / "b")
    table = report.aggregate([a, b])
    lines = table.strip().split("\n")
    assert lines[0].startswith(
        "| scenario | fires | lost | duplicate runs (rate, 95 % bound) | of which unexplained"
    )
    assert len(lines) == 4
    assert "| T1 (seed 7, unit) | 55 | 0 | 0 (0 %, ≤ 5.3 %) | 0 (≤ 5.3 %) | 0 | 100 % |" in lines[2]
    assert lines[3].startswith("| S8 (seed 7, unit) | 55 | 0 | 1 (1.82 %")
    assert "FAIL R2,R3,R4" in lines[3]  # the stale completion also followed a successful one


def test_report_renders_every_rule(tmp_path: Path) -> None:
    sim, fires = clean_sim(run=False)
    _leader_kill(sim, fires, new_term_after_s=2.0)
    v = verdict_of(sim, tmp_path)
    md = report.render(v)
    for rule in checker.RULE_TITLES:
        assert f"### {rule} " in md
    assert "recovery p50/p99/max 2.09 / 2.09 / 2.09 s" in md


def test_sweep_table_sums_each_scenario_over_its_seeds(tmp_path: Path) -> None:
    runs = []
    for name, seed, zombie in (("a", 7, False), ("b", 8, True)):
        sim, fires = clean_sim(run=not zombie)
        if zombie:
            _zombie(sim, fires, judged(fires)[10], late_accepted=True)
        sim.meta["scenario"] = "S8"
        sim.meta["seed"] = seed
        runs.append(sim.write(tmp_path / name))
    lines = report.sweep(runs).strip().split("\n")
    assert lines[0].startswith("| scenario | runs (seeds) | fires | lost | duplicate runs |")
    assert len(lines) == 3  # one row for S8, whatever the number of seeds
    assert lines[2].startswith("| S8 | 2 (7, 8) | 110 | 0 | 1 | ")
    assert lines[2].endswith("| 8: R2,R3,R4 |")  # the failed seed, replayable
