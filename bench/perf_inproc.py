"""In-process cost of the fire path on one replica (no network, no Raft): LeaderCore + StateMachine over
LMDB in a temporary directory, a fake worker that answers every lease at once.

Usage: .venv/bin/python bench/perf_inproc.py [--n 20000] [--profile] [--batch 2048] [--repeat 3]
Prints microseconds per execution for each phase (create, fire+grant apply, leader bookkeeping, complete
apply), i.e. the CPU one replica spends per execution; the leader pays all of it, each follower the
apply part.

       .venv/bin/python bench/perf_inproc.py --per-command [--repeat 5]
Apply cost of each command kind alone (2048 one-time tasks: create, then one entry of Fire, one of Grant,
one of Complete), in CPU microseconds per command, fastest of the repeats.

       .venv/bin/python bench/perf_inproc.py --worker [--n 10000] [--repeat 3]
CPU per in-process handler attempt on the worker side (InProcessRunner + run_handler, async no-op
handler, all attempts at once), with CPython's default GC thresholds and with schedworker's.

All timings are process CPU time (time.process_time), so that other load on the machine inflates them
less than wall time; still compare runs taken back to back.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft.codec import encode_batch, make_id
from cronraft.raft.state import StateMachine, read_execution
from cronraft.raft.store import LmdbKV

T0 = 1_767_225_600_000
Command = commands_pb2.Command


class Replica:
    def __init__(self, root: Path) -> None:
        self.kv = LmdbKV(root)
        self.sm = StateMachine(self.kv)
        self.index = self.sm.last_applied()
        self.apply_s = 0.0

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        self.index += 1
        payload = encode_batch(cmds)
        t = time.process_time()
        raw = self.sm.apply_entry(self.index, payload)
        self.apply_s += time.process_time() - t
        assert raw is not None
        return list(commands_pb2.BatchResult.FromString(raw).results)

    def apply_group(
        self, entries: list[list[Command]], *, unread: bool = False
    ) -> list[commands_pb2.CommandResult]:
        """`entries` applied in one write transaction (StateMachine.apply_entries); their results."""
        first = self.index + 1
        self.index += len(entries)
        batch = [(first + i, encode_batch(cmds)) for i, cmds in enumerate(entries)]
        t = time.process_time()
        raws = self.sm.apply_entries(batch, unread=range(first, self.index + 1) if unread else ())
        self.apply_s += time.process_time() - t
        out: list[commands_pb2.CommandResult] = []
        for raw in raws:
            assert raw is not None
            out.extend(commands_pb2.BatchResult.FromString(raw).results)
        return out


def succeeded(lease: worker_pb2.Lease, now: int, return_value: bytes = b"") -> common_pb2.AttemptResult:
    """A fake worker's result: the leased attempt succeeded at `now`, started and finished at once."""
    return common_pb2.AttemptResult(
        execution_id=lease.execution_id,
        token=lease.token,
        outcome=common_pb2.ATTEMPT_SUCCEEDED,
        started_at_ms=now,
        finished_at_ms=now,
        return_value=return_value,
    )


def answer_offers(core: LeaderCore, now: int) -> list[common_pb2.AttemptResult]:
    """A fake worker: a success at `now` for every lease the core has offered since the last call."""
    out: list[common_pb2.AttemptResult] = []
    for _worker, msg in core.drain_outgoing():
        if msg.WhichOneof("kind") == "leases":
            out.extend(succeeded(lease, now, b"null") for lease in msg.leases.leases)
    return out


class ReplicaSet:
    """A leader replica and `followers` more under `root`; `apply` gives every one each entry and returns
    the leader's results."""

    def __init__(self, root: Path, followers: int) -> None:
        self.leader = Replica(root / "leader")
        self.followers = [Replica(root / f"f{i}") for i in range(followers)]
        self.all = [self.leader, *self.followers]

    def apply(self, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
        out = self.leader.apply(cmds)
        for f in self.followers:
            f.apply(cmds)
        return out

    def close(self) -> None:
        for r in self.all:
            r.kv.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--followers", type=int, default=0, help="also apply every entry on this many replicas")
    p.add_argument("--repeat", type=int, default=1, help="run this many times; report the fastest run")
    p.add_argument("--per-command", action="store_true", help="apply cost of each command kind alone")
    p.add_argument("--worker", action="store_true", help="worker-side CPU per in-process attempt")
    p.add_argument(
        "--group",
        type=int,
        default=1,
        help="with --per-command: apply this many entries per write transaction (StateMachine.apply_entries)",
    )
    p.add_argument(
        "--unread",
        action="store_true",
        help="with --per-command: results nobody reads, as on a follower (apply_entries(unread=...))",
    )
    p.add_argument(
        "--per-entry",
        type=int,
        default=0,
        help="with --per-command: this many commands per log entry (default: all 2,048 of a kind in one)",
    )
    args = p.parse_args()
    if args.per_command:
        per_command(args.repeat, args.per_entry, group=args.group, unread=args.unread, profile=args.profile)
        return
    if args.worker:
        worker_attempts(args.n, args.repeat)
        return
    runs = [run(args) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r[0])
    print(best[1])


def _spec(due: int) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(
        name="perf",
        schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due)),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
        queue="default",
        timeout_ms=60_000,
        max_attempts=3,
        guarantee=common_pb2.AT_LEAST_ONCE,
        priority=common_pb2.MEDIUM,
    )
    spec.tags["perf"] = "1"
    return spec


def per_command(
    repeat: int, per_entry: int = 0, *, group: int = 1, unread: bool = False, profile: bool = False
) -> None:
    best: dict[str, float] = {}
    prof = cProfile.Profile() if profile else None
    for _ in range(max(1, repeat)):
        once = _per_command_once(per_entry=per_entry, group=group, unread=unread, prof=prof)
        for kind, us in once.items():
            best[kind] = min(best.get(kind, us), us)
    per_execution = best["fire"] + best["grant"] + best["complete"]
    if prof:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    size = f"{per_entry} per entry" if per_entry else "2,048 per entry"
    if group > 1:
        size += f", {group} entries per transaction"
    if unread:
        size += ", results unread"
    print(
        f"apply, CPU us per command ({size}, fastest of {max(1, repeat)}): "
        + ", ".join(f"{k} {v:.1f}" for k, v in best.items())
        + f"; fire+grant+complete = {per_execution:.1f} us per execution per replica"
    )


def _per_command_once(
    n: int = 2048,
    *,
    per_entry: int = 0,
    group: int = 1,
    unread: bool = False,
    prof: cProfile.Profile | None = None,
) -> dict[str, float]:
    """Apply cost per command of each kind; `per_entry` commands per entry (0: all `n` in one), `group`
    entries per write transaction, results read (a leader's) or not (`unread`, a follower's: the grant
    tokens are then taken from the stored executions). The create entry is not profiled."""
    spent: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        replica = Replica(Path(tmp))

        def timed(kind: str, cmds: list[Command]) -> list[commands_pb2.CommandResult]:
            before = replica.apply_s
            size = per_entry if per_entry > 0 and kind != "create" else len(cmds)
            res: list[commands_pb2.CommandResult] = []
            if prof and kind != "create":
                prof.enable()
            entries = [cmds[i : i + size] for i in range(0, len(cmds), size)]
            for i in range(0, len(entries), group):
                if group == 1 and not unread:  # as a node applies today: one transaction per entry
                    res += replica.apply(entries[i])
                else:
                    res += replica.apply_group(entries[i : i + group], unread=unread and kind != "create")
            if prof and kind != "create":
                prof.disable()
            spent[kind] = (replica.apply_s - before) / len(cmds) * 1e6
            return res

        due = T0 + 60_000
        tids = [make_id(T0, i.to_bytes(10, "big")) for i in range(n)]
        eids = [make_id(due, (n + i).to_bytes(10, "big")) for i in range(n)]
        spec = _spec(due)
        timed(
            "create",
            [
                Command(
                    request_id=f"c{i}",
                    stamped_at_ms=T0,
                    create_task=commands_pb2.CreateTask(task_id=t, spec=spec),
                )
                for i, t in enumerate(tids)
            ],
        )
        replica.apply([Command(stamped_at_ms=T0, epoch=commands_pb2.Epoch(term=1, leader_id="n1"))])
        fire = commands_pb2.Fire
        timed(
            "fire",
            [
                Command(stamped_at_ms=due, fire=fire(task_id=t, nominal_time_ms=due, execution_id=e))
                for t, e in zip(tids, eids, strict=True)
            ],
        )
        grant = commands_pb2.Grant
        res = timed(
            "grant",
            [
                Command(stamped_at_ms=due, grant=grant(execution_id=e, worker_id="w1", lease_ttl_ms=1000))
                for e in eids
            ],
        )
        with replica.kv.read() as txn:
            tokens = [read_execution(txn, e).token for e in eids]  # type: ignore[union-attr]
        ok = common_pb2.ATTEMPT_SUCCEEDED
        res = timed(
            "complete",
            [
                Command(
                    stamped_at_ms=due,
                    complete=commands_pb2.Complete(
                        execution_id=e,
                        token=tk,
                        result=common_pb2.AttemptResult(
                            execution_id=e, token=tk, outcome=ok, started_at_ms=due, finished_at_ms=due
                        ),
                    ),
                )
                for e, tk in zip(eids, tokens, strict=True)
            ],
        )
        assert unread or all(r.applied for r in res)
        with replica.kv.read() as txn:
            assert all(read_execution(txn, e).state == common_pb2.EXECUTION_SUCCEEDED for e in eids)  # type: ignore[union-attr]
        replica.kv.close()
    return spent


def worker_attempts(n: int, repeat: int) -> None:
    import asyncio
    import functools
    import gc

    from cronraft.client._inprocess_runner import InProcessRunner
    from cronraft.client.handlers import HandlerRegistry, run_handler
    from cronraft.client.worker import cli as worker_module
    from cronraft.clock import SystemClock

    registry = HandlerRegistry()

    @registry.handler("noop")
    async def noop(ctx: object) -> None:
        return None

    async def attempts() -> float:
        clock = SystemClock()
        payload = common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop"))
        leases = [
            worker_pb2.Lease(
                execution_id=make_id(T0, i.to_bytes(10, "big")),
                task_id="T",
                attempt=1,
                token=common_pb2.FencingToken(term=1, index=i + 1),
                payload=payload,
                timeout_ms=60_000,
            )
            for i in range(n)
        ]

        async def one(lease: worker_pb2.Lease) -> common_pb2.AttemptResult:
            work = functools.partial(run_handler, registry, lease)
            return await InProcessRunner(lease, work, what="handler", clock=clock).run()

        t = time.process_time()
        results = await asyncio.gather(*(one(lease) for lease in leases))
        spent = time.process_time() - t
        assert all(r.outcome == common_pb2.ATTEMPT_SUCCEEDED for r in results)
        return spent / n * 1e6

    default = min(asyncio.run(attempts()) for _ in range(max(1, repeat)))
    gc.freeze()
    gc.set_threshold(getattr(worker_module, "_GC_THRESHOLD", 700), 20, 20)
    tuned = min(asyncio.run(attempts()) for _ in range(max(1, repeat)))
    print(
        f"worker, CPU us per in-process attempt ({n} at once, fastest of {max(1, repeat)}): "
        f"{default:.1f} with default GC thresholds, {tuned:.1f} with schedworker's"
    )


def run(args: argparse.Namespace) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        rs = ReplicaSet(Path(tmp), args.followers)
        leader, followers, replicas, apply = rs.leader, rs.followers, rs.all, rs.apply

        due = T0 + 60_000
        spec = common_pb2.TaskSpec(
            name="perf",
            schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=due)),
            payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="noop")),
            queue="default",
            timeout_ms=60_000,
            max_attempts=3,
            guarantee=common_pb2.AT_LEAST_ONCE,
            priority=common_pb2.MEDIUM,
        )
        spec.tags["perf"] = "1"
        t = time.process_time()
        for start in range(0, args.n, args.batch):
            apply(
                [
                    Command(
                        request_id=f"create:{i}",
                        stamped_at_ms=T0,
                        create_task=commands_pb2.CreateTask(
                            task_id=make_id(T0, i.to_bytes(10, "big")), spec=spec
                        ),
                    )
                    for i in range(start, min(args.n, start + args.batch))
                ]
            )
        create_s = time.process_time() - t
        core = LeaderCore(
            leader.kv,
            LeaderSettings(horizon_ms=10_000, max_commands_per_tick=2 * args.batch),
            node_id="n1",
            term=1,
            new_id=lambda ms: make_id(ms, time.perf_counter_ns().to_bytes(10, "big")),
        )
        apply([core.epoch_command(T0)])
        core.on_epoch_committed(due - 5_000, 0)
        core.worker_connected("w1", args.n, ["default"], {})
        for r in replicas:
            r.apply_s = 0.0
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        t_all = time.process_time()
        fired = completed = 0
        tick_s = commit_s = results_s = 0.0
        now = due
        pending_results: list[common_pb2.AttemptResult] = []
        while completed < args.n:
            t = time.process_time()
            cmds = core.tick(now, 1)
            tick_s += time.process_time() - t
            t = time.process_time()
            cmds += core.results("w1", pending_results, now)
            pending_results = []
            results_s += time.process_time() - t
            if not cmds:
                now += 10
                continue
            for i in range(0, len(cmds), args.batch):
                chunk = cmds[i : i + args.batch]
                res = apply(chunk)
                t = time.process_time()
                core.on_committed(chunk, res, now, 1)
                commit_s += time.process_time() - t
                fired += sum(1 for c in chunk if c.HasField("fire"))
                completed += sum(
                    1 for c, r in zip(chunk, res, strict=True) if c.HasField("complete") and r.applied
                )
            t = time.process_time()
            pending_results += answer_offers(core, now)
            results_s += time.process_time() - t
        total_s = time.process_time() - t_all
        if prof:
            prof.disable()
        n = args.n
        text = (
            f"create: {create_s / n * 1e6:.0f} us/task per replica set ({len(replicas)} replicas)\n"
            f"execution path, one process: {total_s / n * 1e6:.0f} us/execution "
            f"({n / total_s:.0f}/s); leader apply {leader.apply_s / n * 1e6:.0f} us, "
            f"follower apply {sum(f.apply_s for f in followers) / max(1, len(followers)) / n * 1e6:.0f} us, "
            f"tick {tick_s / n * 1e6:.0f} us, on_committed {commit_s / n * 1e6:.0f} us, "
            f"results {results_s / n * 1e6:.0f} us"
        )
        if prof:
            stats = pstats.Stats(prof)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
        for r in replicas:
            r.kv.close()
        return total_s, text


if __name__ == "__main__":
    main()
