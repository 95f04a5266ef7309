"""Run fault scenarios against a real cluster and judge them: `python -m tests.fault.run`.

    .venv/bin/python -m tests.fault.run --scenario S2 --seed 7 --profile ci
    .venv/bin/python -m tests.fault.run --scenario all --profile soak --out fault-runs
    .venv/bin/python -m tests.fault.run --scenario all --profile ci --seeds 5   # the sweep (make fault-sweep)

One run = start a cluster (tests/fault/cluster.py), start the workload (tests/fault/workload.py) and the
scenario's faults (tests/fault/scenarios.py) together, heal everything, wait the quiet period, read the
final state through the API and each node's state digest offline, then judge the run directory with
the checker (tests/fault/checker.py). A failed run keeps its directory (seed, logs, data dirs, audit
logs, ledger) for replay: `--scenario S2 --seed <seed>` repeats the same faults at the same offsets.
A passed run keeps only its verdict and report unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cronraft.client import AsyncClient
from tests.fault import checker, report
from tests.fault.cluster import FaultCluster, Unsupported
from tests.fault.scenarios import PROFILES, SCENARIOS, Ctx, Profile, ScenarioDef
from tests.fault.workload import Workload

REPO = Path(__file__).resolve().parents[2]
LEASE_TTL_MS = 3000


# Each node's tmpfs in the disk scenarios (S11, S13). It only has to hold what the run writes: its size
# sets how much ballast fills it. 48 MiB holds a CI run; a soak run writes ~1.7 KiB per fire (store and
# Raft journal), and at 48 MiB every node filled up 4.5 minutes into S13's soak (seed 362670133): the
# cluster then refused fires by design, which measures the tmpfs, not the scenario.
def _disk_mb(profile: Profile) -> int:
    return 256 if profile.name == "soak" else 48


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _final_state(servers: str) -> dict[str, Any]:
    """Every task and every execution, read through the public API after the quiet period."""
    tasks: list[dict[str, Any]] = []
    executions: list[dict[str, Any]] = []
    async with AsyncClient(servers, timeout_s=30.0) as client:
        async for task in client.list_tasks(page_size=500):
            tasks.append({"task_id": task.task_id, "name": task.spec.name})
        for t in tasks:
            async for ex in client.list_executions(t["task_id"], page_size=500):
                executions.append(
                    {
                        "execution_id": ex.execution_id,
                        "task_id": ex.task_id,
                        "nominal_ms": ex.nominal_time_ms,
                        "state": _state_name(ex.state),
                        "attempt": ex.attempt,
                        "token": f"{ex.token.term}.{ex.token.index}",
                        "manual": ex.manual,
                    }
                )
    return {"tasks": tasks, "executions": executions}


def _state_name(value: int) -> str:
    from cronraft.proto.v1 import common_pb2

    return str(common_pb2.ExecutionState.Name(value))  # type: ignore[arg-type]


def _digest(data_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "cronraft.raft.digest", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    if out.returncode != 0:
        return {"applied_index": None, "digest": None, "error": out.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def _wait_quiet(cluster: FaultCluster, deadline: float) -> None:
    """Restart whatever the faults left dead, then wait for the end of the quiet period."""
    for n in cluster.node_ids:
        if not cluster.alive(n):
            await asyncio.to_thread(cluster.start_node, n)
    for w in cluster.worker_ids:
        if not cluster.alive(w):
            await asyncio.to_thread(cluster.start_worker, w)
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))


async def run_one(
    scenario: ScenarioDef, seed: int, profile: Profile, out: Path, *, mode: str = "auto", nodes: int = 3
) -> tuple[Path, checker.Verdict]:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    run_dir = out.resolve() / f"{stamp}-{scenario.key}-{profile.name}-s{seed}"  # workers run elsewhere
    run_dir.mkdir(parents=True)
    rng = random.Random(seed)
    cpu0 = _cpu_s()
    cluster = scenario.cluster(
        run_dir,
        nodes=max(nodes, scenario.nodes),
        workers=4,
        mode=mode,  # type: ignore[arg-type]
        lease_ttl_ms=LEASE_TTL_MS,
        node_disk_mb=_disk_mb(profile) if scenario.needs_disk else None,
        node_config_extra=scenario.config,
    )
    meta: dict[str, Any] = {
        "scenario": scenario.key,
        "title": scenario.title,
        "seed": seed,
        "profile": profile.name,
        "lease_ttl_ms": LEASE_TTL_MS,
        "tau_normal_s": 5.0,
        "tau_fault_s": 30.0,
        "recovery_budget_s": 30.0,
        # Faults that take the leader away when aimed at it: R8 measures the recovery from each.
        # ("partition": a whole region cut from the others, tests/fault/regions.py.)
        "leader_loss_faults": ["kill", "pause", "isolate", "disk_full", "partition"],
    }
    try:
        with cluster:
            await asyncio.to_thread(cluster.start)
            meta["mode"] = cluster.mode
            meta["nodes"] = list(cluster.node_ids)
            meta["workers"] = list(cluster.worker_ids)
            t0_mono_ns, t0_wall_ns = time.monotonic_ns(), time.time_ns()
            t0 = t0_mono_ns / 1e9
            meta.update(
                t0_mono_ns=t0_mono_ns,
                t0_wall_ns=t0_wall_ns,
                window_start_mono_ns=t0_mono_ns + int(profile.warmup_s * 1e9),
                window_end_mono_ns=t0_mono_ns + int(profile.duration_s * 1e9),
            )
            (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))
            workload = Workload(
                cluster.servers,
                run_dir,
                profile.size,
                random.Random(rng.random()),
                t0_wall_ms=t0_wall_ns // 1_000_000,
                warmup_s=profile.warmup_s,
                duration_s=profile.duration_s,
            )
            ctx = Ctx(cluster, random.Random(rng.random()), profile, t0)
            results = await asyncio.gather(workload.run(), scenario.fn(ctx), return_exceptions=True)
            errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
            await asyncio.to_thread(cluster.heal_all)
            await _wait_quiet(cluster, t0 + profile.duration_s + profile.quiet_s)
            await asyncio.to_thread(cluster.wait_leader, 60.0)
            await asyncio.to_thread(cluster.wait_converged, 60.0)
            final_dir = run_dir / "final"
            final_dir.mkdir(exist_ok=True)
            state = await _final_state(cluster.servers)
            (final_dir / "state.json").write_text(json.dumps(state))
            # Stop every process gracefully so the digests are taken at rest, then hash each store.
            await asyncio.to_thread(cluster.wait_converged, 30.0)
            await asyncio.to_thread(cluster.stop_all)
            for n in cluster.node_ids:
                digest = _digest(cluster.data_dir(n))
                (final_dir / f"{n}.json").write_text(json.dumps({"node": n, **digest}))
            meta.update(
                t_end_mono_ns=time.monotonic_ns(),
                harness_cpu_s=round(_cpu_s() - cpu0, 2),
                workload_counts=workload.counts,
                scenario_errors=errors,
                notes=ctx.notes,
            )
            (run_dir / "meta.json").write_text(json.dumps(meta, indent=2))
    finally:
        cluster.close()
    verdict = checker.check(run_dir)
    report.write(run_dir, verdict)
    return run_dir, verdict


def _prune(run_dir: Path) -> None:
    """A passed run keeps its verdict, report, meta and histories; the bulky data dirs go."""
    keep = {"verdict.json", "report.md", "meta.json", "nemesis.jsonl", "exits.jsonl"}
    for p in run_dir.iterdir():
        if p.name in keep:
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fault.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="S1", help="S1..S14, a comma-separated list, or 'all'")
    ap.add_argument("--profile", default="ci", choices=sorted(PROFILES))
    ap.add_argument("--seed", type=int, default=None, help="default: random (printed, kept in meta.json)")
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="run every scenario this many times, each with its own random seed (a sweep: the harness "
        "must not be tuned to one seed); prints one table across seeds",
    )
    ap.add_argument("--mode", default="auto", choices=["auto", "netns", "proxy"])
    ap.add_argument("--out", default=str(REPO / "fault-runs"))
    ap.add_argument("--keep", action="store_true", help="keep the whole run directory even when it passes")
    args = ap.parse_args(argv)
    keys = (
        list(SCENARIOS) if args.scenario == "all" else [k.strip().upper() for k in args.scenario.split(",")]
    )
    unknown = [k for k in keys if k not in SCENARIOS]
    if unknown:
        ap.error(f"--scenario: unknown {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    if args.seeds < 1 or (args.seeds > 1 and args.seed is not None):
        ap.error("--seeds: a positive count, and not with --seed (a sweep draws its own seeds)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    dirs = []
    # Seed-major: an interrupted sweep has covered every scenario as often as it could.
    for _ in range(args.seeds):
        for key in keys:
            seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
            print(f"== {key} ({SCENARIOS[key].title}) profile={args.profile} seed={seed}", flush=True)
            try:
                run_dir, verdict = asyncio.run(
                    run_one(SCENARIOS[key], seed, PROFILES[args.profile], out, mode=args.mode)
                )
            except Unsupported as e:  # e.g. the region scenarios without network namespaces
                print(f"skipped {key}: {e.reason}", flush=True)
                continue
            dirs.append(run_dir)
            print((run_dir / "report.md").read_text(), flush=True)
            if verdict.ok:
                if not args.keep:
                    _prune(run_dir)
            else:
                failed += 1
                print(f"FAILED: kept {run_dir} (replay with --scenario {key} --seed {seed})", flush=True)
            if len(dirs) > 1:  # rewritten after every run: a long sweep's table is never lost
                summary = report.aggregate(dirs)
                if args.seeds > 1:
                    summary = report.sweep(dirs) + "\n" + summary
                (out / "summary.md").write_text(summary)
    if len(dirs) > 1:
        print((out / "summary.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
