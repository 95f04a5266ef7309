"""The one real-process harness: `schedd` nodes and `schedworker` agents run as child processes, by name.

`ProcessCluster` is what the integration harness (tests/integration/harness.py, `Cluster`) and the fault
harness (tests/fault/cluster.py, `FaultCluster`) share:

- the process table: `spawn` a node or worker with its output appended to its log (across restarts),
  `kill` (send a signal and wait, SIGKILL after a timeout), `pause` (SIGSTOP) and `resume`,
  `terminate_all` at the end;
- the command lines both harnesses run (`node_argv`, `worker_argv`);
- `Cluster.Status` over gRPC: one channel per node, nodes polled in parallel, and the waits built on it
  (`wait_leader`, `wait_ready`, `wait_workers`, `wait_converged`, `wait_caught_up`), which raise
  `WaitTimeout` naming what was awaited and the state of every process.

What stays with each harness: where its files go and what its processes are called, the config it
writes (both through tests/support/nodeconfig.py), the environment of its processes, and its own API
on top (the integration tests' `NodeProc` objects; the fault harness's network, clock skew, disk, fault
log and cleanup registry). A harness adapts the table through `before` callbacks (run under the table's
lock just before a signal: the fault log) and the `_exited` hook (an exit was reaped).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeVar

import grpc

from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc
from tests.support.wait import WaitTimeout, wait_until

__all__ = [
    "NODE_MODULE",
    "WORKER_MODULE",
    "Proc",
    "ProcessCluster",
    "WaitTimeout",
    "libfaketime_env",
    "node_argv",
    "tail_logs",
    "worker_argv",
]

NODE_MODULE = "cronraft.daemon.main"
WORKER_MODULE = "cronraft.client.worker"
T = TypeVar("T")
Status = cluster_pb2.StatusResponse

# A restarted node is found again within half a second (gRPC's default backoff grows to two minutes).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def node_argv(config_path: Path) -> list[str]:
    """The command line of a `schedd` node."""
    return [sys.executable, "-m", NODE_MODULE, "--config", str(config_path)]


def worker_argv(
    worker_id: str, servers: str, capacity: int, outbox_dir: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The command line of a `schedworker` agent, JSON logs, `extra` appended (handlers, policy)."""
    return [
        sys.executable, "-m", WORKER_MODULE,
        "--server", servers, "--id", worker_id, "--capacity", str(capacity),
        "--outbox-dir", str(outbox_dir), "--log-format", "json", *extra,
    ]  # fmt: skip


def libfaketime_env() -> dict[str, str]:
    """The environment that preloads PyPI libfaketime's bundled build (Debian's 0.9.10 breaks Python
    3.11: shared/docs/fault-testing.md 3.5); the caller adds FAKETIME or FAKETIME_TIMESTAMP_FILE.
    Raises ImportError if the package is not installed."""
    import libfaketime  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return dict(libfaketime.get_reload_information()[1])


def tail_logs(paths: Iterable[Path], chars: int = 4000) -> str:
    """The last `chars` characters of each log, under its file name (for a failed test's output)."""
    return "\n".join(f"==== {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in paths)


@dataclass
class Proc:
    """One named child process; `popen` is its current run (None before the first start)."""

    name: str
    kind: Literal["node", "worker"]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False  # SIGSTOPped by `pause` (a raw SIGSTOP from a test is not seen here)
    expect_exit: bool = False  # the harness signalled it: an exit now is not a crash

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class ProcessCluster:
    """Nodes and workers by name: their processes, their logs and their `Cluster.Status`.

    `root` is every process's working directory; `new_session`: each process in its own session, so a
    signal to the harness's process group (Ctrl-C) does not reach it (the fault harness stops its own)."""

    # Every table made in this process, for a failed test's report (tests/integration/conftest.py).
    _made: ClassVar[weakref.WeakSet[ProcessCluster]] = weakref.WeakSet()

    def __init__(self, root: Path, *, new_session: bool = False) -> None:
        ProcessCluster._made.add(self)
        self._stopped = False  # terminate_all ran: a later test's failure is not about this table
        self.root = root
        self.new_session = new_session
        self._procs: dict[str, Proc] = {}
        self._addresses: dict[str, str] = {}
        self._lock = threading.RLock()  # the process table; subclasses take it for their own state too
        self._channels: dict[str, grpc.Channel] = {}
        self._channel_lock = threading.Lock()
        self._last_leader: tuple[str, int] | None = None

    # --- the table -------------------------------------------------------------------------------

    def add(self, proc: Proc, grpc_address: str | None = None) -> Proc:
        """Register a process (a node with the gRPC address the harness dials). Returns it."""
        self._procs[proc.name] = proc
        if grpc_address is not None:
            self._addresses[proc.name] = grpc_address
        return proc

    def _check(self, name: str, kind: str | None = None) -> Proc:
        proc = self._procs.get(name)
        if proc is None or (kind is not None and proc.kind != kind):
            raise KeyError(f"no {kind or 'process'} named {name!r}")
        return proc

    def _names(self, kind: str) -> list[str]:
        return [p.name for p in self._procs.values() if p.kind == kind]

    def grpc_address(self, nid: str) -> str:
        """The node's gRPC address as the harness dials it."""
        return self._addresses[nid]

    @property
    def servers(self) -> str:
        """Comma-separated gRPC addresses of all nodes, reachable from the harness process."""
        return ",".join(self.grpc_address(n) for n in self._names("node"))

    def alive(self, name: str) -> bool:
        return self._check(name).alive

    def paused(self, name: str) -> bool:
        return self._check(name).paused

    def pid(self, name: str) -> int | None:
        popen = self._check(name).popen
        return popen.pid if popen is not None and popen.poll() is None else None

    def logs(self) -> str:
        return tail_logs(sorted({p.log_path for p in self._procs.values() if p.log_path.exists()}))

    @classmethod
    def in_use(cls) -> list[ProcessCluster]:
        """The tables made in this process that started a process and were not stopped since (a test's,
        its module's): the ones whose logs explain a failure now, even if every process has exited."""
        return [c for c in list(cls._made) if not c._stopped and any(p.popen for p in c._procs.values())]

    def _describe(self) -> str:
        states = ("paused" if p.paused else "up" if p.alive else "down" for p in self._procs.values())
        return ", ".join(f"{name}={state}" for name, state in zip(self._procs, states, strict=True))

    # --- processes -------------------------------------------------------------------------------

    def spawn(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start `argv` as process `name`, its stdout and stderr appended to its log."""
        proc = self._check(name)
        self._stopped = False
        with self._lock:
            proc.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(proc.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                popen = subprocess.Popen(
                    list(argv),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env),
                    cwd=self.root,
                    start_new_session=self.new_session,
                )
            proc.popen = popen
            proc.paused = False
            proc.expect_exit = False
        return popen

    def kill(
        self,
        name: str,
        sig: int = signal.SIGKILL,
        timeout_s: float = 15.0,
        *,
        escalate: bool = True,
        before: Callable[[], None] | None = None,
    ) -> bool:
        """Send `sig` and wait for the exit; False if it was not running. `escalate`: SIGKILL if the exit
        does not come within `timeout_s` (else subprocess.TimeoutExpired propagates). `before` runs under
        the table's lock just before the signal."""
        proc = self._check(name)
        popen = proc.popen
        if popen is None or popen.poll() is not None:
            return False
        with self._lock:
            proc.expect_exit = True
            if before is not None:
                before()
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(sig)
                if proc.paused and sig != signal.SIGKILL:
                    popen.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only once resumed
            proc.paused = False
        if escalate:
            try:
                popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        else:
            popen.wait(timeout=timeout_s)
        self._exited(proc)
        return True

    def pause(self, name: str, *, before: Callable[[], None] | None = None) -> bool:
        """SIGSTOP the process (all its threads); False if it was not running or already paused."""
        proc = self._check(name)
        popen = proc.popen
        if popen is None or popen.poll() is not None or proc.paused:
            return False
        with self._lock:
            if before is not None:
                before()
            popen.send_signal(signal.SIGSTOP)
            proc.paused = True
        return True

    def resume(self, name: str) -> bool:
        """SIGCONT a paused process; False if it was not paused."""
        proc = self._check(name)
        popen = proc.popen
        if popen is None or not proc.paused:
            return False
        with self._lock:
            if popen.poll() is None:
                popen.send_signal(signal.SIGCONT)
            proc.paused = False
        return True

    def terminate_all(self, timeout_s: float) -> None:
        """SIGTERM every running process at once (workers first), then wait for all of them within one
        `timeout_s`; SIGKILL whatever is left."""
        self._stopped = True
        order = [*self._names("worker"), *self._names("node")]
        running = [p for p in (self._procs[n] for n in order) if p.alive]
        for proc in running:
            assert proc.popen is not None
            with self._lock:
                proc.expect_exit = True
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.send_signal(signal.SIGTERM)
                    if proc.paused:
                        proc.popen.send_signal(signal.SIGCONT)
                proc.paused = False
        deadline = time.monotonic() + timeout_s
        for proc in running:
            assert proc.popen is not None
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            self._exited(proc)

    def _exited(self, proc: Proc) -> None:
        """Called after the harness reaped an exit it caused (kill, terminate_all)."""

    # --- status ----------------------------------------------------------------------------------

    def _channel(self, nid: str) -> grpc.Channel:
        with self._channel_lock:
            ch = self._channels.get(nid)
            if ch is None:
                ch = self._channels[nid] = grpc.insecure_channel(
                    self.grpc_address(nid), options=_CHANNEL_OPTIONS
                )
            return ch

    def close_channels(self) -> None:
        """Close the status channels (new ones are opened on the next poll)."""
        with self._channel_lock:
            channels, self._channels = list(self._channels.values()), {}
        for ch in channels:
            with contextlib.suppress(Exception):
                ch.close()

    def status_call(self, nid: str, timeout_s: float = 1.0) -> Status:
        """The node's Cluster.Status; raises grpc.RpcError if it does not answer in time."""
        resp: Status = cluster_pb2_grpc.ClusterStub(self._channel(nid)).Status(
            cluster_pb2.StatusRequest(), timeout=timeout_s
        )
        return resp

    def poll(self, nids: Iterable[str], timeout_s: float) -> dict[str, Status | None]:
        """Status of several nodes in parallel (None: no answer in time)."""
        futures = {
            nid: cluster_pb2_grpc.ClusterStub(self._channel(nid)).Status.future(
                cluster_pb2.StatusRequest(), timeout=timeout_s
            )
            for nid in nids
        }
        out: dict[str, Status | None] = {}
        for nid, fut in futures.items():
            try:
                out[nid] = fut.result()
            except grpc.RpcError:
                out[nid] = None
        return out

    def status(self, nid: str, timeout_s: float = 1.0) -> Status | None:
        """The node's Cluster.Status, or None if it is down or does not answer in time."""
        self._check(nid, "node")
        if not self.alive(nid):
            return None
        return self.poll([nid], timeout_s)[nid]

    def _responsive(self) -> list[str]:
        return [n for n in self._names("node") if self.alive(n) and not self._procs[n].paused]

    def leader(self, timeout_s: float = 1.0) -> tuple[str, int] | None:
        """(node id, Raft term) of the node that reports is_leader and ready (the highest term if two do)."""
        found = [
            (st.term, nid)
            for nid, st in self.poll(self._responsive(), timeout_s).items()
            if st is not None and st.is_leader and st.ready
        ]
        if not found:
            return None
        term, nid = max(found)
        self._last_leader = (nid, int(term))
        return self._last_leader

    def _wait(
        self,
        cond: Callable[[], T],
        timeout_s: float,
        what: str,
        interval_s: float,
        seen: Callable[[], object] | None = None,
    ) -> T:
        """`wait_until`; the failure also says what `seen` last saw and the state of every process."""
        try:
            return wait_until(cond, timeout_s, what, interval=interval_s)
        except WaitTimeout as e:
            last = "" if seen is None else f"; last seen: {seen()}"
            raise WaitTimeout(f"{e}{last} ({self._describe()})") from None

    def wait_leader(self, timeout_s: float = 30.0) -> str:
        """The id of a ready leader, as soon as one reports."""
        lead = self._wait(self.leader, timeout_s, "a ready leader", 0.05)
        assert lead is not None  # a wait returns only a truthy value
        return lead[0]

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Every live node answers and reports ready (leader duties running, or caught up)."""
        late: list[str] = []

        def ready() -> bool:
            got = self.poll(self._responsive(), 1.0)
            late[:] = sorted(n for n, st in got.items() if st is None or not st.ready)
            return bool(got) and not late

        self._wait(ready, timeout_s, "every live node to be ready", 0.1, seen=lambda: f"{late} not ready")

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> None:
        """The leader reports at least `count` connected workers."""

        def connected() -> int:
            lead = self.leader()
            st = self.status(lead[0]) if lead is not None else None
            return st.connected_workers if st is not None else 0

        self._wait(lambda: connected() >= count, timeout_s, f"{count} connected workers", 0.1)

    def _applied(self) -> dict[str, int | None]:
        return {n: st.applied_index if st else None for n, st in self.poll(self._responsive(), 1.0).items()}

    def wait_converged(self, timeout_s: float = 30.0) -> None:
        """Every live (running, not paused) node reports the same applied_index."""
        last: dict[str, int | None] = {}

        def same() -> bool:
            last.clear()
            last.update(self._applied())
            values = set(last.values())
            return bool(last) and None not in values and len(values) == 1

        self._wait(
            same, timeout_s, "every live node to apply the same index", 0.1, seen=lambda: f"applied {last}"
        )

    def wait_caught_up(self, timeout_s: float = 30.0) -> None:
        """Weaker than wait_converged, for a cluster under load: every live node has applied at least
        the leader's commit index as it was when this call started."""
        lead = self.wait_leader(timeout_s)
        st = self.status(lead)
        if st is None:
            raise WaitTimeout(f"leader {lead} stopped answering ({self._describe()})")
        target = st.commit_index
        last: dict[str, int | None] = {}

        def caught_up() -> bool:
            last.clear()
            last.update(self._applied())
            return all(v is not None and v >= target for v in last.values())

        self._wait(
            caught_up, timeout_s, f"every live node to apply index {target}", 0.1, seen=lambda: f"{last}"
        )
