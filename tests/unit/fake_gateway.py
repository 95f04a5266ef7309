"""A scripted, in-process leader (a fake `WorkerGateway` on a loopback port) and helpers to drive a
`Worker` against it; shared by test_worker.py and test_payloads.py.

Synchronisation is by events and queues fed by the fake; every wait is bounded by `WAIT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from cronraft.client._policy import policy_from_dict
from cronraft.client.worker import Worker, WorkerConfig
from cronraft.proto.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.support.clock import FakeClock

WAIT_S = 10.0


async def get(queue: asyncio.Queue[Any], timeout: float = WAIT_S) -> Any:
    return await asyncio.wait_for(queue.get(), timeout)


def worker_clock() -> FakeClock:
    """The worker's clock for these tests: 1000 s monotonic, the wall clock at 1,000,000 ms; tests move
    it with `advance_to(seconds)` (both clocks move, as real time passing does)."""
    return FakeClock(wall=1_000_000, mono=1_000_000)


def make_lease(
    execution_id: str,
    *,
    argv: list[str] | None = None,
    script: str | None = None,
    token: tuple[int, int] = (1, 1),
    timeout_ms: int = 0,
    lease_ttl_ms: int = 0,
    env: dict[str, str] | None = None,
    payload: common_pb2.Payload | None = None,
) -> worker_pb2.Lease:
    if payload is None:
        payload = common_pb2.Payload()
        if script is not None:
            payload.shell.script = script
        else:
            payload.command.argv.extend(argv or [])
            payload.command.env.update(env or {})
    return worker_pb2.Lease(
        execution_id=execution_id,
        task_id="task-1",
        task_name="nightly-report",
        nominal_time_ms=1_700_000_000_000,
        attempt=1,
        token=common_pb2.FencingToken(term=token[0], index=token[1]),
        payload=payload,
        timeout_ms=timeout_ms,
        lease_ttl_ms=lease_ttl_ms,
        guarantee=common_pb2.EXACTLY_ONCE,
    )


def offers(*leases: worker_pb2.Lease) -> worker_pb2.GatewayMessage:
    return worker_pb2.GatewayMessage(leases=worker_pb2.LeaseOffers(leases=list(leases)))


class FakeLeader(worker_pb2_grpc.WorkerGatewayServicer):
    """A scripted leader: records what the worker sends, answers what the test tells it to."""

    def __init__(
        self,
        *,
        heartbeat_interval_ms: int = 100,
        lease_ttl_ms: int = 5000,
        not_leader: str | None = None,
        unavailable_leader: str | None = None,
    ) -> None:
        self.welcome = worker_pb2.Welcome(
            leader_id="fake", heartbeat_interval_ms=heartbeat_interval_ms, lease_ttl_ms=lease_ttl_ms
        )
        self.not_leader = not_leader
        self.unavailable_leader = unavailable_leader
        self.answer_heartbeats = True
        self.list_finished = False  # ask for complete listings in every HeartbeatAck
        self.ack_results = True
        self.revoke: set[str] = set()
        self.first_messages: asyncio.Queue[worker_pb2.WorkerMessage] = asyncio.Queue()
        self.heartbeats: asyncio.Queue[worker_pb2.Heartbeat] = asyncio.Queue()
        self.results: asyncio.Queue[common_pb2.AttemptResult] = asyncio.Queue()
        self.outputs: list[worker_pb2.OutputChunk] = []
        self.streams: asyncio.Queue[asyncio.Queue[worker_pb2.GatewayMessage]] = asyncio.Queue()
        self.server: grpc.aio.Server | None = None
        self.address = ""

    async def start(self) -> str:
        self.server = grpc.aio.server()
        worker_pb2_grpc.add_WorkerGatewayServicer_to_server(self, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)

    async def Connect(  # type: ignore[override]  # the coroutine form of a grpc.aio stream handler
        self, request_iterator: Any, context: Any
    ) -> None:
        first = await context.read()
        self.first_messages.put_nowait(first)
        if self.not_leader is not None:
            await context.write(
                worker_pb2.GatewayMessage(not_leader=worker_pb2.NotLeader(leader_address=self.not_leader))
            )
            return
        if self.unavailable_leader is not None:
            context.set_trailing_metadata((("cronraft-leader", self.unavailable_leader),))
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not the leader")
        await context.write(worker_pb2.GatewayMessage(welcome=self.welcome))
        outbound: asyncio.Queue[worker_pb2.GatewayMessage] = asyncio.Queue()
        self.streams.put_nowait(outbound)

        async def pump() -> None:
            while True:
                await context.write(await outbound.get())

        writer = asyncio.create_task(pump())
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    return
                kind = message.WhichOneof("kind")
                if kind == "heartbeat":
                    self.heartbeats.put_nowait(message.heartbeat)
                    if self.answer_heartbeats:
                        ids = [ref.execution_id for ref in message.heartbeat.leases]
                        ack = worker_pb2.HeartbeatAck(
                            renewed=[i for i in ids if i not in self.revoke],
                            revoked=[i for i in ids if i in self.revoke],
                            list_finished=self.list_finished,
                        )
                        outbound.put_nowait(worker_pb2.GatewayMessage(heartbeat_ack=ack))
                elif kind == "results":
                    for result in message.results.results:
                        self.results.put_nowait(result)
                    if self.ack_results:
                        ids = [r.execution_id for r in message.results.results]
                        acks = worker_pb2.ResultAcks(execution_ids=ids)
                        outbound.put_nowait(worker_pb2.GatewayMessage(acks=acks))
                elif kind == "output":
                    self.outputs.append(message.output)
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def result_for(self, execution_id: str) -> common_pb2.AttemptResult:
        while True:
            result: common_pb2.AttemptResult = await get(self.results)
            if result.execution_id == execution_id:
                return result


@contextlib.asynccontextmanager
async def fake_leader(**kwargs: Any) -> AsyncIterator[FakeLeader]:
    leader = FakeLeader(**kwargs)
    await leader.start()
    try:
        yield leader
    finally:
        await leader.stop()


def worker_config(servers: list[str], outbox_dir: Path, **overrides: Any) -> WorkerConfig:
    settings: dict[str, Any] = {
        "servers": tuple(servers),
        "worker_id": "w-test",
        "outbox_dir": outbox_dir,
        "capacity": 3,
        "queues": ("default", "etl"),
        "labels": {"zone": "a"},
        "kill_grace_s": 0.5,
        "shutdown_grace_s": 0.0,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.2,
        "output_flush_interval_s": 0.05,
        "fence_check_interval_s": 0.01,
        # These tests run shell payloads and HTTP servers on loopback: allowed explicitly (the default
        # policy refuses both; tests/unit/test_policy.py tests the defaults).
        "policy": policy_from_dict({}, allow_shell=True, allow_http_loopback=True),
    }
    settings.update(overrides)
    return WorkerConfig(**settings)


@contextlib.asynccontextmanager
async def running_worker(config: WorkerConfig, **kwargs: Any) -> AsyncIterator[Worker]:
    worker = Worker(config, **kwargs)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop(immediate=True)
        await asyncio.wait_for(task, WAIT_S)


async def connected_stream(leader: FakeLeader) -> asyncio.Queue[worker_pb2.GatewayMessage]:
    stream: asyncio.Queue[worker_pb2.GatewayMessage] = await get(leader.streams)
    return stream


async def heartbeat_listing(leader: FakeLeader, execution_ids: set[str]) -> worker_pb2.Heartbeat:
    while True:
        heartbeat: worker_pb2.Heartbeat = await get(leader.heartbeats)
        if {ref.execution_id for ref in heartbeat.leases} == execution_ids:
            return heartbeat
