"""This node's storage: how full it is, what it refuses because of it, and how it recovers.

The monitor looks every `interval_s` (and the apply thread tells it at once when an entry fails) at:
the store (LMDB: its map, growing up to `[storage] max_map_size_bytes`, and the pages holding data),
the disk of the data directory, the Raft journal's reserve (raft.durability, "Space") and whether the
apply thread is stuck on an entry. It keeps `reserve_bytes / 2` of disk allocated ahead of the store
(the journal keeps the other half ahead of itself), so that deletes still commit once the disk is full.

What is refused, from the mildest (`refused` in the status; docs/operations.md, "Storage exhausted"):

- "data": the store holds more than `max_map_size_bytes - reserve_bytes`, or the disk has less than
  `reserve_bytes` free (the reserve is at most an eighth of the file system: `effective_reserve`).
  Writes that add data are refused (create, import, trigger, backfill, resume, put calendar, redrive;
  the workers' live output is dropped); deletes, cancels, pauses, purges, updates (a task's retention
  can be lowered) and the leader's own duties (fires, leases, results) go on, in the reserve.
- "all_but_deletes": the disk is full: the journal or the store cannot keep its reserve. Only commands
  that free space or stop work (delete and cancel tasks, cancel executions, pause, purge dead letters,
  delete calendars, retention) are proposed; the leader's duties wait (nothing is lost: workers keep
  their results until acknowledged, due fires catch up by their misfire policy).
- "all": this node cannot apply a committed entry (the map at its maximum, the disk full, an I/O
  error). Nothing is proposed; waiting clients are answered at once. It applies again by itself as soon
  as the cause is gone (space freed, the map raised and the node restarted).

Every refusal is RESOURCE_EXHAUSTED with the reason, the same text as `cluster status` and the
`cronraft.storage` health service. A leader that refuses anything for a cause of its own (its disk, an
entry only it cannot apply; not a store at its maximum, which every node's is) hands leadership to a
connected peer whose storage refuses nothing (peers learn each other's storage from the clock probes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from cronraft.errors import ResourceExhausted, StorageError
from cronraft.proto.v1 import cluster_pb2, commands_pb2
from cronraft.raft.diskspace import free_bytes
from cronraft.raft.store import LmdbKV, StoreUsage

log = structlog.get_logger("cronraft.storage")

REFUSE_NONE, REFUSE_DATA, REFUSE_ALL_BUT_DELETES, REFUSE_ALL = "", "data", "all_but_deletes", "all"

# Commands that add data to the store (refused from "data" on). An update is not among them: it replaces
# a task (about the same size), and it is how a task's retention is lowered to make room.
ADDS_DATA = frozenset(
    {
        "create_task",
        "import_tasks",
        "trigger_task",
        "backfill_task",
        "resume_task",
        "put_calendar",
        "redrive_dead_letters",
        "append_output",
    }
)
# Commands that free space or stop work (still proposed at "all_but_deletes").
FREES_SPACE = frozenset(
    {
        "delete_task",
        "prune",
        "cancel_task",
        "cancel_execution",
        "pause_task",
        "purge_dead_letters",
        "delete_calendar",
        "epoch",
    }
)
PEER_STALE_S = 5.0
TRANSFER_EVERY_S = 5.0
# Between full checks (each `interval_s`), a write measures the disk and the store again when its last
# measure is older than this: a burst of writes fills a small store in far less than a second.
QUICK_MEASURE_S = 0.05


class Replicated(Protocol):
    """What the monitor reads of the replicator (raft.syncobj_replicator.SyncObjReplicator)."""

    def stuck(self) -> tuple[int, str] | None: ...

    def journal_status(self) -> tuple[int, str | None]: ...


@dataclass(frozen=True)
class Assessment:
    refused: str
    reason: str
    # The cause is this node's own (its disk, an entry only it fails to apply), not the replicated data
    # (a store at its maximum is at it on every node): another node may lead with no refusal.
    local: bool = False


def assess(
    *,
    usage: StoreUsage | None,
    disk_free: int,
    reserve: int,
    store_reserve_ok: bool,
    journal_low: str | None,
    stuck: tuple[int, str] | None,
    data_dir: Path,
) -> Assessment:
    """What a node with these figures refuses, and why (the worst condition wins). Pure."""
    if stuck is not None:
        return Assessment(
            REFUSE_ALL,
            f"this node cannot apply log entry {stuck[0]}: {stuck[1]}; nothing is written until it applies "
            "(reads still work; see docs/operations.md, Storage exhausted)",
            local=True,
        )
    if journal_low is not None:
        return Assessment(
            REFUSE_ALL_BUT_DELETES, f"{journal_low}: only deletes and cancels are accepted", local=True
        )
    if not store_reserve_ok:
        return Assessment(
            REFUSE_ALL_BUT_DELETES,
            f"disk full: the store cannot keep its reserve of {_mib(reserve // 2)} ({_mib(disk_free)} free "
            f"on {data_dir}): only deletes and cancels are accepted",
            local=True,
        )
    if disk_free < reserve:
        return Assessment(
            REFUSE_DATA,
            f"disk almost full: {_mib(disk_free)} free on {data_dir}, less than storage.reserve_bytes "
            f"({_mib(reserve)}): writes that add data are refused; delete tasks or free disk space",
            local=True,
        )
    if usage is not None and usage.used >= usage.max_map_size - reserve:
        return Assessment(
            REFUSE_DATA,
            f"store full: {_mib(usage.used)} of storage.max_map_size_bytes ({_mib(usage.max_map_size)}) "
            f"used, the last {_mib(reserve)} kept for deletes: writes that add data are refused; delete "
            "tasks, shorten retention, or raise storage.max_map_size_bytes",
        )
    return Assessment(REFUSE_NONE, "")


def effective_reserve(reserve_bytes: int, data_dir: Path) -> int:
    """`reserve_bytes`, but at most an eighth of the file system holding `data_dir` (so that a small
    disk is not taken for a full one), and at least 1 MiB."""
    path = data_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return reserve_bytes
    return max(1 << 20, min(reserve_bytes, st.f_blocks * st.f_frsize // 8))


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class StorageMonitor:
    def __init__(
        self,
        *,
        kv: LmdbKV,
        replicator: Replicated,
        data_dir: Path,
        reserve_bytes: int,
        interval_s: float = 1.0,
        is_leader: Callable[[], bool] = lambda: False,
        connected_peers: Callable[[], list[str]] = list,
        transfer: Callable[[str | None], Awaitable[bool]] | None = None,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self.kv = kv
        self.replicator = replicator
        self.data_dir = data_dir
        self.reserve = reserve_bytes
        self.interval_s = interval_s
        self._is_leader = is_leader
        self._connected_peers = connected_peers
        self._transfer = transfer
        self._on_change = on_change
        self.usage: StoreUsage | None = None
        self.disk_free = 0
        self._measured_at = 0.0
        self._store_reserve_ok = True
        self._current = Assessment(REFUSE_NONE, "")  # as of the last refresh (changes are logged)
        self._failure: BaseException | None = None  # the last apply failure (for its cause)
        self._peers: dict[str, tuple[cluster_pb2.StorageStatus, float]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_transfer = -TRANSFER_EVERY_S
        self.grown = 0  # times the map grew after a write found it full

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.refresh()
        self._task = asyncio.create_task(self._run(), name="storage-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            try:
                before = self._current
                self.refresh()
                if before.refused != self._current.refused:
                    self._log_change(before)
                    if self._on_change is not None and bool(before.refused) != bool(self._current.refused):
                        await self._on_change(bool(self._current.refused))
                await self._maybe_hand_over()
            except Exception:  # never stop watching for the node's lifetime
                log.exception("storage check failed")

    # ------------------------------------------------------------------------------------ figures

    def refresh(self) -> None:
        """Measure again (the store, the disk, the reserves) and re-assess."""
        try:
            self.usage = self.kv.usage()
            self._store_reserve_ok = self.kv.reserve_disk(self.reserve // 2)
        except Exception as exc:  # a store that cannot even be measured: say so, do not crash
            log.warning("cannot measure the store", error=str(exc))
        self.disk_free = free_bytes(self.data_dir)
        self._measured_at = time.monotonic()
        self._current = self._assess()

    def _quick_measure(self) -> None:
        """The disk's free space (one statvfs) and, near the store's limit, its usage: for a write."""
        now = time.monotonic()
        if now - self._measured_at < QUICK_MEASURE_S:
            return
        self._measured_at = now
        self.disk_free = free_bytes(self.data_dir)
        if self.kv.high_water() + self.reserve >= self.kv.max_map_size:
            with contextlib.suppress(Exception):
                self.usage = self.kv.usage()

    def _assess(self) -> Assessment:
        stuck = self.replicator.stuck()
        return assess(
            usage=self.usage,
            disk_free=self.disk_free,
            reserve=self.reserve,
            store_reserve_ok=self._store_reserve_ok,
            journal_low=self.replicator.journal_status()[1],
            stuck=None if stuck is None else (stuck[0], self._cause(stuck[1])),
            data_dir=self.data_dir,
        )

    def _cause(self, fallback: str) -> str:
        exc = self._failure
        if isinstance(exc, StorageError) and exc.kind == "map_full":
            return (
                f"the store's LMDB map is full at its maximum, storage.max_map_size_bytes "
                f"({_mib(self.kv.max_map_size)}): raise it and restart this node"
            )
        free = free_bytes(self.data_dir)
        full = (isinstance(exc, StorageError) and exc.kind == "disk_full") or (
            isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        )
        if full or (isinstance(exc, StorageError) and exc.kind == "io" and free < self.reserve):
            # LMDB reports a write cut short by a full disk as an I/O error (EIO).
            return f"disk full ({_mib(free)} free on {self.data_dir}; {fallback}): free disk space"
        return fallback

    def current(self) -> Assessment:
        """What is refused now: the last measures, with the apply thread's and the journal's state now."""
        return self._assess()

    def _log_change(self, before: Assessment) -> None:
        now = self._current
        if now.refused:
            log.warning("storage exhausted: writes refused", refused=now.refused, reason=now.reason)
        else:
            log.info("storage available again: writes accepted", was=before.reason)

    # ------------------------------------------------------------------------------------ admission

    def admit(self, commands: Sequence[commands_pb2.Command]) -> None:
        """Raise ResourceExhausted (the reason) if any of `commands` is refused now."""
        self._quick_measure()
        a = self.current()
        if not a.refused:
            return
        for cmd in commands:
            kind = cmd.WhichOneof("body") or ""
            if refuses(a.refused, kind):
                raise ResourceExhausted(f"storage exhausted: {a.reason}")

    # ------------------------------------------------------------------------ the apply thread's hooks

    def on_apply_failure(self, index: int, exc: BaseException) -> bool:
        """Apply thread: an entry failed. A full map that may grow grows now (True: try again at once)."""
        self._failure = exc
        if isinstance(exc, StorageError) and exc.kind == "map_full":
            try:
                grown = self.kv.grow()
            except StorageError as grow_exc:
                log.warning("the map could not grow", error=str(grow_exc))
                grown = False
            if grown:
                self.grown += 1
                log.info("LMDB map grown after a full write", index=index, map_size=self.kv.map_size)
                return True
        self._poke()
        return False

    def on_apply_recovered(self, index: int) -> None:
        self._poke()

    def _poke(self) -> None:
        wake = self._wake
        loop = getattr(self, "_loop", None)
        if wake is not None and loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # ------------------------------------------------------------------------------------ status

    def status(self) -> cluster_pb2.StorageStatus:
        a = self.current()
        usage = self.usage
        stuck = self.replicator.stuck()
        journal_bytes, _ = self.replicator.journal_status()
        return cluster_pb2.StorageStatus(
            measured=True,
            exhausted=bool(a.refused),
            reason=a.reason,
            refused=a.refused,
            stuck_index=stuck[0] if stuck is not None else 0,
            map_size_bytes=usage.map_size if usage else 0,
            max_map_size_bytes=usage.max_map_size if usage else 0,
            used_bytes=usage.used if usage else 0,
            disk_free_bytes=self.disk_free,
            journal_bytes=journal_bytes,
        )

    def note_peer(self, peer: str, status: cluster_pb2.StorageStatus) -> None:
        """A peer's storage, as its answer to our clock probe said."""
        self._peers[peer] = (status, time.monotonic())

    def peer_status(self, peer: str) -> cluster_pb2.StorageStatus:
        seen = self._peers.get(peer)
        if seen is None or time.monotonic() - seen[1] > PEER_STALE_S:
            return cluster_pb2.StorageStatus(measured=False)
        return seen[0]

    async def _maybe_hand_over(self) -> None:
        """A leader that refuses writes for a reason of its own (its disk, not the replicated data)
        hands leadership to a connected peer whose storage refuses nothing."""
        a = self._current
        if self._transfer is None or not a.refused or not a.local:
            return
        if not self._is_leader():
            return
        now = time.monotonic()
        if now - self._last_transfer < TRANSFER_EVERY_S:
            return
        healthy = [
            p for p in self._connected_peers() if (s := self.peer_status(p)).measured and not s.exhausted
        ]
        if not healthy:
            return
        self._last_transfer = now
        sent = await self._transfer(sorted(healthy)[0])
        log.warning("handing leadership away: this node's storage is exhausted", target=healthy[0], sent=sent)


def refuses(refused: str, kind: str) -> bool:
    """Whether a command of body `kind` is refused at level `refused`."""
    if refused == REFUSE_ALL:
        return True
    if refused == REFUSE_ALL_BUT_DELETES:
        return kind not in FREES_SPACE
    if refused == REFUSE_DATA:
        return kind in ADDS_DATA
    return False


__all__ = [
    "ADDS_DATA",
    "FREES_SPACE",
    "REFUSE_ALL",
    "REFUSE_ALL_BUT_DELETES",
    "REFUSE_DATA",
    "REFUSE_NONE",
    "Assessment",
    "StorageMonitor",
    "assess",
    "effective_reserve",
    "refuses",
]
