"""daemon.relay and daemon.security.relayed without a cluster: which calls are forwarded, where to, within
which bounds; the identity a member carries for a caller and the one rule the leader applies to it (only a
member may carry one; a token is verified again, a certificate identity gets this node's own roles); the
[cluster] relay keys. The relayed stream and writes with real processes: tests/integration/test_relay.py."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cronraft.client._transport import Transport
from cronraft.daemon.config import AuthConfig, config_from_dict
from cronraft.daemon.relay import Relay, forwarded_method
from cronraft.daemon.relay import stream as relay_stream
from cronraft.daemon.relay.stream import STALE_SHARE, stale_after_s
from cronraft.daemon.security.authn import Authenticator, TokenStore, node_token
from cronraft.daemon.security.authz import ANONYMOUS, RPC_ROLES, Principal
from cronraft.daemon.security.interceptor import AuthInterceptor
from cronraft.daemon.security.relayed import (
    RELAY_BEARER,
    RELAY_CERT,
    RELAY_HOP,
    RELAY_PEER,
    identity_metadata,
    relayed_credential,
    relayed_hop,
)
from cronraft.errors import ConfigError, PermissionDenied, ResourceExhausted, Unauthenticated
from cronraft.proto.v1 import worker_pb2
from cronraft.raft.replicator import RaftStatus
from cronraft.tokenfile import add_token

NOW_MS = 1_800_000_000_000
SECRET = "s" * 20
CREATE = "/cronraft.v1.Scheduler/CreateTask"
CONNECT = "/cronraft.v1.WorkerGateway/Connect"


# ------------------------------------------------------------------------------------------- which


def test_every_scheduler_write_is_forwarded_and_nothing_else() -> None:
    for method, role in RPC_ROLES.items():
        writes = method.startswith("/cronraft.v1.Scheduler/") and role not in (None, "reader")
        writes = writes and not method.endswith("/ImportTasks")  # redirected instead (below)
        assert forwarded_method(method) is writes, method
    assert forwarded_method(CREATE)
    assert not forwarded_method("/cronraft.v1.Scheduler/ImportTasks")  # redirected: grpc/grpc#36066
    assert not forwarded_method("/cronraft.v1.Scheduler/GetTask")
    assert not forwarded_method("/cronraft.v1.Cluster/Status")  # about the node that answers
    assert not forwarded_method(CONNECT)  # relayed as a stream (daemon.relay.stream), not forwarded


# ------------------------------------------------------------------------------------------- where


class FakeRaft:
    def __init__(self, leader: str | None, *, me: str = "n2") -> None:
        self.me = me
        self.leader = leader

    def status(self) -> RaftStatus:
        return RaftStatus(
            node_id=self.me,
            is_leader=self.leader == self.me,
            leader_id=self.leader,
            term=3,
            commit_index=0,
            applied_index=0,
        )


def _relay(raft: FakeRaft, **kw: Any) -> Relay:
    args: dict[str, Any] = {
        "node_id": raft.me,
        "own_address": f"{raft.me}:1",
        "enabled": True,
        "max_streams": 2,
        "max_writes": 1,
        "status": raft.status,
        "leader_address": lambda st: f"{st.leader_id}:1" if st.leader_id else None,
        "transport": Transport(),
        **kw,
    }
    return Relay(**args)


def test_a_follower_relays_to_the_leader_it_knows_and_never_from_the_leader() -> None:
    raft = FakeRaft("n1")
    relay = _relay(raft)
    assert relay.target() == "n1:1"
    raft.leader = None  # an election: nowhere to relay to (the gateway holds, a write is redirected)
    assert relay.target() is None
    raft.leader = "n2"  # this node leads: it serves the call itself
    assert relay.target() is None and relay.leading()
    assert relay.relays([]) is True
    # One hop: a call another member relayed is served (or redirected) here, never relayed again.
    assert relay.relays([(RELAY_HOP, "n3")]) is False
    assert _relay(raft, enabled=False).relays([]) is False  # [cluster] relay = false


def test_the_relay_watch_wakes_streams_when_the_leader_moves() -> None:
    async def scenario() -> list[str]:
        raft = FakeRaft("n1")
        relay = _relay(raft)
        woken: list[str] = []
        cancel = relay.on_move(lambda: woken.append("moved"))
        await asyncio.sleep(0.12)
        assert woken == []
        raft.leader = "n3"
        await asyncio.sleep(0.12)
        cancel()
        raft.leader = "n1"
        await asyncio.sleep(0.12)
        await relay.close()
        return woken

    assert asyncio.run(scenario()) == ["moved"]


def test_streams_and_writes_are_bounded_per_follower() -> None:
    relay = _relay(FakeRaft("n1"))
    with relay.stream_slot(), relay.stream_slot():
        with pytest.raises(ResourceExhausted, match="relay_max_streams"), relay.stream_slot():
            pass
        assert relay.streams == 2
    assert relay.streams == 0 and relay.streams_total == 2 and relay.refused["streams"] == 1
    with relay.write_slot(), pytest.raises(ResourceExhausted, match="relay_max_writes"), relay.write_slot():
        pass
    assert relay.writes == 0 and relay.refused["writes"] == 1


def test_a_relayed_heartbeat_waits_less_than_the_worker_would() -> None:
    # The harness's timings (heartbeat 0.5 s, TTL 3 s): the worker gives up after 1 s.
    welcome = worker_pb2.Welcome(heartbeat_interval_ms=500, lease_ttl_ms=3000)
    assert stale_after_s(welcome) == pytest.approx(STALE_SHARE * 1.0)
    # The defaults (2 s, 10 s): the worker gives up after 3 s.
    welcome = worker_pb2.Welcome(heartbeat_interval_ms=2000, lease_ttl_ms=10_000)
    assert stale_after_s(welcome) == pytest.approx(STALE_SHARE * 3.0)


class _StalledChannel:
    """A channel to a leader behind a partition whose connection never completes: the first write of a
    call waits (grpc.aio waits for the connection, up to gRPC's connect timeout, 20 s)."""

    def __init__(self) -> None:
        self.calls: list[_StalledCall] = []

    def stream_stream(self, *_: Any, **__: Any) -> Any:
        def connect(**_: Any) -> _StalledCall:
            self.calls.append(_StalledCall())
            return self.calls[-1]

        return connect


class _StalledCall:
    def __init__(self) -> None:
        self.cancelled = False

    async def write(self, _: Any) -> None:
        await asyncio.sleep(20.0)

    async def read(self) -> Any:
        await asyncio.sleep(20.0)

    def cancel(self) -> None:
        self.cancelled = True


def test_a_relayed_hello_to_an_unreachable_leader_is_answered_within_the_hello_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Fault scenario S18: the leader's region is cut while this follower still names it. The worker must
    # hear from the relay before its own Hello timeout (3 s), never after gRPC's connect timeout.
    monkeypatch.setattr(relay_stream, "HELLO_S", 0.3)
    relay = _relay(FakeRaft("n1"))
    channel = _StalledChannel()
    monkeypatch.setattr(relay, "channel", lambda _address: channel)
    first = worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w4"))

    async def scenario() -> tuple[Any, float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        opened = await relay_stream._open(relay, first, [])
        return opened, loop.time() - started

    opened, took = asyncio.run(scenario())
    assert isinstance(opened, worker_pb2.GatewayMessage) and opened.WhichOneof("kind") == "not_leader"
    assert opened.not_leader.leader_address == ""  # no other leader known: the worker tries its other nodes
    assert took < 1.0
    assert channel.calls and all(call.cancelled for call in channel.calls)


def test_a_worker_comes_back_to_the_relay_that_learnt_of_a_new_leader_during_its_hello(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # S18: the follower still names the cut-off leader n1 when the worker's Hello comes, learns of n3
    # meanwhile, and n3 does not answer within what is left of HELLO_S (a new connection over a 160 ms
    # round trip). The worker is sent back here, not to its other nodes (in S18: the cut region's).
    # The Hello's time (1.5 s) leaves the move at 0.1 s more than a second to be seen: with 0.4 s it
    # failed once on a loaded machine, the loop late past the deadline.
    monkeypatch.setattr(relay_stream, "HELLO_S", 1.5)
    raft = FakeRaft("n1")
    relay = _relay(raft)
    channels: dict[str, _StalledChannel] = {}
    monkeypatch.setattr(relay, "channel", lambda address: channels.setdefault(address, _StalledChannel()))
    first = worker_pb2.WorkerMessage(hello=worker_pb2.Hello(worker_id="w4"))

    async def scenario() -> Any:
        asyncio.get_running_loop().call_later(0.1, lambda: setattr(raft, "leader", "n3"))
        return await relay_stream._open(relay, first, [])

    opened = asyncio.run(scenario())
    assert opened.WhichOneof("kind") == "not_leader" and opened.not_leader.leader_address == relay.own_address
    assert set(channels) == {"n1:1", "n3:1"}  # it followed the move within the Hello


# ------------------------------------------------------------------------------------ the identity


def _authenticator(tmp_path: Path) -> tuple[Authenticator, dict[str, str]]:
    path = tmp_path / "tokens.toml"
    tokens = {
        "worker": add_token(path, "w1", ["worker"], now_ms=NOW_MS),
        "reader": add_token(path, "rita", ["reader"], now_ms=NOW_MS),
        "submitter": add_token(path, "sam", ["submitter"], now_ms=NOW_MS),
        "expired": add_token(path, "old", ["admin"], expires_ms=NOW_MS - 1, now_ms=NOW_MS - 10),
    }
    auth = AuthConfig(token_file=path, cert_roles=(("w-cert", ("worker",)),))
    authn = Authenticator(auth, secret=SECRET, tokens=TokenStore(path), wall_ms=lambda: NOW_MS)
    return authn, tokens


def _member(*extra: tuple[str, Any]) -> list[tuple[str, Any]]:
    return [("authorization", f"Bearer {node_token(SECRET)}"), *extra]


def test_a_member_carries_a_callers_token_and_the_leader_verifies_it_again(tmp_path: Path) -> None:
    authn, tokens = _authenticator(tmp_path)
    check = AuthInterceptor(authn).check
    p = check(
        CONNECT, _member((RELAY_BEARER, tokens["worker"]), (RELAY_HOP, "n2"), (RELAY_PEER, "ipv4:1:2")), {}
    )
    assert (p.name, p.source) == ("w1", "token")  # the worker itself: its stream is bound to w1
    assert p.via == "ipv4:1:2 via n2"  # where the audit trail says the call came from
    # The leader's verdict is the caller's: a reader's write is refused, an expired token too.
    with pytest.raises(PermissionDenied, match="needs role submitter"):
        check(CREATE, _member((RELAY_BEARER, tokens["reader"])), {})
    with pytest.raises(Unauthenticated, match="expired"):
        check(CREATE, _member((RELAY_BEARER, tokens["expired"])), {})
    with pytest.raises(Unauthenticated, match="not known"):
        check(CREATE, _member((RELAY_BEARER, "crt1_forged")), {})


def test_only_a_member_may_carry_an_identity(tmp_path: Path) -> None:
    authn, tokens = _authenticator(tmp_path)
    check = AuthInterceptor(authn).check
    for own in (tokens["submitter"], tokens["worker"], "crn1_" + "0" * 64, None):
        metadata: list[tuple[str, Any]] = [] if own is None else [("authorization", f"Bearer {own}")]
        for key, value in ((RELAY_BEARER, tokens["submitter"]), (RELAY_CERT, b"w-cert")):
            with pytest.raises(Unauthenticated, match="only a cluster member"):
                check(CREATE if key == RELAY_BEARER else CONNECT, [*metadata, (key, value)], {})
    # A member does not relay a member, and carries one credential only.
    with pytest.raises(Unauthenticated, match="never relayed"):
        check(CONNECT, _member((RELAY_BEARER, node_token(SECRET))), {})
    with pytest.raises(Unauthenticated, match="exactly one"):
        check(CONNECT, _member((RELAY_BEARER, tokens["worker"]), (RELAY_CERT, b"w-cert")), {})
    with pytest.raises(Unauthenticated, match="exactly one"):
        check(CONNECT, _member((RELAY_BEARER, tokens["worker"]), (RELAY_BEARER, tokens["worker"])), {})
    # The hop alone grants nothing: the caller's own credentials decide, and its address is its own.
    p = check(
        CREATE, [("authorization", f"Bearer {tokens['submitter']}"), (RELAY_HOP, "n9"), (RELAY_PEER, "x")], {}
    )
    assert (p.name, p.via) == ("sam", "")


def test_a_relayed_certificate_identity_gets_this_nodes_roles_only(tmp_path: Path) -> None:
    authn, _ = _authenticator(tmp_path)
    check = AuthInterceptor(authn).check
    p = check(CONNECT, _member((RELAY_CERT, b"w-cert")), {})
    assert (p.name, p.source, p.has("worker")) == ("w-cert", "cert", True)
    with pytest.raises(PermissionDenied):  # its roles here are worker's: no write
        check(CREATE, _member((RELAY_CERT, b"w-cert")), {})
    with pytest.raises(Unauthenticated, match=r"not in auth\.cert_roles"):
        check(CONNECT, _member((RELAY_CERT, b"intruder")), {})


def test_what_a_relaying_member_sends_for_each_kind_of_caller() -> None:
    caller = [("authorization", "Bearer crt1_abc")]
    token = Principal("sam", {"*": frozenset({"submitter"})}, "token")
    assert identity_metadata(token, caller, "n2") == [(RELAY_HOP, "n2"), (RELAY_BEARER, "crt1_abc")]
    jwt = Principal("sam", {"*": frozenset({"submitter"})}, "jwt")
    assert identity_metadata(jwt, [("authorization", "Bearer a.b.c")], "n2")[1] == (RELAY_BEARER, "a.b.c")
    cert = Principal("wörker", {"*": frozenset({"worker"})}, "cert")
    assert identity_metadata(cert, [], "n2") == [(RELAY_HOP, "n2"), (RELAY_CERT, "wörker".encode())]
    assert identity_metadata(ANONYMOUS, [], "n2") == [(RELAY_HOP, "n2")]  # authentication off
    assert identity_metadata(ANONYMOUS, [], "n2", "ipv4:127.0.0.1:5") == [
        (RELAY_HOP, "n2"),
        (RELAY_PEER, "ipv4:127.0.0.1:5"),
    ]
    node = Principal("cluster-member", {"*": frozenset({"node"})}, "node")
    with pytest.raises(PermissionDenied):
        identity_metadata(node, caller, "n2")
    with pytest.raises(Unauthenticated):
        identity_metadata(token, [], "n2")  # its token is gone from the call: refuse, never guess


def test_relayed_credentials_are_read_strictly() -> None:
    assert relayed_credential([]) is None
    assert relayed_credential([(RELAY_BEARER, " crt1_x ")]) == ("bearer", "crt1_x")
    assert relayed_credential([(RELAY_CERT, "é".encode())]) == ("cert", "é")
    assert relayed_hop([(RELAY_HOP, "n1")]) == "n1" and relayed_hop(None) is None
    for bad in ([(RELAY_BEARER, "")], [(RELAY_CERT, b"x" * 9000)]):
        with pytest.raises(Unauthenticated):
            relayed_credential(bad)


# ------------------------------------------------------------------------------------------ config

BASE = """
[node]
id = "n1"
[cluster]
secret = "0123456789abcdefghij"
{extra}
[[cluster.members]]
id = "n1"
grpc_address = "127.0.0.1:1"
raft_address = "127.0.0.1:2"
[[cluster.members]]
id = "n2"
grpc_address = "127.0.0.1:3"
raft_address = "127.0.0.1:4"
"""


def _cluster(extra: str) -> Any:
    return config_from_dict(tomllib.loads(BASE.format(extra=extra)), "c.toml").cluster


def test_relay_keys_default_on_and_are_checked() -> None:
    c = _cluster("")
    assert (c.relay, c.relay_max_streams, c.relay_max_writes, c.preferred_leader) == (True, 10_000, 1_000, ())
    c = _cluster('relay = false\nrelay_max_streams = 5\nrelay_max_writes = 7\npreferred_leader = ["n2"]')
    assert (c.relay, c.relay_max_streams, c.relay_max_writes, c.preferred_leader) == (False, 5, 7, ("n2",))
    for extra, problem in (
        ('relay = "yes"', "cluster.relay: expected true or false"),
        ("relay_max_streams = 0", "cluster.relay_max_streams: 0 is too small"),
        ('preferred_leader = ["n9"]', "cluster.preferred_leader: 'n9' is not one of"),
        ('preferred_leader = "n1"', "cluster.preferred_leader: expected an array"),
        ('preferred_leader = ["n1", "n1"]', "listed twice"),
    ):
        with pytest.raises(ConfigError, match=problem):
            _cluster(extra)
