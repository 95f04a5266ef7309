"""The pending queue: executions waiting for a worker, in dispatch order (priority, aging, fire order).

Per queue, one insertion-ordered map per priority rank (high first) of execution id -> fired_at_ms. Per
queue, so that work for a queue nobody serves costs nothing while others dispatch. Dispatch order is
the priority raised one level per aging step waited, then the oldest fire first (`dispatch_order`).

The queue also keeps what the leader said about its executions: the waiting reason already proposed
(NoteWaiting) and the executions whose start deadline expiry (ExpirePending) is in flight.

Pure: no store, no clock. The leader core decides what enters and leaves; `waiting_commands` reads the
executions through the read transaction it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from cronraft.proto.v1 import commands_pb2, common_pb2
from cronraft.raft import deps
from cronraft.raft import state as sm
from cronraft.raft.kv import Txn

Command = commands_pb2.Command

# Pending executions are checked for a waiting reason and their start deadline this often, at most this
# many per check, and only once they have waited the grace (most start within milliseconds).
WAITING_CHECK_MS = 1_000
WAITING_CHECK_LIMIT = 1_000
WAITING_NOTES_PER_CHECK = 100  # reasons are for people: never flood the log with them
WAITING_GRACE_MS = 1_000
# Per rank, only the first entries can be next (the maps are in fire order): this many are considered.
HEADS_PER_RANK = 256


def effective_rank(rank: int, fired_at_ms: int, now_ms: int, aging_step_ms: int) -> int:
    """Priority aging: one rank higher (numerically lower) per `aging_step_ms` waited, never above 0."""
    return max(0, rank - max(0, now_ms - fired_at_ms) // max(1, aging_step_ms))


class PendingQueue:
    def __init__(self) -> None:
        self._queues: dict[str, tuple[dict[str, int], ...]] = {}
        self.overflow = False  # more pending executions in the store than in memory
        self.next_ready_ms: int | None = None  # earliest backoff end (or due time) among those skipped
        self.reasons: dict[str, str] = {}  # execution id -> waiting reason already proposed
        self.expiring: set[str] = set()  # ExpirePending proposed, not yet answered
        self._next_check_ms = 0

    def add(self, queue: str, execution_id: str, rank: int, fired_at_ms: int) -> None:
        ranks = self._queues.setdefault(queue, ({}, {}, {}))
        ranks[rank][execution_id] = fired_at_ms

    def remove(self, queue: str, rank: int, execution_id: str) -> None:
        self._queues[queue][rank].pop(execution_id, None)

    def __len__(self) -> int:
        return sum(len(r) for ranks in self._queues.values() for r in ranks)

    def queues(self) -> set[str]:
        return set(self._queues)

    def dispatch_order(self, queue: str, now_ms: int, aging_step_ms: int) -> list[tuple[int, str]]:
        """(rank, execution id) of the queue's pending executions in dispatch order: effective priority
        (aging), then oldest fire first. A bounded number of heads per rank is considered."""
        heads: list[tuple[int, int, int, str]] = []
        for rank, rank_map in enumerate(self._queues[queue]):
            for n, (execution_id, fired_at) in enumerate(rank_map.items()):
                if n >= HEADS_PER_RANK:
                    break
                heads.append(
                    (effective_rank(rank, fired_at, now_ms, aging_step_ms), fired_at, rank, execution_id)
                )
        heads.sort(key=lambda h: (h[0], h[1]))
        return [(rank, e) for _, _, rank, e in heads]

    def note_ready_at(self, ready_ms: int) -> None:
        """A skipped execution may be granted from `ready_ms` (the core wakes up then)."""
        nr = self.next_ready_ms
        self.next_ready_ms = ready_ms if nr is None else min(nr, ready_ms)

    def walk(self) -> Iterator[tuple[str, int, str]]:
        """(queue, rank, execution id) of every pending execution; safe to `remove` while walking."""
        for queue, ranks in self._queues.items():
            for rank, rank_map in enumerate(ranks):
                for execution_id in list(rank_map):
                    yield queue, rank, execution_id

    def waiting_check_due(self, now_ms: int) -> bool:
        """Whether the periodic waiting check (`waiting_commands`) is due; arms the next one if so."""
        if now_ms < self._next_check_ms:
            return False
        self._next_check_ms = now_ms + WAITING_CHECK_MS
        return True


def waiting_commands(
    pending: PendingQueue,
    txn: Txn,
    why: Callable[[str, common_pb2.Execution, common_pb2.Task, int], str],
    now_ms: int,
    budget: int,
) -> list[Command]:
    """Say why pending executions wait (once per reason: NoteWaiting), and expire those past their start
    deadline (ExpirePending). `why(queue, execution, task, now_ms)` says why one waits for a worker."""
    cmds: list[Command] = []
    checked = notes = 0
    for queue, rank, execution_id in pending.walk():
        checked += 1
        if checked > WAITING_CHECK_LIMIT or len(cmds) >= budget:
            return cmds
        ex = sm.read_execution(txn, execution_id)
        if ex is None or ex.state != common_pb2.EXECUTION_PENDING:
            pending.remove(queue, rank, execution_id)
            continue
        task = sm.read_task(txn, ex.task_id)
        if task is None or now_ms - ex.fired_at_ms < WAITING_GRACE_MS:
            continue
        unmet = deps.unmet(txn, task, ex.nominal_time_ms) if task.spec.depends_on else ""
        reason = unmet or why(queue, ex, task, now_ms)
        # The start deadline bounds the first start only: an execution whose attempt began (`attempt`
        # counts those; a lease that ended unstarted gives its number back) waits for a retry's backoff
        # or a re-grant, which its retry policy governs (expiring it lost the retry and its dead letter).
        deadline = task.spec.start_deadline_ms if not ex.attempt else 0
        dep_deadline = task.spec.dependency_deadline_ms if unmet else 0
        if (deadline and now_ms >= ex.fired_at_ms + deadline) or (
            dep_deadline and now_ms >= ex.fired_at_ms + dep_deadline
        ):
            if execution_id not in pending.expiring:
                pending.expiring.add(execution_id)
                cmds.append(
                    Command(
                        stamped_at_ms=now_ms,
                        expire_pending=commands_pb2.ExpirePending(execution_id=execution_id, reason=reason),
                    )
                )
        elif (
            reason != ex.waiting_reason
            and pending.reasons.get(execution_id) != reason
            and notes < WAITING_NOTES_PER_CHECK
        ):
            notes += 1
            pending.reasons[execution_id] = reason
            cmds.append(
                Command(
                    stamped_at_ms=now_ms,
                    note_waiting=commands_pb2.NoteWaiting(execution_id=execution_id, reason=reason),
                )
            )
    return cmds


__all__ = ["PendingQueue", "effective_rank", "waiting_commands"]
