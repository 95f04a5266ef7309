"""Network-namespace topology for the fault harness (shared/docs/fault-testing.md, sections 3.2-3.4).

    root ns: <P>h 10.213.X.254/24 ── bridge br0 in ns <P>sw ── eth0 10.213.X.i in ns <P>n<i> (nodes)
                                                            └── eth0 10.213.X.(100+j) in ns <P>w<j> (workers)

X is a /24 this process claimed (tests/fault/netclaim.py: a lock file held for the topology's life, so
that harnesses started at once never pick the same X) and that the root namespace does not route yet;
<P> is "cr" + X in hex + 2 random hex digits, unique among live runs because X is. The root namespace
gets one veth into the bridge with the .254 address and a connected /24 route (nothing else: no default
route change), so that the harness's gRPC clients reach the nodes. Faults are nftables rules in the
victim's namespace, one `inet chaos` table per namespace, rebuilt from the whole fault state on each
change (one `nft -f` transaction; deleting the table heals).
The harness's own address is accepted before any fault rule, so the harness keeps observing partitioned
nodes (like a Jepsen client that reaches every node). Delay uses iptables' NFQUEUE target in the mangle
table (this kernel has no nft `queue` expression and no netem) and tests/fault/nfq_delay.py.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.fault.netclaim import NoFreeSubnet, SubnetClaim, claim_subnet
from tests.fault.proxy import Rules

NFQ_SCRIPT = Path(__file__).with_name("nfq_delay.py")
QUEUE_NUM = 1
GRPC_PORT = 50051
RAFT_PORT = 50061


class NetnsError(RuntimeError):
    pass


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 20.0) -> str:
    """Run a command; return stdout; raise NetnsError with stderr on failure."""
    try:
        cp = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetnsError(f"{' '.join(argv)}: {e}") from e
    if check and cp.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} exited {cp.returncode}: {cp.stderr.strip()}")
    return cp.stdout


def netns_usable() -> str | None:
    """None if this process can build namespaces, else the reason why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "nft"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.get_exec_path()):
            return f"`{tool}` not installed (scripts/fault-deps.sh)"
    probe = "crprobe" + os.urandom(3).hex()
    try:
        run(["ip", "netns", "add", probe])
    except NetnsError as e:
        return f"ip netns does not work: {e}"
    run(["ip", "netns", "del", probe], check=False)
    return None


def _root_uses(x: int) -> bool:
    """Whether a root-namespace address or non-default route covers 10.213.`x` (someone else's network,
    or the leftover of a dead harness that `registry.reap_stale` has not removed)."""
    seen = run(["ip", "-4", "-o", "route", "show", "table", "all"]) + run(["ip", "-4", "-o", "addr"])
    if re.search(rf"\b10\.213\.{x}\.", seen):
        return True
    covering = run(["ip", "-4", "-o", "route", "show", "match", f"10.213.{x}.1"]).splitlines()
    return any(line.strip() and not line.startswith("default") for line in covering)


def _claim_subnet(rng: random.Random) -> SubnetClaim:
    routes = run(["ip", "-4", "-o", "route", "show", "table", "all"])
    addrs = run(["ip", "-4", "-o", "addr"])
    used = frozenset(int(x) for x in re.findall(r"\b10\.213\.(\d+)\.", routes + addrs))
    try:
        return claim_subnet(rng, _root_uses, skip=used)
    except (NoFreeSubnet, OSError) as e:
        raise NetnsError(str(e)) from e


class NetnsTopology:
    def __init__(
        self, nodes: Sequence[str], workers: Sequence[str], log_dir: Path, *, observer_exempt: bool = True
    ) -> None:
        self.log_dir = log_dir
        self.claim = _claim_subnet(random.Random())  # released by teardown
        self.prefix = self.claim.prefix
        self.subnet = self.claim.subnet
        self.harness_ip = f"{self.subnet}.254"
        self.root_veth = f"{self.prefix}h"
        self.observer_exempt = observer_exempt
        self.ips: dict[str, str] = {}
        for i, n in enumerate(nodes, 1):
            self.ips[n] = f"{self.subnet}.{i}"
        for j, w in enumerate(workers, 1):
            self.ips[w] = f"{self.subnet}.{100 + j}"
        self.names = [*nodes, *workers]
        self.created: list[str] = []  # namespaces actually created (for teardown)
        self._tables: set[str] = set()  # names whose namespace has a chaos table
        self._mangle: set[str] = set()  # names whose namespace has NFQUEUE rules
        self._nfq: dict[str, tuple[subprocess.Popen[bytes], tuple[int, int]]] = {}
        self.setup_s = 0.0

    # -- names ------------------------------------------------------------------------------------

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def all_namespaces(self) -> list[str]:
        return [self.switch, *(self.ns(n) for n in self.names)]

    def grpc_address(self, name: str) -> str:
        return f"{self.ips[name]}:{GRPC_PORT}"

    def raft_address(self, name: str) -> str:
        return f"{self.ips[name]}:{RAFT_PORT}"

    def exec_prefix(self, name: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(name)]

    # -- life cycle -------------------------------------------------------------------------------

    def setup(self) -> None:
        t0 = time.monotonic()
        try:
            for ns in self.all_namespaces():
                run(["ip", "netns", "add", ns])
                self.created.append(ns)
            p, sw = self.prefix, self.switch
            root = [
                f"link add eth0 netns {self.ns(n)} type veth peer name {p}p{n} netns {sw}" for n in self.names
            ]
            root.append(f"link add {self.root_veth} type veth peer name {p}ph netns {sw}")
            run(["ip", "-batch", "-"], input="\n".join(root) + "\n")
            switch = ["link add br0 type bridge", "link set br0 up"]
            for port in [*(f"{p}p{n}" for n in self.names), f"{p}ph"]:
                switch += [f"link set {port} master br0", f"link set {port} up"]
            run(["ip", "-n", sw, "-batch", "-"], input="\n".join(switch) + "\n")
            for n in self.names:
                cmds = ["link set lo up", f"addr add {self.ips[n]}/24 dev eth0", "link set eth0 up"]
                run(["ip", "-n", self.ns(n), "-batch", "-"], input="\n".join(cmds) + "\n")
            run(["ip", "addr", "add", f"{self.harness_ip}/24", "dev", self.root_veth])
            run(["ip", "link", "set", self.root_veth, "up"])
            self._check_route()
        except BaseException:
            self.teardown()
            raise
        self.setup_s = time.monotonic() - t0

    def _check_route(self) -> None:
        """The root namespace must send this subnet to our veth, never to its default route."""
        out = run(["ip", "-4", "-o", "route", "get", f"{self.subnet}.1"])
        if f"dev {self.root_veth}" not in out:
            raise NetnsError(f"route to {self.subnet}.1 does not use {self.root_veth}: {out.strip()}")

    def teardown(self) -> None:
        for name in list(self._nfq):
            self._stop_nfq(name)
        for ns in reversed(self.created):
            kill_namespace_pids(ns)
        for ns in reversed(self.created):
            run(["ip", "netns", "del", ns], check=False)
        self.created.clear()
        if self.root_veth in run(["ip", "-o", "link", "show"], check=False):
            run(["ip", "link", "del", self.root_veth], check=False)
        self._tables.clear()
        self._mangle.clear()
        self.claim.release()  # last: the subnet is free for another harness once the veth is gone

    # -- faults -----------------------------------------------------------------------------------

    def apply(self, rules: Rules, names: Iterable[str]) -> None:
        """Make the namespaces of `names` match `rules` (idempotent)."""
        for name in sorted(set(names)):
            self._apply_nft(name, rules)
            self._apply_delay(name, rules)

    def _apply_nft(self, name: str, rules: Rules) -> None:
        ins: list[str] = []
        outs: list[str] = []
        if name in rules.isolated:
            ins.append('iifname "eth0" drop')
            outs.append('oifname "eth0" drop')
        peers = sorted(self.ips[other] for cut in rules.cuts if name in cut for other in cut if other != name)
        if peers:
            ins.append(f'iifname "eth0" ip saddr {{ {", ".join(peers)} }} drop')
            outs.append(f'oifname "eth0" ip daddr {{ {", ".join(peers)} }} drop')
        loss = rules.loss.get(name, 0)
        if loss:
            sample = "" if loss >= 100 else f"numgen random mod 100 lt {loss} "
            ins.append(f'iifname "eth0" {sample}drop')
            outs.append(f'oifname "eth0" {sample}drop')
        ns_exec = self.exec_prefix(name)
        if not ins:
            if name in self._tables:
                run([*ns_exec, "nft", "delete", "table", "inet", "chaos"], check=False)
                self._tables.discard(name)
            return
        if self.observer_exempt:
            ins.insert(0, f'iifname "eth0" ip saddr {self.harness_ip} accept')
            outs.insert(0, f'oifname "eth0" ip daddr {self.harness_ip} accept')
        # One transaction: create (so that delete cannot fail), delete, define. One chain per line (§3.3).
        text = "\n".join(
            [
                "table inet chaos",
                "delete table inet chaos",
                "table inet chaos {",
                "  chain in {",
                "    type filter hook input priority 0; policy accept;",
                *(f"    {r}" for r in ins),
                "  }",
                "  chain out {",
                "    type filter hook output priority 0; policy accept;",
                *(f"    {r}" for r in outs),
                "  }",
                "}",
                "",
            ]
        )
        run([*ns_exec, "nft", "-f", "-"], input=text)
        self._tables.add(name)

    def _apply_delay(self, name: str, rules: Rules) -> None:
        want = rules.delay.get(name)
        have = self._nfq.get(name)
        if want is not None and (have is None or have[1] != want or have[0].poll() is not None):
            if have is not None:
                self._stop_nfq(name)
            self._start_nfq(name, want)
        if want is not None and name not in self._mangle:
            ns_exec = self.exec_prefix(name)
            skip_in = ["!", "-s", self.harness_ip] if self.observer_exempt else []
            skip_out = ["!", "-d", self.harness_ip] if self.observer_exempt else []
            queue = ["-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM), "--queue-bypass"]
            run([*ns_exec, "iptables", "-w", "-t", "mangle", "-A", "INPUT", "-i", "eth0", *skip_in, *queue])
            run([*ns_exec, "iptables", "-w", "-t", "mangle", "-A", "OUTPUT", "-o", "eth0", *skip_out, *queue])
            self._mangle.add(name)
        if want is None and name in self._mangle:
            ns_exec = self.exec_prefix(name)
            for chain in ("INPUT", "OUTPUT"):
                run([*ns_exec, "iptables", "-w", "-t", "mangle", "-F", chain], check=False)
            self._mangle.discard(name)
        if want is None and have is not None:
            self._stop_nfq(name)

    def _start_nfq(self, name: str, delay: tuple[int, int]) -> None:
        log_dir = self.log_dir
        log = open(log_dir / f"nfq-{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [*self.exec_prefix(name), sys.executable, str(NFQ_SCRIPT), str(QUEUE_NUM), *map(str, delay)],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready" once bound, or EOF if it failed
        if line.strip() != b"ready":
            proc.kill()
            proc.wait()
            raise NetnsError(f"nfq_delay.py did not start in {self.ns(name)}; see {log_dir}/nfq-{name}.log")
        self._nfq[name] = (proc, delay)

    def _stop_nfq(self, name: str) -> None:
        entry = self._nfq.pop(name, None)
        if entry is None:
            return
        proc = entry[0]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def nfq_pids(self) -> list[int]:
        return [p.pid for p, _ in self._nfq.values() if p.poll() is None]


def kill_namespace_pids(ns: str) -> None:
    """SIGKILL every process left in a namespace we created (by PID, from `ip netns pids`)."""
    for _ in range(3):
        pids = [int(x) for x in run(["ip", "netns", "pids", ns], check=False).split() if x.isdigit()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def env_args(env: Mapping[str, str]) -> list[str]:
    """`env K=V ...` arguments, so that variables such as LD_PRELOAD do not apply to `ip` itself."""
    return ["env", *(f"{k}={v}" for k, v in env.items())]
