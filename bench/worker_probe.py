"""What the worker-side benchmarks (W5, bench/w5_sustained.py; the argv rate, bench/worker_exec.py) read
from their `schedworker` processes while they run.

- `start_metered_workers`: bench workers (as `BenchCluster.start_workers`) that also serve Prometheus
  metrics (`--metrics-address`, docs/monitoring.md) on a loopback port each, optionally with the
  worker's default policy (no `--allow-shell`): what a real-process benchmark must run under.
- `scrape`: one worker's gauges and counters (attempts running, capacity, attempts ended by outcome).
- `SlotSampler`: a thread sampling every worker's "attempts running" during a window; the integral over
  time is the busy slot-seconds. A slot counts as busy from the lease offer until the result is stored in
  the outbox (`Worker.attempts_running`): a held start (fire ahead) holds its slot, so this is the
  occupancy that capacity planning needs, not only the time the payload itself ran.
- `cpu_with_children`: a process's CPU seconds plus those of its reaped children (`cutime`/`cstime`):
  the payload processes a worker ran and waited for.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import CLK_TCK, LEDGER_ENV, REPO, BenchCluster
from tests.support.ports import free_ports

__all__ = ["SlotSampler", "attempts_ended", "cpu_with_children", "scrape", "start_metered_workers"]

SCRAPE_TIMEOUT_S = 2.0


def start_metered_workers(
    bc: BenchCluster,
    count: int,
    capacity: int,
    *,
    default_policy: bool = False,
    extra_args: Sequence[str] = (),
) -> list[int]:
    """Start `count` bench workers of `capacity` slots, each serving metrics on its own loopback port;
    return the ports (in the order of `bc.workers`). `default_policy`: the worker's secure defaults
    (argv, http, handler payloads; no shell), as an operator runs it."""
    ports = free_ports(count)
    env = {
        LEDGER_ENV: str(bc.ledger_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    policy: tuple[str, ...] = () if default_policy else ("--allow-shell", "--allow-http-loopback")
    for port in ports:
        worker_id = f"bench-w{len(bc.workers) + 1}"
        args = (
            "--handlers",
            "bench.handlers",
            "--log-level",
            "warning",
            "--metrics-address",
            f"127.0.0.1:{port}",
            *extra_args,
        )
        bc.cluster.start_worker(worker_id, capacity=capacity, extra_args=args, env=env, policy_args=policy)
        bc.workers.append(worker_id)
    alive = sum(1 for w in bc.cluster.workers.values() if w.poll() is None)  # a bench may stop some
    bc.cluster.wait_workers(alive, timeout_s=60)
    return ports


def scrape(port: int) -> dict[str, float]:
    """The worker's metrics as {name or name{labels}: value} (Prometheus text format, comments skipped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


def attempts_ended(metrics: dict[str, float], outcome: str = "succeeded") -> float:
    return metrics.get(f'cronraft_worker_attempts_total{{outcome="{outcome}"}}', 0.0)


@dataclass
class SlotSampler:
    """Samples `cronraft_worker_attempts_running` of every worker every `interval_s` while running.

    The interval is deliberately not a divisor of a second, so that samples do not lock onto the fires of
    a fixed-rate load (all at whole seconds in W3-like loads)."""

    ports: Sequence[int]
    interval_s: float = 0.237
    busy_slot_s: float = 0.0
    capacity: float = 0.0
    peak_running: float = 0.0
    samples: int = 0
    failed_scrapes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _t0: float = 0.0
    _t1: float = 0.0

    def start(self) -> SlotSampler:
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="slot-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._t1 = time.monotonic()

    @property
    def wall_s(self) -> float:
        return (self._t1 or time.monotonic()) - self._t0

    def utilisation(self) -> float:
        """Busy slot-seconds / available slot-seconds over the sampled window (nan without samples)."""
        available = self.capacity * self.wall_s
        return self.busy_slot_s / available if available > 0 and self.samples else float("nan")

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.interval_s):
            running = capacity = 0.0
            ok = True
            for port in self.ports:
                try:
                    m = scrape(port)
                except OSError:
                    ok = False
                    continue
                running += m.get("cronraft_worker_attempts_running", 0.0)
                capacity += m.get("cronraft_worker_capacity_slots", 0.0)
            now = time.monotonic()
            if not ok:
                self.failed_scrapes += 1
            # Rectangle rule: the count seen now held since the previous sample.
            self.busy_slot_s += running * (now - last)
            self.capacity = max(self.capacity, capacity)
            self.peak_running = max(self.peak_running, running)
            self.samples += 1
            last = now


def cpu_with_children(pid: int) -> float:
    """User + system CPU seconds of a process and of its children it has waited for (/proc/PID/stat:
    utime, stime, cutime, cstime): a worker's own work and the payload processes it ran."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK
