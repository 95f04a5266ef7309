"""Group commit: many concurrent submitters share one Raft entry.

`GroupCommitter.submit(commands)` queues the commands and waits; a flusher task takes everything queued (up
to `max_batch` commands / `max_bytes` serialized) into one `CommandBatch(version=1)`, proposes it, and hands
each submitter its slice of the entry's `BatchResult`. Up to `max_inflight` entries are in flight at once;
while they are, new commands queue and leave together in the next entry, so the batch size grows with the
load and the latency stays about one commit round. A submitter's commands are never split across entries.
An error from `propose` (NotLeader, OutcomeUnknown, ...) is raised to every submitter of that entry.
`admit`, if given, is called with each submission's commands before they are queued and may refuse
them by raising (the daemon refuses writes there while its storage is exhausted: daemon.storage).
Under a steady load (an entry proposed within the last `busy_s`) the flusher lingers `linger_s` before
taking a group, so that the submissions of a few milliseconds share an entry: with max_inflight entries
in flight and commits of a few milliseconds, nearly every submission (a tick's fires, a worker's results
message) left alone, and every entry costs each node a Raft round, a journal append and an apply
transaction (W5 at 1,000 fires/s: 0.17-0.27 entries per fire). A lone submission is proposed at once.
A submitter may ask for a longer proposal timeout than the default (the leader's own Fire/Grant/Complete
batches do: on a saturated machine an entry can take more than the clients' 5 s to commit and apply, and
an "outcome unknown" there costs a repair instead of a result); an entry waits as long as the longest
timeout among its submitters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cronraft.errors import CronraftError, OutcomeUnknown, ResourceExhausted, Unavailable
from cronraft.proto.v1 import commands_pb2
from cronraft.raft.codec import message_field
from cronraft.raft.replicator import Replicator

BATCH_VERSION = 1
# The flusher lingers LINGER_S before taking a group when an entry was proposed within BUSY_S (module
# docstring).
LINGER_S = 0.005
BUSY_S = 0.02

Late = Callable[[list[commands_pb2.CommandResult]], None]


@dataclass
class _Submission:
    commands: list[commands_pb2.Command]
    size: int
    future: asyncio.Future[list[commands_pb2.CommandResult]]
    encoded: list[bytes] = field(default_factory=list)
    timeout_s: float = 0.0  # 0: the committer's default
    late: Late | None = None  # told the results if they come after the submitter's own timeout


class GroupCommitter:
    def __init__(
        self,
        replicator: Replicator,
        *,
        max_batch: int = 2048,
        max_bytes: int = 4 << 20,
        max_inflight: int = 4,
        timeout_s: float = 5.0,
        max_queued: int = 100_000,
        admit: Callable[[Sequence[commands_pb2.Command]], None] | None = None,
        linger_s: float = LINGER_S,
        busy_s: float = BUSY_S,
    ) -> None:
        if max_batch < 1 or max_bytes < 1 or max_inflight < 1 or timeout_s <= 0:
            raise ValueError("max_batch, max_bytes, max_inflight and timeout_s must be positive")
        self._replicator = replicator
        self._admit = admit
        self._max_batch = max_batch
        self._max_bytes = max_bytes
        self._max_inflight = max_inflight
        self._timeout_s = timeout_s
        # Pending work is bounded in memory: beyond this many queued commands, callers are refused with
        # ResourceExhausted (RESOURCE_EXHAUSTED to clients) instead of growing the queue without end.
        self._max_queued = max_queued
        self._queued = 0
        self._queue: collections.deque[_Submission] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._entries: set[asyncio.Task[None]] = set()
        self._closed = False
        self._linger_s = linger_s
        self._busy_s = busy_s
        self._last_proposed = float("-inf")  # loop time the latest entry was proposed
        self.entries_proposed = 0  # counters for metrics and tests
        self.commands_proposed = 0

    @property
    def max_batch(self) -> int:
        """The most commands one submission may carry."""
        return self._max_batch

    @property
    def max_bytes(self) -> int:
        """The most serialized bytes one submission may carry (each command counted + 6, as `submit`)."""
        return self._max_bytes

    def start(self) -> None:
        """Start the flusher on the running event loop (called from inside it)."""
        if self._flusher is not None:
            return
        self._closed = False
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self._max_inflight)
        self._flusher = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def close(self) -> None:
        """Stop taking commands; fail the queued ones with Unavailable; wait for the entries in flight."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        self._fail_queue(Unavailable("shutting down: the command was not proposed"))
        if self._entries:
            await asyncio.gather(*self._entries, return_exceptions=True)

    async def submit(
        self,
        commands: Sequence[commands_pb2.Command],
        *,
        timeout_s: float | None = None,
        encoded: Sequence[bytes] | None = None,
        late: Late | None = None,
    ) -> list[commands_pb2.CommandResult]:
        """Replicate `commands` (in order, in one entry) and return their results, one per command.
        `timeout_s`: the proposal timeout for this submission if longer than the default. `encoded`: the
        commands already serialized, if the caller has them (the leader sizes its batches by them).
        `late`: past the submission's timeout the caller gets OutcomeUnknown as without it, and if the
        entry applies on this node later (however much later: the replicator keeps the proposal's outcome,
        `Replicator.propose`'s `late`), `late` gets the results."""
        if self._closed or self._flusher is None or self._wakeup is None:
            raise Unavailable("the group committer is not running")
        if not commands:
            return []
        if self._admit is not None:
            self._admit(commands)
        if encoded is None or len(encoded) != len(commands):
            encoded = [c.SerializeToString() for c in commands]
        size = sum(len(e) + 6 for e in encoded)  # + field tag and length prefix, roughly
        if len(commands) > self._max_batch or size > self._max_bytes:
            raise ValueError(
                f"{len(commands)} commands / {size} bytes exceed one entry "
                f"(max_batch={self._max_batch}, max_bytes={self._max_bytes})"
            )
        if self._queued + len(commands) > self._max_queued:
            raise ResourceExhausted(
                f"{self._queued} commands wait to be replicated (limit {self._max_queued}); retry later"
            )
        future: asyncio.Future[list[commands_pb2.CommandResult]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(list(commands), size, future, list(encoded), timeout_s or 0.0, late))
        self._queued += len(commands)
        self._wakeup.set()
        if late is None:
            return await future
        own = max(self._timeout_s, timeout_s or 0.0)
        try:
            return await asyncio.wait_for(asyncio.shield(future), own)
        except TimeoutError:
            future.add_done_callback(functools.partial(_tell_late, late))
            raise OutcomeUnknown(f"the proposal did not commit within {own:g} s; it may apply") from None

    async def _run(self) -> None:
        assert self._wakeup is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._slots.acquire()  # while all slots are busy, the queue keeps growing
                if self._linger_s and loop.time() - self._last_proposed < self._busy_s:
                    await asyncio.sleep(self._linger_s)  # a steady load: let a few more join this entry
                group = self._take_group()
                if not group:
                    self._slots.release()
                    continue
                self._last_proposed = loop.time()
                task = asyncio.get_running_loop().create_task(self._propose(group))
                self._entries.add(task)
                task.add_done_callback(self._entries.discard)

    def _take_group(self) -> list[_Submission]:
        group: list[_Submission] = []
        count = size = 0
        while self._queue:
            sub = self._queue[0]
            if sub.future.done():  # the submitter was cancelled: drop its commands before proposing
                self._queue.popleft()
                self._queued -= len(sub.commands)
                continue
            if group and (count + len(sub.commands) > self._max_batch or size + sub.size > self._max_bytes):
                break
            self._queue.popleft()
            self._queued -= len(sub.commands)
            group.append(sub)
            count += len(sub.commands)
            size += sub.size
        return group

    async def _propose(self, group: list[_Submission]) -> None:
        assert self._slots is not None
        try:
            # Encode by concatenation: a repeated field is its elements as (tag, length, bytes), in order.
            batch = commands_pb2.CommandBatch(version=BATCH_VERSION).SerializeToString() + b"".join(
                message_field(2, e) for sub in group for e in sub.encoded
            )
            count = sum(len(sub.commands) for sub in group)
            self.entries_proposed += 1
            self.commands_proposed += count
            # Submissions with a `late` hear of an entry that applies after its proposal timed out: the
            # replicator tells `later` (the slot is not held meanwhile).
            later = functools.partial(_settle_late, group, count) if any(s.late for s in group) else None
            try:
                timeout_s = max(self._timeout_s, *(sub.timeout_s for sub in group))
                raw = await self._replicator.propose(batch, timeout_s=timeout_s, late=later)
            except OutcomeUnknown as exc:
                for sub in group:
                    if later is None or sub.late is None:  # else `later` settles it
                        _fail(sub, exc)
                return
            except CronraftError as exc:
                for sub in group:
                    _fail(sub, exc)
                return
            except Exception as exc:  # a bug: report it to every submitter
                for sub in group:
                    _fail(sub, exc)
                return
            _settle(group, count, raw)
        finally:
            self._slots.release()

    def _fail_queue(self, exc: Exception) -> None:
        while self._queue:
            sub = self._queue.popleft()
            self._queued -= len(sub.commands)
            _fail(sub, exc)


def _settle(group: list[_Submission], count: int, raw: bytes) -> None:
    """Each submitter of an applied entry gets its slice of the entry's results (`raw`: a BatchResult)."""
    try:
        result = commands_pb2.BatchResult.FromString(raw)
        if len(result.results) != count:
            raise OutcomeUnknown(
                f"the entry applied but returned {len(result.results)} results for {count} commands"
            )
    except Exception as exc:  # a malformed result: report it to every submitter
        for sub in group:
            _fail(sub, exc)
        return
    pos = 0
    for sub in group:
        n = len(sub.commands)
        if not sub.future.done():
            sub.future.set_result(list(result.results[pos : pos + n]))
        pos += n


def _settle_late(group: list[_Submission], count: int, raw: bytes | None) -> None:
    """The outcome of an entry whose proposal timed out, for its submissions with a `late` (the others
    were answered OutcomeUnknown then): the results if it applied here, else OutcomeUnknown."""
    waiting = [sub for sub in group if sub.late is not None]
    if raw is None:
        for sub in waiting:
            _fail(sub, OutcomeUnknown("the entry did not commit under this leader; it may apply"))
        return
    _settle(group, count, raw)


def _fail(sub: _Submission, exc: Exception) -> None:
    if not sub.future.done():
        sub.future.set_exception(exc)


def _tell_late(late: Late, future: asyncio.Future[list[commands_pb2.CommandResult]]) -> None:
    """A submission whose submitter had timed out is settled: its results, if it committed, to `late`."""
    if future.cancelled() or future.exception() is not None:
        return
    late(future.result())


__all__ = ["BATCH_VERSION", "BUSY_S", "LINGER_S", "GroupCommitter", "Late"]
