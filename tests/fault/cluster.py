"""The fault harness's cluster: topology, fault primitives and the cleanup of what a run changes.

`FaultCluster` is the one real-process harness (tests/support/cluster.py, `ProcessCluster`: processes,
logs, `Cluster.Status` polls and waits) with nodes n1..nN and workers w1..wM, into which it injects faults
(shared/docs/fault-testing.md, section 2.2). Two modes:

- "netns" (root): every process in its own network namespace on a private bridge
  (tests/fault/netns.py); partitions, per-link cuts and loss are nftables rules, delay is NFQUEUE plus
  tests/fault/nfq_delay.py. The harness reaches the nodes through one veth of its own (`harness_host`).
- "proxy" (no root needed): every process on 127.0.0.1, with TCP proxies in a harness thread in front of
  each node's Raft port and of each (worker, node) gRPC pair (tests/fault/proxy.py, tests/fault/_shim.py).

In both modes the harness's own connections are never faulted, so it can observe a partitioned node.
Clock skew: every process runs under the PyPI libfaketime build (its wall clock only; monotonic time is
left alone) reading an offset file that `set_skew` rewrites. Disk: each node's data dir can be its own
tmpfs. Every fault is logged to run_dir/nemesis.jsonl with the harness's monotonic time, every process
exit to run_dir/exits.jsonl (every start to run_dir/starts.jsonl).

Cleanup is done by `close()` (idempotent; also from atexit and on SIGTERM of the harness, which is
turned into SystemExit): processes by PID (SIGTERM, then SIGKILL), nfq daemons, namespaces (with any
process left in them), the root veth, tmpfs mounts. A harness that was SIGKILLed leaves a record in
/run/cronraft-fault/ that the next FaultCluster (or `python -m tests.fault.cluster --reap`) cleans up
(tests/fault/registry.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

import grpc

from cronraft.proto.v1 import cluster_pb2
from tests.fault.netns import NetnsError, NetnsTopology, env_args, netns_usable, run
from tests.fault.proxy import ProxyNet, Rules
from tests.fault.registry import (
    REGISTRY,
    Registry,
    install_exit_hooks,
    is_mountpoint,
    reap_stale,
    start_time,
    track,
    umount,
    untrack,
)
from tests.support.cluster import Proc, ProcessCluster, libfaketime_env, node_argv, worker_argv
from tests.support.nodeconfig import TEST_STORAGE, merge, node_config, toml_dumps
from tests.support.ports import free_ports, release

REPO_ROOT = Path(__file__).resolve().parents[2]
BALLAST = "ballast"

__all__ = ["REGISTRY", "FaultCluster", "Unsupported", "reap_stale"]


class Unsupported(Exception):
    """A fault primitive this mode or machine cannot do; `reason` says why (scenarios skip with it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _append_jsonl(path: Path, lock: threading.Lock, record: Mapping[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with lock, open(path, "a") as f:
        f.write(line)


@dataclass
class _Proc(Proc):
    exit_recorded: bool = True
    down_fault: str | None = None  # the nemesis fault that took it down (its restart logs the stop)
    starts: int = 0


# --- the cluster ---------------------------------------------------------------------------------


class FaultCluster(ProcessCluster):
    def __init__(
        self,
        run_dir: Path,
        *,
        nodes: int = 3,
        workers: int = 4,
        worker_capacity: int = 32,
        mode: Literal["auto", "netns", "proxy"] = "auto",
        lease_ttl_ms: int = 3000,
        heartbeat_interval_ms: int = 500,
        election_timeout_ms: int = 1000,
        worker_args: Sequence[str] = ("--handlers", "tests.fault.probe"),
        node_disk_mb: int | None = None,
        node_env: Mapping[str, str] = {},
        worker_env: Mapping[str, str] = {},
        node_config_extra: str = "",
        skew: bool | None = None,
        skew_cache_s: int = 1,
        observer_exempt: bool = True,
    ) -> None:
        """`skew`: None = run every process under libfaketime if it is installed, True = require it,
        False = no preload (set_skew raises Unsupported). `skew_cache_s`: libfaketime re-reads the offset
        file at most this often (0 = on every clock read, ~10x dearer per time.time() call; see README).
        `observer_exempt`: the harness's own traffic is never faulted (netns mode; always so in proxy)."""
        self.run_dir = Path(run_dir).resolve()
        super().__init__(self.run_dir, new_session=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("logs", "clock", "audit"):
            (self.run_dir / sub).mkdir(exist_ok=True)
        self.node_ids = [f"n{i}" for i in range(1, nodes + 1)]
        self.worker_ids = [f"w{j}" for j in range(1, workers + 1)]
        self.worker_capacity = worker_capacity
        self.lease_ttl_ms = lease_ttl_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.election_timeout_ms = election_timeout_ms
        self.worker_args = tuple(worker_args)
        self.node_disk_mb = node_disk_mb
        self.node_env = dict(node_env)
        self.worker_env = dict(worker_env)
        self._config_extra = tomllib.loads(node_config_extra) if node_config_extra.strip() else {}
        self.skew_cache_s = skew_cache_s
        self.observer_exempt = observer_exempt
        self.secret = secrets.token_hex(16)
        self._log_lock = threading.Lock()
        self._rules = Rules()
        self._skews: dict[str, float] = {}
        self._filled: set[str] = set()
        self._mounts: list[str] = []
        self._started = False
        self._closed = False
        self._stop_supervisor = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.timings: dict[str, float] = {}

        # Skew: the PyPI libfaketime build (Debian's 0.9.10 breaks Python 3.11, see §3.5).
        self._faketime_env: dict[str, str] | None = None
        if skew is not False:
            try:
                self._faketime_env = libfaketime_env()
            except ImportError:
                if skew:
                    raise Unsupported("libfaketime is not installed (pip install libfaketime)") from None

        # Mode.
        reason = netns_usable() if mode in ("auto", "netns") else "proxy mode requested"
        if reason is None:
            try:
                self._net: NetnsTopology | None = NetnsTopology(
                    self.node_ids, self.worker_ids, self.run_dir / "logs", observer_exempt=observer_exempt
                )
            except NetnsError as e:
                reason = str(e)
        if reason is not None:
            if mode == "netns":
                raise Unsupported(f"netns mode: {reason}")
            self._net = None
        self.mode: str = "netns" if self._net is not None else "proxy"
        if node_disk_mb is not None and os.geteuid() != 0:
            raise Unsupported("node_disk_mb needs root to mount a tmpfs")
        self._proxy: ProxyNet | None = None
        self._ports: list[int] = []  # reserved (tests.support.ports) until close()
        if self._net is None:
            ports = self._ports = free_ports(3 * nodes)
            self._grpc_ports = dict(zip(self.node_ids, ports[:nodes], strict=True))
            self._raft_bind_ports = dict(zip(self.node_ids, ports[nodes : 2 * nodes], strict=True))
            self._raft_proxy_ports: dict[str, int] = {}
            self._worker_proxy_ports: dict[tuple[str, str], int] = {}
            self._source_ips = {n: f"127.0.0.{10 + i}" for i, n in enumerate(self.node_ids, 1)}
        self.harness_host: str = self._net.harness_ip if self._net is not None else "127.0.0.1"
        for nid in self.node_ids:
            address = (
                self._net.grpc_address(nid) if self._net is not None else f"127.0.0.1:{self._grpc_ports[nid]}"
            )
            self.add(_Proc(nid, "node", self.log_path(nid)), address)
        for wid in self.worker_ids:
            self.add(_Proc(wid, "worker", self.log_path(wid)))
        tag = self._net.prefix if self._net is not None else f"proxy{os.getpid()}x{secrets.token_hex(2)}"
        self._registry = Registry(REGISTRY / f"{tag}.json" if os.geteuid() == 0 else None)

    # --- paths -----------------------------------------------------------------------------------

    def data_dir(self, nid: str) -> Path:
        return self.run_dir / nid / "data"

    def log_path(self, name: str) -> Path:
        return self.run_dir / "logs" / f"{name}.log"

    def clock_path(self, name: str) -> Path:
        return self.run_dir / "clock" / f"{name}.faketime"

    def config_path(self, nid: str) -> Path:
        return self.run_dir / nid / "config.toml"

    @property
    def prefix(self) -> str | None:
        """The namespace prefix of this run (netns mode)."""
        return self._net.prefix if self._net is not None else None

    def namespace(self, name: str) -> str | None:
        return self._net.ns(name) if self._net is not None else None

    @staticmethod
    def mono_ns() -> int:
        return time.monotonic_ns()

    def _proc(self, name: str, kind: str | None = None) -> _Proc:
        return cast(_Proc, self._check(name, kind))

    # --- setup -----------------------------------------------------------------------------------

    def _setup(self) -> None:
        with contextlib.suppress(Exception):
            reap_stale()
        install_exit_hooks()
        track(self)
        self._registry.data = {
            "owner_pid": os.getpid(),
            "owner_start": start_time(os.getpid()),
            "prefix": self.prefix,
            "run_dir": str(self.run_dir),
            "namespaces": [],
            "root_veth": None,
            "mounts": [],
            "pids": [],
        }
        self._registry.save()
        t0 = time.monotonic()
        if self._net is not None:
            self._registry.data["namespaces"] = self._net.all_namespaces()
            self._registry.data["root_veth"] = self._net.root_veth
            self._registry.save()
            self._net.setup()
            self.timings["netns_setup_s"] = self._net.setup_s
        else:
            self._setup_proxies()
        for nid in self.node_ids:
            data = self.data_dir(nid)
            data.mkdir(parents=True, exist_ok=True)
            if self.node_disk_mb is not None and not is_mountpoint(str(data)):
                tag = f"{self.prefix or 'crproxy'}_{nid}"
                run(["mount", "-t", "tmpfs", "-o", f"size={self.node_disk_mb}m,mode=0755", tag, str(data)])
                self._mounts.append(str(data))
                self._registry.data["mounts"] = list(self._mounts)
                self._registry.save()
            self._write_config(nid)
        for name in [*self.node_ids, *self.worker_ids]:
            self._write_clock(name, 0.0)
        self.timings["setup_s"] = time.monotonic() - t0
        self._supervisor = threading.Thread(target=self._supervise, name="fault-supervisor", daemon=True)
        self._supervisor.start()

    def _setup_proxies(self) -> None:
        self._proxy = ProxyNet()
        by_source = {ip: n for n, ip in self._source_ips.items()}
        for nid in self.node_ids:
            self._raft_proxy_ports[nid] = self._proxy.listen(
                ("127.0.0.1", self._raft_bind_ports[nid]), nid, by_source.get
            )
        for wid in self.worker_ids:
            for nid in self.node_ids:
                self._worker_proxy_ports[wid, nid] = self._proxy.listen(
                    ("127.0.0.1", self._grpc_ports[nid]), nid, wid
                )

    def _member_addresses(self, nid: str) -> tuple[str, str]:
        """(gRPC, Raft) address of a member as the nodes know it (Raft: its proxy, in proxy mode)."""
        raft = (
            self._net.raft_address(nid)
            if self._net is not None
            else f"127.0.0.1:{self._raft_proxy_ports[nid]}"
        )
        return self.grpc_address(nid), raft

    def _write_config(self, nid: str) -> None:
        election = self.election_timeout_ms
        cfg = node_config(
            nid,
            self.data_dir(nid),
            [(m, *self._member_addresses(m)) for m in self.node_ids],
            raft={"election_timeout_ms": election, "heartbeat_ms": max(10, min(100, election // 20))},
            scheduler={
                "lease_ttl_ms": self.lease_ttl_ms,
                "heartbeat_interval_ms": self.heartbeat_interval_ms,
                "horizon_ms": 5000,
            },
            # The network namespaces' addresses are not loopback: a lab cluster without TLS or tokens
            # must say so (daemon.config; docs/security.md).
            insecure=self._net is not None,
            # A small tmpfs per node (disk scenarios) keeps the node's own reserve (an eighth of it).
            storage=TEST_STORAGE if self.node_disk_mb is None else None,
        )
        self.config_path(nid).write_text(toml_dumps(merge(cfg, self._config_extra)))

    def _write_clock(self, name: str, offset_s: float) -> None:
        path = self.clock_path(name)
        tmp = path.with_suffix(".tmp")
        text = f"{offset_s:+.3f}s\n" if offset_s else "+0s\n"
        tmp.write_text(text)
        os.replace(tmp, path)

    # --- processes -------------------------------------------------------------------------------

    def _env(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        """(base environment of the harness, variables of this process)."""
        base = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        extra = {
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": pythonpath,
            "CRONRAFT_CLUSTER_SECRET": self.secret,
            "CRONRAFT_AUDIT_DIR": str(self.run_dir / "audit"),
            "CRONRAFT_FAULT_NAME": name,
        }
        proc = self._proc(name)
        if proc.kind == "worker":
            extra["CRONRAFT_FAULT_WORKER"] = name
        if self._faketime_env is not None:
            ft = dict(self._faketime_env)
            ft.pop("FAKETIME_NO_CACHE", None)
            if self.skew_cache_s <= 0:
                ft["FAKETIME_NO_CACHE"] = "1"
            else:
                ft["FAKETIME_CACHE_DURATION"] = str(self.skew_cache_s)
            if os.environ.get("LD_LIBRARY_PATH"):
                ft["LD_LIBRARY_PATH"] = ft["LD_LIBRARY_PATH"] + os.pathsep + os.environ["LD_LIBRARY_PATH"]
            ft["FAKETIME_TIMESTAMP_FILE"] = str(self.clock_path(name))
            extra.update(ft)
        if self._net is None:
            if proc.kind == "node":
                extra["CRONRAFT_FAULT_RAFT_BIND"] = f"127.0.0.1:{self._raft_bind_ports[name]}"
                extra["CRONRAFT_FAULT_RAFT_SOURCE"] = self._source_ips[name]
            else:
                extra["CRONRAFT_FAULT_ADDR_MAP"] = ",".join(
                    f"127.0.0.1:{self._grpc_ports[n]}=127.0.0.1:{self._worker_proxy_ports[name, n]}"
                    for n in self.node_ids
                )
        extra.update(self.node_env if proc.kind == "node" else self.worker_env)
        return base, extra

    def _argv(self, name: str) -> list[str]:
        if self._proc(name).kind == "node":
            argv = node_argv(self.config_path(name))
        else:
            if self._net is not None:
                servers = self.servers
            else:
                servers = ",".join(f"127.0.0.1:{self._worker_proxy_ports[name, n]}" for n in self.node_ids)
            argv = worker_argv(
                name, servers, self.worker_capacity, self.run_dir / name / "outbox", self.worker_args
            )
        if self._net is None:
            # `python -m MODULE ARGS` runs as `python -m tests.fault._shim MODULE ARGS` (its patches).
            return [*argv[:2], "tests.fault._shim", *argv[2:]]
        return argv

    def _command(self, name: str, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Full argv and Popen environment to run `argv` as process `name` would run."""
        base, extra = self._env(name)
        if self._net is not None:
            return [*self._net.exec_prefix(name), *env_args(extra), *argv], base
        return list(argv), {**base, **extra}

    def _spawn(self, name: str) -> None:
        if not self._started:
            raise RuntimeError("call start() first")
        if self._closed:
            raise RuntimeError("the cluster is closed")
        proc = self._proc(name)
        with self._lock:
            if proc.popen is not None and proc.popen.poll() is None:
                raise RuntimeError(f"{name} is already running (pid {proc.popen.pid})")
            argv, env = self._command(name, self._argv(name))
            (self.run_dir / name).mkdir(exist_ok=True)
            popen = self.spawn(name, argv, env)
            proc.exit_recorded = False
            proc.starts += 1
            pids = [[p, s] for p, s in self._registry.data.get("pids", []) if start_time(p) == s]
            pids.append([popen.pid, start_time(popen.pid)])
            self._registry.data["pids"] = pids
            self._registry.save()
            down, proc.down_fault = proc.down_fault, None
        _append_jsonl(
            self.run_dir / "starts.jsonl",
            self._log_lock,
            {"mono_ns": self.mono_ns(), "name": name, "pid": popen.pid, "start": proc.starts},
        )
        if down is not None:
            self._log_fault(down, name, "stop")

    def _supervise(self) -> None:
        while not self._stop_supervisor.wait(0.05):
            for name in list(self._procs):
                proc = self._proc(name)
                popen = proc.popen
                if popen is not None and not proc.exit_recorded and popen.poll() is not None:
                    self._exited(proc)

    def _exited(self, proc: Proc) -> None:
        """Record the exit in exits.jsonl, once (called by the supervisor, kill and close)."""
        fproc = cast(_Proc, proc)
        with self._lock:
            popen = fproc.popen
            if popen is None or fproc.exit_recorded or popen.returncode is None:
                return
            fproc.exit_recorded = True
            rc = popen.returncode
        # `ip netns exec` and `env` exec the daemon, so the Popen is the daemon itself: a signal death is
        # a negative code; a shell-style 128+N can only come from the process itself.
        sig = -rc if rc < 0 else None
        _append_jsonl(
            self.run_dir / "exits.jsonl",
            self._log_lock,
            {
                "mono_ns": self.mono_ns(),
                "name": fproc.name,
                "pid": popen.pid,
                "returncode": rc,
                "signal": signal.Signals(sig).name
                if sig and sig in signal.Signals._value2member_map_
                else None,
                "expected": fproc.expect_exit,
            },
        )

    def start(self) -> None:
        """Start all nodes and workers; wait for a ready leader and every worker connected."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        try:
            self._setup()
            t0 = time.monotonic()
            for nid in self.node_ids:
                self._spawn(nid)
            self.wait_leader(60.0)
            self.timings["first_leader_s"] = time.monotonic() - t0
            self.wait_ready(60.0)
            for wid in self.worker_ids:
                self._spawn(wid)
            if self.worker_ids:
                self.wait_workers(len(self.worker_ids), 60.0)
            self.timings["start_s"] = time.monotonic() - t0
        except BaseException:
            self.close()
            raise

    def start_node(self, nid: str) -> None:
        self._check(nid, "node")
        self._spawn(nid)

    def start_worker(self, wid: str) -> None:
        self._check(wid, "worker")
        self._spawn(wid)

    def kill_node(self, nid: str, sig: int = signal.SIGKILL) -> None:
        self._check(nid, "node")
        self._kill(nid, sig)

    def kill_worker(self, wid: str, sig: int = signal.SIGKILL) -> None:
        self._check(wid, "worker")
        self._kill(wid, sig)

    def _kill(self, name: str, sig: int, timeout_s: float = 15.0, *, log_fault: bool = True) -> None:
        """Send `sig` and wait for the exit (SIGKILL after `timeout_s` if it does not come). Logged as a
        fault unless `log_fault` is false (the harness's own stop at the end of a run)."""
        proc = self._proc(name)
        if not proc.alive:
            return
        fault = "kill" if sig == signal.SIGKILL else "terminate"
        before: Callable[[], None] | None = None
        if log_fault:
            leader = self._leader_info({name})

            def before() -> None:
                proc.down_fault = fault
                self._log_fault(
                    fault, name, "start", leader=leader, args={"signal": signal.Signals(sig).name}
                )

        self.kill(name, sig, timeout_s, before=before)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every process (workers first) and wait: the end of a run, so no fault is logged.

        The data directories stay (mounts included) until `close()`, so they can be inspected.
        """
        for name in self.worker_ids:
            self._kill(name, signal.SIGTERM, timeout_s, log_fault=False)
        # The workers' goodbyes are entries too: let every node apply them. Then freeze every node before
        # stopping any: stopped one by one, the nodes still running elected a leader among themselves
        # (the first one stopped had been leading) and committed its first entries after the first
        # nodes had stopped, whose digests then lagged (R9 "applied 3575 < 3578", S19 seed 1).
        with contextlib.suppress(Exception):
            self.wait_converged(timeout_s)
        for name in self.node_ids:
            ProcessCluster.pause(self, name)
        for name in self.node_ids:
            self._kill(name, signal.SIGTERM, timeout_s, log_fault=False)  # resumes it with the signal

    def pause(self, name: str, *, before: Callable[[], None] | None = None) -> bool:
        """SIGSTOP the process (all its threads), by PID; logged as a fault."""
        proc = self._check(name)
        if not proc.alive or proc.paused:
            return False
        leader = self._leader_info({name})

        def log() -> None:
            self._log_fault("pause", name, "start", leader=leader)
            if before is not None:
                before()

        return super().pause(name, before=log)

    def resume(self, name: str) -> bool:
        if not super().resume(name):
            return False
        self._log_fault("pause", name, "stop")
        return True

    def exec_in(
        self, name: str, argv: Sequence[str], *, timeout_s: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` where process `name` runs: its namespace and environment (skew included)."""
        self._check(name)
        full, env = self._command(name, argv)
        return subprocess.run(
            full,
            env=env,
            cwd=self.run_dir,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            input=input,
            check=False,
        )

    # --- status (ProcessCluster's, never after close) ---------------------------------------------

    def _channel(self, nid: str) -> grpc.Channel:
        if self._closed:
            raise RuntimeError("the cluster is closed: its addresses must not be dialled any more")
        return super()._channel(nid)

    def poll(self, nids: Iterable[str], timeout_s: float) -> dict[str, cluster_pb2.StatusResponse | None]:
        if self._closed or not self._started:
            return dict.fromkeys(nids)
        return super().poll(nids, timeout_s)

    # --- nemesis log -----------------------------------------------------------------------------

    def _leader_info(self, targets: set[str]) -> tuple[bool, int | None]:
        """(was a target the leader, leader term) from a quick poll, or the last known leader."""
        lead: tuple[str, int] | None = None
        cached = self._last_leader
        if cached is not None and cached[0] in self._responsive():
            st = self.poll([cached[0]], 0.3)[cached[0]]
            if st is not None and st.is_leader and st.ready:
                lead = (cached[0], int(st.term))
                self._last_leader = lead
        if lead is None:
            lead = self.leader(timeout_s=0.5) or self._last_leader
        if lead is None:
            return False, None
        return lead[0] in targets, lead[1]

    def _log_fault(
        self,
        fault: str,
        target: str,
        phase: str,
        *,
        leader: tuple[bool, int | None] | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        was_leader, term = leader if leader is not None else self._leader_info(set(target.split("<->")))
        record: dict[str, Any] = {
            "mono_ns": self.mono_ns(),
            "fault": fault,
            "target": target,
            "phase": phase,
            "was_leader": was_leader,
            "term": term,
        }
        if args:
            record["args"] = dict(args)
        _append_jsonl(self.run_dir / "nemesis.jsonl", self._log_lock, record)

    # --- network faults --------------------------------------------------------------------------

    def _apply_net(self, names: Iterable[str]) -> None:
        if self._net is not None:
            self._net.apply(self._rules, names)
        elif self._proxy is not None:
            snapshot = Rules(
                set(self._rules.isolated),
                set(self._rules.cuts),
                dict(self._rules.loss),
                dict(self._rules.delay),
            )

            def replace(r: Rules) -> None:
                r.isolated, r.cuts, r.loss, r.delay = (
                    snapshot.isolated,
                    snapshot.cuts,
                    snapshot.loss,
                    snapshot.delay,
                )

            self._proxy.update(replace)

    def _net_fault(
        self,
        fault: str,
        target: str,
        phase: str,
        *,
        names: Iterable[str],
        change: Callable[[Rules], bool],
        args: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply `change` to the rules (it returns False if there is nothing to do), realise it, log it."""
        if not self._started or self._closed:
            raise RuntimeError("the cluster is not running")
        was_leader, term = self._leader_info(set(target.split("<->")))
        with self._lock:
            if not change(self._rules):
                return
            self._apply_net(names)
            self._log_fault(fault, target, phase, leader=(was_leader, term), args=args)

    def isolate(self, name: str) -> None:
        """Symmetric partition of one node or worker from every other node and worker."""
        self._check(name)

        def change(r: Rules) -> bool:
            if name in r.isolated:
                return False
            r.isolated.add(name)
            return True

        self._net_fault("isolate", name, "start", names=[name], change=change)

    def heal(self, name: str) -> None:
        """Undo isolate(name) (cuts, loss and delay stay: heal_link, clear_net)."""
        self._check(name)

        def change(r: Rules) -> bool:
            if name not in r.isolated:
                return False
            r.isolated.discard(name)
            return True

        self._net_fault("isolate", name, "stop", names=[name], change=change)

    def _link(self, a: str, b: str) -> tuple[frozenset[str], str]:
        self._check(a)
        self._check(b)
        if a == b:
            raise ValueError("a link needs two different processes")
        return frozenset((a, b)), "<->".join(sorted((a, b)))

    def cut_link(self, a: str, b: str) -> None:
        """Cut the a<->b link only (node-node or worker-node); other links of a and b keep working."""
        link, target = self._link(a, b)

        def change(r: Rules) -> bool:
            if link in r.cuts:
                return False
            r.cuts.add(link)
            return True

        self._net_fault("cut_link", target, "start", names=[a, b], change=change)

    def heal_link(self, a: str, b: str) -> None:
        link, target = self._link(a, b)

        def change(r: Rules) -> bool:
            if link not in r.cuts:
                return False
            r.cuts.discard(link)
            return True

        self._net_fault("cut_link", target, "stop", names=[a, b], change=change)

    def set_loss(self, name: str, percent: int) -> None:
        """Drop `percent` % of the packets in and out of `name` (proxy mode: reset that share of chunks)."""
        self._check(name)
        percent = int(percent)
        if not 0 <= percent <= 100:
            raise ValueError("percent must be in 0..100")
        if percent == 0:
            self._clear(name, "loss")
            return

        def change(r: Rules) -> bool:
            if r.loss.get(name) == percent:
                return False
            r.loss[name] = percent
            return True

        self._net_fault("loss", name, "start", names=[name], change=change, args={"percent": percent})

    def set_delay(self, name: str, ms: int, jitter_ms: int = 0) -> None:
        """Delay every packet in and out of `name` by N(ms, jitter_ms) (a round trip pays it twice)."""
        self._check(name)
        if self._net is not None and importlib.util.find_spec("netfilterqueue") is None:
            raise Unsupported("delay needs the netfilterqueue package (scripts/fault-deps.sh)")
        if self._net is not None and run(["sh", "-c", "command -v iptables"], check=False) == "":
            raise Unsupported("delay needs iptables (scripts/fault-deps.sh)")
        value = (int(ms), int(jitter_ms))
        if value == (0, 0):
            self._clear(name, "delay")
            return

        def change(r: Rules) -> bool:
            if r.delay.get(name) == value:
                return False
            r.delay[name] = value
            return True

        self._net_fault(
            "delay", name, "start", names=[name], change=change, args={"ms": value[0], "jitter_ms": value[1]}
        )

    def _clear(self, name: str, which: str) -> None:
        def change(r: Rules) -> bool:
            table: dict[str, Any] = r.loss if which == "loss" else r.delay
            return table.pop(name, None) is not None

        self._net_fault(which, name, "stop", names=[name], change=change)

    def clear_net(self, name: str) -> None:
        """Undo set_loss and set_delay on `name`."""
        self._check(name)
        self._clear(name, "loss")
        self._clear(name, "delay")

    # --- clock and disk --------------------------------------------------------------------------

    @property
    def skew_settle_s(self) -> float:
        """How long after set_skew every process sees the new offset (libfaketime's cache)."""
        return self.skew_cache_s + 0.5 if self.skew_cache_s > 0 else 0.05

    def set_skew(self, name: str, offset_s: float) -> None:
        """Offset the wall clock of a node or worker (monotonic time is left alone); 0 clears it. Takes
        effect within `skew_settle_s`."""
        self._check(name)
        if self._faketime_env is None:
            raise Unsupported("processes run without libfaketime (skew=False or not installed)")
        offset_s = float(offset_s)
        if self._skews.get(name, 0.0) == offset_s:
            return
        was_leader, term = self._leader_info({name})
        with self._lock:
            self._write_clock(name, offset_s)
            if offset_s:
                self._skews[name] = offset_s
            else:
                self._skews.pop(name, None)
            phase = "start" if offset_s else "stop"
            self._log_fault("skew", name, phase, leader=(was_leader, term), args={"offset_s": offset_s})

    def fill_disk(self, nid: str) -> None:
        """Write a ballast file into the node's tmpfs until it is full (ENOSPC)."""
        self._check(nid, "node")
        if self.node_disk_mb is None:
            raise Unsupported("fill_disk needs node_disk_mb (a tmpfs per node)")
        if nid in self._filled:
            return
        was_leader, term = self._leader_info({nid})
        path = self.data_dir(nid) / BALLAST
        with self._lock:
            self._log_fault("disk_full", nid, "start", leader=(was_leader, term))
            self._filled.add(nid)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
                    block = b"\0" * size
                    try:
                        while True:
                            os.write(fd, block)
                    except OSError as e:
                        if e.errno != 28:  # ENOSPC
                            raise
            finally:
                os.close(fd)

    def free_disk(self, nid: str) -> None:
        self._check(nid, "node")
        if nid not in self._filled:
            return
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir(nid) / BALLAST).unlink()
            self._filled.discard(nid)
        self._log_fault("disk_full", nid, "stop")

    def disk_free_bytes(self, nid: str) -> int:
        st = os.statvfs(self.data_dir(nid))
        return st.f_bavail * st.f_frsize

    # --- heal and close --------------------------------------------------------------------------

    def heal_all(self) -> None:
        """Undo every fault: network, skew, full disks, paused processes (dead processes stay dead)."""
        if not self._started or self._closed:
            return
        for name in [*self.node_ids, *self.worker_ids]:
            if self.paused(name):
                self.resume(name)
        for name in sorted(self._rules.isolated):
            self.heal(name)
        for link in sorted(self._rules.cuts, key=sorted):
            a, b = sorted(link)
            self.heal_link(a, b)
        for name in sorted(set(self._rules.loss) | set(self._rules.delay)):
            self.clear_net(name)
        for name in sorted(self._skews):
            self.set_skew(name, 0.0)
        for nid in sorted(self._filled):
            self.free_disk(nid)

    def close(self) -> None:
        """Stop everything and undo all changes to the machine (idempotent; safe after a failed start)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        untrack(self)
        self._stop_supervisor.set()
        try:
            self.terminate_all(8.0)
        finally:
            self.close_channels()
            if self._proxy is not None:
                self._proxy.close()
            if self._net is not None:
                self._net.teardown()
            for mount in reversed(self._mounts):
                umount(mount)
            self._mounts.clear()
            self._registry.remove()
            release(self._ports)

    def __enter__(self) -> FaultCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["--reap"]:
        print("reaped:", reap_stale())
    else:
        print("usage: python -m tests.fault.cluster --reap", file=sys.stderr)
        raise SystemExit(2)
