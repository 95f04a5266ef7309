"""Operations done to a cluster while tasks with policies run, with real processes: 3 `schedd` nodes, real
workers running real commands, real gRPC on loopback, real LMDB (docs/operations.md). The rolling upgrade
that raises a feature is tests/integration/test_upgrade_fixes.py (its own release's nodes).

- Backup and restore: a backup taken from a follower while per-second tasks of each misfire policy fire
  and two one-time runs hold on a gate; `schedd restore` seeds a new 3-node cluster from it (other
  addresses, another cluster secret: the documented alternative to stopping the source) after some due
  times passed. Checked against the backup's own store (read offline): nothing it holds fires again, each
  nominal time after it gets exactly one ledger record, handled by the task's policy (skip, fire_once,
  fire_all, fire_all with max_catchup) and saying how late it fired, each fired one runs once; the runs
  live in the backup are expired and retried or dead-lettered by their retry policy; a one-time task due
  in the gap fires once, late.
- Membership: a node added, the leader removed, a killed node replaced (same id, empty data directory),
  while a per-second task, a retrying task and a fixed-delay task run: every nominal time fired once and
  ran once, every retry ran once, the fixed-delay chain never broke, and the three members the changes
  left hold one state.

Payloads write what they ran to a file outside the system (`side execution nominal attempt`; the side is
the worker's OPS_SIDE, passed through its policy's env.inherit, so the source's and the restored
cluster's runs are told apart). Waits are conditions polled with a deadline; the only fixed wait is the
restore's gap, which is the scenario (time must pass).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cronraft.client import Client, at, command, delay, every, retry
from cronraft.proto.v1 import common_pb2
from cronraft.raft.backup_file import verify
from cronraft.raft.firing import MISFIRE_THRESHOLD_MS
from cronraft.raft.records import TERMINAL_STATES
from cronraft.raft.state import ledger as stored_ledger
from cronraft.raft.state import list_executions as stored_executions
from cronraft.raft.state import read_task
from cronraft.raft.store import LmdbKV
from tests.support.replay import same_state

from .harness import Cluster, Worker, started, wait_for
from .semantics import Stamps, now_ms, runs_of
from .test_membership import GrowingCluster, wait_members

pytestmark = pytest.mark.integration

SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED
RUNNING = common_pb2.EXECUTION_RUNNING
LIVE = (common_pb2.EXECUTION_PENDING, RUNNING, common_pb2.EXECUTION_BUFFERED)

# The payload: append `side execution nominal attempt` to the runs file as its first act, then wait for
# the gate file if one is given (at most 60 s: never a process left behind).
_RUN = (
    "import os, sys, time\n"
    "path, gate = sys.argv[1], sys.argv[2]\n"
    "e = os.environ\n"
    "line = ' '.join([e.get('OPS_SIDE', '?'), e['CRONRAFT_EXECUTION_ID'], e['CRONRAFT_NOMINAL_TIME_MS'],\n"
    "                 e['CRONRAFT_ATTEMPT']])\n"
    "with open(path, 'a') as f:\n"
    "    f.write(line + '\\n')\n"
    "deadline = time.monotonic() + 60\n"
    "while gate and not os.path.exists(gate) and time.monotonic() < deadline:\n"
    "    time.sleep(0.02)\n"
)


def payload(runs: Path, gate: Path | None = None) -> common_pb2.Payload:
    return command(sys.executable, "-c", _RUN, str(runs), str(gate or ""))


@dataclass(frozen=True)
class Run:
    side: str
    execution_id: str
    nominal_ms: int
    attempt: int


def runs_in(path: Path) -> list[Run]:
    """Every run the payloads wrote, in the order written."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:  # else a line being written
            out.append(Run(parts[0], parts[1], int(parts[2]), int(parts[3])))
    return out


def side_worker(worker_id: str, side: str, policy: Path) -> Worker:
    """A worker whose payloads see OPS_SIDE=`side` (its policy lets that variable through)."""
    return Worker(worker_id, capacity=16, env={"OPS_SIDE": side}, policy_args=("--policy", str(policy)))


def name(rec: common_pb2.FireRecord) -> str:
    return common_pb2.FireOutcome.Name(rec.outcome)


def ledger_of(client: Client, task_id: str) -> dict[int, common_pb2.FireRecord]:
    resp = client.explain_task(task_id, from_=1, to=now_ms() + 60_000, limit=1000)
    return {r.nominal_time_ms: r for r in resp.records}


# -- the module's cluster ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "worker-policy.toml"
    path.write_text('[env]\ninherit = ["PATH", "HOME", "LANG", "OPS_SIDE"]\n')
    return path


@pytest.fixture(scope="module")
def module_cluster(
    tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster], policy: Path
) -> GrowingCluster:
    # The restore test leaves it as it found it; the membership test, last, changes its members and
    # stops it to compare their stores.
    c = GrowingCluster(tmp_path_factory.mktemp("ops-real"), n=3)
    module_clusters.append(c)
    started(c, workers=(side_worker("wa", "a", policy),))
    return c


@pytest.fixture
def source(module_cluster: GrowingCluster) -> Iterator[GrowingCluster]:
    yield module_cluster


# -- 1. backup and restore, then the missed times ---------------------------------------------------

PER_SECOND = {
    "skip": {"misfire": "skip"},
    "once": {"misfire": "fire-once"},
    "all": {"misfire": "fire-all"},
    "capped": {"misfire": "fire-all", "max_catchup": 2},
}
CAP = 2
SURELY_MISSED = 3  # nominal times of each per-second task due > 5 s before the restored cluster started


@dataclass
class Stored:
    """A task as the backup holds it."""

    task: common_pb2.Task
    ledger: dict[int, common_pb2.FireRecord]
    executions: dict[str, common_pb2.Execution]


def read_backup(backup: Path, scratch: Path, task_ids: list[str]) -> tuple[int, int, dict[str, Stored]]:
    """The backup's applied index, epoch term and each task as its store holds it (opened offline)."""
    f = verify(backup)
    scratch.mkdir()
    (scratch / "data.mdb").write_bytes(b"".join(f.read_body()))
    kv = LmdbKV(scratch, map_size=256 << 20)
    out = {}
    try:
        with kv.read() as txn:
            for tid in task_ids:
                task = read_task(txn, tid)
                assert task is not None, f"task {tid} is not in the backup"
                records = stored_ledger(txn, tid, 1, 1 << 62, 1000)
                execs, _ = stored_executions(txn, tid, page_size=1000)
                out[tid] = Stored(
                    task, {r.nominal_time_ms: r for r in records}, {e.execution_id: e for e in execs}
                )
    finally:
        kv.close()
    return f.header.applied_index, f.header.epoch_term, out


def restore_all(backup: Path, cluster: Cluster) -> None:
    """`schedd restore FILE --config nodeN.toml` for every member (each its own machine), at once."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cronraft.daemon.main",
                "restore",
                str(backup),
                "--config",
                str(n.config_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cluster.env,
        )
        for n in cluster.nodes
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, (out, err)


def check_policy(case: str, after: list[common_pb2.FireRecord], surely: int) -> None:
    """The records of the nominal times after the backup's last fire, oldest first, against the case's
    misfire policy (docs/scheduling.md, "Missed fires"); the first `surely` were due more than the
    misfire threshold before any restored node ran."""
    names = [name(r) for r in after]
    missed = [i for i, n in enumerate(names) if n == "MISSED_DOWNTIME"]
    late = [
        i
        for i, r in enumerate(after)
        if name(r) == "FIRED" and r.committed_at_ms - r.nominal_time_ms > MISFIRE_THRESHOLD_MS
    ]
    k = len(missed)
    if case == "skip":  # every missed time missed, in one command; then the next future time fires
        assert missed == list(range(k)) and k >= surely, names
        assert not late and set(names[k:]) == {"FIRED"}, names
        assert len({after[i].committed_at_ms for i in missed}) == 1
        # The first time not missed is due at or after the command that recorded the misses: it may be
        # that very Fire, committed on time at its own nominal time (seen once in ci-like: equal).
        assert after[k].nominal_time_ms >= after[0].committed_at_ms, "a missed time fired"
    elif case == "once":  # every missed time but the latest missed; that one fired in the same command
        assert missed == list(range(k)) and k >= surely - 1 and names[k] == "FIRED", names
        assert {after[i].committed_at_ms for i in range(k + 1)} == {after[k].committed_at_ms}
        assert after[k].nominal_time_ms < after[k].committed_at_ms, "not a missed time"
        assert set(names[k:]) == {"FIRED"}, names
    elif case == "all":  # every one fired, the surely missed ones late
        assert set(names) == {"FIRED"}, names
        assert late[:surely] == list(range(surely)), names
    elif case == "capped":  # the oldest CAP fire late, the newer missed ones are missed; then on time
        assert names[:CAP] == ["FIRED"] * CAP and late[:CAP] == list(range(CAP)), names
        assert missed == list(range(CAP, CAP + len(missed))) and CAP + len(missed) >= surely, names
        assert set(names[CAP + len(missed) :]) == {"FIRED"}, names


def test_a_restored_backup_handles_each_missed_time_once_by_its_policy(
    source: GrowingCluster, clusters: list[Cluster], policy: Path, tmp_path: Path
) -> None:
    runs_file, gate = tmp_path / "runs", tmp_path / "gate"
    with Client(source.servers, timeout_s=30) as client:
        tasks = {
            case: client.create_task(f"br-{case}", every("1s"), payload(runs_file), **kw)  # type: ignore[arg-type]
            for case, kw in PER_SECOND.items()
        }
        soon = now_ms() + 300
        held = client.create_task(
            "br-held", at(soon), payload(runs_file, gate), max_attempts=2, retry=retry("200ms")
        )
        held_last = client.create_task(
            "br-held-last", at(soon), payload(runs_file, gate), max_attempts=1, retry=retry("200ms")
        )

        def ready() -> bool:
            started_ = {r.execution_id for r in runs_in(runs_file)}
            holding = all(
                any(e.execution_id in started_ for e in client.list_executions(t.task_id))
                for t in (held, held_last)
            )
            return holding and all(client.get_task(t.task_id).fire_count >= 2 for t in tasks.values())

        wait_for(ready, 20, "both held runs started and two fires of each per-second task")
        # Due after the backup (taken next), long before the restored cluster runs.
        gap_due = now_ms() + 1500
        gap_at = client.create_task("br-gap-at", at(gap_due), payload(runs_file), misfire="skip")
        ids = [t.task_id for t in (*tasks.values(), held, held_last, gap_at)]
        leader = source.wait_leader()
        follower = next(n for n in source.nodes if n.alive and n is not leader)
        # A backup is its node's state: once the follower applied the creates, they are in it.
        created = leader.status().commit_index
        wait_for(lambda: follower.status().applied_index >= created, 10, "the follower to apply the creates")
        backup = tmp_path / "cluster.crbackup"
        with Client(follower.grpc_address, timeout_s=30) as direct, open(backup, "wb") as sink:
            receipt = direct.backup(sink)
        # The source goes on without these tasks (a restore never meets its source: other addresses,
        # another secret), and its held runs end.
        deleted = client.delete_tasks(ids, force=True)
        assert not deleted.errors, deleted.errors
        gate.touch()
    index, epoch_term, stored = read_backup(backup, tmp_path / "body", ids)
    assert receipt.info.applied_index == index
    # What the backup holds: both held runs running their first attempt, the gap's task not fired yet.
    for t in (held, held_last):
        (ex,) = stored[t.task_id].executions.values()
        assert ex.state == RUNNING and ex.attempt == 1, ex
    assert not stored[gap_at.task_id].executions, "the backup was taken after the one-time task's due time"
    last_fired = {case: stored[t.task_id].task.last_fired_nominal_ms for case, t in tasks.items()}
    assert all(last_fired.values()), last_fired

    (tmp_path / "restored").mkdir()
    restored = Cluster(tmp_path / "restored", n=3)
    restored.env["CRONRAFT_CLUSTER_SECRET"] = "restored-integration-test-secret"
    clusters.append(restored)
    restore_all(backup, restored)
    # The gap: nominal times pass with no cluster firing them (the scenario, not a synchronisation).
    start_at = max(max(last_fired.values()) + SURELY_MISSED * 1000, gap_due) + MISFIRE_THRESHOLD_MS + 500
    time.sleep(max(0.0, start_at / 1000 - time.time()))
    spawned = now_ms()  # no restored node ran before this: nothing of theirs committed earlier
    started(restored, workers=(side_worker("wb", "b", policy),))
    up = now_ms()

    with Client(restored.servers, timeout_s=30) as client:
        assert client.cluster_status().term > epoch_term

        def settled() -> bool:
            if not all(client.get_task(t.task_id).last_fired_nominal_ms > up + 2000 for t in tasks.values()):
                return False
            return all(
                e.state in TERMINAL_STATES
                for t in (held, held_last, gap_at)
                for e in runs_of(client, t.task_id)
            ) and bool(runs_of(client, gap_at.task_id))

        wait_for(settled, 30, "on-time fires of the restored cluster, the held runs and the gap's task ended")
        for t in tasks.values():
            client.pause_task(t.task_id)
        wait_for(
            lambda: not [e for t in tasks.values() for e in runs_of(client, t.task_id) if e.state in LIVE],
            20,
            "the last runs to end",
        )
        ledgers = {tid: ledger_of(client, tid) for tid in ids}
        executions = {tid: runs_of(client, tid) for tid in ids}
        letters = list(client.list_dead_letters())
    ran = [r for r in runs_in(runs_file) if r.side == "b"]
    ran_b = Counter((r.execution_id, r.attempt) for r in ran)
    assert max(ran_b.values()) == 1, f"an attempt ran twice on the restored cluster: {ran_b}"

    for case, t in tasks.items():
        tid, mine = t.task_id, stored[t.task_id]
        # Nothing the backup holds fired again: its records and executions are the restored ones.
        before = {n: r for n, r in ledgers[tid].items() if n <= last_fired[case]}
        assert before == mine.ledger, f"{case}: the backup's fire records changed"
        by_id = {e.execution_id: e for e in executions[tid]}
        assert {e.execution_id for e in executions[tid] if e.nominal_time_ms <= last_fired[case]} == set(
            mine.executions
        )
        for eid, was in mine.executions.items():
            now = by_id[eid]
            if was.state in TERMINAL_STATES:  # ended in the backup: as it was, never run again
                now.namespace = was.namespace  # set on read by the API
                assert now == was, (case, was, now)
                assert not [r for r in ran if r.execution_id == eid]
            else:  # live in the backup: ended by the restored cluster, never rerunning a granted attempt
                assert now.state in TERMINAL_STATES, now
                assert all(r.attempt > was.attempt for r in ran if r.execution_id == eid), (was, now)
        # Each nominal time after it: one record, by the policy; a fired one has one execution, run once.
        after = sorted(n for n in ledgers[tid] if n > last_fired[case])
        assert after == list(range(last_fired[case] + 1000, after[-1] + 1, 1000)), f"{case}: {after}"
        surely = sum(1 for n in after if n + MISFIRE_THRESHOLD_MS < spawned)
        assert surely >= SURELY_MISSED
        records = [ledgers[tid][n] for n in after]
        while name(records[-1]) == "PAUSED":  # a fire ahead of its second that the pause undid
            records.pop()
        check_policy(case, records, surely)
        for r in records:  # how late each fire committed after its own nominal time (docs/cli.md)
            if name(r) == "FIRED":
                assert r.late_ms == max(0, r.committed_at_ms - r.nominal_time_ms), (case, r)
                assert r.actual_ms in (0, r.nominal_time_ms), (case, r)
        fired = {n for n in after if name(ledgers[tid][n]) == "FIRED"}
        new = [e for e in executions[tid] if e.nominal_time_ms > last_fired[case]]
        assert sorted(e.nominal_time_ms for e in new) == sorted(fired), case
        for e in new:
            assert ledgers[tid][e.nominal_time_ms].execution_id == e.execution_id
            assert e.state == SUCCEEDED and e.attempt == 1 and ran_b[(e.execution_id, 1)] == 1, e

    # The runs live in the backup: their leases expire (no worker of the restored cluster holds them),
    # then the retry policy decides: a second attempt runs once; with none left, a dead letter.
    (h,) = executions[held.task_id]
    assert h.state == SUCCEEDED and h.attempt == 2, h
    assert [a.outcome for a in h.attempts][-1] == common_pb2.ATTEMPT_SUCCEEDED, h.attempts
    assert [(r.execution_id, r.attempt) for r in ran if r.execution_id == h.execution_id] == [
        (h.execution_id, 2)
    ]
    (hl,) = executions[held_last.task_id]
    assert hl.state not in (SUCCEEDED, RUNNING) and hl.dead_lettered and hl.attempt == 1, hl
    assert [d.execution_id for d in letters if d.task_id == held_last.task_id] == [hl.execution_id]
    assert not [r for r in ran if r.execution_id == hl.execution_id]
    # The one-time task due in the gap: fired once, late, whatever its misfire policy says.
    (g,) = executions[gap_at.task_id]
    rec = ledgers[gap_at.task_id][gap_due]
    assert name(rec) == "FIRED" and rec.late_ms > MISFIRE_THRESHOLD_MS and g.state == SUCCEEDED, (rec, g)
    assert ran_b[(g.execution_id, 1)] == 1


# -- 2. membership changes while tasks with policies run --------------------------------------------

DELAY_MS = 1000


@dataclass
class Marks:
    """What the three tasks of the membership test had done at a moment, to wait for each to go on."""

    wall_ms: int
    mono_ns: int


def test_membership_changes_lose_and_double_no_fire(source: GrowingCluster, tmp_path: Path) -> None:
    runs_file = tmp_path / "runs"
    retries = Stamps(tmp_path / "retry-stamps", tmp_path / "no-gate")
    chain = Stamps(tmp_path / "chain-stamps", tmp_path / "no-gate")
    with Client(source.servers, timeout_s=30) as client:
        tick = client.create_task("mc-tick", every("1s"), payload(runs_file))
        retrying = client.create_task(
            "mc-retry", every("2s"), retries.payload(succeed_from=2), max_attempts=3, retry=retry("300ms")
        )
        fixed = client.create_task("mc-delay", delay(f"{DELAY_MS}ms"), chain.payload())

        def went_on(since: Marks) -> bool:
            """Each task ran after `since`: a per-second nominal time, a retry's second attempt, a run
            of the chain."""
            return (
                any(r.nominal_ms > since.wall_ms + 1000 for r in runs_in(runs_file))
                and any(a == 2 and ns > since.mono_ns for _, a, ns in retries.starts())
                and any(ns > since.mono_ns for _, _, ns in chain.starts())
            )

        def change_done(what: str, members: set[str]) -> None:
            wait_members(source, members)
            mark = Marks(now_ms(), time.monotonic_ns())
            wait_for(lambda: went_on(mark), 30, f"every task to run again after {what}")

        change_done("the start", {"node1", "node2", "node3"})
        # Add a node: it joins as a learner, catches up, then is added.
        node4 = source.add_joining("node4", ["node1", "node2", "node3"])
        wait_for(lambda: node4.status().role == "learner", 30, "node4 a learner")
        client.add_node("node4", grpc_address=node4.grpc_address, raft_address=source.raft_address("node4"))
        members = {"node1", "node2", "node3", "node4"}
        change_done("node4's addition", members)
        # Remove the leader: it hands leadership over first; it learns it was removed, then is stopped.
        lead = source.wait_leader()
        client.remove_node(lead.node_id)
        members.discard(lead.node_id)
        change_done(f"{lead.node_id}'s removal", members)
        wait_for(lambda: lead.status().role == "removed", 30, f"{lead.node_id} to learn it was removed")
        source.kill(lead)
        # Replace a dead member with a new machine of the same id: removed first, then joined empty.
        leader = source.wait_leader()
        victim = next(n for n in source.nodes if n.alive and n is not leader and n.node_id != "node4")
        source.kill(victim)
        client.remove_node(victim.node_id)
        members.discard(victim.node_id)
        wait_members(source, members)
        names = [n.node_id for n in source.nodes if n.alive]
        fresh = source.add_joining(victim.node_id, names, name=f"{victim.node_id}b")
        client.add_node(
            victim.node_id, grpc_address=fresh.grpc_address, raft_address=source.raft_address(fresh.node_id)
        )
        members.add(victim.node_id)
        change_done(f"{victim.node_id}'s replacement", members)

        ids = [tick.task_id, retrying.task_id, fixed.task_id]
        for tid in ids:
            client.pause_task(tid)
        wait_for(
            lambda: not [e for tid in ids for e in runs_of(client, tid) if e.state in LIVE],
            30,
            "the last runs",
        )
        ledgers = {tid: ledger_of(client, tid) for tid in ids}
        executions = {tid: runs_of(client, tid) for tid in ids}
    # The members the changes left (a learner caught up, a new machine filled from empty) hold one
    # state. The module's cluster ends here: no test after this one uses it.
    dirs = {n.node_id: source.root / n.node_id for n in source.nodes if n.alive}
    assert len(dirs) == 3
    source.wait_converged(30)
    source.stop()
    same_state(digests(dirs), dirs, tmp_path / "replay")

    # Per second: every nominal time from the first to the last fired once, ran once.
    fired_every(ledgers[tick.task_id], executions[tick.task_id], 1000)
    ran = Counter((r.execution_id, r.attempt) for r in runs_in(runs_file))
    assert set(ran) == {(e.execution_id, 1) for e in executions[tick.task_id]}, "a run lost or unknown"
    assert max(ran.values()) == 1, f"ran twice: {ran}"
    # Retrying: every fire on its 2 s grid, each failed once then succeeded on its retry, each attempt
    # started once.
    fired_every(ledgers[retrying.task_id], executions[retrying.task_id], 2000)
    for e in executions[retrying.task_id]:
        assert e.attempt == 2, e
        assert [a.outcome for a in e.attempts] == [common_pb2.ATTEMPT_FAILED, common_pb2.ATTEMPT_SUCCEEDED], e
    started_ = Counter((eid, a) for eid, a, _ in retries.starts())
    expected = {(e.execution_id, a) for e in executions[retrying.task_id] for a in (1, 2)}
    assert set(started_) == expected and max(started_.values()) == 1, started_
    # Fixed delay: each run due the delay after the previous one ended, never two, never a gap.
    chained = executions[fixed.task_id]
    assert len(chained) >= 6 and all(e.state == SUCCEEDED for e in chained), chained
    for prev, nxt in itertools.pairwise(chained):
        assert nxt.nominal_time_ms == prev.completed_at_ms + DELAY_MS, (prev, nxt)
    links = Counter(eid for eid, _, _ in chain.starts())
    assert set(links) == {e.execution_id for e in chained} and max(links.values()) == 1


def fired_every(
    ledger: dict[int, common_pb2.FireRecord], executions: list[common_pb2.Execution], period_ms: int
) -> None:
    """From the first record to the last fired one, every nominal time `period_ms` apart fired once (a
    fire ahead of its time that the final pause undid is recorded paused, after the last fired one),
    with one execution that succeeded."""
    fired = sorted(n for n, r in ledger.items() if name(r) == "FIRED")
    assert sorted(ledger)[: len(fired)] == fired == list(range(fired[0], fired[-1] + 1, period_ms)), {
        n: name(r) for n, r in ledger.items()
    }
    assert {name(ledger[n]) for n in sorted(ledger)[len(fired) :]} <= {"PAUSED"}
    assert sorted(e.nominal_time_ms for e in executions) == fired, "a fire lost or doubled"
    assert all(
        e.state == SUCCEEDED and ledger[e.nominal_time_ms].execution_id == e.execution_id for e in executions
    )


def digests(dirs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Each stopped node's store digest (raft.digest, in its own process), by node."""
    with ThreadPoolExecutor(len(dirs)) as pool:
        return dict(zip(dirs, pool.map(_digest, dirs.values()), strict=True))


def _digest(data_dir: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-m", "cronraft.raft.digest", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out: dict[str, Any] = json.loads(res.stdout)
    return out
