"""[node] and [cluster]: the members and their addresses, this node's id and data directory, the
cluster secret (where it comes from, its strength, and when it is required), relaying (daemon.relay) and
the preferred leaders."""

from __future__ import annotations

import contextlib
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cronraft.daemon.config.addresses import is_loopback, split_host_port
from cronraft.daemon.config.model import MIN_SECRET_CHARS, Member, NodeConfig
from cronraft.daemon.config.reader import _describe, _Table

_MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "*", ""})


def _members(cluster: _Table) -> tuple[Member, ...]:
    raw = cluster.data.get("members")
    if raw is None:
        raise cluster.error(
            "members",
            "missing; add one [[cluster.members]] table (id, grpc_address, raft_address) per member, "
            "this node included",
        )
    if not isinstance(raw, list) or not raw:
        raise cluster.error("members", "expected at least one [[cluster.members]] table")
    members: list[Member] = []
    seen_ids: dict[str, str] = {}  # member id -> dotted key that used it first
    seen_addresses: dict[tuple[str, int], str] = {}  # (host, port) -> dotted key that used it first
    for i, item in enumerate(raw):
        t = _Table(
            item, f"{cluster.key('members')}[{i}]", cluster.source, ("id", "grpc_address", "raft_address")
        )
        member_id = t.string("id")
        if not _MEMBER_ID.fullmatch(member_id):
            raise t.error(
                "id",
                f"{member_id!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
            )
        if member_id in seen_ids:
            raise t.error("id", f"duplicate member id {member_id!r} (already used by {seen_ids[member_id]})")
        seen_ids[member_id] = t.key("id")
        addresses: dict[str, str] = {}
        for name in ("grpc_address", "raft_address"):
            address = t.string(name)
            try:
                host, port = split_host_port(address)
            except ValueError as e:
                raise t.error(name, f"{address!r}: {e}") from None
            if host in _WILDCARD_HOSTS and len(raw) > 1:
                raise t.error(
                    name,
                    f"{address!r}: a wildcard host cannot be dialled by the other members and clients; "
                    "use this member's cluster-facing address",
                )
            if (host.lower(), port) in seen_addresses:
                first = seen_addresses[host.lower(), port]
                raise t.error(
                    name, f"duplicate address {address!r} (already used by {first}); give each its own port"
                )
            seen_addresses[host.lower(), port] = t.key(name)
            addresses[name] = address
        members.append(Member(member_id, addresses["grpc_address"], addresses["raft_address"]))
    return tuple(members)


def _node(node: _Table, members: tuple[Member, ...]) -> NodeConfig:
    ids = [m.id for m in members]
    if not node.has("id"):
        raise node.error("id", f"missing; set it to this node's id, one of cluster.members ids {ids}")
    node_id = node.string("id")
    if node_id not in ids:
        raise node.error(
            "id",
            f"{node_id!r} is not one of the cluster.members ids {ids}; fix node.id or add it as a member",
        )
    data_dir = Path(node.string("data_dir", f"./data/{node_id}")).expanduser()
    return NodeConfig(id=node_id, data_dir=data_dir if data_dir.is_absolute() else Path.cwd() / data_dir)


def _secret(cluster: _Table, n_members: int, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The resolved secret and where it came from."""
    given = [k for k in ("secret_env", "secret_file", "secret") if cluster.has(k)]
    if len(given) > 1:
        raise cluster.error(
            given[1], f"set only one of {', '.join(cluster.key(k) for k in given)} (they are alternatives)"
        )
    if not given:
        if n_members > 1:
            raise cluster.error(
                "secret",
                f"a cluster of {n_members} members needs a secret (set cluster.secret_env or "
                "cluster.secret_file); pysyncobj executes pickled commands from anyone who can reach "
                "the raft port",
            )
        return None, None
    kind = given[0]
    if kind == "secret_env":
        var = cluster.string("secret_env")
        value = environ.get(var, "").strip()
        if not value:
            raise cluster.error(
                "secret_env",
                f"environment variable {var} is unset or empty; export it with the cluster secret "
                "(the same on every member), or use cluster.secret_file",
            )
        _check_strength(cluster, "secret_env", value, f"the secret in {var}")
        return value, f"env:{var}"
    if kind == "secret_file":
        raw_path = Path(cluster.string("secret_file")).expanduser()
        path = raw_path if raw_path.is_absolute() else Path.cwd() / raw_path
        with contextlib.suppress(OSError):  # a missing file: the read below says so
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise cluster.error(
                    "secret_file",
                    f"{path} may be read by group or others (mode {stat.S_IMODE(mode):03o}); "
                    f"run `chmod 600 {path}`",
                )
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise cluster.error("secret_file", f"cannot read {path}: {e.strerror or e}") from None
        if not value:
            raise cluster.error("secret_file", f"{path} is empty; write the cluster secret into it")
        _check_strength(cluster, "secret_file", value, f"the secret in {path}")
        return value, f"file:{path}"
    value = cluster.string("secret").strip()
    _check_strength(cluster, "secret", value, "the secret")
    return value, "literal"


def _check_strength(cluster: _Table, key: str, value: str, what: str) -> None:
    if len(value) < MIN_SECRET_CHARS:
        raise cluster.error(
            key,
            f"{what} has {len(value)} characters; use at least {MIN_SECRET_CHARS} random ones (e.g. "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`): it keys the raft "
            "encryption, and a short one can be guessed from captured traffic",
        )


def _require_secret_off_loopback(cluster: _Table, secret: str | None, raft_address: str) -> None:
    """A Raft port others can reach needs a secret, even in a cluster of one."""
    if secret is None and not is_loopback(split_host_port(raft_address)[0]):
        raise cluster.error(
            "secret",
            f"this node's raft address {raft_address} is not loopback, so a secret is required even for one "
            "member (set cluster.secret_env or cluster.secret_file); pysyncobj executes pickled commands "
            "from anyone who can reach the raft port",
        )


# The [cluster] keys of relaying (daemon.relay) and of the preferred leaders (docs/multi-region.md).
RELAY_KEYS = ("relay", "relay_max_streams", "relay_max_writes", "preferred_leader")


def _relay(cluster: _Table, members: tuple[Member, ...]) -> dict[str, Any]:
    """`relay`, its bounds, and `preferred_leader` (member ids), as ClusterConfig's keyword arguments."""
    relay = cluster.data.get("relay", True)
    if not isinstance(relay, bool):
        raise cluster.error("relay", f"expected true or false, got {_describe(relay)}")
    raw = cluster.data.get("preferred_leader", [])
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise cluster.error("preferred_leader", f"expected an array of member ids, got {_describe(raw)}")
    ids = [m.id for m in members]
    for member_id in raw:
        if member_id not in ids:
            raise cluster.error(
                "preferred_leader", f"{member_id!r} is not one of the cluster.members ids {ids}"
            )
    if len(set(raw)) != len(raw):
        raise cluster.error("preferred_leader", "a member id is listed twice")
    return {
        "relay": relay,
        "relay_max_streams": cluster.integer(
            "relay_max_streams", 10_000, 1, why="each relayed stream is one call here and one on the leader"
        ),
        "relay_max_writes": cluster.integer("relay_max_writes", 1_000, 1),
        "preferred_leader": tuple(raw),
    }
