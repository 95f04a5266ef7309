"""W4 query: reads with N tasks stored (100,000 by default; `--sizes 100000,1000000` grows one cluster).

The tasks (one-time, due in a day, 100 tag groups: `group=g0..g99`, names `w4-g<group>-<n>`) are
imported through the bulk API; then, one sync client, sequential calls after a warm-up:
- get-by-id of random stored ids (`GetTask`);
- a filtered list page: `ListTasks(tags={"group": <random group>}, page_size=100)` starting at a random
  position (page token = a random stored id): the tag index answers it;
- a name-prefix page: `ListTasks(name_prefix="w4-g<random group>-", page_size=100)`: no index, a bounded
  scan (at most 10,000 candidates per page; a page may come back short, with a token);
- a state page: `ListTasks(state=scheduled, page_size=100)` at a random position.
Figures: latency p50/p99/max (ms) of each. Reads are served by the node the client picks (the first
configured server); `--target leader|follower` pins it. Definition: bench/README.md.

Usage: .venv/bin/python bench/w4_query.py [--sizes 100000] [--calls 2000] [--runs 3]
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BenchCluster, Recorder, base_parser, now_ms, summarize
from cronraft.client import Client, at, command
from cronraft.proto.v1 import common_pb2

GROUPS = 100


def load(client: Client, start: int, stop: int, due: int) -> list[str]:
    template = common_pb2.TaskSpec(schedule=at(due), payload=command("true"))

    def specs() -> Iterator[common_pb2.TaskSpec]:
        for i in range(start, stop):
            s = common_pb2.TaskSpec()
            s.CopyFrom(template)
            g = i % GROUPS
            s.name = f"w4-g{g}-{i}"
            s.tags["group"] = f"g{g}"
            yield s

    return list(client.import_tasks(specs()).task_ids())


def timed(calls: int, warmup: int, fn: Callable[[], object]) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def measure(servers: str, ids: list[str], calls: int, warmup: int, rng: random.Random) -> dict[str, float]:
    figures: dict[str, float] = {}
    with Client(servers, timeout_s=30) as client:
        figures.update(summarize(timed(calls, warmup, lambda: client.get_task(rng.choice(ids))), "get_ms"))

        def tag_page() -> object:
            return client.list_tasks_page(
                tags={"group": f"g{rng.randrange(GROUPS)}"}, page_size=100, page_token=rng.choice(ids)
            )

        figures.update(summarize(timed(calls // 4, warmup, tag_page), "list_tag_ms"))
        short = []

        def prefix_page() -> object:
            tasks, _ = client.list_tasks_page(name_prefix=f"w4-g{rng.randrange(GROUPS)}-", page_size=100)
            short.append(len(tasks) < 100)
            return tasks

        figures.update(summarize(timed(calls // 20, 2, prefix_page), "list_prefix_ms"))
        figures["list_prefix_short_pages_pct"] = sum(short) / max(1, len(short)) * 100

        def state_page() -> object:
            return client.list_tasks_page(
                state=common_pb2.TASK_SCHEDULED, page_size=100, page_token=rng.choice(ids)
            )

        figures.update(summarize(timed(calls // 4, warmup, state_page), "list_state_ms"))
    return figures


def main() -> None:
    p = base_parser("W4 query: get and list with many tasks stored")
    p.add_argument("--sizes", default="100000", help="stored tasks, comma separated (default 100000)")
    p.add_argument("--calls", type=int, default=2_000, help="timed gets per size (lists: a fraction)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up calls (default 100)")
    p.add_argument("--target", choices=["any", "leader", "follower"], default="any")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        sizes, args.calls, args.warmup, args.runs = [2_000], 100, 5, 1
    rng = random.Random(42)
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        leader = bc.leader()
        servers = bc.servers
        if args.target == "leader":
            servers = leader.grpc_address
        elif args.target == "follower":
            servers = next(n.grpc_address for n in bc.cluster.nodes if n is not leader)
        ids: list[str] = []
        due = now_ms() + 86_400_000
        with Client(bc.servers, timeout_s=120) as client:
            for size in sizes:
                t0 = time.perf_counter()
                ids += load(client, len(ids), size, due)
                load_s = time.perf_counter() - t0
                bc.cluster.wait_converged(timeout_s=120)
                stats = bc.node_stats()
                rec = Recorder(
                    f"w4_query_{size}",
                    {"size": size, "calls": args.calls, "target": args.target, "nodes": args.nodes},
                    out_dir=args.out_dir,
                )
                for run in range(args.runs):
                    figures: dict[str, object] = {"stored": len(ids), "run": run + 1}
                    figures.update(measure(servers, ids, args.calls, args.warmup, rng))
                    figures["load_s"] = load_s
                    figures["leader_rss_bytes"] = stats.get(leader.node_id, {}).get("rss_bytes", 0)
                    rec.add(figures)
                rec.write()


if __name__ == "__main__":
    main()
