"""Apply CPU of each replica through the real replication path, in one process (issue 16).

Three SyncObjReplicators on loopback, each over its own LMDB store and StateMachine, as daemon/node.py
wires them; the leader proposes Fire, then Grant, then Complete entries of `--per-entry` commands each
for `--n` one-time tasks, with `--in-flight` proposals outstanding, so that the apply threads see entries
arrive as a node does under load. Each apply thread's CPU (time.thread_time, around the state machine's
apply only) is summed per node and divided by the executions.

Beside it, each node's whole threads: its Raft thread (pysyncobj's tick: messages, journal, commit) and its
apply thread (hand-off, grouping, answers, and the apply), read with `time.pthread_getcpuclockid` before
and after the measured window. "around apply" is both threads' CPU less the apply itself: what a node
spends per execution on the path around the state machine (issue 16). The proposing event loop (this
script's main thread, shared) is reported apart. At the end the three stores must hold the same bytes,
however each grouped its entries. `--idle-s S` first measures S seconds with nothing proposed: each
node's CPU per second for heartbeats, keepalives and ticks. `--rate R` paces the proposals at R entries a
second, as a leader under a steady load (W5 at 1,000 fires/s: about 70 entries a second of ~14 fires'
commands each: `--per-entry 16 --rate 70 --in-flight 4`), so that each entry travels and applies alone,
with the ticks and heartbeats between entries counted.

Usage: .venv/bin/python bench/perf_replicas.py [--n 4096] [--per-entry 1] [--in-flight 64] [--no-groups]
    [--idle-s 0] [--rate 0]

`--no-groups` applies one entry per store transaction (the replicator without `apply_many`). Grouping
(raft.apply_thread) needs the replicator to accept `apply_many`; where it does not, the script says so and
measures one entry per transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import sys
import tempfile
import threading
import time
from collections.abc import Container, Sequence
from contextlib import suppress
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.kv import DATABASES
from cronraft.raft.replicator import RaftMember, ReplicatorConfig
from cronraft.raft.state import StateMachine, read_execution
from cronraft.raft.store import LmdbKV
from cronraft.raft.syncobj_replicator import SyncObjReplicator
from tests.support.ports import free_ports

T0 = 1_767_225_600_000
DUE = T0 + 60_000
Command = commands_pb2.Command


class Node:
    def __init__(self, config: ReplicatorConfig, *, groups: bool) -> None:
        self.kv = LmdbKV(config.data_dir / "state", map_size=1 << 30)
        self.sm = StateMachine(self.kv)
        self.cpu_s = 0.0
        self.entries = 0
        self.calls = 0
        self._lock = threading.Lock()
        self.rep = SyncObjReplicator(
            config,
            self.apply,
            self.kv,
            applied_index=self.sm.last_applied,
            apply_many=self.apply_many if groups else None,  # None: the default, one entry per apply
        )

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds so far of this node's threads, by role (raft, apply)."""
        found = {}
        for role, thread in self.rep.threads().items():
            if thread.ident is not None:
                with suppress(OSError):
                    found[role] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        return found

    def digest(self) -> str:
        """A digest of every key and value of every database (the same on every replica)."""
        h = hashlib.sha256()
        with self.kv.read() as txn:
            for db in DATABASES:
                for k, v in txn.scan(db):
                    h.update(b"%s %d %d " % (db.encode(), len(k), len(v)) + k + v)
        return h.hexdigest()

    def apply(self, index: int, payload: bytes) -> bytes | None:
        t = time.thread_time()
        out = self.sm.apply_entry(index, payload)
        self.cpu_s += time.thread_time() - t
        self.entries += 1
        self.calls += 1
        return out

    def apply_many(self, entries: Sequence[tuple[int, bytes]], unread: Container[int]) -> list[bytes | None]:
        t = time.thread_time()
        out = self.sm.apply_entries(entries, unread=unread)
        self.cpu_s += time.thread_time() - t
        self.entries += len(entries)
        self.calls += 1
        return out


def _spec() -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(
        name="perf",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=DUE)),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
        queue="default",
        timeout_ms=60_000,
        max_attempts=3,
    )
    spec.tags["perf"] = "1"
    return spec


async def _propose_all(
    leader: Node, entries: list[list[Command]], in_flight: int, rate: float = 0.0
) -> list[bytes]:
    """Propose `entries`, at most `in_flight` outstanding; with `rate`, at most that many a second (the
    i-th no earlier than i / rate seconds in), as a leader under a steady load proposes them."""
    sem = asyncio.Semaphore(in_flight)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int, cmds: list[Command]) -> bytes:
        if rate > 0:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        async with sem:
            return await leader.rep.propose(encode_batch(cmds), timeout_s=120)

    return list(await asyncio.gather(*(one(i, c) for i, c in enumerate(entries))))


async def run(args: argparse.Namespace, groups: bool) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        members = [RaftMember(f"n{i + 1}", f"127.0.0.1:{p}") for i, p in enumerate(free_ports(3))]
        nodes = [
            Node(
                ReplicatorConfig(
                    self_member=m,
                    peers=tuple(p for p in members if p != m),
                    data_dir=Path(tmp) / m.node_id,
                    secret="perf-replicas",
                    election_timeout_ms=1000,
                    heartbeat_ms=50,
                ),
                groups=groups,
            )
            for m in members
        ]
        for node in nodes:
            node.rep.start()
        try:
            leader = None
            for _ in range(600):
                ready = [n for n in nodes if n.rep.status().is_leader and n.rep.status().ready]
                if ready:
                    leader = ready[0]
                    break
                await asyncio.sleep(0.05)
            assert leader is not None, "no leader"
            n, k = args.n, args.per_entry
            tids = [make_id(T0, i.to_bytes(10, "big")) for i in range(n)]
            eids = [make_id(DUE, (n + i).to_bytes(10, "big")) for i in range(n)]
            spec = _spec()
            creates = [
                Command(stamped_at_ms=T0, create_task=commands_pb2.CreateTask(task_id=t, spec=spec))
                for t in tids
            ]
            await _propose_all(leader, [creates[i : i + 512] for i in range(0, n, 512)], 4)
            epoch = Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))
            await _propose_all(leader, [[epoch]], 1)
            await _settle(nodes, leader)
            for node in nodes:
                node.cpu_s, node.entries, node.calls = 0.0, 0, 0
            idle = ""
            if args.idle_s > 0:  # heartbeats, keepalives and ticks only: what a node pays per second
                start = [node.thread_cpu() for node in nodes]
                await asyncio.sleep(args.idle_s)
                ends = [node.thread_cpu() for node in nodes]
                per_s = [
                    sum(e[r] - s0.get(r, 0.0) for r in e) / args.idle_s * 1e3
                    for s0, e in zip(start, ends, strict=True)
                ]
                idle = "\n  idle: " + ", ".join(
                    f"{node.rep.status().node_id} {ms:.2f}" for node, ms in zip(nodes, per_s, strict=True)
                )
                idle += " ms of CPU per second (Raft and apply threads)"
            before = [node.thread_cpu() for node in nodes]
            main_before = time.thread_time()

            def chunks(cmds: list[Command]) -> list[list[Command]]:
                return [cmds[i : i + k] for i in range(0, len(cmds), k)]

            fire = [
                Command(
                    stamped_at_ms=DUE,
                    fire=commands_pb2.Fire(task_id=t, nominal_time_ms=DUE, execution_id=e),
                )
                for t, e in zip(tids, eids, strict=True)
            ]
            await _propose_all(leader, chunks(fire), args.in_flight, args.rate)
            grant = [
                Command(
                    stamped_at_ms=DUE,
                    grant=commands_pb2.Grant(execution_id=e, worker_id="w1", lease_ttl_ms=60_000),
                )
                for e in eids
            ]
            await _propose_all(leader, chunks(grant), args.in_flight, args.rate)
            with leader.kv.read() as txn:
                tokens = [read_execution(txn, e).token for e in eids]  # type: ignore[union-attr]
            ok = common_pb2.ATTEMPT_SUCCEEDED
            done = [
                Command(
                    stamped_at_ms=DUE,
                    complete=commands_pb2.Complete(
                        execution_id=e,
                        token=tk,
                        result=common_pb2.AttemptResult(
                            execution_id=e, token=tk, outcome=ok, started_at_ms=DUE, finished_at_ms=DUE
                        ),
                    ),
                )
                for e, tk in zip(eids, tokens, strict=True)
            ]
            results = await _propose_all(leader, chunks(done), args.in_flight, args.rate)
            assert all(r.applied for raw in results for r in commands_pb2.BatchResult.FromString(raw).results)
            await _settle(nodes, leader)
            main_cpu = time.thread_time() - main_before
            after = [node.thread_cpu() for node in nodes]
            digests = {node.digest() for node in nodes}
            assert len(digests) == 1, "the replicas' stores differ"
            with nodes[1].kv.read() as txn:
                assert all(
                    read_execution(txn, e).state == common_pb2.EXECUTION_SUCCEEDED  # type: ignore[union-attr]
                    for e in eids
                )
            lines = []
            for node, b, a in zip(nodes, before, after, strict=True):
                role = "leader" if node is leader else "follower"
                used = {r: (a[r] - b.get(r, 0.0)) / n * 1e6 for r in a}
                whole = sum(used.values())
                lines.append(
                    f"  {node.rep.status().node_id} ({role}): apply {node.cpu_s / n * 1e6:.0f} us, "
                    f"raft thread {used.get('raft', 0.0):.0f} us, apply thread {used.get('apply', 0.0):.0f}"
                    f" us, around apply {whole - node.cpu_s / n * 1e6:.0f} us per execution; "
                    f"{node.entries / max(1, node.calls):.1f} entries per transaction"
                )
            total = sum(node.cpu_s for node in nodes) / n * 1e6
            mode = "groups" if groups else "one entry per transaction"
            return (
                f"{mode}, {k} per entry, {n} executions ({3 * -(-n // k)} entries"
                + (f" at {args.rate:g}/s" if args.rate else "")
                + "):\n"
                + "\n".join(lines)
                + f"\n  all three apply {total:.0f} us/execution; proposing loop {main_cpu / n * 1e6:.0f} us"
                + idle
            )
        finally:
            for node in nodes:
                node.rep.stop()
                node.kv.close()


async def _settle(nodes: list[Node], leader: Node) -> None:
    target = leader.rep.status().commit_index
    for _ in range(1200):
        if all(n.rep.status().applied_index >= target for n in nodes):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the followers did not catch up")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4096, help="executions (one-time tasks)")
    p.add_argument("--per-entry", type=int, default=1, help="commands per log entry")
    p.add_argument("--in-flight", type=int, default=64, help="proposals outstanding at once")
    p.add_argument("--no-groups", action="store_true", help="one entry per store transaction")
    p.add_argument("--idle-s", type=float, default=0.0, help="also measure this long with nothing proposed")
    p.add_argument("--rate", type=float, default=0.0, help="entries proposed per second (default: at once)")
    args = p.parse_args()
    groups = not args.no_groups
    if groups and "apply_many" not in inspect.signature(SyncObjReplicator).parameters:
        print("this SyncObjReplicator takes no apply_many: one entry per transaction")
        groups = False
    print(asyncio.run(run(args, groups)))


if __name__ == "__main__":
    main()
