"""A connected worker's stream as the leader runner sees it (`LeaderRunner.attach`): what the gateway
(daemon/services/worker_gateway.py) writes to the stream, and why the leader ended it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from cronraft.daemon.wire import ByteBudget
from cronraft.proto.v1 import worker_pb2


@dataclass
class WorkerSession:
    """One connected worker stream: the gateway reads `queue` and writes it to the stream."""

    worker_id: str
    queue: asyncio.Queue[worker_pb2.GatewayMessage | None] = field(default_factory=asyncio.Queue)
    closed: bool = False
    refusal: str = ""  # why the leader ended this stream (a forged message): PERMISSION_DENIED
    # Its worker id is its authenticated principal's (daemon.wire.worker_identity_problem): it may report
    # only on its own leases. False with authentication off, where an id is only a claim (as before).
    bound: bool = True
    output_budget: ByteBudget | None = None  # its live output's read budget (OutputAdmission.read_pause)

    def send(self, msg: worker_pb2.GatewayMessage | None) -> None:
        if not self.closed:
            self.queue.put_nowait(msg)
            if msg is None:
                self.closed = True

    def refuse(self, problem: str) -> None:
        """End the stream with PERMISSION_DENIED saying `problem` (the gateway reads `refusal`)."""
        if not self.refusal:
            self.refusal = problem
        self.send(None)


__all__ = ["WorkerSession"]
