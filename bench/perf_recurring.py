"""In-process cost of W5's fire path on one replica: N fixed-rate tasks every second, steady state.

W1 (bench/perf_inproc.py) fires one-time tasks once each; W5's tasks recur, so every fire also plans
the next one, trims the task's history to its count of executions, prunes its ledger and adds to its
hour statistics. This drives LeaderCore + StateMachine over LMDB in a temporary directory with a fake
worker that answers every lease at once, simulated time stepping 10 ms, for `--seconds` of fires after
`--warm` seconds of warm-up (the warm-up fills each task's history so trimming happens as in a long
run). Prints microseconds of CPU per execution for each phase: leader apply, follower apply (the same
entries on `--followers` more replicas), leader tick, on_committed, results.

Usage: .venv/bin/python bench/perf_recurring.py [--tasks 2000] [--seconds 5] [--warm 12]
       [--followers 1] [--profile] [--repeat 1]
All timings are process CPU time (time.process_time); compare runs taken back to back.
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

from bench.perf_inproc import T0, Command, ReplicaSet, answer_offers
from cronraft.daemon.leader import LeaderCore, LeaderSettings
from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft.codec import make_id

PERIOD_MS = 1_000
STEP_MS = 10


def _spec(i: int, n: int) -> common_pb2.TaskSpec:
    spec = common_pb2.TaskSpec(
        name=f"w5-{i}",
        schedule=common_pb2.Schedule(
            fixed_rate=common_pb2.FixedRateSchedule(period_ms=PERIOD_MS, anchor_ms=T0 + i * PERIOD_MS // n)
        ),
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name="bench.noop")),
        queue="default",
    )
    return spec


class Phases:
    def __init__(self) -> None:
        self.tick = self.commit = self.results = 0.0


def run(args: argparse.Namespace, prof: cProfile.Profile | None) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as tmp:
        rs = ReplicaSet(Path(tmp), args.followers)
        leader, followers, replicas, apply = rs.leader, rs.followers, rs.all, rs.apply

        n = args.tasks
        for start in range(0, n, 1024):
            apply(
                [
                    Command(
                        request_id=f"create:{i}",
                        stamped_at_ms=T0,
                        create_task=commands_pb2.CreateTask(
                            task_id=make_id(T0, i.to_bytes(10, "big")), spec=_spec(i, n)
                        ),
                    )
                    for i in range(start, min(n, start + 1024))
                ]
            )
        core = LeaderCore(
            leader.kv,
            LeaderSettings(horizon_ms=10_000, max_commands_per_tick=4096, fire_lead_ms=50),
            node_id="n1",
            term=1,
            new_id=lambda ms: make_id(ms, time.perf_counter_ns().to_bytes(10, "big")),
        )
        apply([core.epoch_command(T0)])
        now = T0 + PERIOD_MS
        core.on_epoch_committed(now, 0)
        core.worker_connected("w1", 4 * n, ["default"], {})
        pending: list[common_pb2.AttemptResult] = []
        completed = 0

        def step(ph: Phases) -> None:
            nonlocal pending, completed
            t = time.process_time()
            cmds = core.tick(now, now - T0)
            ph.tick += time.process_time() - t
            t = time.process_time()
            cmds += core.results("w1", pending, now)
            pending = []
            ph.results += time.process_time() - t
            for i in range(0, len(cmds), 4096):
                chunk = cmds[i : i + 4096]
                res = apply(chunk)
                t = time.process_time()
                core.on_committed(chunk, res, now, 1)
                ph.commit += time.process_time() - t
                completed += sum(
                    1 for c, r in zip(chunk, res, strict=True) if c.HasField("complete") and r.applied
                )
            t = time.process_time()
            pending += answer_offers(core, now)
            ph.results += time.process_time() - t

        warm_end = now + args.warm * 1000
        while now < warm_end:
            step(Phases())
            now += STEP_MS
        for r in replicas:
            r.apply_s = 0.0
        done0 = completed
        ph = Phases()
        end = now + args.seconds * 1000
        if prof:
            prof.enable()
        t_all = time.process_time()
        while now < end:
            step(ph)
            now += STEP_MS
        total_s = time.process_time() - t_all
        if prof:
            prof.disable()
        execs = max(1, completed - done0)
        us = 1e6 / execs
        fol = sum(f.apply_s for f in followers) / max(1, len(followers))
        text = (
            f"{n} fixed-rate tasks every second, {args.seconds} s after {args.warm} s of warm-up: "
            f"{execs} executions; one process {total_s * us:.0f} us/execution; "
            f"leader apply {leader.apply_s * us:.0f} us, follower apply {fol * us:.0f} us, "
            f"tick {ph.tick * us:.0f} us, on_committed {ph.commit * us:.0f} us, "
            f"results {ph.results * us:.0f} us"
        )
        for r in replicas:
            r.kv.close()
        return total_s / execs, text


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=2_000)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--warm", type=int, default=12)
    p.add_argument("--followers", type=int, default=1)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    prof = cProfile.Profile() if args.profile else None
    runs = [run(args, prof) for _ in range(max(1, args.repeat))]
    print(min(runs)[1])
    if prof:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)


if __name__ == "__main__":
    main()
