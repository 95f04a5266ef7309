"""A node's claim on its data directory.

A data directory holds one member's Raft journal and state of one cluster. Starting a node of another
cluster (or another member) on it would splice two unrelated Raft histories together: pysyncobj then
truncates entries it had already applied and the state machine silently diverges. So the first start
writes the member's identity into the directory, and every later start checks it.
"""

from __future__ import annotations

import json
import os

from cronraft.daemon.config import Config
from cronraft.errors import ConfigError

IDENTITY_FILE = "cluster-identity.json"


def _identity(config: Config) -> dict[str, object]:
    return {
        "node_id": config.node.id,
        "members": sorted([m.id, m.raft_address] for m in config.cluster.members),
    }


def claim(config: Config) -> None:
    """Create the data directory and record this member's identity, or check the recorded one."""
    data = config.node.data_dir
    data.mkdir(parents=True, exist_ok=True)
    path = data / IDENTITY_FILE
    want = _identity(config)
    if path.exists():
        try:
            have = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{config.source}: node.data_dir: cannot read {path}: {e}") from e
        if have != want:
            raise ConfigError(
                f"{config.source}: node.data_dir: {data} belongs to member {have.get('node_id')!r} of a "
                f"cluster with members {have.get('members')}, not to member {config.node.id!r} of this "
                "config; point node.data_dir at another folder (or remove that one to start afresh)"
            )
        return
    if any(p.name != IDENTITY_FILE for p in data.iterdir()):
        raise ConfigError(
            f"{config.source}: node.data_dir: {data} is not empty and has no {IDENTITY_FILE}; "
            "point node.data_dir at an empty or new folder"
        )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(want, indent=2) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


__all__ = ["IDENTITY_FILE", "claim"]
