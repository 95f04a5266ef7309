"""Resource exhaustion against a running cluster (scenario S12): the hostile clients of issue 11.

Each attack runs from the harness process for a bounded time and cleans up after itself:
- `connection_flood`: thousands of idle TCP connections to a node's gRPC port, plus idle client
  streams (an ImportTasks stream that never sends a batch);
- `slow_worker`: a worker stream that says Hello and then never reads nor heartbeats (a client whose
  socket fills up); it serves a queue of its own, so it holds nothing of the workload's;
- `output_flood`: a worker stream that sends output chunks of the largest allowed size as fast as the
  node takes them, for executions it does not hold (refused or dropped by the node: never stored);
- `junk`: garbage bytes and an HTTP/2 preface followed by garbage on fresh connections, and a request
  larger than the node accepts;
- `fd_limit`: the node's open-file limit lowered to what it uses now plus a few (prlimit), while the
  flood connects, then restored (root only: another process's limits).
Each returns a short note of what it did, for the run's meta.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import time

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]

from cronraft.proto.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc

OUTPUT_CHUNK_BYTES = 1 << 20  # the largest chunk a worker may send (cronraft.bounds)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _allow_files(n: int) -> None:
    """Raise this process's soft open-file limit towards `n` (as far as the hard limit allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = n if hard == resource.RLIM_INFINITY else min(n, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def connection_flood(address: str, connections: int, streams: int, hold_s: float) -> str:
    """Open `connections` idle TCP connections and `streams` idle ImportTasks streams; hold; close."""
    host, port = _host_port(address)
    _allow_files(connections + 256)
    socks: list[socket.socket] = []
    refused = 0
    for _ in range(connections):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect_ex((host, port))
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    channel = grpc.aio.insecure_channel(address)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    calls = []
    for _ in range(streams):
        call = stub.ImportTasks()  # a client stream that never sends a batch nor closes
        calls.append(call)
    try:
        await asyncio.sleep(hold_s)
    finally:
        for call in calls:
            call.cancel()
        await channel.close()
        for s in socks:
            s.close()
    return f"{len(socks)} idle connections ({refused} refused locally), {streams} idle ImportTasks streams"


async def slow_worker(address: str, hold_s: float) -> str:
    """A worker that connects, says Hello, then never reads or writes again."""
    channel = grpc.aio.insecure_channel(address)
    stub = worker_pb2_grpc.WorkerGatewayStub(channel)
    call = stub.Connect()
    hello = worker_pb2.Hello(worker_id="s12-sloth", capacity=1000, queues=["s12-sloth"])
    try:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call.write(worker_pb2.WorkerMessage(hello=hello))
        await asyncio.sleep(hold_s)
    finally:
        call.cancel()
        await channel.close()
    return "a worker stream that never reads"


async def output_flood(address: str, duration_s: float) -> str:
    """A worker sending 1 MiB output chunks for executions it does not hold, as fast as it can."""
    channel = grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 8 << 20)])
    stub = worker_pb2_grpc.WorkerGatewayStub(channel)
    call = stub.Connect()
    sent = 0
    data = os.urandom(OUTPUT_CHUNK_BYTES)
    hello = worker_pb2.Hello(worker_id="s12-flood", capacity=1, queues=["s12-flood"])
    deadline = time.monotonic() + duration_s
    ended = ""
    try:
        await call.write(worker_pb2.WorkerMessage(hello=hello))
        while time.monotonic() < deadline:
            chunk = worker_pb2.OutputChunk(
                execution_id=f"s12-none-{sent % 64}",
                token=common_pb2.FencingToken(term=1, index=1),
                stream=worker_pb2.STDOUT,
                data=data,
            )
            await asyncio.wait_for(call.write(worker_pb2.WorkerMessage(output=chunk)), timeout=5)
            sent += 1
    except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError) as exc:
        ended = f"; the node ended or stalled it: {type(exc).__name__}"
    finally:
        call.cancel()
        await channel.close()
    return f"{sent} output chunks of 1 MiB for executions it does not hold{ended}"


async def junk(address: str, rounds: int) -> str:
    """Garbage on fresh connections, and one request larger than the node accepts."""
    host, port = _host_port(address)
    for i in range(rounds):
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)
            prefix = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" if i % 2 else b""
            writer.write(prefix + os.urandom(4096))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.drain(), timeout=2)
                await asyncio.wait_for(reader.read(1024), timeout=0.2)
            writer.close()
    outcome = "accepted"
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        stub = scheduler_pb2_grpc.SchedulerStub(ch)
        spec = common_pb2.TaskSpec(name="x" * (16 << 20))
        try:
            await stub.CreateTask(scheduler_pb2.CreateTaskRequest(spec=spec), timeout=10)
        except grpc.aio.AioRpcError as exc:
            outcome = exc.code().name
    return f"{rounds} garbage connections; a 16 MiB request: {outcome}"


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def fd_limit(pid: int, address: str, hold_s: float, connections: int) -> str:
    """Lower the node's open-file limit to its use plus a few while connections pour in; restore it."""
    if os.geteuid() != 0:
        return "fd limit skipped: not root"
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    used = open_files(pid)
    tight = used + 16
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (tight, old[1]))
    try:
        note = await connection_flood(address, connections, 0, hold_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
    return f"open files limited to {tight} (it used {used}) for {hold_s:.0f} s during {note}"
