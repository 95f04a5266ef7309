"""Worker exec rate: how many argv executions per second one `schedworker` sustains, by its slots.

Real processes, as an operator runs them: the worker's default policy (argv payloads of any program, no
shell), the payload `command("/bin/true")`, which the worker starts under its guard (/bin/sh: the payload's
own process group and the lifeline watcher, client/_process_runner.py) and waits for, then stores its result
in the durable outbox and reports it. For each `--slots` value in turn, one worker of that many slots (on a
queue of its own) gets N one-time tasks all due at one instant; the cluster stages what it can onto the free
slots and grants the rest as slots free up, so the worker is never short of work.

Figures per slots value, from the worker's Prometheus counters (`cronraft_worker_attempts_total`,
sampled every 100 ms) and /proc:
- executions/s sustained: the slope between 10 % and 90 % of the executions ended (start-up and tail
  excluded), and end to end: N / (last ended - due instant);
- failures (any outcome but succeeded: a refusal by the policy would show here);
- the worker's CPU per execution, its own and its reaped children's (the guard, the watcher, /bin/true)
  apart, and the cores it used; the nodes' CPU per execution.
One worker is measured; the cluster (`--nodes`, default 1 here) is not what is measured, and shares the
cores: `worker_cpu_ms_per_exec` gives the rate one worker core sustains (1000 / it). Definition:
bench/README.md.

Usage: .venv/bin/python bench/worker_exec.py [--slots 1,4,16,64] [--executions 2000] [--runs 1]
       [--argv /bin/true]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CLK_TCK, BenchCluster, Recorder, base_parser, cpu_seconds, now_ms
from bench.worker_probe import attempts_ended, scrape, start_metered_workers
from cronraft.client import Client, at, command
from cronraft.proto.v1.common_pb2 import TaskSpec

SAMPLE_S = 0.1


def _cpu_split(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process (/proc/PID/stat utime+stime, cutime+cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, (int(fields[13]) + int(fields[14])) / CLK_TCK


def one_slots_value(bc: BenchCluster, args: argparse.Namespace, slots: int, step: int) -> dict[str, Any]:
    n = args.executions
    queue = f"exec-{step}"
    (port,) = start_metered_workers(bc, 1, slots, default_policy=True, extra_args=("--queue", queue))
    worker_pid = bc.worker_pids()[-1]
    nodes = {x.node_id: x.proc.pid for x in bc.cluster.nodes if x.proc is not None}
    due = now_ms() + args.lead_ms
    specs = [
        TaskSpec(name=f"exec-{step}-{i}", schedule=at(due), payload=command(*args.argv), queue=queue)
        for i in range(n)
    ]
    with Client(bc.servers, timeout_s=120) as client:
        client.import_tasks(specs)
    if now_ms() >= due - 200:
        raise SystemExit(f"creating {n} tasks overran the due instant: raise --lead-ms")
    time.sleep(max(0.0, (due - now_ms() - 200) / 1000))
    own0, kids0 = _cpu_split(worker_pid)
    nodes0 = {k: cpu_seconds(p) for k, p in nodes.items()}
    samples: list[tuple[float, float, float]] = []  # (wall ms, succeeded, every outcome)
    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline:
        m = scrape(port)
        ok = attempts_ended(m)
        ended = sum(v for k, v in m.items() if k.startswith("cronraft_worker_attempts_total{"))
        samples.append((time.time() * 1000, ok, ended))
        if ended >= n:
            break
        time.sleep(SAMPLE_S)
    own1, kids1 = _cpu_split(worker_pid)
    nodes_cpu = sum(cpu_seconds(p) - nodes0[k] for k, p in nodes.items())
    wall = max(1e-3, (samples[-1][0] - due) / 1000)
    bc.cluster.core.kill(bc.workers[-1], timeout_s=15)  # SIGKILL: its work is done, its queue has no more
    done = samples[-1][2]
    succeeded = samples[-1][1]

    def reached(fraction: float) -> tuple[float, float]:
        return next((t, c) for t, _, c in samples if c >= fraction * n)

    sustained = float("nan")  # too few samples between 10 % and 90 % (a smoke-sized run) to say
    if done >= n:
        (t10, c10), (t90, c90) = reached(0.1), reached(0.9)
        if t90 - t10 >= 5 * SAMPLE_S * 1000:
            sustained = (c90 - c10) / ((t90 - t10) / 1000)
    per = 1000 / max(1, done)
    return {
        "slots": slots,
        "executions": n,
        "ended": done,
        "failed": done - succeeded,
        "execs_per_s": sustained,
        "execs_per_s_end_to_end": done / wall,
        "last_end_after_due_ms": samples[-1][0] - due,
        "worker_cpu_ms_per_exec": ((own1 - own0) + (kids1 - kids0)) * per,
        "worker_own_cpu_ms_per_exec": (own1 - own0) * per,
        "worker_children_cpu_ms_per_exec": (kids1 - kids0) * per,
        "worker_cores": ((own1 - own0) + (kids1 - kids0)) / wall,
        "nodes_cpu_ms_per_exec": nodes_cpu * per,
    }


def run_once(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    per_slots: list[dict[str, Any]] = []
    with BenchCluster(nodes=args.nodes, keep=args.keep) as bc:
        for step, slots in enumerate(args.slots):
            figures = one_slots_value(bc, args, slots, step)
            print(f"[worker_exec] slots={slots}: {_brief(figures)}", flush=True)
            per_slots.append(figures)
            for key in ("execs_per_s", "execs_per_s_end_to_end", "worker_cpu_ms_per_exec", "failed"):
                out[f"{key}_slots{slots}"] = figures[key]
    best = max(per_slots, key=lambda f: f["execs_per_s"] if f["execs_per_s"] == f["execs_per_s"] else 0)
    out.update(
        {
            "best_execs_per_s": best["execs_per_s"],
            "best_slots": best["slots"],
            "worker_cpu_ms_per_exec": best["worker_cpu_ms_per_exec"],
            "failed": sum(f["failed"] for f in per_slots),
            "per_slots": per_slots,
        }
    )
    return out


def _brief(f: dict[str, Any]) -> str:
    return (
        f"{f['execs_per_s']:.0f}/s sustained, {f['execs_per_s_end_to_end']:.0f}/s end to end, "
        f"worker {f['worker_cpu_ms_per_exec']:.2f} ms CPU/exec "
        f"({f['worker_children_cpu_ms_per_exec']:.2f} in children), {f['failed']:.0f} failed"
    )


def main() -> None:
    p = base_parser("Worker exec rate: argv executions per second one worker sustains", runs=1)
    p.set_defaults(nodes=1)
    p.add_argument("--slots", default="1,4,16,64", help="worker --capacity values (default 1,4,16,64)")
    p.add_argument("--executions", type=int, default=2_000, help="tasks per slots value (default 2,000)")
    p.add_argument("--argv", nargs="+", default=["/bin/true"], help="the payload (default /bin/true)")
    p.add_argument("--lead-ms", type=int, default=3_000, help="due instant after the import starts")
    p.add_argument("--timeout-s", type=float, default=300.0, help="per slots value (default 300)")
    args = p.parse_args()
    if args.smoke:
        args.slots, args.executions, args.lead_ms, args.timeout_s = "1,4", 20, 1_000, 60.0
    args.slots = [int(s) for s in str(args.slots).split(",") if s.strip()]
    rec = Recorder(
        "worker_exec",
        {"slots": args.slots, "executions": args.executions, "argv": args.argv, "nodes": args.nodes},
        out_dir=args.out_dir,
    )
    for _ in range(args.runs):
        rec.add(run_once(args))
    rec.write()


if __name__ == "__main__":
    main()
