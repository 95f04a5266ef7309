"""Output admission: which pieces of a worker's live output the leader takes into the log (S12, issue 13).

A piece is taken only if its execution's lease is the sender's (the token alone is not enough: issue
13); with authentication off a worker id is only a claim, and the token alone is checked, so that what
the state machine would refuse never reaches the log. The pieces taken wait here until the leader runner
(daemon.leader_runner) proposes them together: logs ride the log like everything else, but never one
entry per line. Pure: the runner owns the flush timer and the proposals.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cronraft.proto.v1 import commands_pb2, worker_pb2
from cronraft.raft.codec import token_tuple

if TYPE_CHECKING:
    from cronraft.daemon.leader.core import LeaderCore

# The pieces taken are proposed together every OUTPUT_FLUSH_S, or at once when they reach OUTPUT_FLUSH_BYTES.
OUTPUT_FLUSH_S = 0.3
OUTPUT_FLUSH_BYTES = 1 << 20


class OutputAdmission:
    """The output one leader (one term) takes from its worker streams, waiting to be proposed."""

    def __init__(self, core: LeaderCore, dropped: dict[str, int]) -> None:
        self._core = core
        # The runner's count of dropped worker messages, by kind (LeaderRunner.dropped): "stale_output".
        self._dropped = dropped
        self.pieces: list[commands_pb2.Command] = []  # AppendOutput commands not proposed yet
        self.bytes = 0  # their output bytes

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


__all__ = ["OUTPUT_FLUSH_BYTES", "OUTPUT_FLUSH_S", "OutputAdmission"]
