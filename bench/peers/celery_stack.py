"""Celery 5 + Redis as processes on loopback, and W1 / W3 (bench/README.md) replayed on them.

`CeleryStack` starts, in a temporary directory: `redis-server` on a reserved loopback port (no
persistence: `save ""`, no AOF; the Cronraft side does not fsync either), one `celery worker` with the
prefork pool (`--concurrency`, default the core count: Celery's own default) and, for W3, `celery beat`
with the fixed-rate schedule of bench/peers/celery_app.py. Gossip and mingle are off: with one worker
they only delay its start. Everything it started is stopped on exit (beat and the worker first, then
Redis), by pid.

- W1 on Celery: N calls of `bench.noop` published ahead with `eta` = the due instant D (Celery's way to
  run a task at a given time: the worker receives it at once and holds it until its ETA), D chosen as
  for Cronraft (start + 4 s + N/2 ms, rounded down to the second). Figures as w1_burst.py's: tasks/s =
  started / (last first start - D), start lag, missing, duplicates, CPU per started task of Redis and of
  the worker (its main process and its pool children) from the end of publishing to the last start.
- W3 on Celery: beat with T entries firing every P ms at common instants (anchor on a whole second); the
  window opens on the first whole period 3 s after beat started and lasts D s; up to 10 s of grace.
  Figures as w3_precision.py's, plus the CPU share of beat, Redis and the worker over the window.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import REPO, LedgerRow, cpu_seconds, now_ms, read_ledgers, summarize
from tests.support.ports import free_port, release

W3_GRACE_S = 10.0
CELERY_APP = "bench.peers.celery_app"


def available() -> str | None:
    """None when Celery and redis-server are installed, else what is missing (scripts/bench-deps.sh)."""
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed: scripts/bench-deps.sh"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed: scripts/bench-deps.sh"
    return None


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a prefork worker's pool processes), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


class CeleryStack:
    def __init__(self, *, concurrency: int = 0, keep: bool = False) -> None:
        self.concurrency = concurrency or os.cpu_count() or 1
        self.root = Path(tempfile.mkdtemp(prefix="cronraft-bench-celery-"))
        self.keep = keep
        self.ledger_dir = self.root / "ledgers"
        self.ledger_dir.mkdir()
        self.port = free_port()
        self.broker = f"redis://127.0.0.1:{self.port}/0"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # This process's own app for this Redis (publishing by task name, pings): an app reused across
        # stacks keeps pooled connections to an earlier, stopped Redis and retries them.
        from celery import Celery  # here: `available()` must work without it

        self.client = Celery("cronraft_bench_peer_client", broker=self.broker, set_as_current=False)
        self.client.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
        self.env = {
            **os.environ,
            "BENCH_CELERY_BROKER": self.broker,
            "BENCH_LEDGER_DIR": str(self.ledger_dir),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }

    # ------------------------------------------------------------------------------------ processes

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 (the child holds it)
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env or self.env, cwd=self.root
        )
        log.close()

    def __enter__(self) -> CeleryStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        conf = ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.root)]
        conf += ["--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
        self._spawn("redis", ["redis-server", *conf])
        self._wait(self._redis_up, 20, "redis-server to answer PING")
        celery = [sys.executable, "-m", "celery", "-A", CELERY_APP]
        self._spawn(
            "worker",
            [
                *celery,
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "warning",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"bench-{self.port}@%h",
            ],
        )
        self._wait(self._worker_up, 60, "the Celery worker to answer a ping")

    def start_beat(self, tasks: int, period_ms: int, anchor_ms: int) -> None:
        env = {**self.env, "BENCH_CELERY_BEAT": f"{tasks},{period_ms},{anchor_ms}"}
        argv = [sys.executable, "-m", "celery", "-A", CELERY_APP, "beat", "--loglevel", "warning"]
        self._spawn("beat", [*argv, "--scheduler", "celery.beat:Scheduler"], env)

    def stop_process(self, name: str, timeout_s: float = 15) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in ("beat", "worker", "redis"):
            self.stop_process(name)
        self.client.close()
        release([self.port])
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print(f"keeping the Celery stack's directory: {self.root}", flush=True)

    def pids(self) -> dict[str, int]:
        """Every process of the stack now, the worker's pool children included."""
        out = {name: p.pid for name, p in self.procs.items() if p.poll() is None}
        if "worker" in out:
            for i, pid in enumerate(children(out["worker"])):
                out[f"worker_child{i}"] = pid
        return out

    def _redis_up(self) -> bool:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1).ping())

    def _worker_up(self) -> bool:
        return bool(self.client.control.ping(timeout=1.0))

    def _wait(self, cond: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{log}")
            try:
                if cond():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def ledger(self) -> list[LedgerRow]:
        return read_ledgers(self.ledger_dir)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = cpu_seconds(pid)
        except OSError:
            out[name] = float("nan")
    return out


def _cpu_delta(before: dict[str, float], pids: dict[str, int]) -> dict[str, float]:
    after = _cpu(pids)
    return {k: after[k] - before.get(k, 0.0) for k in after if k in before}


# ------------------------------------------------------------------------------------------- W1


def w1(size: int, *, concurrency: int = 0, lead_ms: int = 0, keep: bool = False) -> dict[str, Any]:
    with CeleryStack(concurrency=concurrency, keep=keep) as stack:
        lead_ms = lead_ms or int(4_000 + size / 2.0)
        due = now_ms() + lead_ms
        due -= due % 1000
        eta = datetime.fromtimestamp(due / 1000, tz=UTC)
        with stack.client.producer_or_acquire() as producer:
            for i in range(size):
                stack.client.send_task("bench.noop", (f"w1-{i}", due), eta=eta, producer=producer)
        published = now_ms()
        if published >= due - 500:
            raise SystemExit(f"publishing {size} tasks overran the due instant by {published - due + 500} ms")
        pids = stack.pids()
        cpu0 = _cpu(pids)
        time.sleep(max(0.0, (due - now_ms() - 300) / 1000))
        deadline = time.monotonic() + 120 + size / 100
        rows = stack.ledger()
        while len({r.task_id for r in rows}) < size and time.monotonic() < deadline:
            time.sleep(0.25)
            rows = stack.ledger()
        cpu = _cpu_delta(cpu0, pids)
    first: dict[str, int] = {}
    for r in rows:
        first[r.task_id] = min(first.get(r.task_id, r.start_ms), r.start_ms)
    pairs = {(r.task_id, r.nominal_ms) for r in rows}
    starts = sorted(first.values())
    last = starts[-1] if starts else due
    n = max(1, len(first))
    worker_cpu = sum(v for k, v in cpu.items() if k.startswith("worker"))
    return {
        "tasks": size,
        "started": len(first),
        "missing": size - len(first),
        "duplicates": len(rows) - len(pairs),
        "tasks_per_s": len(first) / max(1e-3, (last - due) / 1000),
        "last_start_after_due_ms": last - due,
        **summarize([s - due for s in starts], "start_lag_ms"),
        "broker_cpu_ms_per_task": cpu.get("redis", float("nan")) * 1000 / n,
        "workers_cpu_ms_per_task": worker_cpu * 1000 / n,
        "all_cpu_ms_per_task": (cpu.get("redis", 0.0) + worker_cpu) * 1000 / n,
        "concurrency": stack.concurrency,
        "publish_s": (published - (due - lead_ms)) / 1000,
    }


# ------------------------------------------------------------------------------------------- W3


def w3(
    tasks: int, seconds: int, *, period_ms: int = 1_000, concurrency: int = 0, keep: bool = False
) -> dict[str, Any]:
    with CeleryStack(concurrency=concurrency, keep=keep) as stack:
        anchor = now_ms() - now_ms() % 1000
        stack.start_beat(tasks, period_ms, anchor)
        start = now_ms() + 3_000
        start += (period_ms - (start - anchor) % period_ms) % period_ms
        end = start + seconds * 1000
        time.sleep(max(0.0, (start - now_ms()) / 1000))
        pids = stack.pids()
        cpu0 = _cpu(pids)
        t0 = time.monotonic()
        time.sleep(max(0.0, (end - now_ms()) / 1000))
        cpu = _cpu_delta(cpu0, pids)
        wall = time.monotonic() - t0
        expected = {(f"w3-{i}", t) for i in range(tasks) for t in range(start, end, period_ms)}
        deadline = time.monotonic() + W3_GRACE_S
        rows = stack.ledger()
        while not expected <= {(r.task_id, r.nominal_ms) for r in rows} and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = stack.ledger()
    window = [r for r in rows if (r.task_id, r.nominal_ms) in expected]
    seen: dict[tuple[str, int], int] = {}
    for r in window:
        key = (r.task_id, r.nominal_ms)
        seen[key] = min(seen.get(key, r.start_ms), r.start_ms)
    lags = [s - n for (_, n), s in seen.items()]
    total = max(1, len(expected))

    def within(ms: int) -> float:
        return sum(1 for lag in lags if abs(lag) <= ms) / total * 100

    worker_cpu = sum(v for k, v in cpu.items() if k.startswith("worker"))
    return {
        "expected_fires": len(expected),
        "started": len(seen),
        "missed": len(expected) - len(seen),
        "duplicates": len(window) - len(seen),
        "within_50ms_pct": within(50),
        "within_100ms_pct": within(100),
        "within_1s_pct": within(1000),
        **summarize(lags, "start_lag_ms"),
        "start_lag_ms_min": min(lags) if lags else float("nan"),
        "beat_cpu_share": cpu.get("beat", float("nan")) / wall,
        "broker_cpu_share": cpu.get("redis", float("nan")) / wall,
        "workers_cpu_share": worker_cpu / wall,
        "concurrency": stack.concurrency,
    }
