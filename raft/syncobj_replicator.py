"""`SyncObjReplicator`: the real `Replicator` (raft.replicator), on pysyncobj through raft.pysyncobj_adapter.

This module owns the replicator's behaviour; it neither imports pysyncobj nor touches its internals (the
adapter's `RaftNode` does, and gives it snake_case methods). What it owns:

- proposals only from the leader: `propose` refuses on a follower (`NotLeader`) and queues the payload;
  the Raft thread appends the queued payloads while leading (`before_new_commands`), refuses them with
  `NotLeader` otherwise, and with RESOURCE_EXHAUSTED when the journal's disk cannot take them.
- the bridge from the Raft thread (pysyncobj's auto-tick thread, where every callback runs) to asyncio
  (`loop.call_soon_threadsafe`), and the apply thread (raft.apply_thread) that applies committed entries
  and answers the proposers.
- snapshots (raft.snapshot_file): `_write_snapshot` waits until the store has applied exactly the
  snapshot's index and copies the store (`LmdbKV.copy_to_fd`); `_load_snapshot` first waits for the
  entries already handed over, then restores it (`LmdbKV.replace_from`), except at startup when the store
  is already ahead.
- leadership transfer (`transfer_leadership`, Raft's TimeoutNow, started on the Raft thread): a leader
  whose wall clock is off hands leadership away (daemon.clockprobe).
- membership (raft.replicator `Reconfigurable`; docs/operations.md, "Membership changes"): changes of
  the voting configuration handed to the adapter on the Raft thread while leading (`change_voters`), the
  configuration as this node has it (`voters`, read each tick), learners (`ReplicatorConfig.learner`:
  pysyncobj's read-only node) promoted in place (`promote`: closed and started again as a voter on the
  same journal, its elections held until a leader is heard from), and a removed node's Raft stopped for
  good (`leave`).
- the audit records of each applied entry (raft.audit), written right after the apply, and three
  failpoints: `raft.before_apply` (every entry, before it is applied: `sleep:MS` makes a lagging
  replica), `raft.after_apply_before_reply` (leader only: the entry is applied, its proposer not yet
  answered) and `raft.snapshot_install` (a leader's snapshot received, before it is loaded).
- durability and space (raft.durability): fsync before acknowledging with `fsync=True`; the journal's
  disk allocated ahead of its appends. On the leader, proposals the journal's disk cannot hold are
  answered RESOURCE_EXHAUSTED before they reach pysyncobj; on a follower, pysyncobj's tick fails before
  it acknowledges, and the leader sends the entries again later (a follower with a full disk lags, and
  catches up once space returns). The journal is compacted (a snapshot) once its entries exceed
  `snapshot_max_bytes`, as well as after `snapshot_min_entries` entries or `snapshot_min_time_s`
  (pysyncobj's own rules): a bulk import is few entries of many bytes. A snapshot that fails (no space
  for it) is deleted, and the next byte-triggered one waits `_COMPACTION_RETRY_S`. While an entry cannot
  apply (raft.apply_thread, "stuck"), `propose` refuses everything (nothing could apply before it) and
  `stuck()` says so. Reads are never blocked: they read the store as last applied.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from cronraft.errors import (
    ConfigError,
    CronraftError,
    NotLeader,
    OutcomeUnknown,
    ResourceExhausted,
    Unavailable,
)
from cronraft.failpoint import enabled as failpoints_enabled
from cronraft.failpoint import failpoint
from cronraft.raft.apply_thread import ApplyEntries, Applying, ApplyThread, Waiter, settle
from cronraft.raft.audit import AuditLog
from cronraft.raft.diskspace import free_bytes
from cronraft.raft.durability import Durability, JournalFull, JournalSpace
from cronraft.raft.pysyncobj_adapter import (
    FILE_JOURNAL_LAYOUT,
    RaftNode,
    journal_meta_path,
    make_conf,
    version_problem,
)
from cronraft.raft.replicator import (
    LateResult,
    RaftMember,
    RaftStatus,
    Reconfigurable,
    Replicator,
    ReplicatorConfig,
)
from cronraft.raft.snapshot_file import LogEntry, encode_snapshot_header, read_snapshot_header, write_snapshot
from cronraft.raft.store import LmdbKV

log = logging.getLogger(__name__)

JOURNAL_FILE = "raft.journal"
SNAPSHOT_FILE = "raft.snapshot"
_COMPACTION_RETRY_S = 30.0
# How long a follower's apply thread waits for more committed entries to apply together (raft.apply_thread,
# `linger_s`): a few entries in one store transaction cost a follower a quarter less CPU per command than
# one each (W5-like pacing, bench/perf_replicas.py --rate 70), and only the leader's proposers wait for
# an apply. Bounds how far a follower's store may trail its commit index under a steady load.
APPLY_LINGER_S = 0.05

_ResultCallback = Callable[[Any, CronraftError | None], None]
_ChangeCallback = Callable[[CronraftError | None], None]


class SyncObjReplicator(Replicator, Reconfigurable):
    """`Replicator` over pysyncobj. `start()` must run on a thread that lives as long as the replicator
    (pysyncobj's tick thread stops when the thread that created it ends): the daemon's main thread.

    `applied_index`, if given, returns the last index that `apply` committed to the store; at startup, a
    snapshot file older than that is not restored (the store is already ahead; the journal replay is then
    skipped by `apply`'s idempotency), which avoids copying the whole store back at every restart.

    `on_apply_failure(index, exc)`, if given, is called on the apply thread each time applying an entry
    raised (an environmental failure: anything else is recorded by the state machine); it returns True
    when it fixed the cause (the entry is tried again at once), False to wait before the next try.
    `on_apply_recovered(index)` is called once the entry applied after failing.
    """

    def __init__(
        self,
        config: ReplicatorConfig,
        apply: Callable[[int, bytes], bytes | None],
        store: LmdbKV,
        *,
        applied_index: Callable[[], int] | None = None,
        audit: AuditLog | None = None,
        apply_events: Callable[[], list[dict[str, Any]]] | None = None,
        on_apply_failure: Callable[[int, BaseException], bool] | None = None,
        on_apply_recovered: Callable[[int], None] | None = None,
        apply_many: ApplyEntries | None = None,
    ) -> None:
        _validate(config)
        self._config = config
        self._apply = apply
        # Several committed entries in one store transaction (raft.apply_thread's groups): the state
        # machine's `apply_entries`, wrapped as `apply` is.
        self._apply_many = apply_many
        self._next_byte_compaction = 0.0
        # Audit (raft.audit): after each apply, `apply_events()` gives the entry's events to write.
        self._audit = audit if apply_events is not None else None
        self._apply_events = apply_events
        self._transfers: list[tuple[str | None, Callable[[bool], None]]] = []
        self._store = store
        self._applied_index = applied_index
        self._node: RaftNode | None = None
        self._journal = config.data_dir / JOURNAL_FILE
        self._snapshot = config.data_dir / SNAPSHOT_FILE
        self.journal_space = JournalSpace(self._journal, config.journal_reserve_bytes, FILE_JOURNAL_LAYOUT)
        self.durability = Durability(self._journal, journal_meta_path(self._journal), config.fsync)
        self._peers: tuple[RaftMember, ...] = ()
        self._ids: dict[str, str] = {}
        self._addresses: dict[str, str] = {}
        self.set_members(config.peers)
        self._changes: list[tuple[bool, str, _ChangeCallback]] = []
        self._voters: frozenset[str] = frozenset()  # the configuration as of the last tick
        self._hold_elections = config.hold_elections
        self._removed = False
        self._proposals: collections.deque[tuple[bytes, _ResultCallback]] = collections.deque()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[RaftStatus], None]] = []
        self._last_seen: tuple[bool, str | None, int] | None = None
        self._notifier: Any = None  # the adapter's tick notifier, made on the Raft thread
        self._startup_restore_pending = False
        self._stopping = False
        self._inflight: set[Waiter] = set()
        self._applier = ApplyThread(
            self._apply_entry,
            apply_entries=None if apply_many is None else self._apply_entries,
            on_apply_failure=on_apply_failure,
            on_apply_recovered=on_apply_recovered,
            linger_s=APPLY_LINGER_S,
        )

    # --- lifecycle ---

    def start(self) -> None:
        if self._node is not None:
            raise RuntimeError("the replicator is already started")
        problem = version_problem()
        if problem is not None:
            log.warning("%s", problem)
        self._config.data_dir.mkdir(parents=True, exist_ok=True)
        self._startup_restore_pending = self._snapshot.is_file()
        self._stopping = False
        self._applier.start(self._applied_index() if self._applied_index is not None else 0)
        learner = self._config.learner
        node = RaftNode(
            self,
            None if learner else self._config.self_member.raft_address,
            [p.raft_address for p in self._config.peers],
            self._conf(),
        )
        self._node = node
        node.add_tick_callback(self._on_tick)
        if learner:
            log.info(
                "started as a learner: receiving the log from %s", [p.node_id for p in self._config.peers]
            )
            return  # a read-only node binds no port
        try:
            node.wait_bound()
        except Exception as exc:
            node.close()
            self._node = None
            self._applier.stop()
            raise ConfigError(
                f"cannot bind the Raft address {self._config.self_member.raft_address}: is it in use, "
                "or not an address of this host?"
            ) from exc

    def stop(self) -> None:
        with self._lock:
            node, self._node = self._node, None
            self._stopping = True
        if node is None:
            return
        node.close()
        # Entries handed over and not applied yet are dropped: they are committed and in the journal, and
        # the replay at the next start applies them (apply is idempotent by index). The waiters' futures
        # are in _inflight: answered below.
        self._applier.stop()
        self._fail_queued(Unavailable("the replicator is stopping"))
        with self._lock:
            inflight = list(self._inflight)
        for loop, future in inflight:  # appended (or about to be): only "unknown" is honest
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(
                    settle, future, OutcomeUnknown("the replicator stopped before the entry committed"), None
                )
        self.durability.close()
        self.journal_space.close()
        self._notifier = None

    def fast_election_delay(self) -> float:
        """How long a follower waits after losing its connection to the leader before it stands: three
        heartbeats (time for a live leader to reconnect and be heard), plus a random share of a quarter
        election timeout so that two followers rarely stand at once."""
        cfg = self._config
        return (3 * cfg.heartbeat_ms + random.uniform(0, cfg.election_timeout_ms / 4)) / 1000

    def _conf(self) -> Any:
        """pysyncobj's configuration (a method so that the fault tests' shim can rebind the address)."""
        return make_conf(
            self._config,
            journal=self._journal,
            snapshot=self._snapshot,
            write_snapshot=self._write_snapshot,
            load_snapshot=self._load_snapshot,
            on_state_changed=self._maybe_notify,
        )

    # --- proposals (asyncio side) ---

    async def propose(self, payload: bytes, *, timeout_s: float, late: LateResult | None = None) -> bytes:
        node = self._node
        if node is None:
            raise Unavailable("the replicator is not running")
        if not node.is_leader():
            raise NotLeader(None)
        stuck = self._applier.stuck
        if stuck is not None:  # nothing proposed now could apply before the stuck entry
            raise ResourceExhausted(
                f"storage exhausted: this node cannot apply log entry {stuck[0]}: {stuck[1]}; nothing is "
                "proposed until it applies"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        entry = (loop, future)

        def on_result(result: Any, error: CronraftError | None) -> None:  # Raft thread
            if error is None and isinstance(result, Applying):
                # Committed; the apply thread answers once applied. Registered before the entry is
                # released to the apply thread (same tick), so the answer cannot be missed.
                self._applier.wait_for(result.index, entry)
                return
            with contextlib.suppress(RuntimeError):  # the loop was closed: nobody waits any more
                loop.call_soon_threadsafe(settle, future, result, error)

        with self._lock:
            if self._stopping:  # checked under the lock that stop() drains the queue with
                raise Unavailable("the replicator is stopping")
            self._proposals.append((payload, on_result))
            self._inflight.add(entry)
        notifier = self._notifier
        if notifier is not None:
            notifier.notify()
        kept = False
        try:
            # With `late`, the wait is shielded: at the timeout the future stays registered (pysyncobj's
            # callback, then the apply thread, still answer it) and `late` hears its outcome.
            return await asyncio.wait_for(future if late is None else asyncio.shield(future), timeout_s)
        except TimeoutError:
            if late is not None:
                kept = True
                future.add_done_callback(functools.partial(self._tell_late, entry, late))
            raise OutcomeUnknown(
                f"the proposal did not commit within {timeout_s:g} s; it may apply"
            ) from None
        except OutcomeUnknown:
            if late is not None:  # appended, then leadership changed: it does not apply under this leader
                loop.call_soon(late, None)
            raise
        finally:
            if not kept:
                with self._lock:
                    self._inflight.discard(entry)

    def _tell_late(self, entry: Waiter, late: LateResult, future: asyncio.Future[bytes]) -> None:
        """A proposal answered OutcomeUnknown at its timeout is settled: `late` gets apply's result, or None
        (leadership lost before it committed, the replicator stopped: `stop` answers every waiter)."""
        with self._lock:
            self._inflight.discard(entry)
        if future.cancelled() or future.exception() is not None:
            late(None)
        else:
            late(future.result())

    # --- Raft thread (the adapter's RaftHost) ---

    def stage_entry(self, index: int, payload: bytes) -> Applying:
        return self._applier.stage(index, payload)

    def before_new_commands(self, node: RaftNode) -> None:
        """Right after pysyncobj applied the committed entries (and called their proposers' callbacks):
        the staged entries go to the apply thread, then our proposals and transfers to pysyncobj."""
        self._applier.release_staged()
        self._hand_over_proposals(node)

    def _hand_over_proposals(self, node: RaftNode) -> None:
        with self._lock:
            batch = list(self._proposals)
            self._proposals.clear()
            transfers, self._transfers = self._transfers, []
            changes, self._changes = self._changes, []
        for address, done in transfers:  # pysyncobj's state is only safe to touch on this thread
            node.start_transfer(address, done)
        leading = node.is_leader()
        for add, address, on_done in changes:  # appended right away, never forwarded (as proposals)
            if leading:
                node.change_cluster(add, address, on_done)
            else:
                on_done(NotLeader(None))
        if leading and batch:
            try:
                self.journal_space.ensure(sum(self.journal_space.entry_cost(len(p)) for p, _ in batch))
            except JournalFull as exc:
                refused = ResourceExhausted(f"storage exhausted: {exc.strerror}")
                for _payload, callback in batch:
                    callback(refused, None)  # never appended
                return
        for payload, callback in batch:
            if leading:
                node.append(payload, callback)
            else:
                callback(None, NotLeader(None))  # never appended: NotLeader is exact

    def _fail_queued(self, exc: CronraftError) -> None:
        with self._lock:
            batch = list(self._proposals)
            self._proposals.clear()
        for _payload, callback in batch:
            callback(exc, None)

    def _on_tick(self) -> None:
        node = self._node
        if self._notifier is None and node is not None:
            # Created on the Raft thread: the poller is not thread-safe. Wakes the tick when we propose.
            self._notifier = node.new_notifier()
        if node is not None:
            self._voters = node.voters()
            if self._hold_elections:
                self._hold_or_release(node)
        self._maybe_notify()
        self.journal_space.maintain()
        limit = self._config.snapshot_max_bytes
        if node is None or not limit:
            return
        if self.journal_space.entry_bytes() <= limit:
            self._next_byte_compaction = 0.0  # compacted (or never over): the next one may come at once
            return
        now = time.monotonic()
        if now >= self._next_byte_compaction:
            # pysyncobj takes it at its next tick, unless a snapshot is being taken; if the journal is
            # still over the limit a while later (no room for the snapshot), it is tried again then.
            self._next_byte_compaction = now + _COMPACTION_RETRY_S
            node.force_compaction()

    def _hold_or_release(self, node: RaftNode) -> None:
        """A voter that may be outside the configuration (a promoted learner the leader has not added
        yet) stands for no election until it has heard from a leader: its term would otherwise climb in
        isolation, and the first message carrying it once added would unseat the leader."""
        if node.leader_address() is not None:
            self._hold_elections = False
            log.info("heard from the leader: this voter may stand in elections")
        else:
            node.postpone_election()

    def _maybe_notify(self) -> None:
        node = self._node
        if node is None or not self._callbacks:
            return
        seen = (node.is_leader(), node.leader_address(), node.current_term())
        if seen == self._last_seen:
            return
        self._last_seen = seen
        status = self.status()
        for cb in list(self._callbacks):
            try:
                cb(status)
            except Exception:
                log.exception("a Raft state-change callback failed")

    # --- apply thread ---

    def _apply_entry(self, index: int, payload: bytes) -> bytes | None:
        failpoint("raft.before_apply")  # `sleep:MS`: a replica that applies late (tests of reads)
        result = self._apply(index, payload)
        self._after_apply()
        return result

    def _apply_entries(
        self, entries: Sequence[tuple[int, bytes]], unread: Container[int]
    ) -> list[bytes | None]:
        """`_apply_entry` for a group of entries applied in one store transaction (raft.apply_thread)."""
        assert self._apply_many is not None
        failpoint("raft.before_apply")
        results = self._apply_many(entries, unread)
        self._after_apply()
        return results

    def _after_apply(self) -> None:
        """The applied entries' audit events; on the leader, the failpoint before its proposers are
        answered (the entries are committed and applied, their LMDB transaction too; the apply thread
        answers only after this returns, and only the leader has proposers to answer)."""
        if self._audit is not None and self._apply_events is not None:
            self._audit.write_all(self._apply_events())
        node = self._node
        if node is not None and node.is_leader():
            self._flush_audit_before_failpoint()
            failpoint("raft.after_apply_before_reply")

    def _flush_audit_before_failpoint(self) -> None:
        # A failpoint's crash is os._exit: the audit's buffer would be lost, and with it the record of
        # the very event under test. Only in failpoint runs (tests); never on the normal hot path.
        if self._audit is not None and failpoints_enabled():
            self._audit.flush()

    def threads(self) -> dict[str, threading.Thread]:
        """This replicator's own threads by role ("raft": pysyncobj's tick thread, "apply"), while running:
        for per-thread CPU accounting (bench/perf_replicas.py)."""
        found: dict[str, threading.Thread] = {}
        node = self._node
        tick = node.tick_thread() if node is not None else None
        if tick is not None:
            found["raft"] = tick
        apply = self._applier.thread
        if apply is not None:
            found["apply"] = apply
        return found

    def stuck(self) -> tuple[int, str] | None:
        """(index, the failure) while this node cannot apply a committed entry (an environmental one)."""
        return self._applier.stuck

    def journal_status(self) -> tuple[int, str | None]:
        """(bytes of entries in the journal, why its reserve cannot be kept or None)."""
        space = self.journal_space
        return space.entry_bytes(), space.low

    # --- snapshots (pysyncobj's serializer and deserializer, on the Raft thread) ---

    def _write_snapshot(self, file_name: str, last: LogEntry, prev: LogEntry, cluster: list[str]) -> None:
        """Runs right after the entries up to the snapshot index were applied by pysyncobj."""
        # The store must hold exactly the state at the snapshot's index: every entry handed over so far
        # (pysyncobj's no-op entries never reach the apply thread, so wait for those, not for `last`).
        if not self._applier.wait_applied(self._applier.released):
            raise RuntimeError("no snapshot: the store is behind (an entry cannot apply now)")
        needed = self._store.high_water()
        if free_bytes(Path(file_name).parent) < needed + self.journal_space.reserve:
            # A copy that cannot fit would fill the disk, be deleted, and be tried again next tick.
            raise RuntimeError(f"no snapshot: less than {needed} bytes free for the store's copy")
        header = encode_snapshot_header(last, prev, cluster)
        write_snapshot(file_name, header, self._store.copy_to_fd, fsync=self._config.fsync)

    def _load_snapshot(self, file_name: str) -> tuple[LogEntry, LogEntry, list[str]]:
        """At startup (if a snapshot file exists) and when installing a leader's snapshot. Returns what
        `_write_snapshot` was given."""
        last, prev, cluster, offset = read_snapshot_header(file_name)
        # Entries already handed to the apply thread are older than this snapshot: let them finish first.
        self._applier.wait_applied(self._applier.released)
        startup, self._startup_restore_pending = self._startup_restore_pending, False
        if startup and self._applied_index is not None and self._applied_index() >= last[1]:
            log.info(
                "store at index %d is ahead of snapshot %d: not restored", self._applied_index(), last[1]
            )
        else:
            if not startup:
                # A snapshot received from the leader, renamed into place, not yet loaded into the store.
                self._flush_audit_before_failpoint()
                failpoint("raft.snapshot_install")
            self._store.replace_from(file_name, offset=offset)
        self._applier.restored(last[1])  # the store now holds at least the snapshot's index
        return last, prev, cluster

    # --- status ---

    def status(self) -> RaftStatus:
        node = self._node
        me = self._config.self_member.node_id
        role = "removed" if self._removed else "learner" if self._config.learner else "voter"
        peers = self._peers
        if node is None:
            return RaftStatus(me, False, None, 0, 0, 0, {p.node_id: False for p in peers}, role=role)
        leader = node.leader_address()
        return RaftStatus(
            node_id=me,
            is_leader=node.is_leader(),
            leader_id=None if leader is None else self._ids.get(leader, leader),
            term=node.current_term(),
            commit_index=node.commit_index(),
            applied_index=self._applier.applied_index(node.last_applied()),
            connected={p.node_id: node.is_connected(p.raft_address) for p in peers},
            ready=node.is_ready(),
            has_quorum=node.quorum(),
            role=role,
        )

    def on_state_change(self, cb: Callable[[RaftStatus], None]) -> None:
        self._callbacks.append(cb)

    async def transfer_leadership(self, target: str | None) -> bool:
        node = self._node
        if node is None or not node.is_leader():
            return False
        address: str | None = None
        if target is not None:
            address = self._addresses.get(target)
            if address is None:
                return False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()

        def done(ok: bool) -> None:  # Raft thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_set_once, future, ok)

        with self._lock:
            if self._stopping:
                return False
            self._transfers.append((address, done))
        notifier = self._notifier
        if notifier is not None:
            notifier.notify()
        try:
            return await asyncio.wait_for(future, 2.0)
        except TimeoutError:
            return False

    # --- membership (raft.replicator `Reconfigurable`) ---

    def voters(self) -> frozenset[str]:
        return self._voters if self._node is not None else frozenset()

    def set_members(self, members: tuple[RaftMember, ...]) -> None:
        me = self._config.self_member
        peers = tuple(m for m in members if m.node_id != me.node_id)
        self._ids = {m.raft_address: m.node_id for m in (me, *peers)}
        self._addresses = {m.node_id: m.raft_address for m in peers}
        self._peers = peers

    async def change_voters(self, member: RaftMember, *, add: bool, timeout_s: float) -> None:
        node = self._node
        if node is None or not node.is_leader():
            raise NotLeader(None)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def done(error: CronraftError | None) -> None:  # Raft thread
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_change, future, error)

        with self._lock:
            if self._stopping:
                raise Unavailable("the replicator is stopping")
            self._changes.append((add, member.raft_address, done))
        notifier = self._notifier
        if notifier is not None:
            notifier.notify()
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise OutcomeUnknown(
                f"the configuration change for {member.node_id} did not commit within {timeout_s:g} s"
            ) from None

    def promote(self, peers: tuple[RaftMember, ...]) -> None:
        if not self._config.learner:
            return
        log.info("promoted: restarting Raft as a voter with %s", [p.node_id for p in peers])
        self.stop()
        self._config = replace(self._config, learner=False, peers=peers, hold_elections=True)
        self._hold_elections = True
        self.set_members(peers)
        self.start()

    def leave(self) -> None:
        if not self._removed:
            log.warning("removed from the cluster: Raft stopped for good on this node")
        self._removed = True
        self.stop()

    def force_snapshot(self) -> None:
        """Ask for a snapshot (log compaction) at the next tick (tests and the admin CLI)."""
        if self._node is not None:
            self._node.force_compaction()


def _settle_change(future: asyncio.Future[None], error: CronraftError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _set_once(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


def _validate(config: ReplicatorConfig) -> None:
    members = (config.self_member, *config.peers)
    if len(members) > 1 and not config.secret:
        raise ConfigError(
            "a multi-node cluster needs a cluster secret (raft.secret): without it anyone who reaches the "
            "Raft port can run code on this node"
        )
    if len({m.node_id for m in members}) != len(members) or len({m.raft_address for m in members}) != len(
        members
    ):
        raise ConfigError("raft members must have distinct node ids and distinct raft addresses")
    for m in members:
        host, sep, port = m.raft_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"raft address {m.raft_address!r} of {m.node_id} must be host:port")
    if config.learner and not config.peers:
        raise ConfigError("a learner joins a cluster: list its members (cluster.members) besides this node")
    if config.heartbeat_ms <= 0 or config.election_timeout_ms <= 3 * config.heartbeat_ms:
        raise ConfigError("raft.election_timeout_ms must be more than 3 x raft.heartbeat_ms (and both > 0)")


__all__ = ["APPLY_LINGER_S", "JOURNAL_FILE", "SNAPSHOT_FILE", "SyncObjReplicator"]
