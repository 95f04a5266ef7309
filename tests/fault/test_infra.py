"""Checks of the fault harness's own machinery (tests/fault/cluster.py, netns.py, proxy.py, nemesis.py).

The unmarked tests are part of the default run (about 15 s together): a 3-node cluster in network
namespaces that elects, fails over when its leader is isolated, heals and converges; libfaketime skew
of a worker; a full tmpfs; and a cleanup that leaves nothing behind. They skip, saying why, where the
machine cannot build namespaces (not root, no `ip netns`, no nft: see scripts/fault-deps.sh).
The longer ones are `@pytest.mark.fault` (`make test-fault`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fault.cluster import REGISTRY, FaultCluster, Unsupported, reap_stale
from tests.fault.nemesis import Fault, Nemesis, Step, random_schedule
from tests.fault.netns import netns_usable
from tests.fault.proxy import ProxyNet
from tests.support.nodeconfig import toml_dumps
from tests.support.wait import wait_until

REPO = Path(__file__).resolve().parents[2]
NETNS_REASON = netns_usable()
needs_netns = pytest.mark.skipif(NETNS_REASON is not None, reason=f"network namespaces: {NETNS_REASON}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tmpfs mounts)")

WALL_AND_MONO = "import time; print(time.time(), time.monotonic())"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def mounts_under(path: Path) -> list[str]:
    out = subprocess.run(["findmnt", "-rn", "-o", "TARGET"], capture_output=True, text=True, check=False)
    return [m for m in out.stdout.splitlines() if m.startswith(str(path))]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_clean(cluster: FaultCluster, pids: list[int], run_dir: Path) -> None:
    prefix = cluster.prefix
    if prefix is not None:
        assert not {ns for ns in namespaces() if ns.startswith(prefix)}, "namespaces left behind"
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=False).stdout
        assert f"{prefix}h" not in links, "root veth left behind"
    assert mounts_under(run_dir) == [], "mounts left behind"
    assert [p for p in pids if pid_alive(p)] == [], "processes left behind"
    assert not list(REGISTRY.glob(f"{prefix}.json")) if prefix else True


Bounds = tuple[float, float]


def wall_and_mono(cluster: FaultCluster, name: str) -> tuple[Bounds, Bounds]:
    """Bounds of (child wall - harness wall) and of (child monotonic - harness monotonic), the child run
    as `name` runs: it read its clocks between our two readings, so each offset lies between its reading
    minus our later one and its reading minus our earlier one. A slow start on a loaded machine widens
    the bounds; it cannot make a right clock look wrong (a midpoint within a fixed tolerance could)."""
    before_w, before_m = time.time(), time.monotonic()
    out = cluster.exec_in(name, [sys.executable, "-c", WALL_AND_MONO], timeout_s=20)
    after_w, after_m = time.time(), time.monotonic()
    assert out.returncode == 0, out.stderr
    wall, mono = map(float, out.stdout.split())
    return (wall - after_w, wall - before_w), (mono - after_m, mono - before_m)


def within(bounds: Bounds, offset: float) -> bool:
    """`offset` is inside the bounds, give or take 50 ms of clock reading and float rounding."""
    return bounds[0] - 0.05 <= offset <= bounds[1] + 0.05


# --- no root needed ------------------------------------------------------------------------------


def test_toml_writer_round_trips_and_merges_extra_config() -> None:
    import tomllib

    data = {
        "node": {"id": "n1", "data_dir": "/x y"},
        "cluster": {
            "members": [{"id": "n1", "raft_address": "10.0.0.1:1"}, {"id": "n2", "raft_address": "b"}]
        },
        "notify": {"targets": [{"command": ["a", "b"], "env": {"K": "v\n"}, "events": ["failure"]}]},
        "raft": {"heartbeat_ms": 50, "flag": True, "ratio": 0.5},
    }
    assert tomllib.loads(toml_dumps(data)) == data


def test_proxy_blackholes_delays_and_heals() -> None:
    """The proxy primitives on a loopback echo server: forward, blackhole, heal (reset), delay."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: _echo(c), daemon=True).start()

    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    net = ProxyNet(seed=1)
    try:
        pport = net.listen(("127.0.0.1", port), server="n1", client="w1")

        def roundtrip(timeout: float = 1.0) -> float | None:
            with socket.create_connection(("127.0.0.1", pport), timeout=timeout) as s:
                t0 = time.monotonic()
                s.sendall(b"ping")
                try:
                    return time.monotonic() - t0 if s.recv(16) == b"ping" else None
                except (TimeoutError, ConnectionError):
                    return None

        assert roundtrip() is not None
        held = socket.create_connection(("127.0.0.1", pport), timeout=1.0)
        net.update(lambda r: r.isolated.add("w1"))
        assert roundtrip(0.3) is None  # blackhole: accepted, nothing comes back
        net.update(lambda r: r.isolated.discard("w1"))
        held.settimeout(2.0)
        assert held.recv(16) == b""  # the held connection is reset on heal (EOF or reset)
        held.close()
        assert roundtrip() is not None
        net.update(lambda r: r.delay.__setitem__("n1", (150, 0)))
        rtt = roundtrip(2.0)
        assert rtt is not None and rtt >= 0.28  # both directions pay 150 ms
        net.update(lambda r: r.cuts.add(frozenset(("w1", "n1"))))
        assert roundtrip(0.3) is None
    finally:
        net.close()
        srv.close()


def test_random_schedule_is_deterministic() -> None:
    a = random_schedule(random.Random(7), 120.0)
    b = random_schedule(random.Random(7), 120.0)
    assert a == b and len(a) >= 3
    assert all(isinstance(step[1], Fault) and step[0] < 120 for step in a)


# --- the netns cluster (default run) -------------------------------------------------------------


@pytest.fixture(scope="module")
def netns_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultCluster]:
    if NETNS_REASON is not None:
        pytest.skip(f"network namespaces: {NETNS_REASON}")
    run_dir = tmp_path_factory.mktemp("fault-infra")
    cluster = FaultCluster(run_dir, nodes=3, workers=1, worker_args=(), node_disk_mb=8, mode="netns")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@needs_netns
def test_netns_cluster_starts_and_elects(netns_cluster: FaultCluster) -> None:
    c = netns_cluster
    assert c.mode == "netns"
    assert c.servers.count(",") == 2 and all(a.startswith("10.213.") for a in c.servers.split(","))
    lead = c.leader()
    assert lead is not None and lead[0] in c.node_ids
    answers = {n: c.status(n) for n in c.node_ids}
    assert all(st is not None for st in answers.values())
    assert sum(1 for st in answers.values() if st is not None and st.is_leader and st.ready) == 1
    prefix = c.prefix
    assert prefix is not None
    assert {f"{prefix}{n}" for n in [*c.node_ids, *c.worker_ids, "sw"]} <= namespaces()


@needs_netns
def test_isolating_the_leader_fails_over_and_heals(netns_cluster: FaultCluster) -> None:
    c = netns_cluster
    old = c.wait_leader()
    t0 = time.monotonic()
    c.isolate(old)
    new = wait_until(lambda: (lead := c.leader()) and lead[0] != old and lead, 10.0, "a new leader")
    elected_s = time.monotonic() - t0

    def old_stepped_down() -> bool:
        st = c.status(old, timeout_s=0.5)  # the harness still reaches the isolated node
        return st is not None and not (st.is_leader and st.ready)

    wait_until(old_stepped_down, 5.0, f"isolated {old} to stop reporting a ready leader")
    stepped_s = time.monotonic() - t0
    print(f"new leader {new} after {elected_s:.2f}s; {old} not ready-leader after {stepped_s:.2f}s")
    c.heal(old)
    c.wait_converged(30.0)
    events = [e for e in read_jsonl(c.run_dir / "nemesis.jsonl") if e["fault"] == "isolate"]
    assert [(e["phase"], e["target"]) for e in events[-2:]] == [("start", old), ("stop", old)]
    assert events[-2]["was_leader"] is True and isinstance(events[-2]["term"], int)


@needs_netns
def test_skew_moves_a_workers_wall_clock_only(netns_cluster: FaultCluster) -> None:
    c = netns_cluster
    w = c.worker_ids[0]
    wall, mono = wall_and_mono(c, w)
    assert within(wall, 0.0) and within(mono, 0.0), (wall, mono)
    c.set_skew(w, 5.0)
    time.sleep(c.skew_settle_s)
    wall, mono = wall_and_mono(c, w)
    assert within(wall, 5.0), wall
    assert within(mono, 0.0), mono
    c.set_skew(w, 0.0)
    time.sleep(c.skew_settle_s)
    wall, _ = wall_and_mono(c, w)
    assert within(wall, 0.0), wall
    assert c.alive(w)


@needs_netns
def test_fill_and_free_a_nodes_tmpfs(netns_cluster: FaultCluster) -> None:
    c = netns_cluster
    lead = c.wait_leader()
    follower = next(n for n in c.node_ids if n != lead)
    total = c.disk_free_bytes(follower)
    assert 0 < total <= 8 * 1024 * 1024
    c.fill_disk(follower)
    assert c.disk_free_bytes(follower) < 64 * 1024
    c.free_disk(follower)
    assert c.disk_free_bytes(follower) > total - 1024 * 1024
    faults = [(e["fault"], e["phase"]) for e in read_jsonl(c.run_dir / "nemesis.jsonl")][-2:]
    assert faults == [("disk_full", "start"), ("disk_full", "stop")]
    if not c.alive(follower):  # an append on the full disk SIGBUSes pysyncobj's journal (expected)
        c.start_node(follower)


@needs_netns
def test_close_leaves_nothing_behind(netns_cluster: FaultCluster) -> None:
    c = netns_cluster
    pids = [p for p in (c.pid(n) for n in [*c.node_ids, *c.worker_ids]) if p is not None]
    assert len(pids) == len(c.node_ids) + len(c.worker_ids)
    c.close()
    c.close()  # idempotent
    assert_clean(c, pids, c.run_dir)
    exits = read_jsonl(c.run_dir / "exits.jsonl")
    assert {e["pid"] for e in exits} >= set(pids) and all(e["expected"] for e in exits)


# --- longer checks (make test-fault) ----------------------------------------------------------------


def _tcp_probe(c: FaultCluster, name: str, address: str, timeout: float = 1.0) -> float | None:
    """Connect time from inside `name` to `address`, or None if it failed."""
    host, port = address.rsplit(":", 1)
    code = textwrap.dedent(
        f"""
        import socket, time
        t = time.monotonic()
        try:
            socket.create_connection(({host!r}, {port}), timeout={timeout}).close()
            print(time.monotonic() - t)
        except OSError:
            print("fail")
        """
    )
    out = c.exec_in(name, [sys.executable, "-c", code]).stdout.strip()
    return None if out == "fail" else float(out)


@pytest.mark.fault
@needs_netns
def test_netns_cut_link_loss_delay_and_process_faults(tmp_path: Path) -> None:
    with FaultCluster(tmp_path, nodes=3, workers=2, worker_args=(), mode="netns") as c:
        c.start()
        lead = c.wait_leader()
        f1, f2 = (n for n in c.node_ids if n != lead)
        w1 = c.worker_ids[0]
        # A worker<->leader cut: the worker still reaches the followers; the harness still reaches all.
        c.cut_link(w1, lead)
        assert _tcp_probe(c, w1, c.grpc_address(lead), 0.5) is None
        assert _tcp_probe(c, w1, c.grpc_address(f1)) is not None
        assert c.status(lead) is not None
        c.heal_link(w1, lead)
        assert _tcp_probe(c, w1, c.grpc_address(lead)) is not None
        # Delay: both directions of f1's traffic; others untouched.
        c.set_delay(f1, 100, 10)
        slow = _tcp_probe(c, w1, c.grpc_address(f1), 3.0)
        fast = _tcp_probe(c, w1, c.grpc_address(f2))
        assert slow is not None and slow > 0.15, slow
        assert fast is not None and fast < 0.1, fast
        c.clear_net(f1)
        back = _tcp_probe(c, w1, c.grpc_address(f1))
        assert back is not None and back < 0.1
        # Loss 100 %: nothing gets through; the harness is exempt.
        c.set_loss(f2, 100)
        assert _tcp_probe(c, w1, c.grpc_address(f2), 0.5) is None
        assert c.status(f2) is not None
        c.clear_net(f2)
        # Pause, kill, restart, and an exit the harness did not cause.
        c.pause(f1)
        assert c.status(f1, timeout_s=0.3) is None
        c.resume(f1)
        c.kill_node(f2)
        assert not c.alive(f2)
        c.start_node(f2)
        pid = c.pid(f1)
        assert pid is not None
        os.kill(pid, signal.SIGSEGV)
        wait_until(lambda: not c.alive(f1), 10.0, "the crash")
        exits = wait_until(
            lambda: [e for e in read_jsonl(c.run_dir / "exits.jsonl") if e["pid"] == pid], 5, "exit"
        )
        assert exits[0]["signal"] == "SIGSEGV" and exits[0]["expected"] is False
        c.start_node(f1)
        c.heal_all()
        c.wait_leader()
        c.wait_converged(30.0)
        nemesis = read_jsonl(c.run_dir / "nemesis.jsonl")
        starts = sum(1 for e in nemesis if e["phase"] == "start")
        stops = sum(1 for e in nemesis if e["phase"] == "stop")
        assert starts == stops, nemesis


@pytest.mark.fault
@needs_root
def test_proxy_mode_fails_over_cuts_and_heals(tmp_path: Path) -> None:
    with FaultCluster(tmp_path, nodes=3, workers=2, worker_args=(), mode="proxy", node_disk_mb=8) as c:
        c.start()
        assert c.mode == "proxy" and c.servers.startswith("127.0.0.1:")
        old = c.wait_leader()
        c.isolate(old)
        wait_until(lambda: (lead := c.leader()) and lead[0] != old, 10.0, "a new leader")
        wait_until(
            lambda: (st := c.status(old)) is not None and not (st.is_leader and st.ready), 5.0, "step down"
        )
        c.heal(old)
        c.wait_converged(30.0)
        lead = c.wait_leader()
        follower = next(n for n in c.node_ids if n != lead)
        c.cut_link(lead, follower)
        time.sleep(2.0)
        c.heal_link(lead, follower)
        c.isolate(c.worker_ids[0])
        c.set_loss(c.worker_ids[1], 30)
        c.set_delay(follower, 50, 10)
        c.set_skew(follower, -5.0)
        c.heal_all()
        c.wait_leader(30.0)
        c.wait_converged(30.0)
        c.wait_workers(2, 30.0)


@pytest.mark.fault
@needs_netns
def test_nemesis_runs_a_schedule_and_heals(tmp_path: Path) -> None:
    with FaultCluster(tmp_path, nodes=3, workers=2, worker_args=(), mode="netns") as c:
        c.start()
        seen: list[str] = []
        schedule: list[Step] = [
            (0.2, ("pause", "follower", 1.0)),
            (0.5, Fault("isolate", "random-worker", 1.0)),
            (1.0, ("cut_link", "leader,follower", 1.0)),
            (1.5, lambda cl: seen.append(cl.wait_leader())),
            (2.5, ("kill", "leader", 1.5)),
            (3.0, ("skew", "half-workers", 1.0, {"offset_s": -5.0})),
        ]
        nemesis = Nemesis(c, random.Random(3))
        asyncio.run(nemesis.run(schedule))
        assert [e.fault for e in nemesis.events] == [
            "pause",
            "isolate",
            "cut_link",
            "<lambda>",
            "kill",
            "skew",
        ]
        assert all(e.skipped is None for e in nemesis.events), nemesis.events
        assert seen and seen[0] in c.node_ids
        nemesis.final_heal()
        assert all(c.alive(n) for n in [*c.node_ids, *c.worker_ids])
        c.wait_leader(30.0)
        c.wait_converged(30.0)
        log = read_jsonl(c.run_dir / "nemesis.jsonl")
        opened: dict[tuple[str, str], int] = {}
        for e in log:
            key = (e["fault"], e["target"])
            opened[key] = opened.get(key, 0) + (1 if e["phase"] == "start" and e["fault"] != "skew" else 0)
            if e["phase"] == "stop":
                opened[key] = 0
        assert all(v == 0 for v in opened.values()), log
        kill = next(e for e in log if e["fault"] == "kill")
        assert kill["was_leader"] is True


_HARNESS = """
import sys, time
from pathlib import Path
from tests.fault.cluster import FaultCluster
c = FaultCluster(Path(sys.argv[1]), nodes=3, workers=1, worker_args=(), mode="netns", node_disk_mb=4)
c.start()
print(c.prefix, *[c.pid(n) for n in [*c.node_ids, *c.worker_ids]], flush=True)
time.sleep(120)
"""


@pytest.mark.fault
@needs_netns
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_harness_killed_leaves_nothing_behind(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM/SIGINT: the harness cleans up itself; SIGKILL: the next reap_stale() does."""
    with open(tmp_path / "harness.err", "w") as err:  # the child's KeyboardInterrupt traceback goes here
        proc = subprocess.Popen(
            [sys.executable, "-c", _HARNESS, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    try:
        assert proc.stdout is not None
        prefix, *pid_text = proc.stdout.readline().split()
        pids = [int(p) for p in pid_text]
        assert len(pids) == 4 and all(pid_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(30)
        if sig == signal.SIGKILL:
            assert {ns for ns in namespaces() if ns.startswith(prefix)}, "SIGKILL cannot clean up"
            assert prefix in reap_stale()
        assert not {ns for ns in namespaces() if ns.startswith(prefix)}
        assert mounts_under(tmp_path) == []
        wait_until(lambda: not any(pid_alive(p) for p in pids), 5.0, "the processes to be gone")
        assert not (REGISTRY / f"{prefix}.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unsupported_is_raised_with_a_reason(tmp_path: Path) -> None:
    c = FaultCluster(tmp_path, nodes=1, workers=0, mode="proxy", skew=False)
    try:
        with pytest.raises(Unsupported, match="libfaketime"):
            c.set_skew("n1", 1.0)
        with pytest.raises(Unsupported, match="node_disk_mb"):
            c.fill_disk("n1")
    finally:
        c.close()
