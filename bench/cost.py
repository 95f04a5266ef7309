"""Cost per execution and per billion executions a month, from measured CPU per execution (docs/cost.md).

Reads the CPU per execution of the leader, of the followers together and of the workers from the latest
result that measures a sustained stream of fires: W5 (`w5_sustained`), else W1 unstaged (`w1_burst`
run with `--stage-lead-ms 0`); the argv worker's CPU per execution from `worker_exec` when present. The
prices are parameters (defaults: docs/cost.md, "Prices assumed"). Prints the figures and the Markdown
tables of docs/cost.md: what one execution costs in CPU, and what a cluster sized for a rate costs a
month (3 nodes, workers, disk), against the mission's $0.0001 per execution and $10,000 per billion a
month.

Usage: .venv/bin/python bench/cost.py [--results DIR] [--vcpu-hour 0.0504] [--gb-month 0.08]
       [--retention-days 30] [--rates 386,1000,2750,10000]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MONTH_S = 30 * 86_400
HOURS_A_MONTH = 730  # the providers' monthly hours (8,760 / 12)
EXECUTION_BYTES = 522  # per node, one execution with its ledger record and indexes (docs/operations.md)
NODE_FIXED_BYTES = 2 * 256 * 2**20 + 64 * 2**20  # 2 x snapshot_max_bytes + reserve_bytes (Sizing)
TARGET_PER_EXECUTION = 0.0001
TARGET_PER_BILLION = 10_000.0
# A node or worker is one Python process: its threads share the GIL, so it uses about one core whatever
# the machine. Above this share of a core the process is the bottleneck, not the machine.
PROCESS_CORE_LIMIT = 0.9


def _latest(results: Path, workload: str, accept: Any = None) -> dict[str, Any] | None:
    found = None
    for path in sorted(results.glob(f"{workload}-*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if accept is None or accept(doc):
            found = {**doc, "_file": path.name}
    return found


def measured(results: Path) -> dict[str, Any]:
    """CPU ms per execution (leader, followers together, workers), and which result it comes from."""
    w5 = _latest(results, "w5_sustained")
    if w5 is not None and "leader_cpu_ms_per_fire" in w5["summary"]:
        s = w5["summary"]
        keys = ("leader_cpu_ms_per_fire", "followers_cpu_ms_per_fire", "workers_cpu_ms_per_fire")
    else:
        w1 = _latest(results, "w1_burst", lambda d: d["params"].get("stage_lead_ms") == 0)
        if w1 is None:
            raise SystemExit(f"no w5_sustained nor unstaged w1_burst result in {results}")
        w5, s = w1, w1["summary"]
        keys = ("leader_cpu_ms_per_task", "followers_cpu_ms_per_task", "workers_cpu_ms_per_task")
    out = {
        "leader_ms": s[keys[0]]["median"],
        "followers_ms": s[keys[1]]["median"],
        "workers_ms": s[keys[2]]["median"],
        "source": f"{w5['_file']} (commit {w5['machine'].get('commit', '?')}, load {w5['load_start'][0]})",
        "argv_worker_ms": None,
    }
    wx = _latest(results, "worker_exec")
    if wx is not None and "worker_cpu_ms_per_exec" in wx["summary"]:
        out["argv_worker_ms"] = wx["summary"]["worker_cpu_ms_per_exec"]["median"]
        out["argv_source"] = wx["_file"]
    return out


def sizing(m: dict[str, Any], rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """A cluster for `rate` executions/s sustained: 3 nodes sized for the leader (any node may lead),
    workers for the no-op handler's CPU, disk for `retention_days` of executions on each node."""
    leader_cores = rate * m["leader_ms"] / 1000
    follower_cores = rate * m["followers_ms"] / 2 / 1000
    node_vcpus = max(args.min_node_vcpus, 2 * math.ceil(leader_cores / args.utilisation / 2))
    worker_cores = rate * m["workers_ms"] / 1000
    worker_procs = max(1, math.ceil(worker_cores / args.utilisation))
    worker_vcpus = max(2, 2 * math.ceil(worker_procs / 2))
    store = rate * args.retention_days * 86_400 * EXECUTION_BYTES
    disk_gb = (2 * store + NODE_FIXED_BYTES) / 1e9
    compute = (3 * node_vcpus + worker_vcpus) * args.vcpu_hour * HOURS_A_MONTH
    storage = 3 * disk_gb * args.gb_month
    per_month = compute + storage
    executions = rate * MONTH_S
    return {
        "rate": rate,
        "billions_a_month": executions / 1e9,
        "leader_cores": leader_cores,
        "follower_cores": follower_cores,
        "reachable": leader_cores <= PROCESS_CORE_LIMIT,
        "node_vcpus": node_vcpus,
        "worker_procs": worker_procs,
        "worker_vcpus": worker_vcpus,
        "disk_gb_per_node": disk_gb,
        "compute_month": compute,
        "storage_month": storage,
        "per_month": per_month,
        "per_billion": per_month / (executions / 1e9),
        "per_execution": per_month / executions,
    }


def report(m: dict[str, Any], args: argparse.Namespace) -> str:
    cpu_ms = m["leader_ms"] + m["followers_ms"] + m["workers_ms"]
    per_exec = cpu_ms / 3_600_000 * args.vcpu_hour
    lines = [
        f"CPU per execution (ms): leader {m['leader_ms']:.3f}, followers together {m['followers_ms']:.3f}, "
        f"workers {m['workers_ms']:.3f} (no-op handler); total {cpu_ms:.3f}. Source: {m['source']}.",
    ]
    if m["argv_worker_ms"] is not None:
        lines.append(
            f"Argv payload (/bin/true), one worker: {m['argv_worker_ms']:.3f} ms of worker CPU per "
            f"execution, children included. Source: {m['argv_source']}."
        )
    lines += [
        "",
        "| | per execution | per billion executions | mission |",
        "|---|---|---|---|",
        f"| CPU alone, at ${args.vcpu_hour}/vCPU-hour | ${per_exec:.2e} | ${per_exec * 1e9:,.2f} | "
        f"$0.0001 / $10,000 |",
        "",
        f"| rate (executions/s) | executions a month | leader cores | each follower | reachable today | "
        f"node vCPUs (x3) | worker processes | disk per node ({args.retention_days} d kept) | "
        f"$ a month (compute + disk) | $ per billion | $ per execution |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in args.rates:
        s = sizing(m, rate, args)
        lines.append(
            f"| {rate:,.0f} | {s['billions_a_month']:.2f} bn | {s['leader_cores']:.2f} | "
            f"{s['follower_cores']:.2f} | {'yes' if s['reachable'] else '**no**: one process'} | "
            f"{s['node_vcpus']} | {s['worker_procs']} | {s['disk_gb_per_node']:,.0f} GB | "
            f"{s['compute_month']:,.0f} + {s['storage_month']:,.0f} = {s['per_month']:,.0f} | "
            f"{s['per_billion']:,.0f} | {s['per_execution']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--vcpu-hour", type=float, default=0.0504, help="$ per vCPU-hour (docs/cost.md)")
    p.add_argument("--gb-month", type=float, default=0.08, help="$ per GB-month of block storage")
    p.add_argument("--retention-days", type=float, default=30, help="executions kept (default 30 days)")
    p.add_argument("--utilisation", type=float, default=0.6, help="CPU share a machine is sized for")
    p.add_argument("--min-node-vcpus", type=int, default=2, help="smallest node (default 2 vCPUs)")
    p.add_argument("--rates", default="386,1000,2750,10000", help="executions/s (386/s: 1 bn a month)")
    args = p.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    print(report(measured(args.results), args))


if __name__ == "__main__":
    main()
