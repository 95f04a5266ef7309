"""Scale: costs with many tasks stored. The cluster grows through `--sizes` (default 100,000 then
10,000,000 tasks, imported through the bulk API); at each size, after the followers caught up:
- RSS (current and peak) and disk (data directory: LMDB + Raft journal) of every node;
- create latency: sequential creates of one-time tasks due in an hour (after a warm-up);
- get latency: random stored ids.
The stored tasks are one-time tasks due in 30 days (never in the leader's horizon): what the leader holds
in memory must not grow with them. Costs must stay flat from the smallest to the largest size.
Definition and the extrapolation to 100 M: bench/README.md and docs/benchmarks.md.

Usage: .venv/bin/python bench/scale.py [--sizes 100000,10000000] [--calls 1000]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, now_ms, summarize
from cronraft.client import Client, ImportResult, at, command
from cronraft.proto.v1 import common_pb2


def load(client: Client, start: int, stop: int, due: int) -> list[str]:
    template = common_pb2.TaskSpec(schedule=at(due), payload=command("true"), tags={"bench": "scale"})

    def specs() -> Iterator[common_pb2.TaskSpec]:
        for i in range(start, stop):
            s = common_pb2.TaskSpec()
            s.CopyFrom(template)
            s.name = f"scale-{i}"
            yield s

    ids: list[str] = []
    last = [time.monotonic()]

    def progress(r: ImportResult) -> None:
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            print(f"[scale] imported {start + r.total:,} / {stop:,}", flush=True)

    result = client.import_tasks(specs(), on_progress=progress)
    # Keep a sample of ids only: 10 M ids would cost ~1 GB of client memory.
    for i, task_id in enumerate(result.task_ids()):
        if i % 97 == 0:
            ids.append(task_id)
    return ids


def main() -> None:
    p = base_parser("Scale: RSS, disk and per-call costs with many tasks stored", runs=1)
    p.add_argument("--sizes", default="100000,10000000", help="stored tasks, comma separated")
    p.add_argument("--calls", type=int, default=1_000, help="timed creates and gets per size")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        sizes, args.calls = [1_000, 3_000], 50
    rec = Recorder("scale", {"sizes": sizes, "calls": args.calls, "nodes": args.nodes}, out_dir=args.out_dir)
    rng = random.Random(7)
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        leader = bc.leader()
        ids: list[str] = []
        stored = 0
        due = now_ms() + 30 * 86_400_000
        with Client(bc.servers, timeout_s=120) as client:
            for size in sizes:
                t0 = time.perf_counter()
                ids += load(client, stored, size, due)
                load_s = time.perf_counter() - t0
                imported, stored = size - stored, size
                bc.cluster.wait_converged(timeout_s=600)
                stats = bc.node_stats()
                soon = now_ms() + 3_600_000
                for i in range(50):
                    client.create_task(f"scale-warm-{size}-{i}", at(soon), command("true"))
                create_ms = []
                for i in range(args.calls):
                    t = time.perf_counter()
                    client.create_task(f"scale-new-{size}-{i}", at(soon), command("true"))
                    create_ms.append((time.perf_counter() - t) * 1000)
                get_ms = []
                for _ in range(args.calls):
                    task_id = rng.choice(ids)
                    t = time.perf_counter()
                    client.get_task(task_id)
                    get_ms.append((time.perf_counter() - t) * 1000)
                node = stats[leader.node_id]
                followers = [v for k, v in stats.items() if k != leader.node_id]
                rec.add(
                    {
                        "stored": size,
                        "load_s": load_s,
                        "load_tasks_per_s": imported / load_s if load_s else 0,
                        "leader_rss_bytes": node["rss_bytes"],
                        "leader_peak_rss_bytes": node["peak_rss_bytes"],
                        "leader_rss_anon_bytes": node["rss_anon_bytes"],
                        "leader_rss_file_bytes": node["rss_file_bytes"],
                        "follower_rss_bytes_max": max((f["rss_bytes"] for f in followers), default=0),
                        "disk_bytes_per_node": node["disk_bytes"],
                        "disk_bytes_per_task": node["disk_bytes"] / size,
                        "disk_lmdb_bytes_per_task": node["disk_state_bytes"] / size,
                        "disk_raft_bytes_per_task": node["disk_raft_bytes"] / size,
                        **summarize(create_ms, "create_ms"),
                        **summarize(get_ms, "get_ms"),
                    }
                )
    rec.write()


if __name__ == "__main__":
    main()
