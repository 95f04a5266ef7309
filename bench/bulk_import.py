"""Bulk: N tasks created through the bulk API (`ImportTasks`), timed from the first batch sent to the last
acknowledged (every batch committed on a majority and applied on the leader).

`--via sdk` (default): `Client.import_tasks` over specs built in memory (batches of 1,000, 25 batches
per call, 4 batches in flight on the leader). `--via cli`: a JSON Lines file written beforehand (not timed)
and `schedctl task import FILE` (includes reading and parsing the JSON). The tasks are one-time, due in
a day, with one tag. Figures: seconds, tasks/s, CPU seconds of each process, RSS and disk of the
nodes after the import. Definition: bench/README.md.

Usage: .venv/bin/python bench/bulk_import.py [--size 1000000] [--via sdk|cli] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, cpu_seconds, now_ms
from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2


def specs(size: int, due: int) -> Iterator[common_pb2.TaskSpec]:
    template = common_pb2.TaskSpec(schedule=at(due), payload=command("true"), tags={"bench": "bulk"})
    for i in range(size):
        s = common_pb2.TaskSpec()
        s.CopyFrom(template)
        s.name = f"bulk-{i}"
        yield s


def write_jsonl(path: Path, size: int, due: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(size):
            line = {
                "name": f"bulk-{i}",
                "tags": {"bench": "bulk"},
                "schedule": {"kind": "at", "at_ms": due},
                "payload": {"kind": "command", "argv": ["true"]},
            }
            f.write(json.dumps(line, separators=(",", ":")) + "\n")


def run_once(args: argparse.Namespace) -> dict[str, object]:
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        leader = bc.leader()
        pids = {n.node_id: n.proc.pid for n in bc.cluster.nodes if n.proc is not None}
        due = now_ms() + 86_400_000
        jsonl = bc.root / "tasks.jsonl"
        if args.via == "cli":
            write_jsonl(jsonl, args.size, due)
        cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
        t0 = time.perf_counter()
        if args.via == "sdk":
            with Client(bc.servers, timeout_s=120) as client:
                result = client.import_tasks(specs(args.size, due))
            created, retries = result.total, result.retries
        else:
            out = subprocess.run(
                [
                    str(Path(sys.executable).parent / "schedctl"),
                    "--server",
                    bc.servers,
                    "-o",
                    "json",
                    "task",
                    "import",
                    str(jsonl),
                    "--quiet",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            summary = json.loads(out.stdout)
            created, retries = summary["total"], summary["retries"]
        seconds = time.perf_counter() - t0
        bc.cluster.wait_converged(timeout_s=300)  # followers may still be applying: count their CPU too
        cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
        stats = bc.node_stats()
    follower_cpu = [v for k, v in cpu.items() if k != leader.node_id]
    return {
        "tasks": args.size,
        "created": created,
        "retried_calls": retries,
        "seconds": seconds,
        "tasks_per_s": created / seconds,
        "leader_cpu_s": cpu[leader.node_id],
        "follower_cpu_s_mean": sum(follower_cpu) / max(1, len(follower_cpu)),
        "leader_cpu_us_per_task": cpu[leader.node_id] * 1e6 / max(1, created),
        "leader_rss_bytes": stats[leader.node_id]["rss_bytes"],
        "leader_disk_bytes": stats[leader.node_id]["disk_bytes"],
    }


def main() -> None:
    p = base_parser("Bulk: tasks created through ImportTasks")
    p.add_argument("--size", type=int, default=1_000_000, help="tasks (default 1,000,000)")
    p.add_argument("--via", choices=["sdk", "cli"], default="sdk", help="Client.import_tasks or schedctl")
    args = p.parse_args()
    if args.smoke:
        args.size, args.runs = 2_000, 1
    rec = Recorder(
        f"bulk_import_{args.via}",
        {"size": args.size, "via": args.via, "nodes": args.nodes},
        out_dir=args.out_dir,
    )
    for _ in range(args.runs):
        rec.add(run_once(args))
    rec.write()


if __name__ == "__main__":
    main()
