"""A node's claim on its data directory, and the membership it records there.

A data directory holds one member's Raft journal and state of one cluster. Starting a node of another
cluster (or another member) on it would splice two unrelated Raft histories together: pysyncobj then
truncates entries it had already applied and the state machine silently diverges. So the first start
writes the member's identity into the directory (`cluster-identity.json`), and every later start checks it.

The identity (docs/operations.md, "Membership changes"):
- `node_id`: the member this directory belongs to;
- `members`: the cluster's founding members, `[id, raft_address]` pairs: what identifies the cluster
  (daemon.clusterid derives the id of a cluster never restored from it). A node that joined later records
  its config's list first, then the founders once its store holds them (`record_membership`);
- `current` (`[id, grpc_address, raft_address]`), `version`: the members as of the last change this node
  applied (Membership.version; 0: none), written as changes commit (daemon.membership), and the list the
  node starts from (its config's list may be older: a node's config need not be edited after a change);
- `history`: the earlier lists (`[id, raft_address]` pairs);
- `state`: "member", "joining" (started with --join: a learner until its addition began), or "removed".
A later start is accepted when the config names the same member and one of the lists this cluster had
(founding, current or earlier): another cluster's directory has none of them. A removed member's
directory is refused (it must join again, with an empty one). A directory recorded before membership
changes (`node_id` and `members` only) reads as founding = current.

At rest (issue 13): the data directory holds every task's payload (env, headers) and output. `claim`
makes it private to the daemon's user: it sets the process umask to 077 (so that what the node creates
from then on, LMDB files, the Raft journal and its snapshots, is 0600 and its folders 0700, whatever the
library creating them asks for), and at every start brings what is already there to 0700 (folders) and
at most 0600 (files), logging what it changed: data directories made before this rule are fixed too.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from cronraft.daemon.config import Config
from cronraft.daemon.config.model import Member
from cronraft.errors import ConfigError

IDENTITY_FILE = "cluster-identity.json"
PRIVATE_UMASK = 0o077
_MAX_TIGHTEN = 100_000  # entries visited when tightening an existing data directory
_MAX_HISTORY = 100  # earlier member lists kept (a config listing an older one is refused after that)

MEMBER, JOINING, REMOVED = "member", "joining", "removed"

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Claim:
    """What a start found (or made) in its data directory."""

    members: tuple[Member, ...]  # the members to start from: the recorded current list (or the config's)
    state: str  # MEMBER or JOINING
    version: int  # the Membership.version of `members` (0: founding, or none recorded)
    # The cluster's founding members as (id, Raft address) pairs; None for a joining node that has not
    # learnt them yet.
    founders: tuple[tuple[str, str], ...] | None = None


def _pairs(members: Sequence[Member]) -> list[list[str]]:
    return sorted([m.id, m.raft_address] for m in members)


def claim(config: Config, *, join: bool = False) -> Claim:
    """Create the data directory and record this member's identity, or check the recorded one. `join`: a
    new member of a running cluster (`schedd --join`): an empty directory is claimed as JOINING."""
    data = config.node.data_dir
    os.umask(PRIVATE_UMASK)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened = make_private(data)
    if tightened:
        log.warning("data directory was readable by others: made private", path=str(data), changed=tightened)
    path = data / IDENTITY_FILE
    members = config.cluster.members
    if path.exists():
        return _check(config, path, join)
    if any(p.name != IDENTITY_FILE for p in data.iterdir()):
        raise ConfigError(
            f"{config.source}: node.data_dir: {data} is not empty and has no {IDENTITY_FILE}; "
            "point node.data_dir at an empty or new folder"
        )
    state = JOINING if join else MEMBER
    record: dict[str, Any] = {"node_id": config.node.id, "members": _pairs(members)}
    if join:
        record.update(
            current=[[m.id, m.grpc_address, m.raft_address] for m in members], state=state, joined=True
        )
    _write(path, record)
    return Claim(members, state, 0, None if join else tuple(sorted((m.id, m.raft_address) for m in members)))


def _read(config: Config, path: Path) -> dict[str, Any]:
    try:
        have = json.loads(path.read_text())
        if not isinstance(have, dict):
            raise ValueError("not a JSON object")
        return have
    except (OSError, ValueError) as e:
        raise ConfigError(f"{config.source}: node.data_dir: cannot read {path}: {e}") from e


def _current(have: dict[str, Any], config: Config) -> tuple[Member, ...]:
    raw = have.get("current")
    if raw:
        return tuple(Member(str(i), str(g), str(r)) for i, g, r in raw)
    # No change recorded yet: the founding members; their gRPC addresses are the config's (a start is
    # accepted only when the config lists these very members).
    grpc = {m.id: m.grpc_address for m in config.cluster.members}
    return tuple(Member(str(i), grpc.get(str(i), ""), str(r)) for i, r in have["members"])


def _check(config: Config, path: Path, join: bool) -> Claim:
    data = config.node.data_dir
    have = _read(config, path)
    try:
        current = _current(have, config)
        known = [have["members"], _pairs(current), *have.get("history", [])]
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{config.source}: node.data_dir: cannot read {path}: {e!r}") from e
    if have.get("node_id") != config.node.id or _pairs(config.cluster.members) not in known:
        raise ConfigError(
            f"{config.source}: node.data_dir: {data} belongs to member {have.get('node_id')!r} of a "
            f"cluster with members {_pairs(current)} (founding members {have.get('members')}), not to "
            f"member {config.node.id!r} of this config; point node.data_dir at another folder (or remove "
            "that one to start afresh)"
        )
    state = str(have.get("state", MEMBER))
    if state == REMOVED:
        raise ConfigError(
            f"{config.source}: node.data_dir: member {config.node.id!r} was removed from its cluster "
            f"(membership version {have.get('version', 0)}); to add this machine again, start it with an "
            "empty node.data_dir and --join, then run `schedctl cluster add-node`"
        )
    if join and state == MEMBER:
        log.info("--join ignored: this data directory is already a member's", node=config.node.id)
    version = int(have.get("version", 0))
    joined_unknown = have.get("joined") and not version  # a joining node learns them from its store
    founders = None if joined_unknown else tuple(sorted((str(i), str(r)) for i, r in have["members"]))
    return Claim(current, state, version, founders)


def record_membership(
    config: Config,
    members: Sequence[Member],
    *,
    version: int,
    state: str,
    founders: Sequence[Member] = (),
) -> None:
    """Record the members as of Membership `version` (and this node's `state`) in the identity: the list
    it started from goes to `history`. `founders`: the cluster's founding members, recorded as `members`
    by a node that joined (its claim recorded its config's list there)."""
    path = config.node.data_dir / IDENTITY_FILE
    have = _read(config, path)
    before = _pairs(_current(have, config))
    history: list[Any] = list(have.get("history", []))
    if before != _pairs(members) and before not in history and before != have.get("members"):
        history.append(before)
    record = dict(have)
    record.update(
        current=[[m.id, m.grpc_address, m.raft_address] for m in members],
        history=history[-_MAX_HISTORY:],
        version=version,
        state=state,
    )
    if founders and have.get("joined"):
        record["members"] = _pairs(founders)
    if record != have:
        _write(path, record)


def _write(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_private(root: Path) -> int:
    """Folders under `root` (itself included) to 0700, files to their mode without group and other
    bits; symbolic links are not followed. Returns how many entries changed."""
    changed = 0
    visited = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (None, *filenames):
            visited += 1
            if visited > _MAX_TIGHTEN:
                return changed
            path = dirpath if name is None else os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            mode = stat.S_IMODE(st.st_mode)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else mode & ~0o077
            if mode != want:
                os.chmod(path, want)
                changed += 1
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    return changed


__all__ = [
    "IDENTITY_FILE",
    "JOINING",
    "MEMBER",
    "REMOVED",
    "Claim",
    "claim",
    "make_private",
    "record_membership",
]
