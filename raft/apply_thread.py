"""The apply thread: committed entries are applied off the Raft thread, in log order, and proposers answered.

Why: applying a burst of large entries takes seconds of CPU; done on the Raft thread (pysyncobj's tick
thread) it kept heartbeats and votes unanswered for as long, and followers started elections in the
middle of a fire burst. So the replicated call only *stages* the committed entry (`stage`, Raft thread);
at the end of the same tick, after pysyncobj called the proposers' callbacks (which register to wait for
that index: `wait_for`), the staged entries are handed to this thread (`release_staged`), which runs
`apply` in log order and answers the proposers. A snapshot waits until the store has applied exactly the
snapshot's index (`wait_applied(released)`); installing one first waits for the entries already handed
over, then records the snapshot's index (`restored`).

An entry whose apply fails for an environmental reason (the store's map or disk full, an I/O error:
raft.state's `is_environmental`) is retried (100 ms, growing to 1 s) after `on_apply_failure` had a go
at it (the daemon grows the map there). Meanwhile the node is "stuck": proposers waiting for that entry
or a later one are answered at once with RESOURCE_EXHAUSTED naming the cause (the entries are committed
and will apply once space returns), and `stuck` says so; the replicator then refuses new proposals.
Knows nothing of the Raft library: entries are `(index, payload)`.

Groups: given `apply_entries` (the state machine's `apply_entries`, wrapped as `apply_entry` is), the thread
applies the consecutive entries waiting for it in one call, up to GROUP_MAX_ENTRIES entries or
GROUP_MAX_BYTES of payload, so one store transaction (raft.state) carries several small entries; it tells
which of them nobody waits for (their results are left empty: only a proposer reads them, so a follower
never does), and answers the proposers once the group is applied. A group that raises is applied again
entry by entry, each retried as above. Entries are grouped when they are already waiting: a busy node
catches up in groups. Given `linger_s`, a group nobody waits for (a follower's: its proposers are on the
leader) also waits up to that long after its first entry was taken for more to join it: under a steady
load entries arrive one at a time (W5 at 1,000 fires/s: ~70 a second), and a follower applied each in its
own store transaction, where a few together cost a quarter less CPU per command. A group with a proposer
waiting for one of its entries never lingers, nor while a snapshot waits for the store (`wait_applied`).
While it lingers the thread sleeps until the linger ends or something cuts it short (a doorbell), and
takes everything queued meanwhile at once: entries arriving one by one do not wake it one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import Any

from cronraft.errors import CronraftError, OutcomeUnknown, ResourceExhausted

log = logging.getLogger(__name__)

_APPLY_RETRY_S = (0.1, 1.0)  # first and longest pause between tries of an entry that failed
# A group (module docstring) ends at this many entries or once its payloads reach this many bytes: its first
# proposer waits for all of it (64 KiB of commands apply in about 20 ms on our 2-core machines).
GROUP_MAX_ENTRIES = 64
GROUP_MAX_BYTES = 64 << 10

# apply_entries(entries, unread): the results of each entry (None: already applied); `unread` are the
# indexes whose results nobody reads.
ApplyEntries = Callable[[Sequence[tuple[int, bytes]], Container[int]], list[bytes | None]]

Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[bytes]"]


class Applying:
    """What the replicated call returns to the Raft library (and so to the proposer's callback): the entry
    at `index` is committed and queued for the apply thread, which answers the proposer once applied."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def settle(future: asyncio.Future[bytes], result: Any, error: CronraftError | None) -> None:
    """Answer a proposer (on its event loop): `result` is apply's bytes, None ("already applied"), or a
    CronraftError raised by us before the entry reached the log; `error` is the log's failure, if any."""
    if future.done():
        return
    if isinstance(result, CronraftError):  # failed by us before it reached the log
        future.set_exception(result)
    elif error is not None:
        future.set_exception(error)
    elif result is None:
        # apply() said "already applied": only if the store is ahead of the log (e.g. after a power loss
        # without fsync); the original result is not known.
        future.set_exception(OutcomeUnknown("the entry's index was already applied; its result is unknown"))
    else:
        future.set_result(bytes(result))


def answer(waiter: Waiter, result: Any) -> None:
    """Settle a waiting proposer from any thread (nothing if its loop is closed: nobody waits any more)."""
    loop, future = waiter
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle, future, result, None)


class ApplyThread:
    """One thread applying handed-over entries in order (module docstring). `apply_entry(index, payload)`
    returns the result bytes or None (already applied); `apply_entries`, if given, applies a group of
    consecutive entries at once (`ApplyEntries`); `on_apply_failure(index, exc)` returns True when it
    fixed the cause (tried again at once); `on_apply_recovered(index)` after an entry applied late;
    `linger_s`: how long a group nobody waits for may wait for more entries (module docstring)."""

    def __init__(
        self,
        apply_entry: Callable[[int, bytes], bytes | None],
        *,
        apply_entries: ApplyEntries | None = None,
        on_apply_failure: Callable[[int, BaseException], bool] | None = None,
        on_apply_recovered: Callable[[int], None] | None = None,
        linger_s: float = 0.0,
    ) -> None:
        self._apply_entry = apply_entry
        self._apply_entries = apply_entries
        self._linger_s = linger_s
        self._hurry = 0  # callers of wait_applied: no lingering meanwhile
        # A lingering group sleeps on this doorbell, not on the queue: entries queued meanwhile do not wake
        # it one by one (each a wake-up of this thread, 60-150 us of CPU on our machines: under W5 a
        # follower's group of ~4 entries woke it 5 times, now twice). What ends the lingering rings it: an
        # entry someone waits for, `wait_applied`, `stop`, or a group's room filled (`_room`: entries and
        # bytes the lingering group can still take, None while not lingering).
        self._doorbell = threading.Event()
        self._room: list[int] | None = None
        self._on_apply_failure = on_apply_failure
        self._on_apply_recovered = on_apply_recovered
        # (index, why) while an entry cannot apply.
        self.stuck: tuple[int, str] | None = None
        # Staged during a tick (Raft thread only), then queued; proposers waiting for an index (under
        # _lock); the last index applied (under _applied_cond).
        self._staged: list[tuple[int, bytes]] = []
        self.staged_max = 0
        self.released = 0
        # Lists of entries, None to stop.
        self._queue: queue.SimpleQueue[list[tuple[int, bytes]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiters: dict[int, Waiter] = {}
        self._applied = 0
        self._applied_cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = False

    @property
    def thread(self) -> threading.Thread | None:
        """The applying thread while started."""
        return self._thread

    def start(self, applied: int) -> None:
        """Start the thread; the store has applied up to `applied`."""
        self._stop = False
        self._staged, self.staged_max = [], 0
        with self._lock:
            self._waiters = {}
        self.released = self._applied = applied
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="raft-apply", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the entry being applied; entries not applied yet are dropped (they are committed,
        and the journal replay at the next start applies them). Waiters are forgotten, not answered."""
        self._stop = True
        self._queue.put(None)
        self._doorbell.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        with self._lock:
            self._waiters.clear()
        with self._applied_cond:
            self._applied_cond.notify_all()

    # --- Raft thread ---

    def stage(self, index: int, payload: bytes) -> Applying:
        self._staged.append((index, payload))
        self.staged_max = index
        return Applying(index)

    def wait_for(self, index: int, waiter: Waiter) -> None:
        """Answer `waiter` once `index` is applied. Called before the entry is released (same tick), so
        the answer cannot be missed."""
        with self._lock:
            self._waiters[index] = waiter

    def release_staged(self) -> None:
        if self._staged:
            staged, self._staged = self._staged, []
            self.released = staged[-1][0]
            self._queue.put(staged)
            room = self._room
            if room is None:
                return  # not lingering: the queue itself wakes the thread if it waits for entries
            if self._waiters:  # registered by `wait_for` on this thread, before this release
                self._doorbell.set()
                return
            room[0] -= len(staged)
            room[1] -= sum(len(payload) for _, payload in staged)
            if room[0] <= 0 or room[1] <= 0:
                self._doorbell.set()

    def wait_applied(self, index: int) -> bool:
        """Block until `index` is applied; False if the thread is stopped, or stuck on an entry it cannot
        apply (it may stay so for long: the Raft thread must not wait for it)."""
        with self._applied_cond:
            if self._applied >= index:
                return True
            self._hurry += 1
        self._doorbell.set()  # a group lingering for more entries stops waiting
        try:
            with self._applied_cond:
                while self._applied < index and not self._stop:
                    thread = self._thread
                    if thread is None or not thread.is_alive() or self.stuck is not None:
                        return False
                    self._applied_cond.wait(0.1)
                return self._applied >= index
        finally:
            with self._applied_cond:
                self._hurry -= 1

    def restored(self, index: int) -> None:
        """The store was replaced by a snapshot at `index`: it holds at least that index."""
        with self._applied_cond:
            self._applied = max(self._applied, index)
            self.released = max(self.released, index)
            self._applied_cond.notify_all()

    def applied_index(self, raft_applied: int) -> int:
        """The last index applied to the store. The Raft library's own counter (`raft_applied`) runs ahead
        of this thread, but once every staged entry is applied it is exact (it also counts the no-op
        entries of new leaders, which never reach `apply`)."""
        with self._applied_cond:
            applied = self._applied
        return raft_applied if applied >= self.staged_max else applied

    # --- the thread ---

    def _loop(self) -> None:
        backlog: list[tuple[int, bytes]] = []
        while True:
            if not backlog:
                entries = self._queue.get()
                if entries is None:
                    return
                backlog = entries
                if not backlog:
                    continue
            if self._apply_entries is None:
                group, backlog = backlog[:1], backlog[1:]
            else:
                group, backlog, stopping = self._take_group(backlog)
                if stopping:
                    self._queue.put(None)  # seen again once the entries taken before it are applied
            if self._stop:
                return
            if len(group) == 1:
                index, payload = group[0]
                self._applied_one(index, self._apply_with_retry(index, payload))
            else:
                self._apply_group(group)

    def _take_group(
        self, backlog: list[tuple[int, bytes]]
    ) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]], bool]:
        """The next group from `backlog` and the entries already queued behind it (module docstring):
        (the group, what is left, whether the stop marker was met)."""
        size = taken = 0
        until = time.monotonic() + self._linger_s if self._linger_s > 0 else 0.0
        while True:
            # Cleared before anything that ends the lingering is looked at: a ring after this point is
            # heard by the wait below, a cause before it is seen by the checks.
            self._doorbell.clear()
            while taken < len(backlog) and taken < GROUP_MAX_ENTRIES and size < GROUP_MAX_BYTES:
                size += len(backlog[taken][1])
                taken += 1
            if taken < len(backlog) or taken >= GROUP_MAX_ENTRIES or size >= GROUP_MAX_BYTES:
                return backlog[:taken], backlog[taken:], False
            wait = until - time.monotonic() if until else 0.0
            lingering = wait > 0 and self._may_linger(backlog)
            if lingering:
                self._room = [GROUP_MAX_ENTRIES - taken, GROUP_MAX_BYTES - size]
                if self._queue.empty():
                    self._doorbell.wait(wait)
                self._room = None
            more, stopping = self._drain()
            if stopping:
                return backlog + more, [], True
            if not more and not lingering:
                return backlog, [], False
            backlog = backlog + more

    def _drain(self) -> tuple[list[tuple[int, bytes]], bool]:
        """Everything queued now, and whether the stop marker was among it."""
        taken: list[tuple[int, bytes]] = []
        while True:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                return taken, False
            if more is None:
                return taken, True
            taken.extend(more)

    def _may_linger(self, backlog: list[tuple[int, bytes]]) -> bool:
        """Nobody waits for these entries, nor for the store (`wait_applied`)."""
        if self._hurry or self._stop:
            return False
        with self._lock:
            waiters = self._waiters
            return not any(index in waiters for index, _ in backlog)

    def _apply_group(self, group: list[tuple[int, bytes]]) -> None:
        assert self._apply_entries is not None
        with self._lock:
            unread = frozenset(index for index, _ in group if index not in self._waiters)
        try:
            results = self._apply_entries(group, unread)
        except Exception as exc:  # the group's transaction was dropped: entry by entry, retried as ever
            log.debug("applying entries %d-%d together failed: %s", group[0][0], group[-1][0], exc)
            for index, payload in group:
                if self._stop:
                    return
                self._applied_one(index, self._apply_with_retry(index, payload))
            return
        waiters: list[tuple[Waiter, Any]] = []
        with self._lock:
            for (index, _), result in zip(group, results, strict=True):
                waiter = self._waiters.pop(index, None)
                if waiter is not None:
                    # A proposer that came after its entry was applied (never: `wait_for`) would get empty
                    # results; it gets "unknown" instead, which a retry with its request id resolves.
                    late = OutcomeUnknown(f"the result of entry {index} was not kept")
                    waiters.append((waiter, late if index in unread else result))
        for waiter, result in waiters:
            answer(waiter, result)
        with self._applied_cond:
            self._applied = max(self._applied, group[-1][0])
            self._applied_cond.notify_all()

    def _applied_one(self, index: int, result: bytes | None) -> None:
        """`index` is applied: its proposer answered, `wait_applied` told."""
        with self._lock:
            waiter = self._waiters.pop(index, None)
        if waiter is not None:
            answer(waiter, result)
        with self._applied_cond:
            self._applied = max(self._applied, index)
            self._applied_cond.notify_all()

    def _apply_with_retry(self, index: int, payload: bytes) -> bytes | None:
        # An entry is never skipped (the state would diverge): an apply that raised (the store full, an
        # I/O error: the state machine records everything else) is tried again until it applies.
        pause = _APPLY_RETRY_S[0]
        failures = 0
        while True:
            try:
                result = self._apply_entry(index, payload)
            except Exception as exc:
                failures += 1
                fixed = self._on_apply_failure(index, exc) if self._on_apply_failure is not None else False
                if fixed and failures < 100:
                    continue
                if failures == 1 or failures % 100 == 0:
                    log.error("applying entry %d failed (%d times); retrying: %s", index, failures, exc)
                if failures == 1:
                    log.debug("the failure", exc_info=True)
                self._set_stuck(index, exc)
                if self._stop:
                    return None
                time.sleep(pause)
                pause = min(_APPLY_RETRY_S[1], pause * 2)
                continue
            if failures:
                self.stuck = None
                log.warning("entry %d applied after %d failed tries", index, failures)
                if self._on_apply_recovered is not None:
                    self._on_apply_recovered(index)
            return result

    def _set_stuck(self, index: int, exc: BaseException) -> None:
        """Note that `index` cannot apply, and answer everyone waiting for it or a later entry now."""
        self.stuck = (index, str(exc))
        why = f"this node cannot apply log entry {index}: {exc}"
        error = ResourceExhausted(
            f"storage exhausted: {why}; the command is committed and applies once space is freed "
            "(retry with the same request id to learn its outcome)"
        )
        with self._lock:
            waiters = [(i, w) for i, w in self._waiters.items() if i >= index]
            for i, _ in waiters:
                del self._waiters[i]
        for _, waiter in waiters:
            answer(waiter, error)


__all__ = [
    "GROUP_MAX_BYTES",
    "GROUP_MAX_ENTRIES",
    "ApplyEntries",
    "ApplyThread",
    "Applying",
    "Waiter",
    "answer",
    "settle",
]
