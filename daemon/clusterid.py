"""The cluster id: which cluster a node's data belongs to, as backups name it.

A cluster's id is recorded in each member's data directory (`cluster-id`, beside daemon.datadir's
`cluster-identity.json`) by `schedd restore`, which gives a restored cluster a new one by default:
derived from the backup's checksum and the new configuration's members, so that every member restored
from the same file with the same member list gets the same id without being told it (or `--cluster-id`
names it, or `--same-identity` keeps the backup's). A cluster that was never restored has no such file:
its id is derived from the member list recorded in `cluster-identity.json` (the same on every member).

The id is not replicated state (the store's digest must not depend on it: a restored store is the very
store the backup holds), and nothing refuses to start over it: it labels backups and restores.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cronraft.daemon.datadir import IDENTITY_FILE
from cronraft.errors import InvalidArgument

CLUSTER_ID_FILE = "cluster-id"
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_cluster_id(text: str, field: str = "--cluster-id") -> str:
    """`text` if it is a valid cluster id (1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit)."""
    if not _VALID.fullmatch(text):
        raise InvalidArgument(
            field,
            f"{text!r} is not a cluster id: 1 to 64 letters, digits, '.', '_', '-' (first a letter or digit)",
        )
    return text


def _members_key(members: Iterable[tuple[str, str]]) -> bytes:
    return json.dumps(sorted([node_id, address] for node_id, address in members)).encode()


def derived_cluster_id(members: Iterable[tuple[str, str]]) -> str:
    """The id of a cluster never restored: from its (node id, Raft address) members."""
    return "c-" + hashlib.sha256(b"cronraft cluster\0" + _members_key(members)).hexdigest()[:24]


def restored_cluster_id(backup_sha256: str, members: Iterable[tuple[str, str]]) -> str:
    """A restored cluster's new id: from the backup's checksum and the new members, so that each member
    restoring the same file into the same configuration derives the same id."""
    seed = b"cronraft restore\0" + bytes.fromhex(backup_sha256) + b"\0" + _members_key(members)
    return "r-" + hashlib.sha256(seed).hexdigest()[:24]


def read_cluster_id(data_dir: Path) -> str:
    """This data directory's cluster id (module docstring); '' if neither file says anything usable."""
    try:
        recorded = (data_dir / CLUSTER_ID_FILE).read_text().strip()
    except OSError:
        recorded = ""
    if recorded and _VALID.fullmatch(recorded):
        return recorded
    try:
        identity = json.loads((data_dir / IDENTITY_FILE).read_text())
        members = [(str(m[0]), str(m[1])) for m in identity["members"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return ""
    return derived_cluster_id(members)


def write_cluster_id(data_dir: Path, cluster_id: str) -> None:
    """Record `cluster_id` in `data_dir` (atomically, synced)."""
    path = data_dir / CLUSTER_ID_FILE
    tmp = path.with_name(CLUSTER_ID_FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(check_cluster_id(cluster_id) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


__all__ = [
    "CLUSTER_ID_FILE",
    "check_cluster_id",
    "derived_cluster_id",
    "read_cluster_id",
    "restored_cluster_id",
    "write_cluster_id",
]
