"""Storage sizing and retention throughput on one replica, in process (no network, no Raft): the figures
of docs/operations.md.

Usage: .venv/bin/python bench/storage_sizing.py [--tasks 20000] [--executions 20000] [--logs 200]

Measures, in an LMDB store in a temporary directory, the bytes of pages holding data (LmdbKV.usage:
every sub-database, B-tree pages included) that each kind of record adds:

- a task: a cron task with a command of three words and two tags, created in ImportTasks batches of
  1,000 (as the bulk API does); and the dedup record a CreateTask with a request id leaves for a day;
- an execution: a manual fire, a lease and a result with a 200-byte stdout tail (its ledger record and
  every index entry included), after the task fired `--executions` times;
- output: pieces of 16 KiB (a worker's chunk) up to 1 MiB per execution, per KiB stored;

then the CPU time apply spends deleting: a Prune step (`--executions` over their age) per deleted
execution, and a DeleteTask of a task with 10,000 executions. With `--cluster N`, also the deletion rate
of N executions by a real 3-node cluster's retention steps. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.state import StateMachine
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000
DAY = 86_400_000
Command = commands_pb2.Command


class Replica:
    def __init__(self, root: Path) -> None:
        self.kv = LmdbKV(root, map_size=1 << 30, max_map_size=16 << 30)
        self.sm = StateMachine(self.kv)
        self.index = 0
        self.apply_cpu_s = 0.0

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        payload = encode_batch(cmds)
        t = time.process_time()
        raw = self.sm.apply_entry(self.index, payload)
        self.apply_cpu_s += time.process_time() - t
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    def used(self) -> int:
        return self.kv.usage().used


def spec(i: int) -> common_pb2.TaskSpec:
    s = common_pb2.TaskSpec(
        name=f"report-{i:08d}",
        schedule=common_pb2.Schedule(
            cron=common_pb2.CronSchedule(expression="0 2 * * *", time_zone="Europe/Paris")
        ),
        payload=common_pb2.Payload(
            command=common_pb2.CommandPayload(argv=["/usr/local/bin/report", "--daily", str(i)])
        ),
        queue="default",
        timeout_ms=3_600_000,
        max_attempts=3,
        guarantee=common_pb2.AT_LEAST_ONCE,
        priority=common_pb2.MEDIUM,
    )
    s.tags["team"] = "data"
    s.tags["env"] = "prod"
    return s


def task_id(n: int) -> str:
    return make_id(T0, n.to_bytes(10, "big"))


def cluster_prune_rate(executions: int) -> dict[str, float | int]:
    """A real 3-node cluster (bench.common.BenchCluster, 2 workers): `executions` runs of one task
    (backfills of 1,000, the bench.noop handler), then its retention lowered to 1 ms: the time until the
    leader's retention steps (the default [retention]: 500 records a step) have deleted them all."""
    from bench.common import BenchCluster, handler_spec, wait_for
    from cronraft.client import Client, every, retention

    with BenchCluster(nodes=3) as bench:
        bench.start_workers(2, capacity=64)
        with Client(bench.servers, timeout_s=60) as client:
            start = int(time.time() * 1000) - 3 * DAY
            spec = handler_spec("prune-me", every("1s", start))
            spec.retention.keep_executions = -1  # everything kept until the test lowers it
            spec.retention.execution_max_age_ms = -1
            task = client.create_task_spec(spec)
            for k in range(0, executions, 1000):
                client.backfill_task(task.task_id, start + k * 1000, start + (k + 999) * 1000, 1000)

            def all_ended() -> bool:
                if client.get_task(task.task_id).stored_executions < executions:
                    return False
                return not any(
                    client.list_executions_page(task.task_id, state=s, page_size=1)[0]
                    for s in ("pending", "running", "buffered")
                )

            wait_for(all_ended, 900, "every backfilled run to end", interval_s=1.0)
            begin = time.monotonic()
            client.edit_task(task.task_id, retention=retention(max_age=1, keep_executions=1))
            wait_for(
                lambda: client.get_task(task.task_id).stored_executions <= 1,
                600,
                "the deletions",
                interval_s=0.2,
            )
            took = time.monotonic() - begin
    return {
        "cluster_executions_deleted": executions,
        "cluster_delete_s": round(took, 2),
        "cluster_deletes_per_s": round(executions / took),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--executions", type=int, default=20_000)
    p.add_argument("--logs", type=int, default=200, help="executions given 1 MiB of output each")
    p.add_argument(
        "--cluster",
        type=int,
        default=0,
        metavar="N",
        help="also time the deletion of N executions in a cluster",
    )
    args = p.parse_args()
    out: dict[str, float | int] = {}
    if args.cluster:
        out.update(cluster_prune_rate(args.cluster))
    with tempfile.TemporaryDirectory() as tmp:
        r = Replica(Path(tmp) / "db")
        r.apply([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))])

        # Tasks, in bulk batches (no dedup record), then one by one with request ids.
        before = r.used()
        for start in range(0, args.tasks, 1000):
            n = min(1000, args.tasks - start)
            r.apply(
                [
                    Command(
                        stamped_at_ms=T0,
                        import_tasks=commands_pb2.ImportTasks(
                            first_task_id=task_id(1_000_000 + start),
                            specs=[spec(start + i) for i in range(n)],
                        ),
                    )
                ]
            )
        out["bytes_per_task"] = round((r.used() - before) / args.tasks)
        before = r.used()
        n_dedup = min(args.tasks, 5_000)
        for start in range(0, n_dedup, 500):
            r.apply(
                [
                    Command(
                        request_id=f"create:{start + i}",
                        stamped_at_ms=T0,
                        create_task=commands_pb2.CreateTask(task_id=task_id(start + i), spec=spec(start + i)),
                    )
                    for i in range(500)
                ]
            )
        out["bytes_per_task_with_its_dedup_record"] = round((r.used() - before) / n_dedup)

        # Executions of one task: trigger, grant, complete.
        owner = task_id(0)
        before = r.used()
        now = T0 + 1000
        ids = []
        for start in range(0, args.executions, 500):
            batch = min(500, args.executions - start)
            execs = [make_id(now, (start + i).to_bytes(10, "big")) for i in range(batch)]
            ids += execs
            r.apply(
                [
                    Command(
                        stamped_at_ms=now + i,
                        trigger_task=commands_pb2.TriggerTask(task_id=owner, execution_id=e),
                    )
                    for i, e in enumerate(execs)
                ]
            )
            grants = r.apply(
                [
                    Command(
                        stamped_at_ms=now + 600,
                        grant=commands_pb2.Grant(execution_id=e, worker_id="w1", lease_ttl_ms=10_000),
                    )
                    for e in execs
                ]
            )
            r.apply(
                [
                    Command(
                        stamped_at_ms=now + 700,
                        complete=commands_pb2.Complete(
                            execution_id=e,
                            token=g.execution.token,
                            result=common_pb2.AttemptResult(
                                outcome=common_pb2.ATTEMPT_SUCCEEDED, stdout_tail=b"x" * 200
                            ),
                        ),
                    )
                    for e, g in zip(execs, grants, strict=True)
                ]
            )
            now += 1000
        out["bytes_per_execution"] = round((r.used() - before) / args.executions)

        # Output: 1 MiB per execution in 16 KiB pieces, on running executions of another task.
        logger = task_id(1)
        before = r.used()
        for k in range(args.logs):
            e = make_id(now, (10_000_000 + k).to_bytes(10, "big"))
            r.apply(
                [
                    Command(
                        stamped_at_ms=now,
                        trigger_task=commands_pb2.TriggerTask(task_id=logger, execution_id=e),
                    )
                ]
            )
            (g,) = r.apply(
                [
                    Command(
                        stamped_at_ms=now,
                        grant=commands_pb2.Grant(execution_id=e, worker_id="w1", lease_ttl_ms=10_000),
                    )
                ]
            )
            piece = b"log line of a payload\n" * 745  # 16,390 bytes
            r.apply(
                [
                    Command(
                        stamped_at_ms=now,
                        append_output=commands_pb2.AppendOutput(
                            execution_id=e, token=g.execution.token, stream=1, data=piece[: 16 << 10]
                        ),
                    )
                    for _ in range(64)
                ]
            )
            now += 1
        out["bytes_per_log_kib"] = round((r.used() - before) / (args.logs * 1024), 1)

        # Retention: a Prune over the executions, all past their age.
        policy = commands_pb2.RetentionPolicy(execution_max_age_ms=DAY)
        cpu = r.apply_cpu_s
        deleted = 0
        wall = time.perf_counter()
        while True:
            (res,) = r.apply(
                [
                    Command(
                        stamped_at_ms=now + 2 * DAY,
                        prune=commands_pb2.Prune(defaults=policy, max_deletes=500, max_visits=1000),
                    )
                ]
            )
            deleted += res.pruned.executions
            if not res.pruned.more and res.pruned.visited < 1000:
                break
        out["prune_executions_deleted"] = deleted
        out["prune_us_per_execution"] = round((r.apply_cpu_s - cpu) / max(1, deleted) * 1e6, 1)
        out["prune_steps_wall_s"] = round(time.perf_counter() - wall, 2)

        # DeleteTask of a task with 10,000 ended executions (1,000 in the command, the rest in Prune steps).
        big = task_id(2)
        for start in range(0, 10_000, 500):
            execs = [make_id(now, (20_000_000 + start + i).to_bytes(10, "big")) for i in range(500)]
            r.apply(
                [
                    Command(
                        stamped_at_ms=now + i,
                        trigger_task=commands_pb2.TriggerTask(task_id=big, execution_id=e),
                    )
                    for i, e in enumerate(execs)
                ]
            )
            r.apply(
                [
                    Command(
                        stamped_at_ms=now + 600,
                        cancel_execution=commands_pb2.CancelExecution(execution_id=e, reason="sizing"),
                    )
                    for e in execs
                ]
            )
            now += 1000
        cpu = r.apply_cpu_s
        (res,) = r.apply([Command(stamped_at_ms=now, delete_task=commands_pb2.DeleteTask(task_id=big))])
        out["delete_task_cpu_ms"] = round((r.apply_cpu_s - cpu) * 1000, 1)
        out["delete_task_executions_in_command"] = res.pruned.executions
        steps = 0
        while res.pruned.more:
            (res,) = r.apply(
                [
                    Command(
                        stamped_at_ms=now,
                        prune=commands_pb2.Prune(
                            defaults=commands_pb2.RetentionPolicy(), max_deletes=500, max_visits=1
                        ),
                    )
                ]
            )
            steps += 1
        out["delete_task_total_cpu_ms"] = round((r.apply_cpu_s - cpu) * 1000, 1)
        out["delete_task_prune_steps"] = steps
        r.kv.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
