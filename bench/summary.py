"""Turn the latest JSON result of each workload (bench/results/) into a Markdown table.

Each figure shows the median over the runs and its min-max, next to its target (bench/README.md), with
the load average at the start and end of the result, so that a figure measured on a busy machine says
so. Usage: .venv/bin/python bench/summary.py [--results DIR] [--all-figures]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# (workload, figure, label, target, unit) rows of the headline table; a workload prefix matches
# w4_query_<size> and bulk_import_<via>.
HEADLINE: list[tuple[str, str, str, str, str]] = [
    ("w1_burst", "tasks_per_s", "W1 burst: tasks/s, due instant to last start", ">= 10,000", "/s"),
    ("w1_burst", "start_lag_ms_p50", "W1 burst: start lag p50", "", "ms"),
    ("w1_burst", "start_lag_ms_p99", "W1 burst: start lag p99", "", "ms"),
    ("w1_burst", "start_lag_ms_max", "W1 burst: start lag max", "", "ms"),
    ("w1_burst", "missing", "W1 burst: missing", "0", ""),
    ("w1_burst", "duplicates", "W1 burst: duplicates", "0", ""),
    ("w2_latency", "seq_ms_p50", "W2 create latency, 1 client: p50", "", "ms"),
    ("w2_latency", "seq_ms_p99", "W2 create latency, 1 client: p99", "<= 10 ms", "ms"),
    ("w2_latency", "seq_ms_max", "W2 create latency, 1 client: max", "", "ms"),
    ("w2_latency", "seq_calls_per_s", "W2 creates/s, 1 client", "", "/s"),
    ("w2_latency", "conc_ms_p50", "W2 create latency, 16 clients: p50", "", "ms"),
    ("w2_latency", "conc_ms_p99", "W2 create latency, 16 clients: p99", "", "ms"),
    ("w2_latency", "conc_calls_per_s", "W2 creates/s, 16 clients", "", "/s"),
    ("w3_precision", "within_50ms_pct", "W3 fires within +-50 ms", ">= 99.9 %", "%"),
    ("w3_precision", "within_100ms_pct", "W3 fires within +-100 ms", "", "%"),
    ("w3_precision", "within_1s_pct", "W3 fires within +-1 s", "", "%"),
    ("w3_precision", "start_lag_ms_p50", "W3 start lag p50", "", "ms"),
    ("w3_precision", "start_lag_ms_p99", "W3 start lag p99", "", "ms"),
    ("w3_precision", "missed", "W3 missed fires", "0", ""),
    ("w5_sustained", "started_per_s", "W5 sustained: fires started/s", ">= 10,000", "/s"),
    ("w5_sustained", "within_1s_pct", "W5 fires within +-1 s", ">= 99.9 %", "%"),
    ("w5_sustained", "lost", "W5 lost fires", "0", ""),
    ("w5_sustained", "duplicates", "W5 duplicated fires", "0", ""),
    ("w5_sustained", "lateness_ms_p50", "W5 lateness p50", "", "ms"),
    ("w5_sustained", "lateness_ms_p99", "W5 lateness p99", "< 1 s", "ms"),
    ("w5_sustained", "lateness_ms_max", "W5 lateness max", "", "ms"),
    ("w5_sustained", "leader_cpu_ms_per_fire", "W5 leader CPU per fire", "<= 0.1 ms", "ms"),
    ("w5_sustained", "nodes_cpu_ms_per_fire", "W5 CPU per fire, three nodes together", "<= 0.25 ms", "ms"),
    ("w5_sustained", "workers_cpu_ms_per_fire", "W5 workers' CPU per fire", "", "ms"),
    ("w5_sustained", "slot_utilisation_pct", "W5 worker slot utilisation", "70-80 %", "%"),
    ("w5_ramp", "held_rate_per_s", "W5 ramp: highest rate held (p99 < 1 s, 0 lost)", ">= 10,000", "/s"),
    ("w5_ramp", "held_lateness_ms_p99", "W5 ramp: lateness p99 at that rate", "< 1 s", "ms"),
    ("w5_ramp", "first_failed_rate_per_s", "W5 ramp: first rate not held", "", "/s"),
    ("w4_query", "get_ms_p50", "W4 get by id p50", "", "ms"),
    ("w4_query", "get_ms_p99", "W4 get by id p99", "<= 5 ms", "ms"),
    ("w4_query", "list_tag_ms_p99", "W4 filtered list page (tag) p99", "", "ms"),
    ("w4_query", "list_prefix_ms_p99", "W4 name-prefix page (bounded scan) p99", "", "ms"),
    ("bulk_import", "seconds", "Bulk import: seconds", "<= 60 s for 1 M", "s"),
    ("bulk_import", "tasks_per_s", "Bulk import: tasks/s", ">= 16,700", "/s"),
    ("scale", "leader_rss_bytes", "Scale: leader RSS", "<= 1 GiB at 10 M", "B"),
    ("scale", "disk_bytes_per_task", "Scale: disk per task per node", "", "B"),
    ("scale", "create_ms_p99", "Scale: create p99", "flat", "ms"),
    ("scale", "get_ms_p99", "Scale: get p99", "flat", "ms"),
    ("concurrency_leases", "held_at_once", "Leases held at once", "100,000", ""),
    ("concurrency_leases", "leader_cpu_share", "Leases: leader CPU while holding", "", "cores"),
    ("concurrency_leases", "leader_rss_bytes", "Leases: leader RSS while holding", "", "B"),
    ("concurrency_streams", "connected", "Worker streams connected", "10,000", ""),
    ("concurrency_streams", "leader_cpu_share", "Streams: leader CPU", "", "cores"),
    ("concurrency_streams", "leader_cpu_us_per_heartbeat", "Streams: leader CPU per heartbeat", "", "us"),
    ("concurrency_streams", "leader_rss_bytes", "Streams: leader RSS", "", "B"),
    ("worker_exec", "best_execs_per_s", "One worker: argv executions/s (/bin/true), best slots", "", "/s"),
    ("worker_exec", "best_slots", "One worker: slots of that rate", "", ""),
    ("worker_exec", "worker_cpu_ms_per_exec", "One worker: CPU per argv execution, children too", "", "ms"),
    ("peers_celery", "ratio_w1_tasks_per_s", "Cronraft / Celery, same run: W1 tasks/s", "", "x"),
    ("peers_celery", "ratio_w1u_tasks_per_s", "Cronraft unstaged / Celery, same run: W1 tasks/s", "", "x"),
    ("peers_celery", "ratio_w3_start_lag_ms_p99", "Cronraft / Celery, same run: W3 start lag p99", "", "x"),
    ("recovery", "first_dispatch_after_kill_ms", "Recovery: kill to first dispatch", "<= 3 s", "ms"),
    ("recovery", "backlog_drained_after_kill_ms", "Recovery: kill to backlog drained", "", "ms"),
    ("recovery", "election_ms", "Recovery: kill to new ready leader", "", "ms"),
    ("recovery", "missed", "Recovery: missed fires", "0", ""),
]


def latest(results: Path) -> dict[str, dict[str, Any]]:
    """The newest result of each workload name (file names sort by time)."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        doc["_file"] = path.name
        out[doc["workload"]] = doc
    return out


def fmt(value: float, unit: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if unit == "B":
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(value) >= size:
                return f"{value / size:.2f} {name}"
        return f"{value:.0f} B"
    if unit == "cores":
        return f"{value:.2f}"
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def cell(stats: dict[str, float], unit: str) -> str:
    mid = fmt(stats["median"], unit)
    if stats.get("n", 1) > 1 and stats["min"] != stats["max"]:
        return f"{mid} ({fmt(stats['min'], unit)}-{fmt(stats['max'], unit)})"
    return mid


def _docs_for(docs: dict[str, dict[str, Any]], workload: str) -> list[dict[str, Any]]:
    return [d for name, d in sorted(docs.items()) if name == workload or name.startswith(workload + "_")]


def table(docs: dict[str, dict[str, Any]], all_figures: bool) -> str:
    lines = [
        "| figure | target | measured: median of runs (min-max) | runs | load (start/end) | result |",
        "|---|---|---|---|---|---|",
    ]
    for workload, key, label, target, unit in HEADLINE:
        for doc in _docs_for(docs, workload):
            suffix = doc["workload"].removeprefix(workload).lstrip("_")
            if workload == "scale":
                for run in doc["runs"]:
                    value = run.get(key)
                    if value is None:
                        continue
                    lines.append(
                        f"| {label} ({run['stored']:,} stored) | {target} | {fmt(value, unit)} | 1 | "
                        f"{doc['load_start'][0]}/{doc['load_end'][0]} | {doc['_file']} |"
                    )
                continue
            stats = doc["summary"].get(key)
            if stats is None:
                continue
            size = doc["params"].get("size")
            tags = [t for t in (suffix, f"n={size:,}" if isinstance(size, int) else "") if t]
            if isinstance(size, int) and suffix == str(size):
                tags = [f"n={size:,}"]
            what = f"{label} ({', '.join(tags)})" if tags else label
            lines.append(
                f"| {what} | {target} | {cell(stats, unit)} | {stats.get('n', 1)} | "
                f"{doc['load_start'][0]}/{doc['load_end'][0]} | {doc['_file']} |"
            )
    if all_figures:
        lines.append("")
        for name, doc in sorted(docs.items()):
            lines.append(f"### {name} ({doc['_file']})")
            lines.append("")
            lines.append(f"Parameters: `{json.dumps(doc['params'])}`; command: `{doc.get('command', '')}`")
            lines.append("")
            lines.append("| figure | median | min | max |")
            lines.append("|---|---|---|---|")
            for key, stats in doc["summary"].items():
                lines.append(f"| {key} | {stats['median']:.4g} | {stats['min']:.4g} | {stats['max']:.4g} |")
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--all-figures", action="store_true", help="also every figure of every workload")
    args = p.parse_args()
    docs = latest(args.results)
    if not docs:
        sys.exit(f"no results in {args.results}: run `make bench` first")
    machine = next(iter(docs.values()))["machine"]
    print(
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, "
        f"{machine['mem_total_bytes'] / (1 << 30):.0f} GiB, Python {machine['python']}, "
        f"commit {machine['commit']}{' (dirty)' if machine['dirty'] else ''}\n"
    )
    print(table(docs, args.all_figures))


if __name__ == "__main__":
    main()
