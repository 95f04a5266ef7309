"""Output admission: which pieces of a worker's live output the leader takes into the log (S12, issue 13).

A piece is taken only if its execution's lease is the sender's (the token alone is not enough: issue
13); with authentication off a worker id is only a claim, and the token alone is checked, so that what
the state machine would refuse never reaches the log. The pieces taken wait here until the leader runner
(daemon.leader_runner) proposes them together: logs ride the log like everything else, but never one
entry per line. Pure: the runner owns the flush timer and the proposals.

**The read budget** (`read_pause`, S12: a hostile or broken worker must not stall the cluster). Receiving
output costs the leader, and what it takes rides the Raft log; so after each piece a stream is not read
for a while once it is over its own budget (`bounds.MAX_OUTPUT_BYTES_PER_S` after a burst), or once the
node is over the budget all its streams share (`bounds.MAX_NODE_OUTPUT_BYTES_PER_S`): with one budget per
stream only, N streams together were read at N times what the log carries. While the node is over, each
stream sending output gets an equal share of its rate in bytes (its pause is its piece's size times the
streams sending, over the rate), so one stream, or a few pushing large pieces, cannot take it all, and a
worker sending little output is read with little delay (its heartbeats wait behind its output: a long
pause would let its leases expire). The gateway sleeps the pause; gRPC flow control holds the sender.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cronraft.proto.v1 import commands_pb2, worker_pb2
from cronraft.raft.codec import token_tuple

if TYPE_CHECKING:
    from cronraft.daemon.leader.core import LeaderCore

# The pieces taken are proposed together every OUTPUT_FLUSH_S, or at once when they reach OUTPUT_FLUSH_BYTES.
OUTPUT_FLUSH_S = 0.3
OUTPUT_FLUSH_BYTES = 1 << 20
# A stream counts as sending output until this long after its last pause ended (one that stops sending
# leaves the share to the others by then); streams past it are forgotten every SENDERS_PRUNE_S at most.
SENDER_GRACE_S = 1.0
SENDERS_PRUNE_S = 0.25


class Bucket(Protocol):
    """A token bucket of bytes (daemon.wire.ByteBudget): `charge` says how long to wait (0.0: within its
    rate and burst)."""

    rate: float

    def charge(self, n: int, now_s: float) -> float: ...


class OutputAdmission:
    """The output one leader (one term) takes from its worker streams, waiting to be proposed."""

    def __init__(self, core: LeaderCore, dropped: dict[str, int], node_budget: Bucket, now_s: float) -> None:
        self._core = core
        # The runner's count of dropped worker messages, by kind (LeaderRunner.dropped): "stale_output".
        self._dropped = dropped
        self.pieces: list[commands_pb2.Command] = []  # AppendOutput commands not proposed yet
        self.bytes = 0  # their output bytes
        self._node = node_budget  # the read budget all this node's worker streams share
        # The streams sending output, by their own budget: when their last pause ends.
        self._senders: dict[Bucket, float] = {}
        self._pruned_s = now_s

    def read_pause(self, stream: Bucket, n: int, now_s: float) -> float:
        """How long to read nothing more from a stream after a piece of `n` bytes of output (module
        docstring, "The read budget"). `stream`: the stream's own budget, one object per stream (it
        stands for the stream here); `now_s`: monotonic seconds."""
        pause = stream.charge(n, now_s)
        senders = self._senders
        if now_s - self._pruned_s >= SENDERS_PRUNE_S:
            self._pruned_s = now_s
            gone = now_s - SENDER_GRACE_S
            for s in [s for s, until in senders.items() if until < gone]:
                del senders[s]
        senders.setdefault(stream, now_s)
        if self._node.charge(n, now_s) > 0:  # the node is over its budget: each sender gets its share
            pause = max(pause, n * len(senders) / self._node.rate)
        senders[stream] = now_s + pause
        return pause

    def forget(self, stream: Bucket) -> None:
        """The stream whose budget is `stream` ended: it no longer shares the node's read budget."""
        self._senders.pop(stream, None)

    def admit(self, worker_id: str, bound: bool, chunk: worker_pb2.OutputChunk, now_ms: int) -> str:
        """Take `chunk` from `worker_id`'s stream ("") or say why not: "stale" (output for no lease of the
        sender, a fenced-off attempt: dropped and counted) or "forged" (another worker's lease: the core
        keeps the refusal for the runner to act on). `bound`: the sender's id is its authenticated
        principal's (WorkerSession.bound)."""
        token = token_tuple(chunk.token)
        verdict = (
            self._core.lease_check(worker_id, chunk.execution_id, token, "output")
            if bound
            else self._core.token_check(chunk.execution_id, token)
        )
        if verdict:
            if verdict == "stale":
                self._dropped["stale_output"] = self._dropped.get("stale_output", 0) + 1
            return verdict
        self.pieces.append(
            commands_pb2.Command(
                stamped_at_ms=now_ms,
                append_output=commands_pb2.AppendOutput(
                    execution_id=chunk.execution_id,
                    token=chunk.token,
                    stream=int(chunk.stream),
                    data=chunk.data,
                ),
            )
        )
        self.bytes += len(chunk.data)
        return ""

    @property
    def full(self) -> bool:
        """Whether the pieces waiting are to be proposed now, without waiting for the flush timer."""
        return self.bytes >= OUTPUT_FLUSH_BYTES

    def take(self) -> list[commands_pb2.Command]:
        """The pieces waiting, in the order they arrived; none wait afterwards."""
        batch, self.pieces, self.bytes = self.pieces, [], 0
        return batch


__all__ = [
    "OUTPUT_FLUSH_BYTES",
    "OUTPUT_FLUSH_S",
    "SENDERS_PRUNE_S",
    "SENDER_GRACE_S",
    "Bucket",
    "OutputAdmission",
]
