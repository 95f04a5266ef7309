"""`schedd restore FILE --config C`: a new node's data directory seeded from a backup (raft.backup_file),
so that the node starts at the backup's applied index, with the backup's state, as a member of the
cluster its config describes.

In order, and nothing is written before the checks pass:
1. the file is verified whole (magic, trailer, the sha256 checksum, the header: raft.backup_file);
2. `node.data_dir` must be new: missing or empty (a restore never overwrites a store or a journal);
3. the data directory is claimed for this config's member (daemon.datadir), the store and the Raft files
   are seeded from the backup's image (raft.backup_image `seed`), and the cluster id recorded
   (daemon.clusterid): a new one by default, derived from the backup's checksum and the new member list
   (so that every member restored from the same file into the same configuration gets the same id),
   `--cluster-id` to name it, or `--same-identity` to keep the backup's (disaster recovery).
If any step of 3 fails, what it created is removed: the data directory is as it was.

Every member of the new configuration is restored from the same file (each with its own config) before
any of them starts: they then hold the same log start and the same state. A member started empty beside
restored ones would not be given the backup's state (daemon.node refuses nothing here: docs/operations.md
says so); a single-node restore can grow later by membership changes.

Versions: the backup's schedule-result versions (raft.versions) are compared with this node's; a
difference is reported (the restored cluster computes its future fires with this node's), not refused.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cronraft.daemon.clusterid import check_cluster_id, restored_cluster_id, write_cluster_id
from cronraft.daemon.config import Config, load_config
from cronraft.daemon.datadir import claim
from cronraft.errors import ConfigError, CronraftError, FailedPrecondition, InvalidArgument
from cronraft.raft.backup_file import BackupHeader, verify
from cronraft.raft.backup_image import seed
from cronraft.raft.durability import fsync_dir
from cronraft.raft.versions import COMPARED, schedule_versions

# Under node.data_dir, as daemon.node lays it out: the LMDB store and the replicator's files.
STATE_DIR = "state"
RAFT_DIR = "raft"


@dataclass(frozen=True)
class Restored:
    """What a restore did."""

    header: BackupHeader  # the backup's
    sha256: str
    cluster_id: str  # the restored cluster's
    data_dir: Path
    applied_index: int
    term: int  # the seeded log's term: the restored cluster's first election is for the next one
    warnings: list[str] = field(default_factory=list)


def restore(
    path: Path, config: Config, *, same_identity: bool = False, cluster_id: str | None = None
) -> Restored:
    """Seed `config`'s data directory from the backup at `path` (module docstring). Raises
    FailedPrecondition for a bad file, ConfigError for a data directory that is not new, InvalidArgument
    for a bad `cluster_id`."""
    if same_identity and cluster_id:
        raise InvalidArgument("--cluster-id", "not with --same-identity (that keeps the backup's id)")
    if cluster_id is not None:
        check_cluster_id(cluster_id)
    backup = verify(path)
    header = backup.header
    data = config.node.data_dir
    _require_new(data, config)
    members = [(m.id, m.raft_address) for m in config.cluster.members]
    if same_identity:
        if not header.cluster_id:
            raise FailedPrecondition(
                f"{path}: the backup names no cluster id: --same-identity cannot keep it"
            )
        new_id = header.cluster_id
    else:
        new_id = cluster_id or restored_cluster_id(backup.sha256, members)
    existed = data.exists()
    try:
        claim(config)
        seeded = seed(
            backup, data / STATE_DIR, data / RAFT_DIR, [m.raft_address for m in config.cluster.members]
        )
        write_cluster_id(data, new_id)
        fsync_dir(data)
    except BaseException:
        _undo(data, existed)
        raise
    return Restored(
        header=header,
        sha256=backup.sha256,
        cluster_id=new_id,
        data_dir=data,
        applied_index=seeded.applied_index,
        term=seeded.term,
        warnings=_version_warnings(header) + _member_warnings(seeded.members, members),
    )


def _require_new(data: Path, config: Config) -> None:
    if not data.exists():
        return
    if not data.is_dir():
        raise ConfigError(f"{config.source}: node.data_dir: {data} is not a folder")
    held = sorted(p.name for p in data.iterdir())
    if held:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise ConfigError(
            f"{config.source}: node.data_dir: {data} is not empty (it holds {shown}): a restore only seeds a "
            "new data directory; move that one away or point node.data_dir at a new folder"
        )


def _undo(data: Path, existed: bool) -> None:
    """Remove what a failed restore created: the folder itself, or (it was empty) what is in it now."""
    if not existed:
        shutil.rmtree(data, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        for child in data.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


def _member_warnings(stored: list[tuple[str, str]] | None, config: list[tuple[str, str]]) -> list[str]:
    """The backup's replicated member list (kept from its cluster's membership changes, if any) against
    the new config's: restored as it is (the store is the backup's), it names the old members."""
    if stored is None or sorted(stored) == sorted(config):
        return []
    return [
        f"the backup's replicated member list ({', '.join(f'{i} {a}' for i, a in stored)}) is not this "
        f"config's ({', '.join(f'{i} {a}' for i, a in sorted(config))}): the restored cluster goes by this "
        "config's (the stored one is replaced at its first membership change)"
    ]


def _version_warnings(header: BackupHeader) -> list[str]:
    ours = schedule_versions()
    out = [
        f"the backup was taken with {name} {header.versions.get(name, 'unknown')}, this node has "
        f"{ours.get(name, 'unknown')}: the restored cluster computes its next fires with this node's"
        for name in COMPARED
        if header.versions.get(name, "unknown") != ours.get(name, "unknown")
    ]
    if header.cronraft_version != ours.get("cronraft"):
        out.append(
            f"the backup was taken by Cronraft {header.cronraft_version}, this is {ours.get('cronraft')}"
        )
    return out


# --- the command line -----------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="schedd restore",
        description=(
            "Seed a new node's data directory (node.data_dir of --config, missing or empty) from a backup "
            "taken with `schedctl cluster backup`; then start the node with `schedd --config C`. For a "
            "cluster of several nodes, restore every member from the same file before starting any."
        ),
    )
    p.add_argument("file", metavar="FILE", help="the backup file")
    p.add_argument("--config", required=True, help="the new node's TOML config")
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--same-identity",
        action="store_true",
        help="keep the backup's cluster id (disaster recovery of the same cluster)",
    )
    who.add_argument(
        "--cluster-id",
        metavar="ID",
        help="the restored cluster's id (default: derived from the backup and the config's members, the "
        "same on every member restored from the same file)",
    )
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    """`schedd restore ...`: 0 restored, 1 the backup or the restore failed, 2 config or usage error."""
    args = parse(argv)
    try:
        config = load_config(args.config)
        done = restore(Path(args.file), config, same_identity=args.same_identity, cluster_id=args.cluster_id)
    except (ConfigError, InvalidArgument) as e:
        print(f"schedd restore: {e}", flush=True, file=sys.stderr)
        return 2
    except CronraftError as e:
        print(f"schedd restore: {e}", flush=True, file=sys.stderr)
        return 1
    h = done.header
    for warning in done.warnings:
        print(f"schedd restore: warning: {warning}", file=sys.stderr)
    print(
        f"restored {args.file} (cluster {h.cluster_id or '?'}, taken from {h.node_id} at "
        f"{_utc(h.created_ms)}, index {h.applied_index}, sha256 {done.sha256[:16]}...) into "
        f"{done.data_dir} as member {config.node.id} of cluster {done.cluster_id}; start it with "
        f"`schedd --config {args.config}`"
    )
    return 0


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = ["RAFT_DIR", "STATE_DIR", "Restored", "main", "parse", "restore"]
