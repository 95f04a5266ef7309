"""Relaying with real processes (issue 18, daemon.relay): a worker and a client that reach one follower
only run tasks end to end, through a leader change; with `[cluster] relay = false` the follower redirects
as before; with mutual TLS and tokens the leader still binds a relayed worker to its identity and refuses a
relayed identity from anyone but a member; and a worker cut from the leader (fault harness proxies) keeps
its leases through a follower."""

from __future__ import annotations

import contextlib
import json
import time
import tomllib
from pathlib import Path

import grpc
import pytest

from cronraft.client import Client, at, command
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.daemon.security.relayed import RELAY_BEARER
from cronraft.errors import PermissionDenied
from cronraft.proto.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc
from cronraft.tokenfile import add_token
from tests.support.cluster import Proc, worker_argv
from tests.support.nodeconfig import toml_dumps

from .harness import Cluster, NodeProc, stamp_command, wait_for
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration
SUCCEEDED = common_pb2.EXECUTION_SUCCEEDED


def _in(seconds: float) -> int:
    """Unix milliseconds `seconds` from now."""
    return int((time.time() + seconds) * 1000)


def _follower(c: Cluster) -> NodeProc:
    leader = c.wait_leader()
    return next(n for n in c.nodes if n is not leader)


def _start_worker_on(
    c: Cluster, worker_id: str, address: str, extra: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> None:
    """A worker whose only server is `address`."""
    c.core.add(Proc(worker_id, "worker", c.root / f"{worker_id}.log"))
    argv = worker_argv(worker_id, address, 4, c.root / f"{worker_id}-outbox", ("--allow-shell", *extra))
    c.workers[worker_id] = c.core.spawn(worker_id, argv, {**c.env, **(env or {})})


def _ended(client: Client, task_id: str) -> common_pb2.Execution | None:
    done = [e for e in client.list_executions(task_id) if e.state == SUCCEEDED]
    return done[0] if done else None


def _log_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text()


def test_a_worker_and_a_client_on_one_follower_run_tasks_through_a_leader_change(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    # TTL 6 s: the attempt that spans the leader change must outlive an election on a loaded machine.
    c = Cluster(tmp_path, n=3, lease_ttl_ms=6000)
    clusters.append(c)
    c.start()
    follower = _follower(c)
    _start_worker_on(c, "w1", follower.grpc_address)
    c.wait_workers(1)
    # The leader counts the worker before its Welcome reaches the follower, which logs the relay after:
    # await the line rather than read the log at once (CI saw the read win that race).
    wait_for(lambda: _log_has(follower.log_path, "worker stream relayed"), 20, "the follower relayed it")
    ledger = tmp_path / "ledger"
    with Client(follower.grpc_address, timeout_s=10) as client:
        # Writes sent to the follower are forwarded: no redirect is followed (there is only this server).
        ids = [
            client.create_task(f"quick-{i}", at(_in(1)), command(*stamp_command(ledger))).task_id
            for i in range(3)
        ]
        for task_id in ids:
            wait_for(lambda t=task_id: _ended(client, t), 20, f"{task_id} ran")  # type: ignore[misc]
        assert sorted(attempt for _, attempt, _ in _rows(ledger)) == [1, 1, 1]

        # A task running across a leader change: the worker comes back through its follower to the new
        # leader and renews the lease, so the attempt runs once, to success.
        long_ledger = tmp_path / "long-ledger"
        sleeper = [*stamp_command(long_ledger)]
        sleeper[-1] += "; import time; time.sleep(7)"
        task = client.create_task("long", at(_in(1)), command(*sleeper))
        wait_for(lambda: _rows(long_ledger) or None, 20, "the long attempt started")
        old = c.wait_leader()
        assert old is not follower
        c.kill(old)
        wait_for(lambda: (lead := c.leader()) is not None and lead is not old, 30, "a new leader")
        ex = wait_for(lambda: _ended(client, task.task_id), 40, "the long task succeeded")
        assert ex.attempt == 1
        assert [attempt for _, attempt, _ in _rows(long_ledger)] == [1]  # it ran once
        # After the change the worker still reaches the cluster only through its follower.
        after = client.create_task("after", at(_in(1)), command(*stamp_command(ledger)))
        wait_for(lambda: _ended(client, after.task_id), 20, "a task created after the change ran")


def _rows(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        eid, attempt, mono = line.split()
        out.append((eid, int(attempt), int(mono)))
    return out


def _set_relay(c: Cluster, relay: bool) -> None:
    for node in c.nodes:
        cfg = tomllib.loads(node.config_path.read_text())
        cfg["cluster"]["relay"] = relay
        node.config_path.write_text(toml_dumps(cfg))


def test_with_relay_off_a_follower_redirects_writes_and_workers(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c = Cluster(tmp_path, n=3)
    _set_relay(c, False)
    clusters.append(c)
    c.start()
    leader = c.wait_leader()
    follower = _follower(c)
    with grpc.insecure_channel(follower.grpc_address) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        spec = common_pb2.TaskSpec(name="x", schedule=at(_in(3600)), payload=command("true"))

        def refusal() -> grpc.RpcError | None:
            # A follower learns who leads from the leader's first append after the election, which
            # may come after wait_leader returns: until then it refuses naming no leader (CI saw it).
            with pytest.raises(grpc.RpcError) as info:
                stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            named = dict(info.value.trailing_metadata() or ()).get("cronraft-leader")
            return info.value if named else None

        error = wait_for(refusal, 10, "the follower's refusal to name the leader")
        assert ("cronraft-leader", leader.grpc_address) in (error.trailing_metadata() or ())
        hello = worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="raw", capacity=1))
        first = next(iter(worker_pb2_grpc.WorkerGatewayStub(ch).Connect(iter([hello]), timeout=5)))
        assert first.not_leader.leader_address == leader.grpc_address


def test_a_worker_that_can_reach_the_leader_is_sent_there_not_relayed(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    """A worker listing a follower first and the leader after it: the follower sends it to the leader
    (Hello.direct), one hop fewer; a raw Hello without `direct` (an older worker) is relayed as before,
    and so is one whose `direct` lacks the leader."""
    c = Cluster(tmp_path, n=3)
    clusters.append(c)
    c.start()
    leader = c.wait_leader()
    follower = _follower(c)
    _start_worker_on(c, "w1", f"{follower.grpc_address},{leader.grpc_address}")
    c.wait_workers(1)
    log = c.root / "w1.log"
    wait_for(lambda: _log_has(log, "redirected to the leader"), 10, "the redirect")
    connected = [json.loads(line) for line in log.read_text().splitlines() if '"connected"' in line]
    assert [line["address"] for line in connected] == [leader.grpc_address]
    assert not _log_has(follower.log_path, "worker stream relayed")
    with grpc.insecure_channel(follower.grpc_address) as ch:
        stub = worker_pb2_grpc.WorkerGatewayStub(ch)
        for direct in ([], [follower.grpc_address, "127.0.0.1:1"]):
            hello = worker_pb2.Hello(worker_id=f"raw-{len(direct)}", capacity=1, direct=direct)
            first = next(iter(stub.Connect(iter([worker_pb2.WorkerMessage(hello=hello)]), timeout=5)))
            assert first.WhichOneof("kind") == "welcome", first  # relayed: the leader's Welcome
        hello = worker_pb2.Hello(worker_id="raw-direct", capacity=1, direct=[leader.grpc_address])
        first = next(iter(stub.Connect(iter([worker_pb2.WorkerMessage(hello=hello)]), timeout=5)))
        assert first.not_leader.leader_address == leader.grpc_address


def test_relay_on_a_follower_answers_a_write_itself(tmp_path: Path, clusters: list[Cluster]) -> None:
    c = Cluster(tmp_path, n=3)
    clusters.append(c)
    c.start()
    follower = _follower(c)
    with grpc.insecure_channel(follower.grpc_address) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        spec = common_pb2.TaskSpec(name="x", schedule=at(_in(3600)), payload=command("true"))
        created = stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec, request_id="r1"), timeout=10)
        again = stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec, request_id="r1"), timeout=10)
        assert created.task.task_id == again.task.task_id  # the request id travels: deduplicated
        # An invalid write is refused by the leader, naming the field, through the follower.
        bad = common_pb2.TaskSpec(name="", schedule=at(_in(3600)), payload=command("true"))
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=bad), timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name" in (info.value.details() or "")


def test_a_follower_answers_a_relayed_write_once_it_applied_it(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    """Read-your-writes through a follower: the SDK reads from the node that answered the write, so the
    follower answers only once it has applied the write itself. The followers apply every entry 150 ms
    late (failpoint raft.before_apply); node3 leads (the fastest election timer)."""
    slow = {"CRONRAFT_FAILPOINTS": "raft.before_apply=sleep:150"}
    c = Cluster(
        tmp_path,
        n=3,
        node_env={"node1": slow, "node2": slow},
        raft_overrides={"node1": {"election_timeout_ms": 3000}, "node2": {"election_timeout_ms": 3000}},
    )
    clusters.append(c)
    c.start()
    follower = _follower(c)
    assert follower.node_id != "node3" and c.wait_leader().node_id == "node3"
    with grpc.insecure_channel(follower.grpc_address) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        for i in range(8):
            spec = common_pb2.TaskSpec(name=f"ryw-{i}", schedule=at(_in(3600)), payload=command("true"))
            made = stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec), timeout=10)
            got = stub.GetTask(scheduler_pb2.GetTaskRequest(task_id=made.task.task_id), timeout=10)
            assert got.spec.name == f"ryw-{i}"


def _mtls_cluster(tmp_path: Path) -> tuple[Cluster, Path, dict[str, str]]:
    """Three nodes with mutual TLS, a token file and certificate identities: w1 (a worker by certificate)
    and tokens for a worker w2, a submitter and a reader."""
    pki = tmp_path / "pki"
    leaves = [Leaf(f"node{i}", ("127.0.0.1",), server=True) for i in (1, 2, 3)]
    init_pki(pki, [*leaves, Leaf("w1"), Leaf("client")])
    tokens_file = tmp_path / "tokens.toml"
    now_ms = int(time.time() * 1000)
    tokens = {
        "w2": add_token(tokens_file, "w2", ["worker"], now_ms=now_ms),
        "submitter": add_token(tokens_file, "submitter-user", ["submitter"], now_ms=now_ms),
        "reader": add_token(tokens_file, "reader-user", ["reader"], now_ms=now_ms),
        "admin": add_token(tokens_file, "admin-user", ["admin"], now_ms=now_ms),
    }
    c = SecureCluster(tmp_path, n=3)
    c.admin = Transport(
        ca=(pki / "ca.pem").read_bytes(),
        cert=(pki / "client.pem").read_bytes(),
        key=(pki / "client-key.pem").read_bytes(),
        token=tokens["admin"],
    )
    for node in c.nodes:
        extra = (
            f'\n[tls]\ncert = "{pki / node.node_id}.pem"\nkey = "{pki / node.node_id}-key.pem"\n'
            f'ca = "{pki / "ca.pem"}"\nclient_ca = "{pki / "ca.pem"}"\nrequire_client_cert = true\n\n'
            f'[auth]\ntoken_file = "{tokens_file}"\n[auth.cert_roles]\nw1 = ["worker"]\n'
        )
        node.config_path.write_text(node.config_path.read_text() + extra)
    return c, pki, tokens


def test_mtls_and_tokens_a_relayed_worker_stays_bound_to_its_identity(
    tmp_path: Path, clusters: list[Cluster]
) -> None:
    c, pki, tokens = _mtls_cluster(tmp_path)
    clusters.append(c)
    c.start()
    follower = _follower(c)
    leader = c.wait_leader()
    ca, client_cert = pki / "ca.pem", (pki / "client.pem", pki / "client-key.pem")
    tls = ("--tls-ca", str(ca))
    # w1 by its certificate only (relayed as a certificate identity), w2 by its token: both on the
    # follower only, both welcomed by the leader under their own names.
    _start_worker_on(
        c,
        "w1",
        follower.grpc_address,
        (*tls, "--tls-cert", str(pki / "w1.pem"), "--tls-key", str(pki / "w1-key.pem")),
    )
    _start_worker_on(
        c,
        "w2",
        follower.grpc_address,
        (*tls, "--tls-cert", str(client_cert[0]), "--tls-key", str(client_cert[1]), "--token", tokens["w2"]),
    )

    def transport(token: str) -> Transport:
        return Transport(
            ca=ca.read_bytes(), cert=client_cert[0].read_bytes(), key=client_cert[1].read_bytes(), token=token
        )

    ledger = tmp_path / "ledger"
    with Client(follower.grpc_address, timeout_s=10, transport=transport(tokens["submitter"])) as client:
        ids = [
            client.create_task(f"t{i}", at(_in(1)), command(*stamp_command(ledger))).task_id for i in range(6)
        ]
        for task_id in ids:
            wait_for(lambda t=task_id: _ended(client, t), 30, f"{task_id} ran")  # type: ignore[misc]
        workers = {e.worker_id for t in ids for e in client.list_executions(t)}
        assert workers <= {"w1", "w2"} and workers
    relayed = follower.log_path.read_text()
    assert '"worker": "w1"' in relayed and '"worker": "w2"' in relayed and "worker stream relayed" in relayed
    # The leader's verdict on a relayed write is the caller's: a reader cannot create, even via a follower.
    reader = Client(follower.grpc_address, timeout_s=10, transport=transport(tokens["reader"]))
    with reader, pytest.raises(PermissionDenied, match="needs role submitter"):
        reader.create_task("denied", at(_in(3600)), command("true"))
    # Only a member may carry a caller's identity: a client sending the relay key itself is refused.
    creds = grpc.ssl_channel_credentials(
        ca.read_bytes(), client_cert[1].read_bytes(), client_cert[0].read_bytes()
    )
    with grpc.secure_channel(leader.grpc_address, creds) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        spec = common_pb2.TaskSpec(name="x", schedule=at(_in(3600)), payload=command("true"))
        md = (("authorization", f"Bearer {tokens['reader']}"), (RELAY_BEARER, tokens["submitter"]))
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec), metadata=md, timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "only a cluster member" in (info.value.details() or "")


def _last_connected(path: Path) -> str | None:
    """The address of the worker's latest welcomed stream, from its JSON log."""
    address = None
    for line in path.read_text().splitlines() if path.exists() else ():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "connected":
                address = event.get("address")
    return address


def test_a_worker_cut_from_the_leader_keeps_its_leases(tmp_path: Path) -> None:
    """Fault harness, proxy mode: a worker connected straight to the leader loses its link to it while
    its attempts run longer than a lease TTL; it reaches the leader through a follower and renews, so every
    attempt runs once, at attempt 1."""
    from tests.fault.cluster import FaultCluster

    ledger = tmp_path / "ledger"
    with FaultCluster(
        tmp_path / "run", nodes=3, workers=1, mode="proxy", worker_args=("--allow-shell",), skew=False
    ) as fc:
        fc.start()
        lead = fc.wait_leader()
        followers = [n for n in fc.node_ids if n != lead]
        # Straight to the leader first: cut the followers off until the worker's stream is the leader's.
        direct = f"127.0.0.1:{fc._worker_proxy_ports['w1', lead]}"
        for f in followers:
            fc.cut_link("w1", f)
        wait_for(lambda: _last_connected(fc.log_path("w1")) == direct or None, 30, "w1 on the leader")
        for f in followers:
            fc.heal_link("w1", f)
        relayed_before = sum(fc.log_path(f).read_text().count("worker stream relayed") for f in followers)
        with Client(fc.servers, timeout_s=10) as client:
            sleeper = [*stamp_command(ledger)]
            sleeper[-1] += "; import time; time.sleep(6)"
            ids = [client.create_task(f"s{i}", at(_in(1)), command(*sleeper)).task_id for i in range(4)]
            wait_for(lambda: len(_rows(ledger)) == 4 or None, 20, "every attempt started")
            fc.cut_link("w1", lead)
            try:
                for task_id in ids:
                    ex = wait_for(lambda t=task_id: _ended(client, t), 40, f"{task_id} succeeded")  # type: ignore[misc]
                    assert ex.attempt == 1
            finally:
                fc.heal_link("w1", lead)
        assert sorted(attempt for _, attempt, _ in _rows(ledger)) == [1, 1, 1, 1]
        assert len({eid for eid, _, _ in _rows(ledger)}) == 4
        relayed = sum(fc.log_path(f).read_text().count("worker stream relayed") for f in followers)
        assert relayed > relayed_before  # the leases were renewed through a follower
