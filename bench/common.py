"""What every workload script of the benchmark suite shares (bench/README.md defines the workloads).

- `BenchCluster`: a real cluster on loopback (tests/integration/harness.Cluster: 3 `schedd` processes,
  durable = replicated acknowledgements) plus `schedworker` processes serving the `bench.*` handlers
  (bench/handlers.py), whose ledgers it reads back.
- Process probes from /proc (CPU seconds, RSS) and `du` of the data directories: no psutil.
- `Recorder`: runs a workload `--runs` times and writes one JSON result to bench/results/
  (<workload>-<UTC timestamp>.json) with the machine, the load average at start and end, the parameters,
  every run's figures and their median/min/max. bench/summary.py turns the latest results into Markdown.
- Statistics: nearest-rank percentiles over the full sample (no interpolation, no outlier removal).

Benchmarks never assert: a figure that misses its target is reported, not failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cronraft import _native  # noqa: E402
from cronraft.proto.v1 import common_pb2  # noqa: E402
from tests.integration.harness import Cluster, NodeProc, wait_for  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
LEDGER_ENV = "BENCH_LEDGER_DIR"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

__all__ = [
    "BenchCluster",
    "LedgerRow",
    "Recorder",
    "cpu_seconds",
    "du_bytes",
    "handler_spec",
    "machine_info",
    "pct",
    "read_ledgers",
    "rss_bytes",
    "summarize",
    "wait_for",
]


# ---------------------------------------------------------------------------------------- statistics


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile `p` (0..100) of `values` (sorted here); nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return float(ordered[int(rank) - 1])


def summarize(values: Sequence[float], prefix: str) -> dict[str, float]:
    """p50 / p99 / p999 / max / mean of a sample, keyed `<prefix>_p50` ... (nan when empty)."""
    return {
        f"{prefix}_p50": pct(values, 50),
        f"{prefix}_p99": pct(values, 99),
        f"{prefix}_p999": pct(values, 99.9),
        f"{prefix}_max": max(values) if values else float("nan"),
        f"{prefix}_mean": statistics.fmean(values) if values else float("nan"),
    }


# -------------------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict[str, Any]:
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_bytes": _mem_total(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        # The nodes this script starts inherit its environment, so they load what this process would.
        "apply_core": _native.describe(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------ process probes


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wakeups(pid: int) -> int:
    """Voluntary context switches so far of a process's live threads (/proc/<pid>/task/*/status): each is
    a sleep and a wake-up, which costs 60-150 us of CPU (mostly the kernel's) on our benchmark VMs
    (bench/perf_worker.py measured it), and the count does not move with the machine's load as CPU does."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches"):
                total += int(line.split()[1])
                break
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/statm."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM")


def rss_split(pid: int) -> dict[str, int]:
    """RSS split: anonymous (the heap: what the daemon holds) and file-backed (LMDB's memory map: page
    cache the kernel may drop, shared with every reader of the file)."""
    return {"rss_anon_bytes": _status_kib(pid, "RssAnon"), "rss_file_bytes": _status_kib(pid, "RssFile")}


def du_bytes(path: Path) -> int:
    """Bytes allocated on disk under `path` (sparse files count what they use, like `du`)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


# ------------------------------------------------------------------------------------------ ledgers


@dataclass(frozen=True, slots=True)
class LedgerRow:
    task_id: str
    nominal_ms: int
    start_ms: int  # wall clock when the handler started
    start_mono_ns: int
    execution_id: str
    attempt: int
    token_term: int  # the term of the leader that granted the lease


def read_ledgers(directory: Path) -> list[LedgerRow]:
    """Every row the `bench.*` handlers of every worker wrote (bench/handlers.py: tab-separated)."""
    rows: list[LedgerRow] = []
    for path in sorted(directory.glob("ledger-*.tsv")):
        with open(path, encoding="ascii") as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) != 7 or not parts[6].endswith("\n"):
                    continue  # a line being written
                term = int(parts[6].split(".")[0])
                rows.append(
                    LedgerRow(
                        parts[0], int(parts[1]), int(parts[2]), int(parts[3]), parts[4], int(parts[5]), term
                    )
                )
    return rows


def handler_spec(
    name: str,
    schedule: common_pb2.Schedule,
    *,
    handler: str = "bench.noop",
    args_json: str = "",
    tags: dict[str, str] | None = None,
    queue: str = "",
) -> common_pb2.TaskSpec:
    """A task whose payload is a `bench.*` handler (no process per attempt: the worker calls it)."""
    return common_pb2.TaskSpec(
        name=name,
        tags=tags or {},
        schedule=schedule,
        payload=common_pb2.Payload(handler=common_pb2.HandlerPayload(name=handler, args_json=args_json)),
        queue=queue,
    )


# ------------------------------------------------------------------------------------------ cluster


class BenchCluster:
    """A 3-node cluster and bench workers in a temporary directory (kept with `keep=True`)."""

    def __init__(
        self,
        *,
        nodes: int = 3,
        lease_ttl_ms: int = 10_000,
        heartbeat_interval_ms: int = 2_000,
        root: Path | None = None,
        keep: bool = False,
        scheduler: dict[str, int] | None = None,
    ) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if root is None and keep:
            root = Path(tempfile.mkdtemp(prefix="cronraft-bench-"))
            print(f"keeping the cluster's directory: {root}", flush=True)
        elif root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="cronraft-bench-", ignore_cleanup_errors=True)
            root = Path(self._tmp.name)
        self.root = root
        self.keep = keep
        self.ledger_dir = root / "ledgers"
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(
            root,
            n=nodes,
            lease_ttl_ms=lease_ttl_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            # The shipped horizon (the test harness loads a shorter one), plus what a workload sets.
            scheduler_overrides={"horizon_ms": 20_000, **(scheduler or {})},
        )
        self.workers: list[str] = []

    @property
    def servers(self) -> str:
        return self.cluster.servers

    def __enter__(self) -> BenchCluster:
        try:
            self.cluster.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.cluster.stop()
        if self._tmp is not None and not self.keep:
            self._tmp.cleanup()

    def leader(self) -> NodeProc:
        return self.cluster.wait_leader()

    def start_workers(self, count: int, capacity: int, *, queue: str = "") -> None:
        env = {
            LEDGER_ENV: str(self.ledger_dir),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        extra: tuple[str, ...] = ("--handlers", "bench.handlers", "--log-level", "warning")
        if queue:
            extra = (*extra, "--queue", queue)
        for _ in range(count):
            worker_id = f"bench-w{len(self.workers) + 1}"
            self.cluster.start_worker(worker_id, capacity=capacity, extra_args=extra, env=env)
            self.workers.append(worker_id)
        self.cluster.wait_workers(len(self.workers), timeout_s=60)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.cluster.workers.values()]

    def ledger(self) -> list[LedgerRow]:
        return read_ledgers(self.ledger_dir)

    def wait_ledger(
        self, predicate: Callable[[list[LedgerRow]], bool], timeout_s: float, interval_s: float = 0.25
    ) -> list[LedgerRow]:
        """Poll the ledgers until `predicate(rows)`; the last rows read either way (no exception)."""
        deadline = time.monotonic() + timeout_s
        rows = self.ledger()
        while not predicate(rows) and time.monotonic() < deadline:
            time.sleep(interval_s)
            rows = self.ledger()
        return rows

    def kill_leader(self) -> tuple[NodeProc, float]:
        """SIGKILL the leader; (the node, wall time of the kill in ms)."""
        leader = self.cluster.wait_leader()
        assert leader.proc is not None
        t = time.time() * 1000
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(timeout=10)
        return leader, t

    def node_stats(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for node in self.cluster.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            out[node.node_id] = {
                "rss_bytes": rss_bytes(node.proc.pid),
                "peak_rss_bytes": peak_rss_bytes(node.proc.pid),
                **rss_split(node.proc.pid),
                "cpu_s": cpu_seconds(node.proc.pid),
                "disk_bytes": du_bytes(self.root / node.node_id),
                "disk_state_bytes": du_bytes(self.root / node.node_id / "state"),  # LMDB
                "disk_raft_bytes": du_bytes(self.root / node.node_id / "raft"),  # journal + snapshot
            }
        return out


# ------------------------------------------------------------------------------------------ results


def base_parser(description: str, *, runs: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=runs, help=f"repetitions (default {runs}); figures: median")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves the harness works (make test)")
    p.add_argument("--nodes", type=int, default=3, help="schedd processes (default 3)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where the JSON result goes")
    p.add_argument("--keep", action="store_true", help="keep the cluster's temporary directory")
    return p


@dataclass
class Recorder:
    """One benchmark invocation: its parameters, its runs' figures, its JSON result."""

    workload: str
    params: dict[str, Any]
    out_dir: Path = RESULTS_DIR
    runs: list[dict[str, Any]] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_start: list[float] = field(default_factory=load_average)

    def add(self, figures: dict[str, Any]) -> None:
        self.runs.append(figures)
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items() if _scalar(v)}
        print(f"[{self.workload}] run {len(self.runs)}: {json.dumps(shown)}", flush=True)

    def summary(self) -> dict[str, dict[str, float]]:
        """median, min and max over the runs of every numeric figure."""
        keys = [k for k in self.runs[0] if _number(self.runs[0][k])] if self.runs else []
        out: dict[str, dict[str, float]] = {}
        for key in keys:
            values = [r[key] for r in self.runs if _number(r.get(key)) and r[key] == r[key]]
            if values:
                out[key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
        return out

    def write(self) -> Path:
        doc = {
            "workload": self.workload,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": machine_info(),
            "load_start": self.load_start,
            "load_end": load_average(),
            "params": self.params,
            "runs": self.runs,
            "summary": self.summary(),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.workload}-{self.started.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
        print(f"[{self.workload}] result: {path}", flush=True)
        return path


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _scalar(v: Any) -> bool:
    return isinstance(v, int | float | str | bool) or v is None


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


@contextmanager
def sampled_cpu(pids: dict[str, int]) -> Iterator[dict[str, float]]:
    """CPU seconds each process used inside the block, and the block's wall seconds (`_wall_s`)."""
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    t0 = time.monotonic()
    out: dict[str, float] = {}
    yield out
    out["_wall_s"] = time.monotonic() - t0
    for k, p in pids.items():
        try:
            out[k] = cpu_seconds(p) - before[k]
        except OSError:
            out[k] = float("nan")


def now_ms() -> int:
    return time.time_ns() // 1_000_000
