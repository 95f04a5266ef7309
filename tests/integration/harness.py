"""Real processes on loopback: `schedd` nodes and `schedworker` agents, each with its own data directory.

The integration tests' view of the one real-process harness (tests/support/cluster.py): `Cluster` keeps
the per-test options (node count, lease and Raft timings, extra config tables, environment) and hands
out `NodeProc` objects; spawning, signals, status polls and waits are `ProcessCluster`'s, the config is
tests/support/nodeconfig.py's. Waits are polls of a condition with a deadline (the condition is the
event: a leader elected, an execution recorded), never fixed sleeps standing in for synchronisation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from cronraft.proto.v1 import cluster_pb2
from tests.support.cluster import Proc, ProcessCluster, libfaketime_env, node_argv, tail_logs, worker_argv
from tests.support.nodeconfig import TEST_STORAGE, node_config, toml_dumps
from tests.support.ports import free_ports
from tests.support.wait import wait_until

T = TypeVar("T")
SECRET = "integration-test-secret"
# What the test workers run beyond a worker's default policy: shell payloads and HTTP payloads to
# loopback (the tests' servers), both refused by default.
TEST_WORKER_POLICY = ("--allow-shell", "--allow-http-loopback")


def wait_for(cond: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """`wait_until`, every exception of the condition counted as "not yet" (processes are starting)."""
    return wait_until(cond, timeout_s, what, interval=interval_s, ignore=Exception)


@dataclass
class NodeProc:
    node_id: str
    config_path: Path
    grpc_address: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    core: ProcessCluster | None = field(default=None, repr=False, compare=False)

    def status(self, timeout_s: float = 1.0) -> cluster_pb2.StatusResponse:
        """Its Cluster.Status; raises grpc.RpcError if it does not answer in time."""
        assert self.core is not None, "a NodeProc of a Cluster"
        return self.core.status_call(self.node_id, timeout_s)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    root: Path
    n: int = 3
    lease_ttl_ms: int = 3000
    heartbeat_interval_ms: int = 500
    nodes: list[NodeProc] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # Per node: extra environment (e.g. libfaketime's) and [raft] keys that differ from the defaults.
    node_env: dict[str, dict[str, str]] = field(default_factory=dict)
    raft_overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    scheduler_overrides: dict[str, int] = field(default_factory=dict)  # [scheduler] keys, every node
    extra_toml: str = ""  # appended to every node's config (e.g. a [clock] table)
    node_toml: dict[str, str] = field(default_factory=dict)  # appended to one node's config
    core: ProcessCluster = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.core = ProcessCluster(self.root)
        ports = free_ports(2 * self.n)
        members = [
            (f"node{i + 1}", f"127.0.0.1:{ports[i]}", f"127.0.0.1:{ports[self.n + i]}") for i in range(self.n)
        ]
        for node_id, grpc_addr, _ in members:
            cfg = self.root / f"{node_id}.toml"
            own_toml = f"{self.extra_toml}\n{self.node_toml.get(node_id, '')}"
            base = node_config(
                node_id,
                self.root / node_id,
                members,
                raft={
                    "election_timeout_ms": 1000,
                    "heartbeat_ms": 50,
                    **self.raft_overrides.get(node_id, {}),
                },
                scheduler={
                    "lease_ttl_ms": self.lease_ttl_ms,
                    "heartbeat_interval_ms": self.heartbeat_interval_ms,
                    "horizon_ms": 5000,
                    **self.scheduler_overrides,
                },
                secret_env="CRONRAFT_CLUSTER_SECRET" if self.n > 1 else None,
                # A test's own [storage] table replaces the small test reserve (TOML has one table each).
                storage=None if "[storage]" in own_toml else TEST_STORAGE,
            )
            # The extra tables are TOML text, appended as written.
            cfg.write_text(f"{toml_dumps(base)}\n{own_toml}")
            log = self.root / f"{node_id}.log"
            self.core.add(Proc(node_id, "node", log), grpc_addr)
            self.nodes.append(NodeProc(node_id, cfg, grpc_addr, log, core=self.core))
        self.env = {**os.environ, "CRONRAFT_CLUSTER_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}

    @property
    def servers(self) -> str:
        return self.core.servers

    def start_node(self, node: NodeProc) -> None:
        env = {**self.env, **self.node_env.get(node.node_id, {})}
        node.proc = self.core.spawn(node.node_id, node_argv(node.config_path), env)

    def start(self) -> Cluster:
        for node in self.nodes:
            self.start_node(node)
        self.wait_features()
        return self

    def status_of(self, node: NodeProc) -> cluster_pb2.StatusResponse:
        """`node`'s Cluster.Status (a cluster with TLS and tokens overrides this)."""
        return node.status()

    def wait_features(self, timeout_s: float = 30.0) -> NodeProc:
        """A ready leader that has every feature of its build in the cluster's level (raft.features). A
        leader proposes its first epoch at once; if its peers' first clock-probe answers (which say what
        they support) come after that, it raises the level a moment later, and until then a request that
        needs a feature (statistics, results) is refused FAILED_PRECONDITION. A node of an older release
        has no `features_waiting` (""): a cluster of those is settled as soon as it has a leader."""

        def settled() -> NodeProc | None:
            lead = self.leader()
            if lead is None:
                return None
            try:
                return lead if self.status_of(lead).features_waiting == "" else None
            except grpc.RpcError:
                return None

        return wait_for(settled, timeout_s, "a leader with every feature of its release in use")

    def start_worker(
        self,
        worker_id: str,
        capacity: int = 4,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        policy_args: tuple[str, ...] = TEST_WORKER_POLICY,
    ) -> None:
        """`policy_args`: by default TEST_WORKER_POLICY; pass () for a worker's default policy."""
        if worker_id not in self.workers:
            self.core.add(Proc(worker_id, "worker", self.root / f"{worker_id}.log"))
        outbox = self.root / f"{worker_id}-outbox"
        argv = worker_argv(worker_id, self.servers, capacity, outbox, (*policy_args, *extra_args))
        self.workers[worker_id] = self.core.spawn(worker_id, argv, {**self.env, **(env or {})})

    def _node(self, node_id: str) -> NodeProc:
        return next(n for n in self.nodes if n.node_id == node_id)

    def leader(self) -> NodeProc | None:
        lead = self.core.leader()
        return self._node(lead[0]) if lead is not None else None

    def wait_leader(self, timeout_s: float = 30.0) -> NodeProc:
        return wait_for(self.leader, timeout_s, "a ready leader")

    def wait_workers(self, count: int, timeout_s: float = 20.0) -> None:
        self.core.wait_workers(count, timeout_s)

    def kill(self, node: NodeProc, sig: int = signal.SIGKILL) -> None:
        assert node.proc is not None
        self.core.kill(node.node_id, sig, timeout_s=10, escalate=False)

    def wait_converged(self, timeout_s: float = 20.0) -> None:
        """Every live node has applied the same index."""
        self.core.wait_converged(timeout_s)

    def stop(self) -> None:
        self.core.terminate_all(10)
        self.core.close_channels()

    def logs(self) -> str:
        return tail_logs(sorted(self.root.glob("*.log")))


@dataclass(frozen=True)
class Worker:
    """A worker for `started` to start: `Cluster.start_worker`'s arguments."""

    worker_id: str
    capacity: int = 4
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] | None = field(default=None, hash=False)
    policy_args: tuple[str, ...] = TEST_WORKER_POLICY


def started(cluster: Cluster, workers: Sequence[Worker] = (Worker("w1", capacity=8),)) -> Cluster:
    """`cluster` started, `workers` started and every one of them connected to the leader; returns it.

    The one start of a test module's cluster. If a step fails (a node that does not come up, a worker
    that never connects), the failed setup's report carries the nodes' and workers' logs (conftest.py's
    pytest_runtest_makereport). The default is one worker, w1, with 8 slots: what most modules need."""
    cluster.start()
    for w in workers:
        cluster.start_worker(w.worker_id, w.capacity, w.extra_args, w.env, w.policy_args)
    cluster.wait_workers(len(workers))
    return cluster


def ledger_command(ledger: Path) -> list[str]:
    """A payload that appends its execution id and nominal time to a ledger outside the system."""
    code = (
        "import os; "
        f"f = open({str(ledger)!r}, 'a'); "
        "f.write(os.environ['CRONRAFT_EXECUTION_ID'] + ' ' + os.environ['CRONRAFT_NOMINAL_TIME_MS'] "
        "+ ' ' + os.environ['CRONRAFT_ATTEMPT'] + chr(10)); f.close(); print('ran')"
    )
    return [sys.executable, "-c", code]


def read_ledger(ledger: Path) -> list[tuple[str, int, int]]:
    if not ledger.exists():
        return []
    rows = []
    for line in ledger.read_text().splitlines():
        eid, nominal, attempt = line.split()
        rows.append((eid, int(nominal), int(attempt)))
    return rows


def stamp_command(path: Path) -> list[str]:
    """A payload that appends `execution_id attempt monotonic_ns` to `path` as its first act.

    CLOCK_MONOTONIC is one clock for every process of the machine (and libfaketime leaves it alone), so
    the harness compares these stamps with its own `time.monotonic_ns()`."""
    code = (
        "import os, time; t = time.monotonic_ns(); "
        f"f = open({str(path)!r}, 'a'); "
        "f.write(os.environ['CRONRAFT_EXECUTION_ID'] + ' ' + os.environ['CRONRAFT_ATTEMPT'] + ' ' + str(t) "
        "+ chr(10)); f.close()"
    )
    return [sys.executable, "-c", code]


def faketime_env(offset: str) -> dict[str, str]:
    """The environment that runs a process with its wall clock shifted by `offset` (e.g. "+5s"), its
    monotonic clock untouched: PyPI libfaketime's bundled build (shared/docs/fault-testing.md 3.5)."""
    return {**libfaketime_env(), "FAKETIME": offset}
