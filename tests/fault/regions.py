"""Five nodes over three regions for the fault harness (docs/multi-region.md; scenarios S17-S20).

    region A: n1 n2 (preferred leaders), workers w1 (on n1) and w2 (on n2)
    region B: n3 n4,                      worker  w3 (on n3)
    region C: n5,                         worker  w4 (on n5)
    one way: A-B 30 ms, A-C 80 ms, B-C 80 ms (a round trip pays it twice); inside a region: none

`RegionCluster` is a `FaultCluster` of 5 nodes in network namespaces (delay needs them) whose nodes say
`[cluster] preferred_leader = ["n1", "n2"]` and whose workers list their home node first, then the rest
of their region, then the nearest regions (a worker relayed by its home node never crosses a region
itself). Every packet leaving a namespace for another region waits its one-way delay in an NFQUEUE
(this kernel has no netem): per namespace a mangle chain `CRREGION` sends each remote region's
addresses to a queue of its own, served by tests/fault/nfq_delay.py. The harness's own traffic is not
delayed (it stands for a client next to whichever node it calls). `partition(region)` cuts every link
between a region and the others in one step, logged as one fault `partition` whose target lists the
region's processes (the checker attributes the cut to its workers and, when the leader is among them,
measures the recovery: R8).

`probe_writes` measures the create latency a client in a region sees (run in a worker's namespace:
`python -m tests.fault.regions probe SERVER COUNT`); `region_figures` reads a finished run for the
lateness of fires per region of the worker that ran them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.fault.cluster import FaultCluster, Unsupported
from tests.fault.netns import NFQ_SCRIPT, NetnsError, run

__all__ = [
    "HOME",
    "ONE_WAY_MS",
    "PREFERRED",
    "REGIONS",
    "RegionCluster",
    "delay_plan",
    "probe_writes",
    "region_figures",
    "region_of",
    "server_order",
]

REGIONS: dict[str, tuple[str, ...]] = {"A": ("n1", "n2"), "B": ("n3", "n4"), "C": ("n5",)}
HOME: dict[str, str] = {"w1": "n1", "w2": "n2", "w3": "n3", "w4": "n5"}  # each worker's nearby node
ONE_WAY_MS: dict[frozenset[str], int] = {
    frozenset("AB"): 30,
    frozenset("AC"): 80,
    frozenset("BC"): 80,
}
PREFERRED = ("n1", "n2")
CHAIN = "CRREGION"
FIRST_QUEUE = 10  # tests/fault/netns.py uses queue 1 for its own per-node delay


def region_of(name: str) -> str:
    """The region of a node or worker (a worker's is its home node's)."""
    node = HOME.get(name, name)
    for region, nodes in REGIONS.items():
        if node in nodes:
            return region
    raise KeyError(name)


def one_way_ms(a: str, b: str) -> int:
    """The one-way delay between two processes' regions (0 inside a region)."""
    ra, rb = region_of(a), region_of(b)
    return 0 if ra == rb else ONE_WAY_MS[frozenset((ra, rb))]


def server_order(worker: str) -> list[str]:
    """A worker's nodes in the order it tries them: home, its region, then by delay (then name)."""
    nodes = [n for ns in REGIONS.values() for n in ns]
    home = HOME[worker]
    return [home, *sorted((n for n in nodes if n != home), key=lambda n: (one_way_ms(worker, n), n))]


def delay_plan(names: Iterable[str], ips: Mapping[str, str]) -> dict[str, dict[int, list[str]]]:
    """Per process: {one-way delay in ms: the addresses its packets to that region are delayed to}."""
    names = list(names)
    plan: dict[str, dict[int, list[str]]] = {}
    for a in names:
        per: dict[int, list[str]] = {}
        for b in names:
            ms = one_way_ms(a, b)
            if ms:
                per.setdefault(ms, []).append(ips[b])
        plan[a] = {ms: sorted(addresses) for ms, addresses in sorted(per.items())}
    return plan


class RegionCluster(FaultCluster):
    """5 nodes over regions A, B, C with inter-region delay (netns mode only)."""

    def __init__(self, run_dir: Path, **kw: Any) -> None:
        kw["nodes"] = 5
        kw["workers"] = len(HOME)
        extra = kw.pop("node_config_extra", "") or ""
        preferred = ", ".join(f'"{n}"' for n in PREFERRED)
        kw["node_config_extra"] = f"[cluster]\npreferred_leader = [{preferred}]\n{extra}"
        if kw.get("mode") == "proxy":
            raise Unsupported("regions need network namespaces (per-link delay)")
        super().__init__(run_dir, **kw)
        if self._net is None:
            self.close()
            raise Unsupported(
                "regions need network namespaces (root, ip, nft); this run fell back to proxies"
            )
        self._delays: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.partitioned: set[str] = set()

    # --- topology ---------------------------------------------------------------------------------

    def _argv(self, name: str) -> list[str]:
        argv = super()._argv(name)
        if self._proc(name).kind != "worker":
            return argv
        i = argv.index("--server") + 1
        argv[i] = ",".join(self.grpc_address(n) for n in server_order(name))
        return argv

    def _setup(self) -> None:
        super()._setup()
        self._install_delays()

    def _install_delays(self) -> None:
        assert self._net is not None
        names = [*self.node_ids, *self.worker_ids]
        t0 = time.monotonic()
        for name, per in delay_plan(names, self._net.ips).items():
            ns_exec = self._net.exec_prefix(name)
            run([*ns_exec, "iptables", "-w", "-t", "mangle", "-N", CHAIN])
            for q, (ms, addresses) in enumerate(per.items(), FIRST_QUEUE):
                self._start_delay(name, q, ms)
                for address in addresses:
                    run([
                        *ns_exec, "iptables", "-w", "-t", "mangle", "-A", CHAIN, "-d", address,
                        "-j", "NFQUEUE", "--queue-num", str(q), "--queue-bypass",
                    ])  # fmt: skip
            run([*ns_exec, "iptables", "-w", "-t", "mangle", "-A", "OUTPUT", "-o", "eth0", "-j", CHAIN])
        self.timings["region_delay_setup_s"] = time.monotonic() - t0

    def _start_delay(self, name: str, queue: int, ms: int) -> None:
        assert self._net is not None
        log_path = self.run_dir / "logs" / f"nfq-{name}-{queue}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [*self._net.exec_prefix(name), sys.executable, str(NFQ_SCRIPT), str(queue), str(ms), "0"],
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            proc.kill()
            proc.wait()
            raise NetnsError(f"nfq_delay.py did not start for {name} queue {queue}; see {log_path}")
        self._delays.append((name, proc))

    def close(self) -> None:
        for _, proc in getattr(self, "_delays", []):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in getattr(self, "_delays", []):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if hasattr(self, "_delays"):
            self._delays.clear()
        super().close()

    # --- faults -----------------------------------------------------------------------------------

    def members(self, region: str) -> list[str]:
        """The nodes and workers of a region."""
        return [n for n in [*self.node_ids, *self.worker_ids] if region_of(n) == region]

    def partition(self, region: str) -> None:
        """Cut every link between `region` and the other regions (one fault, `partition`)."""
        self._partition(region, cut=True)

    def heal_partition(self, region: str) -> None:
        self._partition(region, cut=False)

    def _partition(self, region: str, *, cut: bool) -> None:
        inside = self.members(region)
        outside = [n for n in [*self.node_ids, *self.worker_ids] if n not in inside]
        links = {frozenset((a, b)) for a in inside for b in outside}
        if cut == (region in self.partitioned):
            return
        was_leader, term = self._leader_info(set(inside))
        with self._lock:
            if cut:
                self._rules.cuts |= links
                self.partitioned.add(region)
            else:
                self._rules.cuts -= links
                self.partitioned.discard(region)
            self._apply_net([*inside, *outside])
            self._log_fault(
                "partition", ",".join(inside), "start" if cut else "stop", leader=(was_leader, term)
            )

    def heal_all(self) -> None:
        for region in sorted(self.partitioned):
            self.heal_partition(region)
        super().heal_all()

    def leader_region(self) -> str | None:
        lead = self.leader(timeout_s=1.0)
        return None if lead is None else region_of(lead[0])


# --- measurements ----------------------------------------------------------------------------------


async def _probe(server: str, count: int) -> dict[str, Any]:
    from cronraft.client import AsyncClient, at, handler

    creates: list[float] = []
    deletes: list[float] = []
    errors: list[str] = []
    far = int((time.time() + 86_400) * 1000)  # never fires: deleted right after
    async with AsyncClient(server, timeout_s=10.0) as client:
        for i in range(count):
            t = time.monotonic()
            try:
                task = await client.create_task(f"region-probe-{i}", at(far), handler("fault.noop"))
            except Exception as e:
                errors.append(f"create: {type(e).__name__}: {e}")
                continue
            creates.append((time.monotonic() - t) * 1000)
            t = time.monotonic()
            try:
                await client.delete_task(task.task_id)
            except Exception as e:
                errors.append(f"delete: {type(e).__name__}: {e}")
                continue
            deletes.append((time.monotonic() - t) * 1000)
    return {"server": server, "create_ms": creates, "delete_ms": deletes, "errors": errors[:5]}


def probe_writes(cluster: RegionCluster, worker: str, count: int = 20) -> dict[str, Any]:
    """Create (then delete) `count` tasks one after the other from `worker`'s namespace through its home
    node, as a client in that region would; the latencies in milliseconds."""
    server = cluster.grpc_address(HOME[worker])
    argv = [sys.executable, "-m", "tests.fault.regions", "probe", server, str(count)]
    done = cluster.exec_in(worker, argv, timeout_s=120.0)
    if done.returncode != 0:
        return {"server": server, "error": done.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["region"] = region_of(worker)
    return result


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "max": None, "n": 0}
    s = sorted(values)

    def at(q: float) -> float:
        return round(s[min(len(s) - 1, int(q * len(s)))], 1)

    return {"p50": at(0.5), "p90": at(0.9), "max": round(s[-1], 1), "n": len(s)}


def region_figures(run_dir: Path) -> dict[str, Any]:
    """Per region of the worker that first started a judged fire: how many, and their lateness (ms)."""
    from tests.fault import checker
    from tests.fault.history import load_run

    run = checker._prepare(load_run(run_dir))
    late: dict[str, list[float]] = {}
    for key, fire in run.fires.items():
        starts = run.starts.get(key)
        if not starts:
            continue
        first = min(starts, key=lambda s: s.rec.mono_ns)
        worker = str(first.rec.worker)
        region = region_of(worker) if worker in HOME else "?"
        late.setdefault(region, []).append((first.rec.mono_ns - fire.due_ns) / 1e6)
    return {region: percentiles(values) for region, values in sorted(late.items())}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "probe":
        print(json.dumps(asyncio.run(_probe(argv[1], int(argv[2])))))
        return 0
    if len(argv) == 2 and argv[0] == "figures":
        print(json.dumps(region_figures(Path(argv[1])), indent=2))
        return 0
    print("usage: python -m tests.fault.regions probe SERVER COUNT | figures RUN_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
