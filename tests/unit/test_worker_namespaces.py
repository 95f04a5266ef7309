"""Workers bound to namespaces (docs/security.md, "Workers"): a worker whose credential holds `worker` in
some namespaces only is leased only their executions; `worker` in "*" (and authentication off) keeps
every namespace. The role is grantable per namespace wherever roles are configured (token file, JWT,
cert_roles), the interceptor admits such a worker's stream, and the leader is the enforcement point: its
pick never grants an execution to a worker that does not serve its namespace, the waiting reason says
so, and a lease already held stays with its holder (a new leader adopting it, the worker reconnecting
with narrower roles) while no new grant crosses."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import pytest
from leader_rig import LeaderRig
from test_security import NOW_MS, _config, _hs256, _jwt

from cronraft.daemon.config import AuthConfig
from cronraft.daemon.leader import LeaderCore
from cronraft.daemon.security.authn import Authenticator, TokenStore, node_token
from cronraft.daemon.security.authz import ANONYMOUS, Principal, worker_namespaces
from cronraft.daemon.security.interceptor import AuthInterceptor
from cronraft.daemon.security.relayed import RELAY_BEARER
from cronraft.errors import PermissionDenied
from cronraft.proto.v1 import commands_pb2, common_pb2, worker_pb2
from cronraft.raft import state as sm
from cronraft.raft.codec import make_id
from cronraft.tokenfile import add_token, check_roles, parse_token_file
from tests.support.grants import grants_in

Command = commands_pb2.Command
CONNECT = "/cronraft.v1.WorkerGateway/Connect"
TEAM_A = frozenset({"team-a"})
TEAM_B = frozenset({"team-b"})
NOT_SERVED_B = (
    "no connected worker serves namespace 'team-b' on queue 'q' (its workers' credentials hold the "
    "worker role in other namespaces only)"
)


# -- roles ----------------------------------------------------------------------------------------------


def test_the_worker_role_is_granted_per_namespace_in_a_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    token = add_token(path, "wa", ["worker@team-a", "worker@default"], now_ms=NOW_MS)  # schedctl token create
    assert 'roles = { "team-a" = ["worker"], "default" = ["worker"] }' in path.read_text()
    (entry,) = parse_token_file(path.read_bytes(), "t").values()
    assert entry.roles == {"team-a": frozenset({"worker"}), "default": frozenset({"worker"})}
    reader = add_token(path, "vera", ["reader@team-a"], now_ms=NOW_MS)
    secret = "s" * 20
    authn = Authenticator(AuthConfig(token_file=path), secret=secret, tokens=TokenStore(path))
    check = AuthInterceptor(authn).check
    # Its stream is admitted (the role held in some namespace), and bound to those namespaces...
    wa = check(CONNECT, [("authorization", f"Bearer {token}")], {})
    assert worker_namespaces(wa) == frozenset({"team-a", ""})  # the default namespace is stored empty
    # ... also when a follower relays it: the leader verifies the worker's own token again.
    member = [("authorization", f"Bearer {node_token(secret)}"), (RELAY_BEARER, token)]
    assert worker_namespaces(check(CONNECT, member, {})) == frozenset({"team-a", ""})
    with pytest.raises(PermissionDenied, match=r"Connect needs role worker .* in some namespace; vera has"):
        check(CONNECT, [("authorization", f"Bearer {reader}")], {})


def test_the_worker_role_per_namespace_in_a_jwt_and_in_cert_roles(tmp_path: Path) -> None:
    verifier, key = _hs256(tmp_path)
    claims = {"sub": "wb", "roles": {"team-b": ["worker"]}, "exp": NOW_MS / 1000 + 60}
    wb = verifier.verify(_jwt({"alg": "HS256"}, claims, lambda d: hmac.new(key, d, hashlib.sha256).digest()))
    assert worker_namespaces(wb) == TEAM_B
    # cert_roles takes the token file's forms: a list (every namespace) or a table namespace -> roles.
    tls = {"cert": "c", "key": "k", "client_ca": "ca", "require_client_cert": True}
    roles = {"w7": {"team-a": ["worker"], "*": ["reader"]}, "ops": ["admin"]}
    auth = _config("127.0.0.1:1", tls=tls, auth={"cert_roles": roles}).auth
    assert auth.cert_roles == (("w7", ("worker@team-a", "reader")), ("ops", ("admin",)))
    authn = Authenticator(auth, secret=None)
    w7 = authn.authenticate([], {"x509_common_name": [b"w7"]})
    assert w7.roles == {"team-a": frozenset({"worker"}), "*": frozenset({"reader"})}
    assert worker_namespaces(w7) == TEAM_A
    ops = authn.authenticate([], {"x509_common_name": [b"ops"]})
    assert ops.roles == {"*": frozenset({"admin"})}


def test_worker_in_every_namespace_and_authentication_off_serve_every_namespace() -> None:
    def principal(roles: object) -> Principal:
        return Principal("w", check_roles(roles, "roles"), "token")

    assert worker_namespaces(ANONYMOUS) is None
    assert worker_namespaces(principal(["worker"])) is None
    assert worker_namespaces(principal({"*": ["worker"], "team-a": ["worker"]})) is None
    assert worker_namespaces(principal({"team-a": ["worker"], "team-b": ["reader"]})) == TEAM_A


# -- the leader's pick ------------------------------------------------------------------------------------


class Rig(LeaderRig):
    def create_in(self, namespace: str, *, at_ms: int, queue: str = "q") -> str:
        task_id = make_id(self.now, os.urandom(10))
        spec = common_pb2.TaskSpec(
            name="t",
            schedule=common_pb2.Schedule(at=common_pb2.AtSchedule(at_ms=at_ms)),
            payload=common_pb2.Payload(command=common_pb2.CommandPayload(argv=["true"])),
            queue=queue,
            namespace=namespace,
        )
        cmd = Command(stamped_at_ms=self.now, create_task=commands_pb2.CreateTask(task_id=task_id, spec=spec))
        (res,) = self.apply([cmd])
        assert res.applied, res.error
        self.core.on_committed([cmd], [res], self.now, self.mono)
        return task_id

    def execution(self, task_id: str) -> common_pb2.Execution:
        with self.kv.read() as txn:
            (ex,) = sm.list_executions(txn, task_id)[0]
        return ex

    def granted_to(self, task_id: str) -> set[str]:
        """The workers any grant of the task's execution named."""
        execution_id = self.execution(task_id).execution_id
        return {g.worker_id for g in grants_in(self.proposed) if g.execution_id == execution_id}


def test_an_execution_is_granted_only_to_a_worker_serving_its_namespace_and_waits_saying_why() -> None:
    rig = Rig()
    rig.core.worker_connected("wa", 4, ["q"], {}, rig.mono, namespaces=TEAM_A)
    a = rig.create_in("team-a", at_ms=rig.now + 1_000)
    b = rig.create_in("team-b", at_ms=rig.now + 1_000)
    rig.run(4)
    assert rig.execution(a).state == common_pb2.EXECUTION_RUNNING and rig.execution(a).worker_id == "wa"
    ex = rig.execution(b)
    assert ex.state == common_pb2.EXECUTION_PENDING and ex.waiting_reason == NOT_SERVED_B
    assert rig.granted_to(b) == set()  # never granted to wa, whose three free slots stayed free
    assert rig.core.workers["wa"].free() == 3
    # A worker of team-b connects: the waiting execution is granted to it.
    rig.core.worker_connected("wb", 1, ["q"], {}, rig.mono, namespaces=TEAM_B)
    rig.run(1)
    assert rig.execution(b).state == common_pb2.EXECUTION_RUNNING
    assert rig.granted_to(b) == {"wb"}


def test_the_default_namespace_and_a_worker_of_every_namespace() -> None:
    rig = Rig()
    rig.core.worker_connected("wa", 4, ["q"], {}, rig.mono, namespaces=TEAM_A)
    plain = rig.create_in("", at_ms=rig.now + 1_000)  # the default namespace
    rig.run(3)
    assert rig.execution(plain).waiting_reason == (
        "no connected worker serves namespace 'default' on queue 'q' (its workers' credentials hold the "
        "worker role in other namespaces only)"
    )
    rig.core.worker_connected("wd", 1, ["q"], {}, rig.mono, namespaces=frozenset({""}))  # worker@default
    rig.run(1)
    assert rig.granted_to(plain) == {"wd"}
    # A worker of every namespace (None: the role in "*") takes what the bound ones may not.
    b = rig.create_in("team-b", at_ms=rig.now + 1_000)
    rig.core.worker_connected("wall", 1, ["q"], {}, rig.mono)
    rig.run(2)
    assert rig.granted_to(b) == {"wall"}


def test_a_busy_namespace_waits_for_its_own_workers_while_another_has_free_slots() -> None:
    rig = Rig()
    rig.core.worker_connected("wa", 1, ["q"], {}, rig.mono, namespaces=TEAM_A)
    rig.core.worker_connected("wb", 5, ["q"], {}, rig.mono, namespaces=TEAM_B)
    first, second = (rig.create_in("team-a", at_ms=rig.now + 1_000) for _ in range(2))
    rig.run(4)
    assert rig.granted_to(first) | rig.granted_to(second) == {"wa"}
    waiting = next(t for t in (first, second) if rig.execution(t).state == common_pb2.EXECUTION_PENDING)
    assert rig.execution(waiting).waiting_reason == "all 1 eligible workers are busy"


def test_a_lease_already_held_stays_with_its_holder_but_no_new_grant_crosses() -> None:
    """A worker of every namespace runs a team-b execution; a new leader adopts the lease from the store,
    and the worker comes back bound to team-a only (its token changed): the lease stays its own (it was
    granted before), is renewed, and the worker's slot stays taken; a new team-b execution is not granted
    to it."""
    rig = Rig()
    rig.core.worker_connected("w1", 2, ["q"], {}, rig.mono)
    held = rig.create_in("team-b", at_ms=rig.now + 1_000)
    rig.run(2)
    ex = rig.execution(held)
    assert ex.state == common_pb2.EXECUTION_RUNNING and ex.worker_id == "w1"
    rig.apply([Command(stamped_at_ms=rig.now, epoch=commands_pb2.Epoch(term=2, leader_id="n2"))])
    rig.core = LeaderCore(
        rig.kv,
        rig.core.settings,
        node_id="n2",
        term=2,
        new_id=lambda ms: make_id(ms, os.urandom(10)),
    )
    rig.core.on_epoch_committed(rig.now, rig.mono)
    rig.core.worker_connected("w1", 2, ["q"], {}, rig.mono, namespaces=TEAM_A)
    assert rig.core.leases[ex.execution_id].worker_id == "w1"
    assert rig.core.workers["w1"].inflight == {ex.execution_id}
    ack = rig.core.heartbeat(
        "w1", [worker_pb2.LeaseRef(execution_id=ex.execution_id, token=ex.token)], rig.mono
    )
    assert list(ack.renewed) == [ex.execution_id] and not ack.revoked
    later = rig.create_in("team-b", at_ms=rig.now + 1_000)
    rig.run(3)
    assert rig.granted_to(later) == set()
    assert rig.execution(later).waiting_reason == NOT_SERVED_B
    assert rig.execution(held).state == common_pb2.EXECUTION_RUNNING
