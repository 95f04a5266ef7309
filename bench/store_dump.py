"""A deterministic workload through StateMachine on fresh LMDB stores, and a dump of what it stored: to prove
that a change to the apply path leaves every stored byte (and every result) as it was.

Usage: .venv/bin/python bench/store_dump.py OUT.txt [--steps 40] [--old-store]
Run it at two revisions (e.g. a `git worktree` of the older one, with PYTHONPATH set to it) and compare the
two files (`cmp`). The file holds, for each of two replicas fed the same log (one whose results are read,
as a leader's, one whose results nobody reads, as a follower's), every key and value of every database,
then every entry's BatchResult and audit events. The workload: tasks of every schedule kind (cron with a
time zone, at, fixed rate, fixed delay) with tags, namespaces, retry policies, overlap policies, retention
and quotas; fires, grants and completes with every outcome (success with a result, failure, timeout,
cancelled, refused, not started), several in one entry and entries grouped in one transaction; retries,
dead letters and their redrive, cancels, expiries, pauses, updates, deletes, backfills, prunes, output
chunks and dedup records. Some commands are made to fail after their writes (the savepoint pass of
StateMachine.apply_entry rolls them back).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.proto.v1 import audit_pb2, commands_pb2, common_pb2
from cronraft.raft import commands as command_table
from cronraft.raft import state
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import DATABASES
from cronraft.raft.records import META_INDEXED, SEARCH_INDEXES
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
C = commands_pb2.Command
S = common_pb2.Schedule

# (kind, execution id) of commands whose handler raises after its writes (see _poisoned).
POISON: set[tuple[str, str]] = set()


def _poisoned(kind: str, handler: command_table.Handler) -> command_table.Handler:
    def wrapped(ctx: command_table.Ctx, cmd: commands_pb2.Command) -> None:
        handler(ctx, cmd)
        body = getattr(cmd, kind)
        if (kind, getattr(body, "execution_id", "")) in POISON:
            raise ValueError(f"poisoned {kind} {body.execution_id}")

    return wrapped


for _kind in ("fire", "grant", "complete", "expire_lease"):
    command_table.HANDLERS[_kind] = _poisoned(_kind, command_table.HANDLERS[_kind])


def tid(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def execution(self, at: int) -> str:
        self.n += 1
        return make_id(at, (7_000_000 + self.n).to_bytes(10, "big"))


def specs() -> list[common_pb2.TaskSpec]:
    payload = common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"]))
    retry = common_pb2.RetryPolicy(initial_backoff_ms=30_000, multiplier=2.0, max_backoff_ms=120_000)
    out = [
        common_pb2.TaskSpec(
            name="cron-ns",
            namespace="ns1",
            schedule=S(cron=common_pb2.CronSchedule(expression="*/2 * * * *")),
            max_attempts=2,
            retry=retry,
        ),
        common_pb2.TaskSpec(
            name="rate", schedule=S(fixed_rate=common_pb2.FixedRateSchedule(period_ms=MINUTE))
        ),
        common_pb2.TaskSpec(
            name="delay", schedule=S(fixed_delay=common_pb2.FixedDelaySchedule(delay_ms=30_000))
        ),
        common_pb2.TaskSpec(name="at", schedule=S(at=common_pb2.AtSchedule(at_ms=T0 + 5 * MINUTE))),
        common_pb2.TaskSpec(
            name="cron-paris",
            schedule=S(cron=common_pb2.CronSchedule(expression="* * * * *", time_zone="Europe/Paris")),
            overlap=common_pb2.OVERLAP_BUFFER_ALL,
            priority=common_pb2.HIGH,
        ),
        common_pb2.TaskSpec(
            name="at-most-once",
            schedule=S(cron=common_pb2.CronSchedule(expression="* * * * *"), max_runs=10),
            guarantee=common_pb2.AT_MOST_ONCE,
            misfire=common_pb2.MISFIRE_SKIP,
        ),
        common_pb2.TaskSpec(
            name="deadline",
            schedule=S(fixed_rate=common_pb2.FixedRateSchedule(period_ms=2 * MINUTE)),
            start_deadline_ms=MINUTE,
            priority=common_pb2.LOW,
            retention=common_pb2.Retention(keep_executions=3),
        ),
        common_pb2.TaskSpec(
            name="cancel-other",
            namespace="ns2",
            schedule=S(cron=common_pb2.CronSchedule(expression="* * * * *")),
            overlap=common_pb2.OVERLAP_CANCEL_OTHER,
            max_attempts=3,
            retry=retry,
        ),
        common_pb2.TaskSpec(
            name="skip",
            schedule=S(fixed_rate=common_pb2.FixedRateSchedule(period_ms=MINUTE)),
            overlap=common_pb2.OVERLAP_SKIP,
            max_concurrency=1,
        ),
    ]
    for i, s in enumerate(out):
        s.payload.CopyFrom(payload)
        s.tags["team"] = "ab"[i % 2]
        if i % 3 == 0:
            s.tags["env"] = "prod"
    return out


OUTCOMES = (
    common_pb2.ATTEMPT_SUCCEEDED,
    common_pb2.ATTEMPT_FAILED,
    common_pb2.ATTEMPT_TIMED_OUT,
    common_pb2.ATTEMPT_SUCCEEDED,
    common_pb2.ATTEMPT_NOT_STARTED,
    common_pb2.ATTEMPT_CANCELLED,
    common_pb2.ATTEMPT_REFUSED,
    common_pb2.ATTEMPT_FAILED,
)


def complete(ex_id: str, token: common_pb2.FencingToken, at: int, n: int) -> C:
    outcome = OUTCOMES[n % len(OUTCOMES)]
    r = common_pb2.AttemptResult(
        execution_id=ex_id,
        token=token,
        outcome=outcome,
        exit_code=0 if outcome == common_pb2.ATTEMPT_SUCCEEDED else 3,
        started_at_ms=at - 500 if outcome != common_pb2.ATTEMPT_NOT_STARTED else 0,
        finished_at_ms=at - 5,
        stdout_tail=b"out %d" % n,
        result=b'{"n": %d}' % n if n % 4 == 3 else b"",
        error="" if outcome == common_pb2.ATTEMPT_SUCCEEDED else f"boom {n}",
    )
    return C(stamped_at_ms=at, complete=commands_pb2.Complete(execution_id=ex_id, token=token, result=r))


class Replica:
    def __init__(self, root: Path, *, unread: bool) -> None:
        self.kv = LmdbKV(root)
        self.sm = state.StateMachine(self.kv)
        self.sm.collect_events = True
        self.unread = unread
        self.out: list[bytes] = []

    def apply(self, entries: list[tuple[int, bytes]], *, group: bool) -> None:
        if group:
            unread = [i for i, _ in entries] if self.unread else []
            raws = self.sm.apply_entries(entries, unread=unread)
        else:
            raws = [self.sm.apply_entry(i, p, wanted=not self.unread) for i, p in entries]
        for (i, _), raw in zip(entries, raws, strict=True):
            self.out.append(b"entry %d: " % i + (raw or b"<none>").hex().encode())
        self.out.append(repr(self.sm.take_events()).encode())

    def dump(self) -> list[bytes]:
        lines = []
        with self.kv.read() as txn:
            for db in DATABASES:
                for k, v in txn.scan(db):
                    lines.append(db.encode() + b" " + k.hex().encode() + b" " + v.hex().encode())
        return lines


def run(steps: int, root: Path, *, old_store: bool = False) -> list[bytes]:
    reader = Replica(root / "read", unread=False)
    follower = Replica(root / "unread", unread=True)
    ids = Ids()
    index = 0
    n_complete = 0
    audit = audit_pb2.AuditMeta(principal="alice", peer="ipv4:127.0.0.1:1", method="M")

    def feed(entries: list[list[C]], *, group: bool) -> None:
        nonlocal index
        batch = []
        for cmds in entries:
            if cmds:
                index += 1
                batch.append((index, encode_batch(cmds)))
        for r in (reader, follower):
            r.apply(batch, group=group)

    task_ids = [tid(i) for i in range(len(specs()))]
    limits = commands_pb2.Limits(max_tasks=100, max_pending_per_task=6, max_result_bytes=10)
    feed([[C(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))]], group=False)
    feed(
        [
            [
                C(
                    request_id=f"create-{i}",
                    stamped_at_ms=T0,
                    limits=limits,
                    audit=audit if i % 2 else None,
                    create_task=commands_pb2.CreateTask(task_id=t, spec=s),
                )
                for i, (t, s) in enumerate(zip(task_ids, specs(), strict=True))
            ]
        ],
        group=False,
    )
    if old_store:  # as a store made before the search indexes: none of them, and META_INDEXED unset
        for r in (reader, follower):
            with r.kv.write() as txn:
                txn.delete("meta", META_INDEXED)
                for db in SEARCH_INDEXES:
                    for k in [k for k, _ in txn.scan(db)]:
                        txn.delete(db, k)
    for step in range(1, steps + 1):
        now = T0 + step * MINUTE + 7
        POISON.clear()
        with reader.kv.read() as txn:
            due = state.due_tasks(txn, now)
            tasks = {t: state.read_task(txn, t) for _, t in due}
            pending = state.pending_executions(txn)
            running = list(state.running_executions(txn))
        # Entry A: completes of the running executions; entry B: grants of the pending ones.
        completes = []
        for ex in running:
            n_complete += 1
            if n_complete % 11 == 5:
                POISON.add(("complete", ex.execution_id))
            completes.append(complete(ex.execution_id, ex.token, now, n_complete))
        grants = [
            C(
                stamped_at_ms=now,
                grant=commands_pb2.Grant(
                    execution_id=ex.execution_id, worker_id=f"w{i % 3}", lease_ttl_ms=1000
                ),
            )
            for i, ex in enumerate(pending)
        ]
        if step % 6 == 2 and grants:
            POISON.add(("grant", grants[0].grant.execution_id))
        # Entry C: the fires, some granted and completed in the same entry (the token's index is the entry's).
        # At steps 16 and 26 the misc entry (a new epoch, a prune) comes before the grants and fires of its
        # transaction: what apply reads once per transaction must be read again after it.
        misc = _misc(step, now, task_ids, pending, running, ids, audit)
        misc_first = step in {16, 26}
        first_fire_index = index + 1 + sum(1 for e in (completes, grants, misc if misc_first else []) if e)
        fires: list[C] = []
        for j, (_, t) in enumerate(due):
            task = tasks[t]
            if task is None or not task.next_fire_ms:
                continue
            e = ids.execution(now)
            fires.append(
                C(
                    stamped_at_ms=now,
                    limits=limits,
                    fire=commands_pb2.Fire(task_id=t, nominal_time_ms=task.next_fire_ms, execution_id=e),
                )
            )
            if step % 9 == 4 and j == 0:
                POISON.add(("fire", e))
            if j % 2 == 0:
                fires.append(
                    C(
                        stamped_at_ms=now,
                        grant=commands_pb2.Grant(execution_id=e, worker_id="w9", lease_ttl_ms=1000),
                    )
                )
                if j % 4 == 0:
                    n_complete += 1
                    token = common_pb2.FencingToken(term=1, index=first_fire_index)
                    fires.append(complete(e, token, now, n_complete))
        group = step % 3 != 0
        feed(
            [completes, misc, grants, fires] if misc_first else [completes, grants, fires, misc], group=group
        )
    lines = []
    for name, r in (("read", reader), ("unread", follower)):
        lines.append(b"== store " + name.encode())
        lines += r.dump()
        lines.append(b"== results " + name.encode())
        lines += r.out
        r.kv.close()
    return lines


def _misc(  # noqa: PLR0917 (one call site, every argument named by position there)
    step: int,
    now: int,
    task_ids: list[str],
    pending: list[common_pb2.Execution],
    running: list[common_pb2.Execution],
    ids: Ids,
    audit: audit_pb2.AuditMeta,
) -> list[C]:
    out: list[C] = []
    rid = f"misc-{step}"
    if step == 5:
        out.append(
            C(request_id=rid, stamped_at_ms=now, pause_task=commands_pb2.PauseTask(task_id=task_ids[1]))
        )
    if step == 9:
        out.append(
            C(
                request_id=rid,
                stamped_at_ms=now,
                resume_task=commands_pb2.ResumeTask(task_id=task_ids[1], replay_missed=True),
            )
        )
    if step == 7:
        s = specs()[2]
        s.name = "delay-renamed"
        s.tags["team"] = "c"
        s.tags["new"] = "1"
        out.append(
            C(
                request_id=rid,
                stamped_at_ms=now,
                update_task=commands_pb2.UpdateTask(task_id=task_ids[2], spec=s),
            )
        )
    if step in (4, 12, 13):
        out.append(
            C(
                stamped_at_ms=now,
                audit=audit,
                trigger_task=commands_pb2.TriggerTask(task_id=task_ids[3], execution_id=ids.execution(now)),
            )
        )
    if step % 5 == 0 and pending:
        ex = pending[-1]
        out.append(
            C(
                request_id=rid,
                stamped_at_ms=now,
                cancel_execution=commands_pb2.CancelExecution(execution_id=ex.execution_id, reason="stop"),
            )
        )
    if step % 7 == 3 and running:
        ex = running[0]
        out.append(
            C(stamped_at_ms=now, cancel_execution=commands_pb2.CancelExecution(execution_id=ex.execution_id))
        )
    if step == 16:
        out.append(C(stamped_at_ms=now, epoch=commands_pb2.Epoch(term=2, leader_id="n2")))
    if step == 18:
        out.append(C(stamped_at_ms=now, delete_task=commands_pb2.DeleteTask(task_id=task_ids[4], force=True)))
    if step % 4 == 2 and running:
        ex = running[-1]
        lease = commands_pb2.ExpireLease(
            execution_id=ex.execution_id, token=ex.token, unstarted=step % 8 == 2
        )
        out.append(C(stamped_at_ms=now, expire_lease=lease))
        if step == 10:
            POISON.add(("expire_lease", ex.execution_id))
    if step % 3 == 1:
        for ex in running[:2]:
            out.append(
                C(
                    stamped_at_ms=now,
                    append_output=commands_pb2.AppendOutput(
                        execution_id=ex.execution_id, token=ex.token, stream=1, data=b"line %d\n" % step
                    ),
                )
            )
    if step % 5 == 3:
        for ex in pending[:2]:
            out.append(
                C(stamped_at_ms=now, expire_pending=commands_pb2.ExpirePending(execution_id=ex.execution_id))
            )
            out.append(
                C(
                    stamped_at_ms=now,
                    note_waiting=commands_pb2.NoteWaiting(execution_id=ex.execution_id, reason="x"),
                )
            )
    if step == 14:
        out.append(
            C(
                request_id=rid,
                stamped_at_ms=now,
                redrive_dead_letters=commands_pb2.RedriveDeadLetters(task_id=task_ids[0]),
            )
        )
    if step == 26:
        out.append(
            C(
                stamped_at_ms=now,
                prune=commands_pb2.Prune(
                    defaults=commands_pb2.RetentionPolicy(keep_executions=8), max_deletes=50
                ),
            )
        )
    if step == 28:
        out.append(
            C(
                request_id=rid,
                stamped_at_ms=now,
                backfill_task=commands_pb2.BackfillTask(
                    task_id=task_ids[6], from_ms=T0 + 3 * MINUTE, to_ms=T0 + 20 * MINUTE, max_fires=3
                ),
            )
        )
    if step == 30:
        out.append(
            C(request_id=rid, stamped_at_ms=now, cancel_task=commands_pb2.CancelTask(task_id=task_ids[5]))
        )
    if step == 33:
        out.append(
            C(
                request_id=rid,
                stamped_at_ms=now,
                purge_dead_letters=commands_pb2.PurgeDeadLetters(task_id=task_ids[0], limit=2),
            )
        )
    if step == 20:  # a duplicate: answered from the dedup table
        out.append(
            C(request_id="misc-5", stamped_at_ms=now, pause_task=commands_pb2.PauseTask(task_id=task_ids[1]))
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--old-store", action="store_true", help="as if the store predated the search indexes")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lines = run(args.steps, Path(tmp), old_store=args.old_store)
    data = b"\n".join(lines) + b"\n"
    Path(args.out).write_bytes(data)
    print(f"{state.__file__}: {len(lines)} lines, sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
