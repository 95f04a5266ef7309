"""A node's claim on its data directory.

A data directory holds one member's Raft journal and state of one cluster. Starting a node of another
cluster (or another member) on it would splice two unrelated Raft histories together: pysyncobj then
truncates entries it had already applied and the state machine silently diverges. So the first start
writes the member's identity into the directory, and every later start checks it.

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
from pathlib import Path

import structlog

from cronraft.daemon.config import Config
from cronraft.errors import ConfigError

IDENTITY_FILE = "cluster-identity.json"
PRIVATE_UMASK = 0o077
_MAX_TIGHTEN = 100_000  # entries visited when tightening an existing data directory

log = structlog.get_logger(__name__)


def _identity(config: Config) -> dict[str, object]:
    return {
        "node_id": config.node.id,
        "members": sorted([m.id, m.raft_address] for m in config.cluster.members),
    }


def claim(config: Config) -> None:
    """Create the data directory and record this member's identity, or check the recorded one."""
    data = config.node.data_dir
    os.umask(PRIVATE_UMASK)
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened = make_private(data)
    if tightened:
        log.warning("data directory was readable by others: made private", path=str(data), changed=tightened)
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


__all__ = ["IDENTITY_FILE", "claim", "make_private"]
