"""The shared test support: the port reservation across processes, the bounded waits, the fake clock, the
node config and the process table of the real-process harness (its status polls and waits are exercised
by the integration and fault tests, which start real nodes)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ports
from tests.support.clock import FakeClock
from tests.support.cluster import Proc, ProcessCluster
from tests.support.nodeconfig import merge, node_config, toml_dumps
from tests.support.wait import WaitTimeout, wait_until, wait_until_async

REPO = Path(__file__).resolve().parents[2]

_CHILD = """
import sys
from tests.support.ports import free_ports
print(" ".join(map(str, free_ports(int(sys.argv[1])))), flush=True)
sys.stdin.read()  # hold the reservation until the test has read every child's ports
"""


def test_concurrent_processes_are_never_handed_the_same_port() -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, "40"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        handed = [[int(p) for p in c.stdout.readline().split()] for c in children]  # type: ignore[union-attr]
        mine = ports.free_ports(40)
    finally:
        for c in children:
            c.communicate("", timeout=30)
    every = [p for group in [*handed, mine] for p in group]
    assert len(every) == 200 and len(set(every)) == 200
    ephemeral = range(*map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()))
    assert not set(every) & set(ephemeral)
    ports.release(mine)


@pytest.fixture
def one_port_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A private table whose only candidate is a port this process holds in the shared table."""
    port = ports.free_port()
    monkeypatch.setattr(ports, "_DIR", tmp_path)
    monkeypatch.setattr(ports, "LOCK", tmp_path / "lock")
    monkeypatch.setattr(ports, "TABLE", tmp_path / "table.json")
    monkeypatch.setattr(ports, "_candidates", lambda: [port])
    yield port
    monkeypatch.undo()
    ports.release([port])


def _owned_by(table: Path, port: int, pid: int, start: str | None) -> None:
    table.write_text(json.dumps({"ports": {str(port): [pid, start]}}))


def test_a_live_owner_keeps_its_port_and_a_gone_one_loses_it(one_port_table: int, tmp_path: Path) -> None:
    port, table = one_port_table, tmp_path / "table.json"
    _owned_by(table, port, 1, ports._start_time(1))  # init: alive
    with pytest.raises(RuntimeError, match="no 1 free test ports"):
        ports.free_ports(1)
    dead = subprocess.Popen(["true"])  # reaped below: no such process any more
    dead.wait()
    _owned_by(table, port, dead.pid, "1")
    assert ports.free_ports(1) == [port]
    _owned_by(table, port, os.getpid(), "not-my-start-time")  # the pid was reused by another process
    assert ports.free_ports(1) == [port]
    assert json.loads(table.read_text())["ports"][str(port)][0] == os.getpid()
    ports.release([port])
    assert json.loads(table.read_text())["ports"] == {}


def test_a_port_someone_listens_on_is_skipped(one_port_table: int) -> None:
    with socket.create_server(("127.0.0.1", one_port_table)), pytest.raises(RuntimeError):
        ports.free_ports(1)
    assert ports.free_ports(1) == [one_port_table]


def test_wait_until_returns_the_value_or_names_what_and_the_last_value() -> None:
    seen = iter([0, [], "ready"])
    assert wait_until(lambda: next(seen), 5, "ready", interval=0) == "ready"
    count = [0]
    with pytest.raises(AssertionError, match=r"waiting for the count \(last value: 0\)"):
        wait_until(lambda: count[0], 0.05, "the count")


def test_a_timed_out_wait_is_a_failed_assertion_and_a_timeout() -> None:
    with pytest.raises(WaitTimeout) as caught:
        wait_until(lambda: None, 0.01, "nothing")
    assert isinstance(caught.value, AssertionError) and isinstance(caught.value, TimeoutError)


def test_wait_until_ignores_only_the_errors_it_is_told_to() -> None:
    def boom() -> int:
        raise ConnectionError("refused")

    with pytest.raises(AssertionError, match="last error: ConnectionError"):
        wait_until(boom, 0.05, "a connection", ignore=ConnectionError)
    with pytest.raises(ConnectionError):
        wait_until(boom, 0.05, "a connection")


@pytest.mark.asyncio
async def test_wait_until_async_lets_the_loop_run() -> None:
    done = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, done.set)
    assert await wait_until_async(done.is_set, 5, "the callback")
    with pytest.raises(AssertionError, match=r"the impossible \(last value: False\)"):
        await wait_until_async(lambda: False, 0.05, "the impossible")


def test_fake_clock_shapes() -> None:
    clock = FakeClock(wall=1_000_000, mono=5_000)
    clock.advance(1500)
    assert (clock.now_ms(), clock.mono_ms()) == (1_001_500, 6_500)
    assert clock() == 6.5
    clock.advance_to(10.0)
    assert (clock.mono, clock.wall) == (10_000, 1_005_000)
    clock.wall -= 3_600_000  # a step of the wall clock alone
    assert clock() == 10.0


def test_node_config_renders_the_layout_both_harnesses_write() -> None:
    cfg = node_config(
        "n1",
        "/data/n1",
        [("n1", "127.0.0.1:1", "127.0.0.1:2"), ("n2", "127.0.0.1:3", "127.0.0.1:4")],
        raft={"election_timeout_ms": 1000, "heartbeat_ms": 50},
        scheduler={"horizon_ms": 5000},
        insecure=True,
    )
    extra = {"scheduler": {"horizon_ms": 2000}, "clock": {"probe_interval_ms": 100}}
    assert toml_dumps(merge(cfg, extra)) == (
        "insecure = true\n\n"
        '[node]\nid = "n1"\ndata_dir = "/data/n1"\n\n'
        '[cluster]\nsecret_env = "CRONRAFT_CLUSTER_SECRET"\ndurability = "replicated"\n\n'
        '[[cluster.members]]\nid = "n1"\ngrpc_address = "127.0.0.1:1"\nraft_address = "127.0.0.1:2"\n\n'
        '[[cluster.members]]\nid = "n2"\ngrpc_address = "127.0.0.1:3"\nraft_address = "127.0.0.1:4"\n\n'
        "[raft]\nelection_timeout_ms = 1000\nheartbeat_ms = 50\n\n"
        "[scheduler]\nhorizon_ms = 2000\n\n"
        '[log]\nlevel = "info"\nformat = "json"\n\n'
        "[clock]\nprobe_interval_ms = 100\n"
    )
    single = node_config("n1", "/d", [("n1", "a:1", "a:2")], raft={}, scheduler={}, secret_env=None)
    assert "secret_env" not in single["cluster"] and "insecure" not in single


# A child that says it started, then ignores SIGTERM when told to (a process that will not stop).
_SLEEPER = """
import signal, sys, time
if sys.argv[1:] == ["stubborn"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("started", flush=True)
time.sleep(60)
"""


def _sleeper(tmp_path: Path, *names: str) -> ProcessCluster:
    table = ProcessCluster(tmp_path)
    for name in names:
        table.add(Proc(name, "worker", tmp_path / "logs" / f"{name}.log"))
    return table


def test_the_process_table_spawns_pauses_resumes_and_kills_by_name(tmp_path: Path) -> None:
    table = _sleeper(tmp_path, "w1")
    log = tmp_path / "logs" / "w1.log"
    try:
        table.spawn("w1", [sys.executable, "-c", _SLEEPER], dict(os.environ))
        wait_until(lambda: "started" in log.read_text(), 20, "the child's first line in its log")
        assert table.alive("w1") and table.pid("w1") is not None
        assert table.pause("w1") and table.paused("w1") and not table.pause("w1")
        assert table.resume("w1") and not table.paused("w1") and not table.resume("w1")
        assert table.pause("w1")
        assert table.kill("w1", signal.SIGTERM)  # SIGCONT follows, or a stopped child would not exit
        assert not table.alive("w1") and table.pid("w1") is None and not table.kill("w1")
        table.spawn("w1", [sys.executable, "-c", _SLEEPER], dict(os.environ))  # the log is appended to
        wait_until(lambda: log.read_text().count("started") == 2, 20, "the second run's line")
        assert "==== w1.log\nstarted\nstarted\n" in table.logs()
    finally:
        table.terminate_all(5)


def test_terminate_all_kills_what_does_not_stop_in_time(tmp_path: Path) -> None:
    table = _sleeper(tmp_path, "w1", "w2")
    for name, args in (("w1", []), ("w2", ["stubborn"])):
        table.spawn(name, [sys.executable, "-c", _SLEEPER, *args], dict(os.environ))
    logs = [tmp_path / "logs" / f"{name}.log" for name in ("w1", "w2")]
    wait_until(lambda: all("started" in p.read_text() for p in logs), 20, "both children to start")
    table.terminate_all(0.5)
    codes = {name: table._check(name).popen.returncode for name in ("w1", "w2")}  # type: ignore[union-attr]
    assert codes == {"w1": -signal.SIGTERM, "w2": -signal.SIGKILL}
