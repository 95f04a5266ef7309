"""Design study (issue 16): how cheap could one recurring execution's apply be in Python?

Not production code. Standalone fire paths over real LMDB (py-lmdb, the environment flags of
raft/store.py LmdbKV: sync and metasync off, readahead off; one write transaction per entry for a leader,
per `--follower-group` entries for a follower), driven by W5-like log entries built here as the real
cluster builds them: `--tasks` fixed-rate tasks firing once a second, instants spread over the second,
keeping 5 executions each, Fire commands (each with its grant: the execution is leased at once) and
Complete commands in protobuf `CommandBatch` entries of `--per-entry` commands (0.04 entries per fire at
25), a Complete arriving about half a second after its Fire (about half the tasks have an execution
running at any time, as in a real W5 run). Each variant applies the same entries (the command parse
is the same protobuf parse in all of them) and is timed after a warm-up that fills every task's 5 kept
executions, so that every timed fire also trims (deletes) the task's oldest execution.

Variants:
- V0, the current shape, approximated: Task and Execution records as protobuf (common_pb2, upb), parsed
  and serialized whole; per execution the index keys the current apply writes (execs_by_state,
  execs_by_worker, execs_by_namespace, execs_ended, fires, FireRecord ledger, active, running, the
  task's active count in meta, the due move, per-task hourly StatsHour protobuf, the cluster's hour once
  per entry), the same gets (I3 checks, re-reads) and first-seeks as bench/replay_apply.py --counts
  shows on a real journal, all through the real store wrapper (raft.store.LmdbTxn).
- V1, compact records: fixed-layout `struct` records for the execution, the task's runtime part (next
  fire, counters, last outcome: a record of its own, so a fire never parses or writes the spec, kept in
  the protobuf Task written only by task create/update), the ledger record and the hourly statistics
  (an array of int64, changed in place). The same keys and LMDB calls as V0.
- V2, compact records and fewer keys: per execution only `execs` (id -> record), ONE combined `runs`
  key per (task, nominal) holding the execution id, its state and end time (fires + ledger +
  execs_ended-by-task merged; an insert with MDB_NOOVERWRITE is the I3 check), and `active`
  (task + execution -> state + worker) for non-terminal executions only; the task's active count lives
  in its runtime record; the execution-id check is the `execs` insert itself. Per-task hour statistics
  and the due index are kept. See QUERIES below for what each variant still answers from an index.
- V3, V2 applied an entry at a time: one pass reads every record the entry's commands need
  (py-lmdb Cursor.getmulti), one computes, then one writes each database (Cursor.putmulti), raw py-lmdb
  calls (no store wrapper). An entry whose commands touch the same task twice, or whose checks fail,
  would go to V2's per-command path (not exercised by W5).

Leader-style runs build a result per command (V0: the stored Execution and Task bytes framed as a
CommandResult's fields, as raft/result_bytes.py answers without a second serialization; V1-V3: a
fixed 50-byte struct: execution id, state, token, next fire); follower-style runs build none.

What this leaves out (so the real apply costs more than V0 here, see the calibration in the report):
request dedup, features checks, audit events, misfire/overlap/quota decisions beyond allow_all, the
schedule maths (next fire is nominal + period here), calendars, DST, jitter, the answers/plan digest,
retries, dead letters, output chunks and results, savepoints on failure, the state machine's dispatch and
Ctx object, metrics observation, the Raft thread and the leader's event loop. V1-V3 also leave out what a
migration needs (versioned record layouts, snapshots and backups of the new format).

QUERIES (what an index answers; "scan" = reading records the query does not return):
  by id (execution, task)                : V0-V3 index
  a task's executions, newest first      : V0 fires (task, nominal); V1 same; V2-V3 runs (task, nominal)
  a task's fire ledger (why not fired)   : V0-V1 ledger; V2-V3 runs (outcome kept in the value)
  executions by state, non-terminal      : V0-V1 execs_by_state; V2-V3 scan of `active` (only live ones)
  executions by state, ended (e.g. FAILED): V0-V1 execs_by_state; V2-V3 scan of every task's runs
                                           (state in the value: no record read; 5 x tasks keys)
  executions by worker, non-terminal     : V0-V1 execs_by_worker; V2-V3 scan of `active` (worker in value)
  executions by worker, ended            : V0-V1 index; V2-V3 scan of every execution record
  executions by namespace                : V0-V1 execs_by_namespace; V2-V3 tasks_by_namespace (kept, not
                                           touched per execution), then each task's runs: an index walk
  executions ended in a time range       : V0-V1 execs_ended; V2-V3 scan of every task's runs (end time in
                                           the value)
  running executions (lease sweep)       : V0-V1 running; V2-V3 scan of `active` (state in value)
  due tasks (scheduling)                 : V0-V3 due

Usage: .venv/bin/python bench/study_compact_fire.py [--variants V0,V1,V2,V3] [--repeat 3] [--counts]
       .venv/bin/python bench/study_compact_fire.py --callgrind [--timed-ticks 3]   (instructions)
"""

from __future__ import annotations

import argparse
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lmdb

from cronraft.proto.v1 import commands_pb2, common_pb2, stats_pb2
from cronraft.raft.codec import id_bytes, make_id
from cronraft.raft.store import LmdbTxn

PERIOD_MS = 1000
KEEP = 5
LEAD_MS = 520  # the fire lead a real W5 entry carries
T0 = 1_796_641_920_000
TERM = 1
FF = b"\xff" * 8
ACTIVE = b"active:"
LAST_APPLIED = b"last_applied"
EPOCH = b"epoch"
HOUR_MS = 3_600_000
RUNNING, SUCCEEDED = common_pb2.EXECUTION_RUNNING, common_pb2.EXECUTION_SUCCEEDED
TERMINAL = frozenset(range(3, 10))
DATABASES = (
    "meta", "tasks", "task_rt", "due", "execs", "fires", "running", "ledger", "ledger_count", "active",
    "buffered", "logs_size", "task_stats_hours", "cluster_stats", "execs_by_state", "execs_by_worker",
    "execs_ended", "execs_by_namespace", "runs",
)  # fmt: skip


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


class Rejected(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------
# The workload: W5's entries, built once.


class Workload:
    def __init__(self, tasks: int, ticks: int, warm_ticks: int, per_entry: int, seed: int = 16) -> None:
        rnd = random.Random(seed)
        self.tasks = tasks
        self.task_ids = [make_id(T0 - 60_000, rnd.randbytes(10)) for _ in range(tasks)]
        self.task16 = [id_bytes(t) for t in self.task_ids]
        self.per_entry = per_entry
        groups = (tasks + per_entry - 1) // per_entry
        self.offset = [i * PERIOD_MS // tasks for i in range(tasks)]  # instants spread over the second
        events: list[tuple[int, int, bytes, str]] = []  # (now, order, payload, kind)
        ex_of: dict[tuple[int, int], str] = {}
        incarnation = rnd.randbytes(16).hex()
        for t in range(ticks):
            nt = T0 + t * PERIOD_MS
            for g in range(groups):
                members = range(g * per_entry, min(tasks, (g + 1) * per_entry))
                last = nt + self.offset[members[-1]]  # the group's last instant: all within the lead
                fire_now = last - 500
                batch = commands_pb2.CommandBatch()
                for i in members:
                    eid = make_id(fire_now, rnd.randbytes(10))
                    ex_of[t, i] = eid
                    c = batch.commands.add()
                    c.stamped_at_ms = fire_now
                    c.limits.max_pending_per_task = 10_000
                    c.limits.max_executions_per_task = 1_000_000
                    f = c.fire
                    f.task_id, f.nominal_time_ms, f.execution_id = self.task_ids[i], nt + self.offset[i], eid
                    f.lead_ms = LEAD_MS
                    gr = f.grant
                    gr.execution_id, gr.worker_id, gr.lease_ttl_ms = eid, f"bench-w{1 + i % 2}", 10_000
                    gr.lead_ms, gr.worker_incarnation = LEAD_MS, incarnation
                events.append((fire_now, 0, batch.SerializeToString(), "fire"))
                done_now = last + 30
                batch = commands_pb2.CommandBatch()
                for i in members:
                    c = batch.commands.add()
                    c.stamped_at_ms = done_now
                    c.limits.max_result_bytes = 1 << 20
                    cm = c.complete
                    cm.execution_id = ex_of[t, i]
                    cm.token.term = TERM  # the index is the fire entry's: set below
                    r = cm.result
                    r.execution_id = ex_of[t, i]
                    r.token.term = TERM
                    r.outcome = common_pb2.ATTEMPT_SUCCEEDED
                    r.started_at_ms = nt + self.offset[i] + 1
                    r.finished_at_ms = r.started_at_ms + 1
                    r.return_value = b"null"
                events.append((done_now, 1, batch.SerializeToString(), "complete"))
        events.sort(key=lambda e: (e[0], e[1]))
        # Log indexes in order; a Complete's token is its Fire's entry index (the grant's).
        self.entries: list[tuple[int, bytes, int]] = []  # (index, payload, now)
        fired_at: dict[str, int] = {}
        warm_until = T0 + warm_ticks * PERIOD_MS - 500
        self.warm = 0
        for k, (now, _, payload, kind) in enumerate(events, start=100):
            b = commands_pb2.CommandBatch.FromString(payload)
            if kind == "fire":
                for c in b.commands:
                    fired_at[c.fire.execution_id] = k
            else:
                for c in b.commands:
                    idx = fired_at[c.complete.execution_id]
                    c.complete.token.index = idx
                    c.complete.result.token.index = idx
                payload = b.SerializeToString()  # noqa: PLW2901 (the tokens set)
            if now < warm_until:
                self.warm += 1
            self.entries.append((k, payload, now))
        # An execution is a Fire and a Complete: the timed part holds a few more Completes than Fires
        # (the warm-up's last half second ends in it), so (fires + completes) / 2.
        self.timed_executions = (
            sum(
                len(commands_pb2.CommandBatch.FromString(p).commands) for _, p, _ in self.entries[self.warm :]
            )
            // 2
        )

    def spec(self, i: int) -> common_pb2.TaskSpec:
        s = common_pb2.TaskSpec(name=f"w5-{i}", queue="default", timeout_ms=3_600_000, max_attempts=3)
        s.schedule.fixed_rate.period_ms = PERIOD_MS
        s.schedule.fixed_rate.anchor_ms = T0 + self.offset[i]
        s.payload.handler.name = "bench.noop"
        s.guarantee = common_pb2.AT_LEAST_ONCE
        s.priority = common_pb2.MEDIUM
        s.retention.keep_executions = KEEP
        return s


# ---------------------------------------------------------------------------------------------------------
# The store: an environment opened as LmdbKV opens its own.


class Env:
    def __init__(self, path: Path) -> None:
        self.env = lmdb.open(
            str(path),
            map_size=1 << 30,
            max_dbs=len(DATABASES),
            sync=False,
            metasync=False,
            readahead=False,
            max_spare_txns=4,
            mode=0o600,
        )
        with self.env.begin(write=True) as txn:
            self.dbs = {n: self.env.open_db(n.encode(), txn=txn, create=True) for n in DATABASES}

    def close(self) -> None:
        self.env.close()


class CountingTxn(LmdbTxn):
    """LmdbTxn counting its calls (--counts runs only: the counting is not timed)."""

    counts: Counter[str] = Counter()

    def get(self, db: str, key: bytes) -> bytes | None:
        self.counts["get"] += 1
        return super().get(db, key)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.counts["put"] += 1
        super().put(db, key, value)

    def insert(self, db: str, key: bytes, value: bytes) -> bool:
        self.counts["insert"] += 1
        return super().insert(db, key, value)

    def delete(self, db: str, key: bytes) -> bool:
        self.counts["delete"] += 1
        return super().delete(db, key)

    def first(self, db: str, start: bytes = b"", end: bytes | None = None, *, reverse: bool = False) -> Any:
        self.counts["first"] += 1
        return super().first(db, start, end, reverse=reverse)


def _field(tag: int, data: bytes) -> bytes:
    """A length-delimited protobuf field (tag < 16, length < 2**14): a result framed from stored bytes."""
    n = len(data)
    head = bytes([tag << 3 | 2, n]) if n < 128 else bytes([tag << 3 | 2, n & 0x7F | 0x80, n >> 7])
    return head + data


def _bucket(ms: int) -> int:
    """A log-scale histogram bucket (4 per power of two, as raft.stats_hist roughly does)."""
    if ms < 4:
        return ms
    b = ms.bit_length()
    return 4 * (b - 2) + ((ms >> (b - 3)) & 3)


# ---------------------------------------------------------------------------------------------------------
# V0: protobuf records, the current keys.


def _hist_add(h: stats_pb2.Histogram, ms: int) -> None:
    b = _bucket(ms)
    buckets = list(h.buckets)
    if b in buckets:
        h.counts[buckets.index(b)] += 1
    else:
        # ascending bucket indexes: rebuilt with the new one in place
        pairs = sorted([*zip(buckets, h.counts, strict=True), (b, 1)])
        del h.buckets[:]
        del h.counts[:]
        h.buckets.extend(p[0] for p in pairs)
        h.counts.extend(p[1] for p in pairs)
    if not h.samples or ms < h.min_ms:
        h.min_ms = ms
    h.max_ms = max(h.max_ms, ms)
    h.samples += 1
    h.sum_ms += ms


class V0:
    name = "V0"

    def create(self, t: LmdbTxn, w: Workload) -> None:
        for i, (tid, t16) in enumerate(zip(w.task_ids, w.task16, strict=True)):
            task = common_pb2.Task(task_id=tid, state=common_pb2.TASK_SCHEDULED, created_at_ms=T0 - 60_000)
            task.spec.CopyFrom(w.spec(i))
            task.next_fire_ms = task.next_due_ms = T0 + w.offset[i]
            t.put("tasks", t16, task.SerializeToString(deterministic=True))
            t.put("due", u64(T0 + w.offset[i]) + t16, b"")
        t.put("meta", EPOCH, commands_pb2.Epoch(term=TERM, leader_id="n1").SerializeToString())

    def entry(self, t: LmdbTxn, index: int, payload: bytes, now: int, out: list[bytes] | None) -> None:
        batch = commands_pb2.CommandBatch.FromString(payload)
        term = commands_pb2.Epoch.FromString(t.get("meta", EPOCH) or b"").term
        hour: list[Any] = []
        for cmd in batch.commands:
            kind = cmd.WhichOneof("body")
            if kind == "fire":
                self.fire(t, cmd, now, index=index, term=term, out=out)
            else:
                self.complete(t, cmd, now, out=out, hour=hour)
        if hour:  # the cluster's hour, once per entry (raft.stats Batch)
            key = u64(now - now % HOUR_MS)
            raw = t.get("cluster_stats", key)
            h = stats_pb2.StatsHour.FromString(raw) if raw is not None else stats_pb2.StatsHour()
            for d in hour:
                h.counts.runs += 1
                h.counts.succeeded += 1
                _hist_add(h.duration, d)
            t.put("cluster_stats", key, h.SerializeToString(deterministic=True))
        t.put("meta", LAST_APPLIED, u64(index))

    def fire(self, t: LmdbTxn, cmd: Any, now: int, *, index: int, term: int, out: list[bytes] | None) -> None:
        f = cmd.fire
        task_id, execution_id, nominal = f.task_id, f.execution_id, f.nominal_time_ms
        task16, exec16 = id_bytes(task_id), id_bytes(execution_id)
        task = common_pb2.Task.FromString(t.get("tasks", task16) or b"")
        next_fire = task.next_fire_ms
        if task.state != common_pb2.TASK_SCHEDULED or nominal != next_fire:
            raise Rejected("not due")
        if t.get("fires", task16 + u64(nominal)) is not None:
            raise Rejected("already fired")
        if t.get("execs", exec16) is not None:
            raise Rejected("execution exists")
        due = task.next_due_ms or next_fire
        if now + f.lead_ms < due:
            raise Rejected("not yet due")
        spec = task.spec
        count_raw = t.get("meta", ACTIVE + task16)  # quota: the task's active count
        count = 0 if count_raw is None else int.from_bytes(count_raw, "big")
        g = f.grant
        worker, namespace = g.worker_id, spec.namespace
        ex = common_pb2.Execution(
            execution_id=execution_id,
            task_id=task_id,
            nominal_time_ms=nominal,
            fired_at_ms=now,
            state=RUNNING,
            attempt=1,
            worker_id=worker,
            leased_at_ms=now,
            guarantee=spec.guarantee,
            priority=spec.priority,
            not_before_ms=due if due > now else 0,
            worker_incarnation=g.worker_incarnation,
            namespace=namespace,
        )
        ex.token.term, ex.token.index = term, index
        stored = ex.SerializeToString(deterministic=True)
        t.put("execs", exec16, stored)
        t.put("execs_by_state", bytes((RUNNING,)) + exec16, task16)
        t.put("execs_by_worker", worker.encode() + b"\0" + exec16, task16)
        t.put("execs_by_namespace", namespace.encode() + b"\0" + exec16, task16)
        t.put("fires", task16 + u64(nominal), exec16)
        t.put("active", task16 + exec16, b"")
        t.put("meta", ACTIVE + task16, u64(count + 1))
        t.put("running", exec16, b"")
        stored_n = task.stored_executions + 1
        removed = 0
        if stored_n > spec.retention.keep_executions:
            stored_n -= self.trim(t, task16)
            removed = 1
        t.get("ledger_count", task16)
        if t.get("ledger", task16 + u64(nominal)) is None:
            rec = common_pb2.FireRecord(
                task_id=task_id,
                nominal_time_ms=nominal,
                outcome=common_pb2.FIRED,
                execution_id=execution_id,
                committed_at_ms=now,
                late_ms=max(0, now - nominal),
                actual_ms=due,
            )
            t.insert("ledger", task16 + u64(nominal), rec.SerializeToString(deterministic=True))
        if removed:
            oldest = t.first("ledger", task16, task16 + FF)
            if oldest is not None:
                t.delete("ledger", oldest[0])
        nxt = nominal + spec.schedule.fixed_rate.period_ms
        t.first("fires", task16 + u64(nxt), task16 + FF)  # plan: a later nominal fired already?
        task.version, task.updated_at_ms = index, now
        task.last_fired_nominal_ms = max(task.last_fired_nominal_ms, nominal)
        task.fire_count += 1
        task.stored_executions = stored_n
        task.next_fire_ms = task.next_due_ms = nxt
        t.delete("due", u64(due) + task16)
        t.put("due", u64(nxt) + task16, b"")
        tstored = task.SerializeToString(deterministic=True)
        t.put("tasks", task16, tstored)
        if out is not None:
            out.append(_field(1, stored) + _field(2, tstored))

    def trim(self, t: LmdbTxn, task16: bytes) -> int:
        first = t.first("fires", task16, task16 + FF)
        if first is None:
            return 0
        key, old16 = first
        raw = t.get("execs", old16)  # retention's look at it
        if raw is None or common_pb2.Execution.FromString(raw).state not in TERMINAL:
            return 0
        old = common_pb2.Execution.FromString(t.get("execs", old16) or b"")  # drop_execution's read
        state = old.state
        t.delete("execs_by_state", bytes((state,)) + old16)
        t.delete("execs_by_worker", old.worker_id.encode() + b"\0" + old16)
        t.delete("execs_ended", u64(old.completed_at_ms) + old16)
        t.delete("execs_by_namespace", old.namespace.encode() + b"\0" + old16)
        t.delete("execs", old16)
        t.delete("fires", key)
        t.first("logs_size", old16, old16 + b"\xff")  # its output chunks, if any
        return 1

    def complete(self, t: LmdbTxn, cmd: Any, now: int, *, out: list[bytes] | None, hour: list[Any]) -> None:
        c = cmd.complete
        exec16 = id_bytes(c.execution_id)
        r = c.result
        ex = common_pb2.Execution.FromString(t.get("execs", exec16) or b"")
        tok = c.token
        if ex.state != RUNNING or ex.token.term != tok.term or ex.token.index != tok.index:
            raise Rejected("stale token")
        exit_code, started, finished = r.exit_code, r.started_at_ms, r.finished_at_ms
        ex.exit_code, ex.started_at_ms, ex.finished_at_ms = exit_code, started, finished
        ex.stdout_tail, ex.stderr_tail, ex.return_value = r.stdout_tail, r.stderr_tail, r.return_value
        worker = ex.worker_id
        ex.attempts.add(
            attempt=ex.attempt,
            worker_id=worker,
            outcome=r.outcome,
            exit_code=exit_code,
            started_at_ms=started,
            finished_at_ms=finished,
        )
        task_id = ex.task_id
        task16 = id_bytes(task_id)
        t.delete("running", exec16)
        if t.delete("active", task16 + exec16):
            key = ACTIVE + task16
            left = int.from_bytes(t.get("meta", key) or b"", "big") - 1
            if left > 0:
                t.put("meta", key, u64(left))
            else:
                t.delete("meta", key)
        ex.state, ex.completed_at_ms = SUCCEEDED, now
        t.delete("execs_by_state", bytes((RUNNING,)) + exec16)
        t.put("execs_by_state", bytes((SUCCEEDED,)) + exec16, task16)
        t.put("execs_ended", u64(now) + exec16, bytes((SUCCEEDED,)) + task16)
        stored = ex.SerializeToString(deterministic=True)
        t.put("execs", exec16, stored)
        task = common_pb2.Task.FromString(t.get("tasks", task16) or b"")
        task.last_finished_ms = now
        o = task.outcomes
        o.runs += 1
        o.succeeded += 1
        task.last_outcome = SUCCEEDED
        task.last_execution_id = ex.execution_id
        hkey = task16 + u64(now - now % HOUR_MS)
        raw = t.get("task_stats_hours", hkey)
        h = stats_pb2.StatsHour.FromString(raw) if raw is not None else stats_pb2.StatsHour()
        h.counts.runs += 1
        h.counts.succeeded += 1
        duration = finished - started
        _hist_add(h.duration, duration)
        _hist_add(h.lateness, max(0, started - ex.nominal_time_ms))
        t.put("task_stats_hours", hkey, h.SerializeToString(deterministic=True))
        hour.append(duration)
        t.first("buffered", task16, task16 + FF)  # a buffered execution to promote?
        t.put("tasks", task16, task.SerializeToString(deterministic=True))
        if out is not None:
            out.append(_field(1, stored))


# ---------------------------------------------------------------------------------------------------------
# V1: compact records, the same keys.
#
# Task runtime record (task_rt), little-endian: FIRE part (changed by a fire, contiguous: one pack_into),
# DONE part (changed by an end), then the spec's fire-relevant fields (written by task create/update
# only, copied through as bytes), then the namespace.
RT_HEAD = struct.Struct("<BB6x")  # state, last_outcome
RT_FIRE = struct.Struct("<qqqqqqq")  # next_fire, next_due, last_fired, fire_count, version, updated, stored
RT_DONE = struct.Struct(
    "<qqqqqqqqq16s"
)  # last_finished, active, runs, succ, fail, t/o, canc, lost, exp, last_ex
RT_SPEC = struct.Struct("<BBBBIqq")  # kind, guarantee, priority, overlap, keep, period_ms, anchor_ms
O_FIRE = RT_HEAD.size
O_DONE = O_FIRE + RT_FIRE.size
O_SPEC = O_DONE + RT_DONE.size
O_NS = O_SPEC + RT_SPEC.size
RT_FIRE_READ = struct.Struct("<qqqq")  # next_fire, next_due, last_fired, fire_count
RT_STORED = struct.Struct("<q")
RT_DONE_READ = struct.Struct("<qqqq")  # last_finished, active, runs, succeeded
# Execution record: fixed part, then worker id, incarnation, namespace and return value (lengths in the
# fixed part). One attempt's summary is the fixed fields themselves; a retried execution's earlier
# attempts would be records of their own (exec16 + attempt), never read on this path.
EX = struct.Struct("<16sqqqqqqqqqiHBBBBBBBH")
# task16, nominal, fired, leased, not_before, started, finished, completed, term, index, exit_code,
# attempt, state, guarantee, priority, flags, len(worker), len(incarnation), len(namespace), len(rv) (H)
EX_TOKEN = struct.Struct("<qq")  # term, index
O_TOKEN = 16 + 8 * 7
EX_END = struct.Struct("<qqq")  # started, finished, completed
O_END = 16 + 8 * 4
EX_STATE_AT = 16 + 8 * 9 + 4 + 2
EX_LENS = struct.Struct("<BBBH")  # len(worker), len(incarnation), len(namespace), len(return value)
O_LENS = EX_STATE_AT + 4
LEDGER = struct.Struct("<Bqqq16s")  # outcome, committed, late, actual, execution
# Hour statistics: int64s: runs, 7 outcomes, then per histogram samples, sum, min, max, 48 buckets.
H_BUCKETS = 48
H_SIZE = 8 + 2 * (4 + H_BUCKETS)
H_DUR, H_LATE = 8, 8 + 4 + H_BUCKETS
EMPTY_HOUR = array("q", [0] * H_SIZE).tobytes()
RESULT = struct.Struct("<16sBqqq")  # execution, state, term, index, next fire (a leader's answer)


def _hour_add(a: array[int], at: int, ms: int) -> None:
    if not a[at] or ms < a[at + 2]:
        a[at + 2] = ms
    a[at + 3] = max(a[at + 3], ms)
    a[at] += 1
    a[at + 1] += ms
    a[at + 4 + min(_bucket(ms), H_BUCKETS - 1)] += 1


def _ex_tail(raw: bytes) -> tuple[bytes, bytes, bytes, int]:
    """(worker, incarnation, namespace, where the return value starts) of a compact execution record."""
    lw, li, ln, _ = EX_LENS.unpack_from(raw, O_LENS)
    a = EX.size
    return raw[a : a + lw], raw[a + lw : a + lw + li], raw[a + lw + li : a + lw + li + ln], a + lw + li + ln


def rt_record(w: Workload, i: int) -> bytes:
    spec = w.spec(i)
    return (
        RT_HEAD.pack(common_pb2.TASK_SCHEDULED, 0)
        + RT_FIRE.pack(T0 + w.offset[i], T0 + w.offset[i], 0, 0, 0, T0 - 60_000, 0)
        + RT_DONE.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, b"\0" * 16)
        + RT_SPEC.pack(2, spec.guarantee, spec.priority, spec.overlap, KEEP, PERIOD_MS, T0 + w.offset[i])
        + spec.namespace.encode()
    )


class V1:
    name = "V1"

    def create(self, t: LmdbTxn, w: Workload) -> None:
        for i, (tid, t16) in enumerate(zip(w.task_ids, w.task16, strict=True)):
            task = common_pb2.Task(task_id=tid, state=common_pb2.TASK_SCHEDULED, created_at_ms=T0 - 60_000)
            task.spec.CopyFrom(w.spec(i))
            t.put("tasks", t16, task.SerializeToString(deterministic=True))  # spec: not read per fire
            t.put("task_rt", t16, rt_record(w, i))
            t.put("due", u64(T0 + w.offset[i]) + t16, b"")
        t.put("meta", EPOCH, u64(TERM))

    def entry(self, t: LmdbTxn, index: int, payload: bytes, now: int, out: list[bytes] | None) -> None:
        batch = commands_pb2.CommandBatch.FromString(payload)
        term = int.from_bytes(t.get("meta", EPOCH) or b"", "big")
        hour: list[int] = []
        for cmd in batch.commands:
            if cmd.WhichOneof("body") == "fire":
                self.fire(t, cmd, now, index=index, term=term, out=out)
            else:
                self.complete(t, cmd, now, out=out, hour=hour)
        if hour:
            key = u64(now - now % HOUR_MS)
            a = array("q", t.get("cluster_stats", key) or EMPTY_HOUR)
            for d in hour:
                a[0] += 1
                a[1 + SUCCEEDED - 3] += 1
                _hour_add(a, H_DUR, d)
            t.put("cluster_stats", key, a.tobytes())
        t.put("meta", LAST_APPLIED, u64(index))

    def fire(self, t: LmdbTxn, cmd: Any, now: int, *, index: int, term: int, out: list[bytes] | None) -> None:
        f = cmd.fire
        execution_id, nominal = f.execution_id, f.nominal_time_ms
        task16, exec16 = id_bytes(f.task_id), id_bytes(execution_id)
        raw = t.get("task_rt", task16) or b""
        next_fire, next_due, last_fired, fire_count = RT_FIRE_READ.unpack_from(raw, O_FIRE)
        if raw[0] != common_pb2.TASK_SCHEDULED or nominal != next_fire:
            raise Rejected("not due")
        if t.get("fires", task16 + u64(nominal)) is not None:
            raise Rejected("already fired")
        if t.get("execs", exec16) is not None:
            raise Rejected("execution exists")
        due = next_due or next_fire
        if now + f.lead_ms < due:
            raise Rejected("not yet due")
        _, guarantee, priority, _, keep, period, _ = RT_SPEC.unpack_from(raw, O_SPEC)
        namespace = raw[O_NS:]
        count_raw = t.get("meta", ACTIVE + task16)
        count = 0 if count_raw is None else int.from_bytes(count_raw, "big")
        g = f.grant
        worker, incarnation = g.worker_id.encode(), g.worker_incarnation.encode()
        stored = (
            EX.pack(
                task16, nominal, now, now, due if due > now else 0, 0, 0, 0, term, index, 0, 1, RUNNING,
                guarantee, priority, 0, len(worker), len(incarnation), len(namespace), 0,
            )
            + worker + incarnation + namespace
        )  # fmt: skip
        t.put("execs", exec16, stored)
        t.put("execs_by_state", bytes((RUNNING,)) + exec16, task16)
        t.put("execs_by_worker", worker + b"\0" + exec16, task16)
        t.put("execs_by_namespace", namespace + b"\0" + exec16, task16)
        t.put("fires", task16 + u64(nominal), exec16)
        t.put("active", task16 + exec16, b"")
        t.put("meta", ACTIVE + task16, u64(count + 1))
        t.put("running", exec16, b"")
        stored_n = RT_STORED.unpack_from(raw, O_FIRE + 48)[0] + 1
        removed = 0
        if stored_n > keep:
            stored_n -= self.trim(t, task16)
            removed = 1
        t.get("ledger_count", task16)
        if t.get("ledger", task16 + u64(nominal)) is None:
            rec = LEDGER.pack(common_pb2.FIRED, now, max(0, now - nominal), due, exec16)
            t.insert("ledger", task16 + u64(nominal), rec)
        if removed:
            oldest = t.first("ledger", task16, task16 + FF)
            if oldest is not None:
                t.delete("ledger", oldest[0])
        nxt = nominal + period
        t.first("fires", task16 + u64(nxt), task16 + FF)
        buf = bytearray(raw)
        RT_FIRE.pack_into(
            buf, O_FIRE, nxt, nxt, max(last_fired, nominal), fire_count + 1, index, now, stored_n
        )
        t.delete("due", u64(due) + task16)
        t.put("due", u64(nxt) + task16, b"")
        t.put("task_rt", task16, bytes(buf))
        if out is not None:
            out.append(RESULT.pack(exec16, RUNNING, term, index, nxt))

    def trim(self, t: LmdbTxn, task16: bytes) -> int:
        first = t.first("fires", task16, task16 + FF)
        if first is None:
            return 0
        key, old16 = first
        raw = t.get("execs", old16)
        if raw is None or raw[EX_STATE_AT] not in TERMINAL:
            return 0
        raw = t.get("execs", old16) or b""  # drop_execution's read, as V0
        state = raw[EX_STATE_AT]
        completed = EX_END.unpack_from(raw, O_END)[2]
        worker, _, namespace, _ = _ex_tail(raw)
        t.delete("execs_by_state", bytes((state,)) + old16)
        t.delete("execs_by_worker", worker + b"\0" + old16)
        t.delete("execs_ended", u64(completed) + old16)
        t.delete("execs_by_namespace", namespace + b"\0" + old16)
        t.delete("execs", old16)
        t.delete("fires", key)
        t.first("logs_size", old16, old16 + b"\xff")
        return 1

    def complete(self, t: LmdbTxn, cmd: Any, now: int, *, out: list[bytes] | None, hour: list[int]) -> None:
        c = cmd.complete
        exec16 = id_bytes(c.execution_id)
        r = c.result
        raw = t.get("execs", exec16) or b""
        term, index = EX_TOKEN.unpack_from(raw, O_TOKEN)
        tok = c.token
        if raw[EX_STATE_AT] != RUNNING or term != tok.term or index != tok.index:
            raise Rejected("stale token")
        started, finished = r.started_at_ms, r.finished_at_ms
        rv = r.return_value
        task16 = raw[:16]
        nominal = EX.unpack_from(raw)[1]
        end = _ex_tail(raw)[3]
        buf = bytearray(raw[:end])
        EX_END.pack_into(buf, O_END, started, finished, now)
        struct.pack_into("<i", buf, O_TOKEN + 16, r.exit_code)
        buf[EX_STATE_AT] = SUCCEEDED
        struct.pack_into("<H", buf, O_LENS + 3, len(rv))
        stored = bytes(buf) + rv
        t.delete("running", exec16)
        if t.delete("active", task16 + exec16):
            key = ACTIVE + task16
            left = int.from_bytes(t.get("meta", key) or b"", "big") - 1
            if left > 0:
                t.put("meta", key, u64(left))
            else:
                t.delete("meta", key)
        t.delete("execs_by_state", bytes((RUNNING,)) + exec16)
        t.put("execs_by_state", bytes((SUCCEEDED,)) + exec16, task16)
        t.put("execs_ended", u64(now) + exec16, bytes((SUCCEEDED,)) + task16)
        t.put("execs", exec16, stored)
        rt = t.get("task_rt", task16) or b""
        _, active, runs, succeeded = RT_DONE_READ.unpack_from(rt, O_DONE)
        buf = bytearray(rt)
        RT_DONE_READ.pack_into(buf, O_DONE, now, active, runs + 1, succeeded + 1)
        buf[O_DONE + 72 : O_DONE + 88] = exec16
        buf[1] = SUCCEEDED
        hkey = task16 + u64(now - now % HOUR_MS)
        a = array("q", t.get("task_stats_hours", hkey) or EMPTY_HOUR)
        a[0] += 1
        a[1 + SUCCEEDED - 3] += 1
        duration = finished - started
        _hour_add(a, H_DUR, duration)
        _hour_add(a, H_LATE, max(0, started - nominal))
        t.put("task_stats_hours", hkey, a.tobytes())
        hour.append(duration)
        t.first("buffered", task16, task16 + FF)
        t.put("task_rt", task16, bytes(buf))
        if out is not None:
            out.append(RESULT.pack(exec16, SUCCEEDED, term, index, 0))


# ---------------------------------------------------------------------------------------------------------
# V2: compact records, fewer keys.
#
# runs: task16 + nominal8 -> RUN (exec16, fire outcome, execution state, completed_ms): the fire key, its
# ledger record and the per-task end-time key in one. active: task16 + exec16 -> state + worker, for
# non-terminal executions only. The task's active count is in its runtime record (RT_DONE's 2nd field).
RUN = struct.Struct("<16sBBq")
RUN_STATE_AT = 17
O_ACTIVE = O_DONE + 8


class V2(V1):
    name = "V2"

    def fire(self, t: LmdbTxn, cmd: Any, now: int, *, index: int, term: int, out: list[bytes] | None) -> None:
        f = cmd.fire
        nominal = f.nominal_time_ms
        task16, exec16 = id_bytes(f.task_id), id_bytes(f.execution_id)
        raw = t.get("task_rt", task16) or b""
        next_fire, next_due, last_fired, fire_count = RT_FIRE_READ.unpack_from(raw, O_FIRE)
        if raw[0] != common_pb2.TASK_SCHEDULED or nominal != next_fire:
            raise Rejected("not due")
        due = next_due or next_fire
        if now + f.lead_ms < due:
            raise Rejected("not yet due")
        _, guarantee, priority, _, keep, period, _ = RT_SPEC.unpack_from(raw, O_SPEC)
        namespace = raw[O_NS:]
        g = f.grant
        worker, incarnation = g.worker_id.encode(), g.worker_incarnation.encode()
        # I3, in the writes themselves: MDB_NOOVERWRITE finds a present key before it writes anything.
        if not t.insert("runs", task16 + u64(nominal), RUN.pack(exec16, common_pb2.FIRED, RUNNING, 0)):
            raise Rejected("already fired")
        stored = (
            EX.pack(
                task16, nominal, now, now, due if due > now else 0, 0, 0, 0, term, index, 0, 1, RUNNING,
                guarantee, priority, 0, len(worker), len(incarnation), len(namespace), 0,
            )
            + worker + incarnation + namespace
        )  # fmt: skip
        if not t.insert("execs", exec16, stored):
            raise Rejected("execution exists")  # (a real one would undo the runs insert: a savepoint)
        t.put("active", task16 + exec16, bytes((RUNNING,)) + worker)
        stored_n = RT_STORED.unpack_from(raw, O_FIRE + 48)[0] + 1
        if stored_n > keep:
            stored_n -= self.trim(t, task16)
        nxt = nominal + period
        buf = bytearray(raw)
        RT_FIRE.pack_into(
            buf, O_FIRE, nxt, nxt, max(last_fired, nominal), fire_count + 1, index, now, stored_n
        )
        RT_STORED.pack_into(buf, O_ACTIVE, RT_STORED.unpack_from(raw, O_ACTIVE)[0] + 1)
        t.delete("due", u64(due) + task16)
        t.put("due", u64(nxt) + task16, b"")
        t.put("task_rt", task16, bytes(buf))
        if out is not None:
            out.append(RESULT.pack(exec16, RUNNING, term, index, nxt))

    def trim(self, t: LmdbTxn, task16: bytes) -> int:
        first = t.first("runs", task16, task16 + FF)
        if first is None or first[1][RUN_STATE_AT] not in TERMINAL:
            return 0
        t.delete("execs", first[1][:16])
        t.delete("runs", first[0])
        return 1

    def complete(self, t: LmdbTxn, cmd: Any, now: int, *, out: list[bytes] | None, hour: list[int]) -> None:
        c = cmd.complete
        exec16 = id_bytes(c.execution_id)
        r = c.result
        raw = t.get("execs", exec16) or b""
        term, index = EX_TOKEN.unpack_from(raw, O_TOKEN)
        tok = c.token
        if raw[EX_STATE_AT] != RUNNING or term != tok.term or index != tok.index:
            raise Rejected("stale token")
        started, finished = r.started_at_ms, r.finished_at_ms
        rv = r.return_value
        task16 = raw[:16]
        nominal = EX.unpack_from(raw)[1]
        end = _ex_tail(raw)[3]
        buf = bytearray(raw[:end])
        EX_END.pack_into(buf, O_END, started, finished, now)
        struct.pack_into("<i", buf, O_TOKEN + 16, r.exit_code)
        buf[EX_STATE_AT] = SUCCEEDED
        struct.pack_into("<H", buf, O_LENS + 3, len(rv))
        t.put("execs", exec16, bytes(buf) + rv)
        t.put("runs", task16 + u64(nominal), RUN.pack(exec16, common_pb2.FIRED, SUCCEEDED, now))
        active_left = t.delete("active", task16 + exec16)
        rt = t.get("task_rt", task16) or b""
        _, active, runs, succeeded = RT_DONE_READ.unpack_from(rt, O_DONE)
        buf = bytearray(rt)
        RT_DONE_READ.pack_into(buf, O_DONE, now, active - active_left, runs + 1, succeeded + 1)
        buf[O_DONE + 72 : O_DONE + 88] = exec16
        buf[1] = SUCCEEDED
        t.put("task_rt", task16, bytes(buf))
        hkey = task16 + u64(now - now % HOUR_MS)
        a = array("q", t.get("task_stats_hours", hkey) or EMPTY_HOUR)
        a[0] += 1
        a[1 + SUCCEEDED - 3] += 1
        duration = finished - started
        _hour_add(a, H_DUR, duration)
        _hour_add(a, H_LATE, max(0, started - nominal))
        t.put("task_stats_hours", hkey, a.tobytes())
        hour.append(duration)
        if out is not None:
            out.append(RESULT.pack(exec16, SUCCEEDED, term, index, 0))


# ---------------------------------------------------------------------------------------------------------
# V3: V2's records and keys, an entry at a time: read all, compute, write each database once (raw py-lmdb).


class V3(V2):
    name = "V3"

    def entry(self, t: LmdbTxn, index: int, payload: bytes, now: int, out: list[bytes] | None) -> None:
        txn, dbs = t._txn, t._dbs
        batch = commands_pb2.CommandBatch.FromString(payload)
        term = int.from_bytes(txn.get(EPOCH, None, dbs["meta"]) or b"", "big")
        cmds = batch.commands
        if cmds[0].WhichOneof("body") == "fire":
            self.fires(txn, dbs, [c.fire for c in cmds], now, index=index, term=term, out=out)
        else:
            self.completes(txn, dbs, [c.complete for c in cmds], now, out)
        txn.put(LAST_APPLIED, u64(index), True, True, False, dbs["meta"])

    def fires(
        self, txn: Any, dbs: dict[str, Any], fs: list[Any], now: int, *, index: int, term: int, out: Any
    ) -> None:
        task16s = [id_bytes(f.task_id) for f in fs]
        got = txn.cursor(dbs["task_rt"]).getmulti(task16s)
        if len(got) != len(fs) or len(set(task16s)) != len(fs):
            raise Rejected("to the per-command path")  # (not exercised by W5)
        runs: list[tuple[bytes, bytes]] = []
        execs: list[tuple[bytes, bytes]] = []
        active: list[tuple[bytes, bytes]] = []
        rts: list[tuple[bytes, bytes]] = []
        dues_old: list[bytes] = []
        dues_new: list[tuple[bytes, bytes]] = []
        trim: list[bytes] = []
        unpack_fire, unpack_spec, pack_fire, unpack_stored = (
            RT_FIRE_READ.unpack_from,
            RT_SPEC.unpack_from,
            RT_FIRE.pack_into,
            RT_STORED.unpack_from,
        )
        ex_pack, run_pack = EX.pack, RUN.pack
        for f, (task16, raw) in zip(fs, got, strict=True):
            nominal = f.nominal_time_ms
            exec16 = id_bytes(f.execution_id)
            next_fire, next_due, last_fired, fire_count = unpack_fire(raw, O_FIRE)
            if raw[0] != common_pb2.TASK_SCHEDULED or nominal != next_fire:
                raise Rejected("to the per-command path")
            due = next_due or next_fire
            if now + f.lead_ms < due:
                raise Rejected("to the per-command path")
            _, guarantee, priority, _, keep, period, _ = unpack_spec(raw, O_SPEC)
            namespace = raw[O_NS:]
            g = f.grant
            worker, incarnation = g.worker_id.encode(), g.worker_incarnation.encode()
            runs.append((task16 + u64(nominal), run_pack(exec16, common_pb2.FIRED, RUNNING, 0)))
            execs.append(
                (
                    exec16,
                    ex_pack(
                        task16, nominal, now, now, due if due > now else 0, 0, 0, 0, term, index, 0, 1,
                        RUNNING,
                        guarantee, priority, 0, len(worker), len(incarnation), len(namespace), 0,
                    )
                    + worker + incarnation + namespace,
                )
            )  # fmt: skip
            active.append((task16 + exec16, bytes((RUNNING,)) + worker))
            stored_n = unpack_stored(raw, O_FIRE + 48)[0] + 1
            if stored_n > keep:
                trim.append(task16)
                stored_n -= 1  # undone below if the oldest is not terminal
            nxt = nominal + period
            buf = bytearray(raw)
            pack_fire(buf, O_FIRE, nxt, nxt, max(last_fired, nominal), fire_count + 1, index, now, stored_n)
            RT_STORED.pack_into(buf, O_ACTIVE, unpack_stored(raw, O_ACTIVE)[0] + 1)
            rts.append((task16, bytes(buf)))
            dues_old.append(u64(due) + task16)
            dues_new.append((u64(nxt) + task16, b""))
            if out is not None:
                out.append(RESULT.pack(exec16, RUNNING, term, index, nxt))
        # Trim first (the oldest of each task, before this entry's own runs are in): one cursor.
        execs_db = dbs["execs"]
        cur = txn.cursor(dbs["runs"])
        for task16 in trim:
            if cur.set_range(task16) and cur.key()[:16] == task16 and cur.value()[RUN_STATE_AT] in TERMINAL:
                txn.delete(cur.value()[:16], b"", execs_db)
                cur.delete()
            else:
                raise Rejected("to the per-command path")  # (stored count left as it was: not in W5)
        # I3 and new ids: every key must be new (added == consumed), else the per-command path.
        if cur.putmulti(runs, True, False, False)[1] != len(runs):
            raise Rejected("to the per-command path")
        if txn.cursor(execs_db).putmulti(execs, True, False, False)[1] != len(execs):
            raise Rejected("to the per-command path")
        txn.cursor(dbs["active"]).putmulti(active)
        txn.cursor(dbs["task_rt"]).putmulti(rts)
        due_db = dbs["due"]
        for k in dues_old:
            txn.delete(k, b"", due_db)
        txn.cursor(due_db).putmulti(dues_new)

    def completes(self, txn: Any, dbs: dict[str, Any], cs: list[Any], now: int, out: Any) -> None:
        exec16s = [id_bytes(c.execution_id) for c in cs]
        got = txn.cursor(dbs["execs"]).getmulti(exec16s)
        if len(got) != len(cs):
            raise Rejected("to the per-command path")
        execs: list[tuple[bytes, bytes]] = []
        runs: list[tuple[bytes, bytes]] = []
        task16s: list[bytes] = []
        ends: list[tuple[int, int, int]] = []  # (duration, lateness, exec index)
        active_db = dbs["active"]
        delete = txn.delete
        token_of, end_pack, run_pack, unpack = (
            EX_TOKEN.unpack_from,
            EX_END.pack_into,
            RUN.pack,
            EX.unpack_from,
        )
        for c, (exec16, raw) in zip(cs, got, strict=True):
            term, index = token_of(raw, O_TOKEN)
            tok = c.token
            if raw[EX_STATE_AT] != RUNNING or term != tok.term or index != tok.index:
                raise Rejected("to the per-command path")
            r = c.result
            started, finished = r.started_at_ms, r.finished_at_ms
            rv = r.return_value
            task16 = raw[:16]
            nominal = unpack(raw)[1]
            end = _ex_tail(raw)[3]
            buf = bytearray(raw[:end])
            end_pack(buf, O_END, started, finished, now)
            struct.pack_into("<i", buf, O_TOKEN + 16, r.exit_code)
            buf[EX_STATE_AT] = SUCCEEDED
            struct.pack_into("<H", buf, O_LENS + 3, len(rv))
            execs.append((exec16, bytes(buf) + rv))
            runs.append((task16 + u64(nominal), run_pack(exec16, common_pb2.FIRED, SUCCEEDED, now)))
            delete(task16 + exec16, b"", active_db)
            task16s.append(task16)
            ends.append((finished - started, max(0, started - nominal), len(execs) - 1))
            if out is not None:
                out.append(RESULT.pack(exec16, SUCCEEDED, term, index, 0))
        if len(set(task16s)) != len(task16s):
            raise Rejected("to the per-command path")
        txn.cursor(dbs["execs"]).putmulti(execs)
        txn.cursor(dbs["runs"]).putmulti(runs)
        rts = txn.cursor(dbs["task_rt"]).getmulti(task16s)
        hour = u64(now - now % HOUR_MS)
        hkeys = [t16 + hour for t16 in task16s]
        hours = dict(txn.cursor(dbs["task_stats_hours"]).getmulti(hkeys))
        new_rts: list[tuple[bytes, bytes]] = []
        new_hours: list[tuple[bytes, bytes]] = []
        ch = array("q", txn.get(hour, None, dbs["cluster_stats"]) or EMPTY_HOUR)
        for (task16, rt), hkey, (duration, lateness, k) in zip(rts, hkeys, ends, strict=True):
            _, active, runs_n, succeeded = RT_DONE_READ.unpack_from(rt, O_DONE)
            buf = bytearray(rt)
            RT_DONE_READ.pack_into(buf, O_DONE, now, active - 1, runs_n + 1, succeeded + 1)
            buf[O_DONE + 72 : O_DONE + 88] = exec16s[k]
            buf[1] = SUCCEEDED
            new_rts.append((task16, bytes(buf)))
            a = array("q", hours.get(hkey, EMPTY_HOUR))
            a[0] += 1
            a[1 + SUCCEEDED - 3] += 1
            _hour_add(a, H_DUR, duration)
            _hour_add(a, H_LATE, lateness)
            new_hours.append((hkey, a.tobytes()))
            ch[0] += 1
            ch[1 + SUCCEEDED - 3] += 1
            _hour_add(ch, H_DUR, duration)
        txn.cursor(dbs["task_rt"]).putmulti(new_rts)
        txn.cursor(dbs["task_stats_hours"]).putmulti(new_hours)
        txn.put(hour, ch.tobytes(), True, True, False, dbs["cluster_stats"])


VARIANTS: dict[str, Callable[[], Any]] = {"V0": V0, "V1": V1, "V2": V2, "V3": V3}


# ---------------------------------------------------------------------------------------------------------
# Running.


def apply_entries(
    env: Env, variant: Any, entries: list[tuple[int, bytes, int]], group: int, *, leader: bool, txn_cls: type
) -> list[list[bytes]]:
    """Apply `entries`, `group` per write transaction; with `leader`, each entry's results built."""
    results: list[list[bytes]] = []
    begin, dbs, e = env.env.begin, env.dbs, env.env
    for k in range(0, len(entries), group):
        txn = begin(write=True)
        t = txn_cls(txn, dbs, writable=True, env=e)
        for index, payload, now in entries[k : k + group]:
            out: list[bytes] | None = [] if leader else None
            variant.entry(t, index, payload, now, out)
            if out is not None:
                results.append(out)
        txn.commit()
    return results


def one_run(
    w: Workload, name: str, *, leader: bool, group: int, counts: bool = False, callgrind: bool = False
) -> float:
    """CPU microseconds (process time) per execution of the timed entries, on a fresh store."""
    variant = VARIANTS[name]()
    with tempfile.TemporaryDirectory() as tmp:
        env = Env(Path(tmp))
        try:
            with env.env.begin(write=True) as txn:
                variant.create(LmdbTxn(txn, env.dbs, writable=True, env=env.env), w)
            g = 1 if leader else group
            apply_entries(env, variant, w.entries[: w.warm], g, leader=leader, txn_cls=LmdbTxn)
            timed = w.entries[w.warm :]
            cls = CountingTxn if counts else LmdbTxn
            CountingTxn.counts.clear()
            if callgrind:
                _instrument(True)
            t0 = time.process_time()
            apply_entries(env, variant, timed, g, leader=leader, txn_cls=cls)
            dt = time.process_time() - t0
            if callgrind:
                _instrument(False)
            return dt / w.timed_executions * 1e6
        finally:
            env.close()


def _instrument(on: bool) -> None:
    """Turn callgrind's instrumentation on or off (started with --instr-atstart=no), waiting until taken."""
    proc = subprocess.Popen(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], stdout=subprocess.DEVNULL
    )
    while proc.poll() is None:
        time.sleep(0.05)


def parse_only(w: Workload) -> float:
    """CPU microseconds per execution to parse the timed entries and read each command's fields (a share
    every variant pays: the command format is not changed in this study)."""
    t0 = time.process_time()
    for _, payload, _ in w.entries[w.warm :]:
        for c in commands_pb2.CommandBatch.FromString(payload).commands:
            if c.WhichOneof("body") == "fire":
                f = c.fire
                id_bytes(f.task_id), id_bytes(f.execution_id), f.nominal_time_ms, f.grant.worker_id
            else:
                cm = c.complete
                id_bytes(cm.execution_id), cm.token.term, cm.result.started_at_ms, cm.result.return_value
    return (time.process_time() - t0) / w.timed_executions * 1e6


def callgrind_child(args: argparse.Namespace, name: str, leader: bool) -> float:
    """Instructions per execution of one variant and style, the script run again under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        cmd = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
            sys.executable, __file__, "--child", name, "--style", "leader" if leader else "follower",
            "--tasks", str(args.tasks), "--timed-ticks", str(args.timed_ticks),
            "--per-entry", str(args.per_entry),
            "--follower-group", str(args.follower_group),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        n = int(re.search(r"executions (\d+)", done.stdout).group(1))  # type: ignore[union-attr]
        text = out.read_text()
        total = re.search(r"^totals: (\d+)", text, re.M)
        return int(total.group(1)) / n if total else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--variants", default="V0,V1,V2,V3", help="comma-separated, of V0 V1 V2 V3")
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--per-entry", type=int, default=25, help="commands per log entry (0.04 entries per fire)")
    p.add_argument("--warm-ticks", type=int, default=7, help="seconds applied before timing (5 kept + 2)")
    p.add_argument("--timed-ticks", type=int, default=20, help="seconds timed: tasks x this executions")
    p.add_argument("--follower-group", type=int, default=8, help="entries per transaction, follower-style")
    p.add_argument("--repeat", type=int, default=3, help="runs per variant and style (min reported)")
    p.add_argument(
        "--counts", action="store_true", help="also LMDB calls per execution (V0-V2; V3 by design)"
    )
    p.add_argument("--callgrind", action="store_true", help="instructions per execution (valgrind; slow)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--style", default="leader", help=argparse.SUPPRESS)
    args = p.parse_args()
    ticks = args.warm_ticks + args.timed_ticks
    w = Workload(args.tasks, ticks, args.warm_ticks, args.per_entry)
    if args.child:
        one_run(w, args.child, leader=args.style == "leader", group=args.follower_group, callgrind=True)
        print(f"executions {w.timed_executions}")
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    print(
        f"{args.tasks} tasks, {len(w.entries) - w.warm} timed entries with {w.timed_executions} executions "
        f"({w.warm} warm-up entries), {args.per_entry} commands per entry; "
        f"follower group {args.follower_group}"
    )
    parse = min(parse_only(w) for _ in range(args.repeat))
    print(f"command parse + field reads alone: {parse:.1f} us per execution")
    print(
        f"{'variant':<8}{'leader us':>10}{'follower us':>12}"
        + ("  LMDB calls per execution" if args.counts else "")
    )
    for name in names:
        lead = min(one_run(w, name, leader=True, group=args.follower_group) for _ in range(args.repeat))
        foll = min(one_run(w, name, leader=False, group=args.follower_group) for _ in range(args.repeat))
        line = f"{name:<8}{lead:>10.1f}{foll:>12.1f}"
        if args.counts and name != "V3":
            one_run(w, name, leader=True, group=1, counts=True)
            c = CountingTxn.counts
            n = w.timed_executions
            line += (
                "  "
                + " ".join(f"{k} {v / n:.2f}" for k, v in sorted(c.items()))
                + f" (all {sum(c.values()) / n:.1f})"
            )
        print(line, flush=True)
    if args.callgrind:
        print("instructions per execution (callgrind, the timed part only):")
        for name in names:
            lead, foll = (callgrind_child(args, name, leader) for leader in (True, False))
            print(f"{name:<8}{lead / 1e3:>9.0f}k{foll / 1e3:>11.0f}k", flush=True)


if __name__ == "__main__":
    main()
