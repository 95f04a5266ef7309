"""Cronraft vs Celery 5 + Redis, same machine, same run (`make bench-peers`; bench/README.md).

Each round runs, one after the other on the same machine: Cronraft's W1 (bench/w1_burst.py, the shipped
defaults: burst staging on), Cronraft's W1 unstaged (`--stage-lead-ms 0`: the sustained commit path; off
with `--no-unstaged`), W1 on Celery, Cronraft's W3 (bench/w3_precision.py), W3 on Celery
(bench/peers/celery_stack.py). Cronraft's side runs its own scripts (`--runs 1` each, results in a
temporary folder), so both sides are the definitions of bench/README.md. Each round's figures and their
ratios (Cronraft / Celery, per round) go into one JSON result, `bench/results/peers_celery-<UTC>.json`;
the Markdown table "Cronraft vs Celery, same machine, same run" (medians over the rounds, min-max) is
printed and stored in the result (`markdown`) for docs/benchmarks.md.

Needs scripts/bench-deps.sh (redis-server, the [bench] extra); Redis is started and stopped here.

Usage: .venv/bin/python bench/peers/compare.py [--runs 3] [--w1-size 20000] [--w3-tasks 200]
       [--w3-seconds 60] [--celery-concurrency N] [--no-unstaged] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import REPO, Recorder, base_parser, machine_info
from bench.peers import celery_stack

W1_KEYS = ["tasks_per_s", "start_lag_ms_p50", "start_lag_ms_p99", "start_lag_ms_max", "missing", "duplicates"]
W3_KEYS = [
    "within_50ms_pct",
    "within_100ms_pct",
    "within_1s_pct",
    "start_lag_ms_p50",
    "start_lag_ms_p99",
    "start_lag_ms_max",
    "missed",
    "duplicates",
]
LABELS = {
    "tasks_per_s": ("tasks/s, due instant to last start", "/s"),
    "start_lag_ms_p50": ("start lag p50", "ms"),
    "start_lag_ms_p99": ("start lag p99", "ms"),
    "start_lag_ms_max": ("start lag max", "ms"),
    "missing": ("missing", ""),
    "missed": ("missed", ""),
    "duplicates": ("duplicates", ""),
    "cpu_ms_per_task": ("CPU per task, every process of the system", "ms"),
    "within_50ms_pct": ("fires within +-50 ms", "%"),
    "within_100ms_pct": ("fires within +-100 ms", "%"),
    "within_1s_pct": ("fires within +-1 s", "%"),
}


def ours(script: str, extra: list[str], smoke: bool, nodes: int) -> dict[str, Any]:
    """One run of a Cronraft workload script; its run's figures and its result file's name."""
    out = Path(tempfile.mkdtemp(prefix="cronraft-peers-"))
    try:
        size = ["--smoke", "--nodes", "1"] if smoke else ["--nodes", str(nodes)]
        argv = [sys.executable, str(REPO / "bench" / script), "--runs", "1", "--out-dir", str(out), *size]
        subprocess.run([*argv, *extra], check=True, cwd=REPO)
        (path,) = out.glob("*.json")
        doc = json.loads(path.read_text())
        return {**doc["runs"][0], "_load": doc["load_start"][0]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _ratio(a: Any, b: Any) -> float:
    try:
        return float(a) / float(b) if float(b) != 0 else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def one_round(args: argparse.Namespace) -> dict[str, Any]:
    fig: dict[str, Any] = {}
    w1_extra = [] if args.smoke else ["--size", str(args.w1_size)]
    cr_w1 = ours("w1_burst.py", w1_extra, args.smoke, args.nodes)
    cr_w1["cpu_ms_per_task"] = sum(
        cr_w1[k] for k in ("leader_cpu_ms_per_task", "followers_cpu_ms_per_task", "workers_cpu_ms_per_task")
    )
    cr_w1u: dict[str, Any] | None = None
    if args.unstaged:
        cr_w1u = ours("w1_burst.py", [*w1_extra, "--stage-lead-ms", "0"], args.smoke, args.nodes)
        cr_w1u["cpu_ms_per_task"] = sum(
            cr_w1u[k]
            for k in ("leader_cpu_ms_per_task", "followers_cpu_ms_per_task", "workers_cpu_ms_per_task")
        )
    size = 200 if args.smoke else args.w1_size
    ce_w1 = celery_stack.w1(
        size, concurrency=args.celery_concurrency, lead_ms=2_000 if args.smoke else 0, keep=args.keep
    )
    ce_w1["cpu_ms_per_task"] = ce_w1["all_cpu_ms_per_task"]
    w3_extra = [] if args.smoke else ["--tasks", str(args.w3_tasks), "--seconds", str(args.w3_seconds)]
    cr_w3 = ours("w3_precision.py", w3_extra, args.smoke, args.nodes)
    tasks, seconds = (5, 2) if args.smoke else (args.w3_tasks, args.w3_seconds)
    ce_w3 = celery_stack.w3(tasks, seconds, concurrency=args.celery_concurrency, keep=args.keep)
    pairs = [("w1", cr_w1, ce_w1, [*W1_KEYS, "cpu_ms_per_task"]), ("w3", cr_w3, ce_w3, W3_KEYS)]
    if cr_w1u is not None:
        pairs.insert(1, ("w1u", cr_w1u, ce_w1, [*W1_KEYS, "cpu_ms_per_task"]))
    for name, cr, ce, keys in pairs:
        for key in keys:
            fig[f"cronraft_{name}_{key}"] = cr.get(key, float("nan"))
            fig[f"celery_{name}_{key}"] = ce.get(key, float("nan"))
            fig[f"ratio_{name}_{key}"] = _ratio(cr.get(key), ce.get(key))
    fig["celery_concurrency"] = ce_w1["concurrency"]
    fig["celery_w1_publish_s"] = ce_w1["publish_s"]
    return fig


def _fmt(v: float, unit: str) -> str:
    if math.isnan(v):
        return "n/a"
    if unit == "%":
        return f"{v:.2f} %" if v < 99.995 or v > 100 else "100 %"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}{' ' + unit if unit and unit != '/s' else unit}"
    return f"{v:.2f}{' ' + unit if unit and unit != '/s' else unit}"


def _cell(summary: dict[str, dict[str, float]], key: str, unit: str) -> str:
    s = summary.get(key)
    if s is None:
        return "n/a"
    mid = _fmt(s["median"], unit)
    if s.get("n", 1) > 1 and s["min"] != s["max"]:
        return f"{mid} ({_fmt(s['min'], unit)}-{_fmt(s['max'], unit)})"
    return mid


def _ratio_cell(summary: dict[str, dict[str, float]], key: str) -> str:
    s = summary.get(key)
    if s is None or math.isnan(s["median"]):
        return "n/a"
    return f"{s['median']:.2f}x" if s["median"] < 100 else f"{s['median']:,.0f}x"


def markdown(rec: Recorder, args: argparse.Namespace, versions: dict[str, str]) -> str:
    summary = rec.summary()
    m = machine_info()
    rounds = len(rec.runs)
    w1n = 200 if args.smoke else args.w1_size
    w3t, w3s = (5, 2) if args.smoke else (args.w3_tasks, args.w3_seconds)
    lines = [
        "### Cronraft vs Celery, same machine, same run",
        "",
        f"{m['cpu_model']}, {m['cores']} cores, Python {m['python']}, commit {m['commit']}"
        f"{' (dirty)' if m['dirty'] else ''}; {rec.started:%Y-%m-%d %H:%M} UTC, load average "
        f"{rec.load_start[0]} at the start; {rounds} round{'s' if rounds > 1 else ''}, each running "
        "both systems one after the other; median over the rounds (min-max); ratio = Cronraft / Celery "
        "per round, median.",
        "",
        f"Cronraft: {1 if args.smoke else args.nodes} `schedd` node(s) (replicated acknowledgements), "
        "2 workers (W1: 10,000 slots each; W3: "
        f"500), the async no-op handler `bench.noop`. Celery {versions['celery']} + Redis "
        f"{versions['redis']} (no persistence): 1 prefork worker, concurrency "
        f"{rec.runs[0]['celery_concurrency'] if rec.runs else '?'}, results ignored, the same no-op body; "
        "W1 published ahead with `eta` = the due instant (the worker holds them), W3 sent by beat with a "
        "fixed-rate schedule (bench/peers/celery_app.py). Creation and publishing are not counted on "
        "either side. Definitions: bench/README.md.",
        "",
        "| figure | Cronraft | Celery 5 + Redis | Cronraft / Celery |",
        "|---|---|---|---|",
    ]
    sections = [("w1", f"W1 burst of {w1n:,}, staged (shipped defaults)", [*W1_KEYS, "cpu_ms_per_task"])]
    if args.unstaged:
        sections.append(("w1u", f"W1 burst of {w1n:,}, unstaged (`--stage-lead-ms 0`)", W1_KEYS))
    sections.append(("w3", f"W3 precision, {w3t} tasks every 1 s for {w3s} s", W3_KEYS))
    for name, title, keys in sections:
        for key in keys:
            label, unit = LABELS[key]
            ours_cell = _cell(summary, f"cronraft_{name}_{key}", unit)
            theirs = _cell(summary, f"celery_{name}_{key}", unit)
            ratio = _ratio_cell(summary, f"ratio_{name}_{key}")
            lines.append(f"| {title}: {label} | {ours_cell} | {theirs} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    p = base_parser("Cronraft vs Celery 5 + Redis on W1 and W3, same machine, same run")
    p.add_argument("--w1-size", type=int, default=20_000, help="W1 tasks (default 20,000)")
    p.add_argument("--w3-tasks", type=int, default=200, help="W3 recurring tasks (default 200)")
    p.add_argument("--w3-seconds", type=int, default=60, help="W3 window (default 60)")
    p.add_argument("--celery-concurrency", type=int, default=0, help="prefork processes (default: cores)")
    p.add_argument("--no-unstaged", dest="unstaged", action="store_false", help="skip Cronraft's unstaged W1")
    args = p.parse_args()
    missing = celery_stack.available()
    if missing:
        sys.exit(f"bench-peers: {missing}")
    if args.smoke:
        args.runs, args.unstaged = 1, False
    import celery

    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    versions = {
        "celery": celery.__version__,
        "redis": next((w[2:] for w in redis_version.stdout.split() if w.startswith("v=")), "?"),
    }
    rec = Recorder(
        "peers_celery",
        {
            "w1_size": 200 if args.smoke else args.w1_size,
            "w3_tasks": 5 if args.smoke else args.w3_tasks,
            "w3_seconds": 2 if args.smoke else args.w3_seconds,
            "nodes": 1 if args.smoke else args.nodes,
            "celery_concurrency": args.celery_concurrency or os.cpu_count(),
            "unstaged": args.unstaged,
            "versions": versions,
        },
        out_dir=args.out_dir,
    )
    for _ in range(args.runs):
        rec.add(one_round(args))
    table = markdown(rec, args, versions)
    path = rec.write()
    doc = json.loads(path.read_text())
    doc["markdown"] = table
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print()
    print(table)
    print(f"\n(ratios: Cronraft / Celery per round, median of {len(rec.runs)}; every figure in {path})")


if __name__ == "__main__":
    main()
