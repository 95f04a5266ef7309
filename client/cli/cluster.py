"""`schedctl cluster status`: the status of the node reached (leader, term, indexes, workers, clock);
`schedctl cluster backup FILE`: a backup of the node reached, written to FILE (docs/operations.md, "Backup
and restore"). The sub-parsers and the handlers."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from cronraft import timefmt
from cronraft.client import _render, _tables
from cronraft.client._backup import BackupReceipt
from cronraft.client.cli.common import UsageError, emit
from cronraft.client.cli.membership import add_membership_parsers
from cronraft.client.cli.options import Parser, examples
from cronraft.client.sdk import Client
from cronraft.errors import InvalidArgument

__all__ = ["add_backup_parser", "add_cluster_parser", "backup_to_json", "rate_arg"]


def add_cluster_parser(commands: Any, opts: Parser) -> None:
    """Add `cluster status`, `cluster backup`, `cluster add-node` and `cluster remove-node` to schedctl's
    sub-command action."""
    cluster = commands.add_parser("cluster", help="cluster introspection")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND", required=True)
    status = cluster_commands.add_parser("status", parents=[opts], help="show the cluster's status")
    status.set_defaults(handler=_cluster_status)
    add_backup_parser(cluster_commands, opts)
    add_membership_parsers(cluster_commands, opts)


def _cluster_status(client: Client, args: argparse.Namespace) -> None:
    status = client.cluster_status()
    emit(args, _render.status_to_json(status), lambda: _tables.status_detail(status))


# --- cluster backup -----------------------------------------------------------------------------------

_RATE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
}


def add_backup_parser(cluster_commands: Any, opts: Parser) -> None:
    """Add `cluster backup FILE` to `cluster`'s sub-command action."""
    backup = cluster_commands.add_parser(
        "backup",
        parents=[opts],
        help="write a backup of the cluster's state to FILE",
        description=(
            "Write a consistent copy of the state of the node reached (--server; a follower spares the "
            "leader) to FILE, while the cluster keeps running: the backup file `schedd restore` seeds a new "
            "cluster from. FILE is written as FILE.tmp, synced, then renamed; - writes to stdout. Needs the "
            "admin role."
        ),
        epilog=examples(
            "schedctl cluster backup /var/backups/cronraft-2027-01-15.crbackup",
            "schedctl --server node2:50051 cluster backup nightly.crbackup --force --rate 20MiB",
            "schedctl cluster backup - | gzip > cronraft.crbackup.gz",
        ),
    )
    backup.add_argument("file", metavar="FILE", help="where to write the backup (- for stdout)")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    backup.add_argument(
        "--rate",
        metavar="RATE",
        help="the most the node sends a second, e.g. 20MiB, 512KiB (default and maximum: the node's, 64MiB)",
    )
    backup.add_argument(
        "--max-time", metavar="DURATION", help="give up after this long (e.g. 30m; default: no bound)"
    )
    backup.set_defaults(handler=_cluster_backup)


def rate_arg(text: str | None) -> int:
    """Bytes a second from "20MiB", "512KiB", "1G", "1000" (0 for None: the node's default)."""
    if text is None:
        return 0
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*(?:/s)?\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _RATE_UNITS or int(match.group(1)) <= 0:
        raise InvalidArgument(
            "--rate", f"{text!r}: use a positive number of bytes a second, e.g. 20MiB or 512KiB"
        )
    return int(match.group(1)) * _RATE_UNITS[unit]


def _cluster_backup(client: Client, args: argparse.Namespace) -> None:
    rate = rate_arg(args.rate)
    max_time = None if args.max_time is None else timefmt.parse_duration(args.max_time, "--max-time") / 1000
    started = time.monotonic()
    if args.file == "-":
        if sys.stdout.isatty():
            raise UsageError("cluster backup -: stdout is a terminal; redirect it to a file or a pipe")
        receipt = client.backup(sys.stdout.buffer, max_bytes_per_s=rate, timeout_s=max_time)
        sys.stdout.buffer.flush()
    else:
        receipt = _to_file(client, Path(args.file), force=args.force, rate=rate, max_time=max_time)
    doc = backup_to_json(receipt, args.file, time.monotonic() - started)
    if args.file == "-":  # stdout holds the backup: the report goes to stderr
        sys.stderr.write((json.dumps(doc, indent=2) if args.output == "json" else _summary(doc)) + "\n")
        return
    emit(args, doc, lambda: _summary(doc))


def backup_to_json(receipt: BackupReceipt, file: str, seconds: float) -> dict[str, Any]:
    """The JSON object of `cluster backup` (docs/cli.md, "Cluster backup")."""
    info = receipt.info
    return {
        "file": file,
        "bytes": receipt.file_bytes,
        "sha256": receipt.sha256,
        "seconds": round(seconds, 3),
        "server": receipt.server,
        "cluster_id": info.cluster_id,
        "node_id": info.node_id,
        "applied_index": info.applied_index,
        "term": info.term,
        "epoch_term": info.epoch_term,
        "created": _render.format_instant(info.created_ms),
        "format": info.format,
        "cronraft_version": info.cronraft_version,
        "versions": dict(sorted(info.versions.items())),
    }


def _summary(doc: dict[str, Any]) -> str:
    size = doc["bytes"]
    mib = f"{size / (1 << 20):.1f} MiB" if size >= 1 << 20 else f"{size / 1024:.1f} KiB"
    return (
        f"backup of cluster {doc['cluster_id'] or '?'} from {doc['node_id']} ({doc['server']}) at index "
        f"{doc['applied_index']}, term {doc['term']}, taken {doc['created']}: {mib} ({size} bytes) in "
        f"{doc['seconds']:.1f} s -> {doc['file']}\nsha256 {doc['sha256']}"
    )


def _to_file(client: Client, path: Path, *, force: bool, rate: int, max_time: float | None) -> BackupReceipt:
    """The backup into `path`: written to `path`.tmp (private: it holds every task's payload), synced,
    renamed over `path`, the folder synced; the temporary file removed if anything fails."""
    if path.exists() and not force:
        raise InvalidArgument("FILE", f"{path} exists: pass --force to replace it")
    if path.is_dir():
        raise InvalidArgument("FILE", f"{path} is a folder")
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise InvalidArgument("FILE", f"cannot write {tmp}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            receipt = client.backup(out, max_bytes_per_s=rate, timeout_s=max_time)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return receipt
