"""The store image of a backup: what it holds (`image_facts`), and a node's store and Raft files seeded
from it (`seed`), so that the node starts at the backup's applied index with nothing to replay.

A seeded node's files are what a node that compacted its log at the backup's index N would hold:
- `state/data.mdb`: the image itself (its `meta.last_applied` is N);
- `raft/raft.snapshot`: a snapshot file (raft.snapshot_file) at N: two boundary entries, no-ops at N-1
  and N, the new configuration's addresses, and the same image (a leader sends this file to a member
  that needs a snapshot);
- `raft/raft.journal` (+ `.meta`): pysyncobj's journal holding the same two entries, current term E, no
  vote (raft.pysyncobj_adapter `seed_journal`).

E, the term of the boundary entries and the journal's current term, is the highest term the image can
know of: its stored leader epoch's, or the term the backup was taken in. The restored cluster's first
election is then for term E + 1, so its first leader's epoch is newer than the stored one (the state
machine refuses an epoch that is not: raft.commands.leadership), and every lease token it grants is
newer than those in the image. Log terms stay non-decreasing (Raft's own rule): entries of term E, then
E + 1 onwards. Every member of a restored cluster must be seeded from the same file: they then hold the
same log and the same state, and any of them may lead.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import lmdb

from cronraft.errors import FailedPrecondition
from cronraft.proto.v1 import commands_pb2, membership_pb2
from cronraft.raft.backup_file import BackupFile
from cronraft.raft.codec import from_u64
from cronraft.raft.commands.membership import META_MEMBERSHIP
from cronraft.raft.durability import fsync_dir
from cronraft.raft.kv import ADDED_LATER, DATABASES
from cronraft.raft.pysyncobj_adapter import NO_OP_COMMAND, seed_journal
from cronraft.raft.records import META_EPOCH, META_LAST_APPLIED
from cronraft.raft.snapshot_file import encode_snapshot_header, write_snapshot
from cronraft.raft.syncobj_replicator import JOURNAL_FILE, SNAPSHOT_FILE

DATA_FILE = "data.mdb"
_COPY = 1 << 20


@dataclass(frozen=True)
class ImageFacts:
    applied_index: int  # meta.last_applied
    epoch_term: int  # the stored leader epoch's term (0: none)
    # The replicated member list (raft.commands.membership), as (node id, Raft address); None before the
    # cluster's first membership change (its members were then its founding config's).
    members: list[tuple[str, str]] | None = None


@dataclass(frozen=True)
class Seeded:
    applied_index: int  # the log starts after it
    term: int  # E of the module docstring: the seeded journal's current term
    members: list[tuple[str, str]] | None  # the image's stored member list (ImageFacts.members)


def image_facts(path: str | Path) -> ImageFacts:
    """Open an LMDB image (a `data.mdb` file, or a folder holding one) read-only, check that it holds
    every sub-database of a Cronraft store, and read its applied index and epoch term. Raises
    FailedPrecondition when it is not a Cronraft store image."""
    p = Path(path)
    try:
        env = lmdb.open(
            str(p),
            subdir=p.is_dir(),
            readonly=True,
            lock=False,
            max_dbs=len(DATABASES),
            readahead=False,
        )
    except lmdb.Error as exc:
        raise FailedPrecondition(f"{p}: not an LMDB store image: {exc}") from exc
    try:
        with env.begin() as txn:
            for name in DATABASES:
                if name in ADDED_LATER:
                    continue
                try:
                    env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    raise FailedPrecondition(
                        f"{p}: sub-database {name!r} is missing: not a Cronraft store image"
                    ) from None
            meta = env.open_db(b"meta", txn=txn, create=False)
            raw_index = txn.get(META_LAST_APPLIED, db=meta)
            raw_epoch = txn.get(META_EPOCH, db=meta)
            raw_members = txn.get(META_MEMBERSHIP, db=meta)
    except lmdb.Error as exc:
        raise FailedPrecondition(f"{p}: unreadable store image: {exc}") from exc
    finally:
        env.close()
    epoch = commands_pb2.Epoch()
    if raw_epoch is not None:
        epoch.ParseFromString(bytes(raw_epoch))
    members = None
    if raw_members is not None:
        stored = membership_pb2.Membership()
        stored.ParseFromString(bytes(raw_members))
        members = sorted((m.node_id, m.raft_address) for m in stored.members)
    return ImageFacts(
        applied_index=0 if raw_index is None else from_u64(bytes(raw_index)),
        epoch_term=epoch.term,
        members=members,
    )


def seed(backup: BackupFile, state_dir: Path, raft_dir: Path, cluster: list[str]) -> Seeded:
    """Write the node files of module docstring from a verified backup (raft.backup_file `verify`):
    `state_dir` (the store's folder) and `raft_dir` (the replicator's) must not hold a store or a journal
    yet; `cluster` is the new configuration's Raft addresses. Everything is fsynced before this returns.
    Raises FailedPrecondition if the image is not what its header says (nothing is cleaned up here: the
    caller owns the folders)."""
    header = backup.header
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    raft_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    image = state_dir / DATA_FILE
    journal = raft_dir / JOURNAL_FILE
    for existing in (image, journal, raft_dir / SNAPSHOT_FILE):
        if existing.exists():
            raise FailedPrecondition(f"{existing} exists: a store is seeded only into new folders")
    tmp = state_dir / (DATA_FILE + ".restore")
    with open(tmp, "wb") as out:
        for chunk in backup.read_body(_COPY):
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    facts = image_facts(tmp)
    if facts.applied_index != header.applied_index:
        tmp.unlink()
        raise FailedPrecondition(
            f"{backup.path}: its store is at index {facts.applied_index}, its header says "
            f"{header.applied_index}"
        )
    if facts.applied_index < 2:
        tmp.unlink()
        raise FailedPrecondition(
            f"{backup.path}: its store has applied no log entry (index {facts.applied_index}): nothing to "
            "restore; start the new cluster empty instead"
        )
    os.replace(tmp, image)
    fsync_dir(state_dir)

    term = max(facts.epoch_term, header.term)
    index = facts.applied_index
    last = (NO_OP_COMMAND, index, term)
    prev = (NO_OP_COMMAND, index - 1, term)
    snapshot = raft_dir / SNAPSHOT_FILE

    def copy_image(fd: int) -> None:
        with open(image, "rb") as src:
            while chunk := src.read(_COPY):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]

    write_snapshot(snapshot, encode_snapshot_header(last, prev, sorted(cluster)), copy_image, fsync=True)
    try:
        seed_journal(journal, [prev, last], term)
        for path in (journal, Path(str(journal) + ".meta")):
            _fsync_file(path)
    except BaseException:
        for path in (journal, Path(str(journal) + ".meta"), snapshot):
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    fsync_dir(raft_dir)
    return Seeded(applied_index=index, term=term, members=facts.members)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["DATA_FILE", "ImageFacts", "Seeded", "image_facts", "seed"]
