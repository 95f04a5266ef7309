"""Each benchmark script of bench/ at its smoke size: it runs end to end against real processes and writes
a JSON result with the expected figures, and bench/summary.py renders the results. This proves the
harness works; it asserts no timing (benchmarks are never assertions: bench/README.md).

The scripts run PARALLEL at a time, from the module's first test on, longest first: at smoke size they
mostly wait (a recovery window, leases held, fires due), and one after the other they were about a
minute of the default run. Each test then checks its own script's result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DOC_KEYS = {
    "workload",
    "started_at",
    "command",
    "machine",
    "load_start",
    "load_end",
    "params",
    "runs",
    "summary",
}
MACHINE_KEYS = {"cpu_model", "cores", "mem_total_bytes", "python", "platform", "commit"}

# script, extra arguments, {workload name: figures every run must have}
SCRIPTS: list[tuple[str, list[str], dict[str, set[str]]]] = [
    (
        "w1_burst.py",
        ["--nodes", "1"],
        {
            "w1_burst": {
                "tasks",
                "started",
                "missing",
                "duplicates",
                "tasks_per_s",
                "start_lag_ms_p50",
                "start_lag_ms_p99",
                "start_lag_ms_max",
            }
        },
    ),
    (
        "w2_latency.py",
        ["--nodes", "1"],
        {
            "w2_latency": {
                "seq_ms_p50",
                "seq_ms_p99",
                "seq_ms_max",
                "seq_calls_per_s",
                "conc_ms_p99",
                "conc_calls_per_s",
            }
        },
    ),
    (
        "w3_precision.py",
        ["--nodes", "1"],
        {
            "w3_precision": {
                "expected_fires",
                "missed",
                "duplicates",
                "within_50ms_pct",
                "within_100ms_pct",
                "within_1s_pct",
                "start_lag_ms_p99",
            }
        },
    ),
    (
        "w4_query.py",
        ["--nodes", "1"],
        {"w4_query_2000": {"get_ms_p50", "get_ms_p99", "list_tag_ms_p99", "list_prefix_ms_p99"}},
    ),
    ("bulk_import.py", ["--nodes", "1"], {"bulk_import_sdk": {"seconds", "tasks_per_s", "created"}}),
    (
        "scale.py",
        ["--nodes", "1"],
        {"scale": {"stored", "leader_rss_bytes", "disk_bytes_per_task", "create_ms_p99", "get_ms_p99"}},
    ),
    (
        "concurrency.py",
        ["--nodes", "1"],
        {
            "concurrency_leases": {"held_at_once", "leader_cpu_share", "leader_rss_bytes"},
            "concurrency_streams": {"connected", "leader_cpu_share", "leader_cpu_us_per_heartbeat"},
        },
    ),
    (
        "w5_sustained.py",
        ["--nodes", "1", "--mode", "both"],  # at smoke size both in one cluster: a window, then 2 steps
        {
            "w5_sustained": {
                "expected_fires",
                "started",
                "lost",
                "duplicates",
                "within_1s_pct",
                "lateness_ms_p50",
                "lateness_ms_p99",
                "lateness_ms_max",
                "leader_cpu_ms_per_fire",
                "followers_cpu_ms_per_fire",
                "slot_utilisation_pct",
            },
            "w5_ramp": {"held_rate_per_s", "steps_run", "steps"},
        },
    ),
    (
        "worker_exec.py",
        [],  # one node by default: the worker is what is measured
        {"worker_exec": {"best_execs_per_s", "best_slots", "worker_cpu_ms_per_exec", "failed", "per_slots"}},
    ),
    (
        "recovery.py",
        [],  # a leader to kill and two nodes to elect another: three nodes
        {
            "recovery": {
                "first_dispatch_after_kill_ms",
                "backlog_drained_after_kill_ms",
                "election_ms",
                "missed",
                "duplicates",
            }
        },
    ),
]


# Scripts running at once. Their own seconds at smoke size, one at a time on 2 cores: recovery 23 (three
# nodes and a kill), concurrency 13, w5 10 (a window and a 2-step ramp), w3 8, w1 7, worker_exec 6, the
# others 3-4 each.
PARALLEL = 3
LONGEST_FIRST = ["recovery.py", "concurrency.py", "w5_sustained.py", "w3_precision.py", "w1_burst.py"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-results")


def _run(script: str, extra: list[str], results: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--smoke", "--out-dir", str(results), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )


class Runs:
    """The scripts' runs, by name: those of the selected tests started in the background at once
    (PARALLEL at a time), any other when a test asks for it."""

    def __init__(self, results: Path, prefetch: set[str]) -> None:
        self.results = results
        self.pool = ThreadPoolExecutor(PARALLEL)
        self.started: dict[str, Future[subprocess.CompletedProcess[str]]] = {}
        for script, extra, _ in sorted(SCRIPTS, key=_longest_first):
            if script in prefetch:
                self.start(script, extra)

    def start(self, script: str, extra: list[str]) -> Future[subprocess.CompletedProcess[str]]:
        if script not in self.started:
            self.started[script] = self.pool.submit(_run, script, extra, self.results)
        return self.started[script]


def _longest_first(entry: tuple[str, list[str], dict[str, set[str]]]) -> int:
    return LONGEST_FIRST.index(entry[0]) if entry[0] in LONGEST_FIRST else len(LONGEST_FIRST)


def _whole_module_here(config: pytest.Config) -> bool:
    """Whether this process runs every selected test of a module: yes, but under pytest-xdist only with
    --dist loadscope or loadfile (otherwise a worker is handed tests one by one, and its session's
    items are every test collected, most of which it will not run)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return True
    return config.getoption("dist", "no") in ("loadscope", "loadfile")


@pytest.fixture(scope="module")
def runs(results: Path, request: pytest.FixtureRequest) -> Iterator[Runs]:
    prefetch: set[str] = set()
    if _whole_module_here(request.config):
        mine = [i for i in request.session.items if i.nodeid.startswith(f"{request.node.nodeid}::")]
        prefetch = {spec.params["script"] for i in mine if (spec := getattr(i, "callspec", None))}
    made = Runs(results, prefetch)
    try:
        yield made
    finally:
        made.pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize(("script", "extra", "expected"), SCRIPTS, ids=[s[0] for s in SCRIPTS])
def test_workload_smoke(
    script: str,
    extra: list[str],
    expected: dict[str, set[str]],
    results: Path,
    runs: Runs,
) -> None:
    out = runs.start(script, extra).result()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for workload, figures in expected.items():
        (path,) = results.glob(f"{workload}-*.json")
        doc = json.loads(path.read_text())
        assert doc.keys() >= DOC_KEYS
        assert doc["machine"].keys() >= MACHINE_KEYS
        assert doc["runs"], "no run recorded"
        for run in doc["runs"]:
            assert figures <= run.keys(), figures - run.keys()


def test_summary_renders_the_results(results: Path, runs: Runs) -> None:
    for run in runs.started.values():
        run.result()  # every script started here has ended (passed or not)
    if not list(results.glob("*.json")):
        pytest.skip("no result to render (the workload smoke tests did not run)")
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "summary.py"), "--results", str(results), "--all-figures"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.count("\n| ") > 5 and "| figure | target |" in out.stdout


@pytest.mark.bench
def test_peers_celery_smoke(tmp_path: Path) -> None:
    """`make bench-peers` at smoke size: Cronraft's W1 and W3 and the same on Celery 5 + Redis, the JSON
    result with every pair and ratio, the Markdown table. Not in the default run (marked `bench`); runs
    only where scripts/bench-deps.sh installed Celery and redis-server."""
    pytest.importorskip("celery", reason="the [bench] extra is not installed: scripts/bench-deps.sh")
    pytest.importorskip("redis", reason="the [bench] extra is not installed: scripts/bench-deps.sh")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: scripts/bench-deps.sh")
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "peers" / "compare.py"), "--smoke", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = tmp_path.glob("peers_celery-*.json")
    doc = json.loads(path.read_text())
    assert doc.keys() >= DOC_KEYS | {"markdown"}
    (run,) = doc["runs"]
    for side in ("cronraft", "celery", "ratio"):
        for key in ("w1_tasks_per_s", "w1_start_lag_ms_p99", "w3_within_50ms_pct", "w3_missed"):
            assert f"{side}_{key}" in run
    assert run["celery_w1_missing"] == 0, "every Celery task of the burst started"
    assert "### Cronraft vs Celery, same machine, same run" in out.stdout
