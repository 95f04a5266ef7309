"""The fault harness's cluster: topology, process supervisor and fault primitives.

`FaultCluster` starts `schedd` nodes n1..nN and `schedworker` agents w1..wM and injects faults into them
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
/run/cronraft-fault/ that the next FaultCluster (or `python -m tests.fault.cluster --reap`) cleans up.
"""

from __future__ import annotations

import atexit
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
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

import grpc

from cronraft.proto.v1 import cluster_pb2, cluster_pb2_grpc
from tests.fault.netns import NetnsError, NetnsTopology, env_args, kill_namespace_pids, netns_usable, run
from tests.fault.proxy import ProxyNet, Rules
from tests.support.nodeconfig import merge, node_config, toml_dumps
from tests.support.ports import free_ports, release

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY = Path("/run/cronraft-fault")
BALLAST = "ballast"

__all__ = ["FaultCluster", "Unsupported", "reap_stale"]


class Unsupported(Exception):
    """A fault primitive this mode or machine cannot do; `reason` says why (scenarios skip with it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- small helpers -------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of a process (tells a live process from a reused PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _append_jsonl(path: Path, lock: threading.Lock, record: Mapping[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with lock, open(path, "a") as f:
        f.write(line)


@dataclass
class _Proc:
    name: str
    kind: Literal["node", "worker"]
    popen: subprocess.Popen[bytes] | None = None
    paused: bool = False
    expect_exit: bool = False
    exit_recorded: bool = True
    down_fault: str | None = None  # the nemesis fault that took it down (its restart logs the stop)
    starts: int = 0


@dataclass
class _Registry:
    """What a run created outside its run dir, for a later cleanup if the harness died (SIGKILL)."""

    path: Path | None
    data: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            with contextlib.suppress(OSError):  # still used by another run: keep it
                self.path.parent.rmdir()


def _umount(path: str) -> None:
    if run(["umount", path], check=False) and _is_mountpoint(path):
        run(["umount", "-l", path], check=False)
    if _is_mountpoint(path):
        run(["umount", "-l", path], check=False)


def _is_mountpoint(path: str) -> bool:
    return os.path.ismount(path)


def reap_stale() -> list[str]:
    """Clean up after fault runs whose harness died without cleaning (owner PID gone). Returns prefixes."""
    reaped: list[str] = []
    if not REGISTRY.is_dir():
        return reaped
    for record in sorted(REGISTRY.glob("*.json")):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        if _start_time(int(data.get("owner_pid", 0))) == data.get("owner_start"):
            continue  # its harness is alive
        for pid, start in data.get("pids", []):
            if _start_time(pid) == start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for ns in data.get("namespaces", []):
            kill_namespace_pids(ns)
            run(["ip", "netns", "del", ns], check=False)
        if data.get("root_veth"):
            run(["ip", "link", "del", data["root_veth"]], check=False)
        for mount in data.get("mounts", []):
            if _is_mountpoint(mount):
                _umount(mount)
        with contextlib.suppress(FileNotFoundError):
            record.unlink()
        reaped.append(str(data.get("prefix", record.stem)))
    return reaped


_LIVE: weakref.WeakSet[FaultCluster] = weakref.WeakSet()
_HOOKS_INSTALLED = False


def _close_all() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.close()


def _on_sigterm(signum: int, _frame: FrameType | None) -> None:
    # Unwind the stack so that `with`/finally blocks run close(); atexit closes whatever is left.
    raise SystemExit(128 + signum)


def _install_hooks() -> None:
    global _HOOKS_INSTALLED
    if _HOOKS_INSTALLED:
        return
    _HOOKS_INSTALLED = True
    atexit.register(_close_all)
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_sigterm)


# --- the cluster ---------------------------------------------------------------------------------


class FaultCluster:
    NODE_MODULE = "cronraft.daemon.main"
    WORKER_MODULE = "cronraft.client.worker"

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
        self._procs: dict[str, _Proc] = {n: _Proc(n, "node") for n in self.node_ids}
        self._procs.update({w: _Proc(w, "worker") for w in self.worker_ids})
        self._lock = threading.RLock()
        self._log_lock = threading.Lock()
        self._rules = Rules()
        self._skews: dict[str, float] = {}
        self._filled: set[str] = set()
        self._mounts: list[str] = []
        self._channels: dict[str, grpc.Channel] = {}
        self._channel_lock = threading.Lock()
        self._last_leader: tuple[str, int] | None = None
        self._started = False
        self._closed = False
        self._stop_supervisor = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.timings: dict[str, float] = {}

        # Skew: the PyPI libfaketime build (Debian's 0.9.10 breaks Python 3.11, see §3.5).
        self._faketime_env: dict[str, str] | None = None
        if skew is not False:
            try:
                import libfaketime  # type: ignore[import-not-found,import-untyped,unused-ignore]

                self._faketime_env = dict(libfaketime.get_reload_information()[1])
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
        tag = self._net.prefix if self._net is not None else f"proxy{os.getpid()}x{secrets.token_hex(2)}"
        self._registry = _Registry(REGISTRY / f"{tag}.json" if os.geteuid() == 0 else None)

    # --- addresses -------------------------------------------------------------------------------

    def grpc_address(self, nid: str) -> str:
        """The node's gRPC address as the harness dials it."""
        if self._net is not None:
            return self._net.grpc_address(nid)
        return f"127.0.0.1:{self._grpc_ports[nid]}"

    @property
    def servers(self) -> str:
        """Comma-separated gRPC addresses of all nodes, reachable from the harness process."""
        return ",".join(self.grpc_address(n) for n in self.node_ids)

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

    # --- setup -----------------------------------------------------------------------------------

    def _setup(self) -> None:
        with contextlib.suppress(Exception):
            reap_stale()
        _install_hooks()
        _LIVE.add(self)
        self._registry.data = {
            "owner_pid": os.getpid(),
            "owner_start": _start_time(os.getpid()),
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
            if self.node_disk_mb is not None and not _is_mountpoint(str(data)):
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
        if self._net is not None:
            return self._net.grpc_address(nid), self._net.raft_address(nid)
        return f"127.0.0.1:{self._grpc_ports[nid]}", f"127.0.0.1:{self._raft_proxy_ports[nid]}"

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
        proc = self._procs[name]
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
        proc = self._procs[name]
        if proc.kind == "node":
            module, args = self.NODE_MODULE, ["--config", str(self.config_path(name))]
        else:
            if self._net is not None:
                servers = self.servers
            else:
                servers = ",".join(f"127.0.0.1:{self._worker_proxy_ports[name, n]}" for n in self.node_ids)
            outbox = self.run_dir / name / "outbox"
            module = self.WORKER_MODULE
            args = [
                "--server", servers, "--id", name, "--capacity", str(self.worker_capacity),
                "--outbox-dir", str(outbox), "--log-format", "json", *self.worker_args,
            ]  # fmt: skip
        if self._net is None:
            return [sys.executable, "-m", "tests.fault._shim", module, *args]
        return [sys.executable, "-m", module, *args]

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
        proc = self._procs[name]
        with self._lock:
            if proc.popen is not None and proc.popen.poll() is None:
                raise RuntimeError(f"{name} is already running (pid {proc.popen.pid})")
            argv, env = self._command(name, self._argv(name))
            (self.run_dir / name).mkdir(exist_ok=True)
            with open(self.log_path(name), "ab") as log:
                popen = subprocess.Popen(
                    argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.run_dir,
                    start_new_session=True,
                )
            proc.popen = popen
            proc.paused = False
            proc.expect_exit = False
            proc.exit_recorded = False
            proc.starts += 1
            pids = [[p, s] for p, s in self._registry.data.get("pids", []) if _start_time(p) == s]
            pids.append([popen.pid, _start_time(popen.pid)])
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
            for proc in list(self._procs.values()):
                popen = proc.popen
                if popen is not None and not proc.exit_recorded and popen.poll() is not None:
                    self._record_exit(proc)

    def _record_exit(self, proc: _Proc) -> None:
        with self._lock:
            popen = proc.popen
            if popen is None or proc.exit_recorded or popen.returncode is None:
                return
            proc.exit_recorded = True
            rc = popen.returncode
        # `ip netns exec` and `env` exec the daemon, so the Popen is the daemon itself: a signal death is
        # a negative code; a shell-style 128+N can only come from the process itself.
        sig = -rc if rc < 0 else None
        _append_jsonl(
            self.run_dir / "exits.jsonl",
            self._log_lock,
            {
                "mono_ns": self.mono_ns(),
                "name": proc.name,
                "pid": popen.pid,
                "returncode": rc,
                "signal": signal.Signals(sig).name
                if sig and sig in signal.Signals._value2member_map_
                else None,
                "expected": proc.expect_exit,
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

    def _check(self, name: str, kind: str | None = None) -> _Proc:
        proc = self._procs.get(name)
        if proc is None or (kind is not None and proc.kind != kind):
            raise KeyError(f"no {kind or 'process'} named {name!r}")
        return proc

    def _kill(self, name: str, sig: int, timeout_s: float = 15.0, *, log_fault: bool = True) -> None:
        """Send `sig` and wait for the exit (SIGKILL after `timeout_s` if it does not come). Logged as a
        fault unless `log_fault` is false (the harness's own stop at the end of a run)."""
        proc = self._procs[name]
        popen = proc.popen
        if popen is None or popen.poll() is not None:
            return
        fault = "kill" if sig == signal.SIGKILL else "terminate"
        was_leader, term = self._leader_info({name}) if log_fault else (False, None)
        with self._lock:
            proc.expect_exit = True
            if log_fault:
                proc.down_fault = fault
                self._log_fault(
                    fault, name, "start", leader=(was_leader, term), args={"signal": signal.Signals(sig).name}
                )
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(sig)
                if proc.paused and sig != signal.SIGKILL:
                    popen.send_signal(signal.SIGCONT)  # a stopped process handles SIGTERM only once resumed
            proc.paused = False
        try:
            popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        self._record_exit(proc)

    def stop_all(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every process (workers first) and wait: the end of a run, so no fault is logged.

        The data directories stay (mounts included) until `close()`, so they can be inspected.
        """
        for name in [*self.worker_ids, *self.node_ids]:
            self._kill(name, signal.SIGTERM, timeout_s, log_fault=False)

    def pause(self, name: str) -> None:
        """SIGSTOP the process (all its threads), by PID."""
        proc = self._check(name)
        if proc.popen is None or proc.popen.poll() is not None or proc.paused:
            return
        was_leader, term = self._leader_info({name})
        with self._lock:
            self._log_fault("pause", name, "start", leader=(was_leader, term))
            proc.popen.send_signal(signal.SIGSTOP)
            proc.paused = True

    def resume(self, name: str) -> None:
        proc = self._check(name)
        if proc.popen is None or not proc.paused:
            return
        with self._lock:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGCONT)
            proc.paused = False
        self._log_fault("pause", name, "stop")

    def alive(self, name: str) -> bool:
        popen = self._check(name).popen
        return popen is not None and popen.poll() is None

    def paused(self, name: str) -> bool:
        return self._check(name).paused

    def pid(self, name: str) -> int | None:
        popen = self._check(name).popen
        return popen.pid if popen is not None and popen.poll() is None else None

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

    # --- status ----------------------------------------------------------------------------------

    def _channel(self, nid: str) -> grpc.Channel:
        if self._closed:
            raise RuntimeError("the cluster is closed: its addresses must not be dialled any more")
        with self._channel_lock:
            return self._channels.get(nid) or self._new_channel(nid)

    def _new_channel(self, nid: str) -> grpc.Channel:
        ch = self._channels.get(nid)
        if ch is None:
            ch = grpc.insecure_channel(
                self.grpc_address(nid),
                options=[
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 500),
                ],
            )
            self._channels[nid] = ch
        return ch

    def _poll(self, nids: Iterable[str], timeout_s: float) -> dict[str, cluster_pb2.StatusResponse | None]:
        """Status of several nodes in parallel (None: no answer in time)."""
        if self._closed or not self._started:
            return dict.fromkeys(nids)
        futures = {}
        for nid in nids:
            stub = cluster_pb2_grpc.ClusterStub(self._channel(nid))
            futures[nid] = stub.Status.future(cluster_pb2.StatusRequest(), timeout=timeout_s)
        out: dict[str, cluster_pb2.StatusResponse | None] = {}
        for nid, fut in futures.items():
            try:
                out[nid] = fut.result()
            except grpc.RpcError:
                out[nid] = None
        return out

    def status(self, nid: str, timeout_s: float = 1.0) -> cluster_pb2.StatusResponse | None:
        self._check(nid, "node")
        if not self.alive(nid):
            return None
        return self._poll([nid], timeout_s)[nid]

    def _responsive(self) -> list[str]:
        return [n for n in self.node_ids if self.alive(n) and not self._procs[n].paused]

    def leader(self, timeout_s: float = 1.0) -> tuple[str, int] | None:
        """(node id, Raft term) of the node that reports is_leader and ready (the highest term if two do)."""
        found = [
            (st.term, nid)
            for nid, st in self._poll(self._responsive(), timeout_s).items()
            if st is not None and st.is_leader and st.ready
        ]
        if not found:
            return None
        term, nid = max(found)
        self._last_leader = (nid, int(term))
        return nid, int(term)

    def wait_leader(self, timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            lead = self.leader(timeout_s=min(1.0, max(0.1, deadline - time.monotonic())))
            if lead is not None:
                return lead[0]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no ready leader within {timeout_s}s ({self._describe()})")
            time.sleep(0.05)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until every live node answers and reports ready (leader duties running, or caught up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self._poll(self._responsive(), 1.0)
            if got and all(st is not None and st.ready for st in got.values()):
                return
            if time.monotonic() >= deadline:
                not_ready = sorted(n for n, st in got.items() if st is None or not st.ready)
                raise TimeoutError(f"nodes {not_ready} not ready within {timeout_s}s ({self._describe()})")
            time.sleep(0.1)

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until the leader reports at least `count` connected workers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            lead = self.leader()
            if lead is not None:
                st = self.status(lead[0])
                if st is not None and st.connected_workers >= count:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"fewer than {count} workers connected after {timeout_s}s ({self._describe()})")

    def wait_converged(self, timeout_s: float = 30.0) -> None:
        """Wait until every live (running, not paused) node reports the same applied_index."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, int | None] = {}
        while True:
            nodes = self._responsive()
            statuses = self._poll(nodes, 1.0)
            last = {n: (st.applied_index if st is not None else None) for n, st in statuses.items()}
            values = set(last.values())
            if nodes and None not in values and len(values) == 1:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nodes did not converge within {timeout_s}s: applied_index {last}")
            time.sleep(0.1)

    def wait_caught_up(self, timeout_s: float = 30.0) -> None:
        """Weaker than wait_converged, for a cluster under load: every live node has applied at least
        the leader's commit index as it was when this call started."""
        deadline = time.monotonic() + timeout_s
        lead = self.wait_leader(timeout_s)
        st = self.status(lead)
        if st is None:
            raise TimeoutError(f"leader {lead} stopped answering")
        target = st.commit_index
        while True:
            got = {n: s.applied_index if s else None for n, s in self._poll(self._responsive(), 1.0).items()}
            if all(v is not None and v >= target for v in got.values()):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nodes did not reach index {target} within {timeout_s}s: {got}")
            time.sleep(0.1)

    def _describe(self) -> str:
        parts = []
        for name, proc in self._procs.items():
            state = "paused" if proc.paused else ("up" if self.alive(name) else "down")
            parts.append(f"{name}={state}")
        return ", ".join(parts)

    # --- nemesis log -----------------------------------------------------------------------------

    def _leader_info(self, targets: set[str]) -> tuple[bool, int | None]:
        """(was a target the leader, leader term) from a quick poll, or the last known leader."""
        lead: tuple[str, int] | None = None
        cached = self._last_leader
        if cached is not None and cached[0] in self._responsive():
            st = self._poll([cached[0]], 0.3)[cached[0]]
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
            if self._procs[name].paused:
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
        _LIVE.discard(self)
        self._stop_supervisor.set()
        try:
            self._stop_processes()
        finally:
            for ch in self._channels.values():
                with contextlib.suppress(Exception):
                    ch.close()
            self._channels.clear()
            if self._proxy is not None:
                self._proxy.close()
            if self._net is not None:
                self._net.teardown()
            for mount in reversed(self._mounts):
                _umount(mount)
            self._mounts.clear()
            self._registry.remove()
            release(self._ports)

    def _stop_processes(self) -> None:
        running = [p for p in self._procs.values() if p.popen is not None and p.popen.poll() is None]
        for proc in running:
            assert proc.popen is not None
            proc.expect_exit = True
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(signal.SIGTERM)
                if proc.paused:
                    proc.popen.send_signal(signal.SIGCONT)
                proc.paused = False
        deadline = time.monotonic() + 8.0
        for proc in running:
            assert proc.popen is not None
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
            self._record_exit(proc)

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
