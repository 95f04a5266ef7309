"""A request id is its caller's, on three real nodes with TLS and tokens (docs/security.md, "Request ids").

Writes carry a request id (the SDK's retry key) and the leader answers a request id it applied before from
its dedup table. Before the fix the table's key was the kind of write and the client's id alone: bob,
reusing alice's request id, got alice's answer (her task of team-a, its spec) and his own write was
dropped. Here two principals (two tokens), and a second token of alice granting another namespace, send
the same request ids: each gets its own write, directly, through a follower (which relays the write with
the caller's token) and after the leader that applied the first one is killed; each caller's own retry is
still answered from its own record, once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cronraft.client import Client, command, every
from cronraft.client._pki import Leaf, init_pki
from cronraft.client._transport import Transport
from cronraft.proto.v1 import common_pb2
from cronraft.tokenfile import add_token

from .harness import Cluster, NodeProc, wait_for
from .test_security_transport import SecureCluster

pytestmark = pytest.mark.integration


@dataclass
class Env:
    cluster: SecureCluster
    ca: bytes
    tokens: dict[str, str]

    def client(self, who: str, namespace: str, node: NodeProc | None = None) -> Client:
        servers = node.grpc_address if node is not None else self.cluster.servers
        transport = Transport(ca=self.ca, token=self.tokens[who])
        return Client(servers, timeout_s=30, transport=transport, namespace=namespace)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, module_clusters: list[Cluster]) -> Env:
    root = tmp_path_factory.mktemp("request-scope")
    pki = root / "pki"
    init_pki(pki, [Leaf("node", ("127.0.0.1",), server=True), Leaf("client")])
    tokens_file = root / "tokens.toml"
    now_ms = int(time.time() * 1000)
    roles = {
        "alice": ("alice", "submitter@team-a"),
        "bob": ("bob", "submitter@team-b"),
        "alice-b": ("alice", "submitter@team-b"),  # a second token of alice: another namespace
        "root": ("root", "admin"),
    }
    tokens = {key: add_token(tokens_file, who, [role], now_ms=now_ms) for key, (who, role) in roles.items()}
    toml = (
        f'[tls]\ncert = "{pki / "node.pem"}"\nkey = "{pki / "node-key.pem"}"\nca = "{pki / "ca.pem"}"\n\n'
        f'[auth]\ntoken_file = "{tokens_file}"\n'
    )
    (root / "cluster").mkdir()
    c = SecureCluster(root / "cluster", n=3, extra_toml=toml)
    ca = (pki / "ca.pem").read_bytes()
    c.admin = Transport(ca=ca, token=tokens["root"])
    module_clusters.append(c)
    try:
        c.start()
    except BaseException:
        print(c.logs())
        raise
    return Env(c, ca, tokens)


@pytest.fixture
def clients(env: Env) -> Iterator[dict[str, Client]]:
    made = {"alice": env.client("alice", "team-a"), "bob": env.client("bob", "team-b")}
    made["alice-b"] = env.client("alice-b", "team-b")
    made["root"] = env.client("root", "default", env.cluster.wait_leader())  # reads the newest records
    yield made
    for c in made.values():
        c.close()


def _names(client: Client, prefix: str) -> list[tuple[str, str]]:
    return sorted((t.task_id, t.spec.name) for t in client.list_tasks(name_prefix=prefix))


def _hourly(client: Client, name: str, rid: str) -> common_pb2.Task:
    return client.create_task(name, every("1h"), command("true"), request_id=rid)


def test_a_create_with_another_callers_request_id_is_its_own(clients: dict[str, Client]) -> None:
    alice, bob, alice_b, root = clients["alice"], clients["bob"], clients["alice-b"], clients["root"]
    mine = _hourly(alice, "rs-alice", "rs-shared")
    theirs = _hourly(bob, "rs-bob", "rs-shared")
    # bob's answer is his own new task in team-b, not alice's task of team-a.
    assert theirs.task_id != mine.task_id
    assert (theirs.spec.name, theirs.spec.namespace) == ("rs-bob", "team-b")
    # alice's token for team-b is another caller too (the roles are part of the caller).
    other = _hourly(alice_b, "rs-alice-b", "rs-shared")
    assert other.task_id not in (mine.task_id, theirs.task_id) and other.spec.namespace == "team-b"
    # Each one's retry is answered from its own record: the same task, nothing created twice.
    assert _hourly(alice, "rs-alice", "rs-shared") == mine
    assert _hourly(bob, "rs-bob", "rs-shared") == theirs
    assert _hourly(alice_b, "rs-alice-b", "rs-shared") == other
    assert _names(alice, "rs-") == [(mine.task_id, "rs-alice")]
    assert _names(bob, "rs-") == sorted([(theirs.task_id, "rs-bob"), (other.task_id, "rs-alice-b")])
    # The audit trail: the client's request id under each principal, each call (a retry too) naming the
    # task it was answered with, all ok.
    records = [r for r in root.list_audit(method="CreateTask", limit=None) if r.request_id == "rs-shared"]
    assert sorted((r.principal, *r.target_ids) for r in records) == sorted(
        [("alice", mine.task_id)] * 2 + [("bob", theirs.task_id)] * 2 + [("alice", other.task_id)] * 2
    )
    assert all(r.outcome == "ok" for r in records)


def test_a_write_relayed_by_a_follower_is_the_callers_own(env: Env, clients: dict[str, Client]) -> None:
    alice, bob = clients["alice"], clients["bob"]
    task_a = _hourly(alice, "rs-relay-a", "rs-relay-a")
    task_b = _hourly(bob, "rs-relay-b", "rs-relay-b")
    leader = env.cluster.wait_leader()
    follower = next(n for n in env.cluster.nodes if n is not leader)
    with env.client("bob", "team-b", follower) as via:
        first = alice.trigger_task(task_a.task_id, request_id="rs-trigger")
        relayed = via.trigger_task(task_b.task_id, request_id="rs-trigger")
        assert (relayed.task_id, relayed.namespace) == (task_b.task_id, "team-b")
        assert relayed.execution_id != first.execution_id
        paused = via.pause_task(task_b.task_id, "bob's", request_id="rs-pause")
        assert paused.task_id == task_b.task_id and paused.state == common_pb2.TASK_PAUSED
    # alice reusing bob's pause id pauses her own task, with her note.
    mine = alice.pause_task(task_a.task_id, "alice's", request_id="rs-pause")
    assert (mine.task_id, mine.state, mine.pause_note) == (task_a.task_id, common_pb2.TASK_PAUSED, "alice's")
    manual = [e.execution_id for e in bob.list_executions(task_b.task_id) if e.manual]
    assert manual == [relayed.execution_id]


def test_a_retry_after_the_leader_died_finds_only_its_own_record(
    env: Env, clients: dict[str, Client]
) -> None:
    """The scope is computed by whichever leader answers: alice's retry on the next leader finds her record,
    and bob's write with her id on it is a new one. Last in the module: a node is killed and restarted."""
    alice, bob = clients["alice"], clients["bob"]
    mine = _hourly(alice, "rs-failover-a", "rs-failover")
    old = env.cluster.wait_leader()
    env.cluster.kill(old, signal.SIGKILL)
    try:
        wait_for(lambda: (lead := env.cluster.leader()) is not None and lead is not old, 30, "a new leader")
        assert _hourly(alice, "rs-failover-a", "rs-failover") == mine
        theirs = _hourly(bob, "rs-failover-b", "rs-failover")
        assert theirs.task_id != mine.task_id and theirs.spec.namespace == "team-b"
        assert _names(alice, "rs-failover") == [(mine.task_id, "rs-failover-a")]
        assert _names(bob, "rs-failover") == [(theirs.task_id, "rs-failover-b")]
    finally:
        env.cluster.start_node(old)
