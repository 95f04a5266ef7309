"""Simulated workers for the concurrency workload: many `WorkerGateway.Connect` streams from one process.

Each agent speaks the worker protocol (proto/v1/worker.proto) as `schedworker` does, minus running
anything: Hello (capacity 1, a queue no task uses), wait for the Welcome, then one Heartbeat (no leases)
per idle heartbeat interval the Welcome (then each HeartbeatAck) gives, reading and dropping what the
leader sends (heartbeat acks).
Agents share a few gRPC channels (HTTP/2 multiplexes the streams). A NotLeader or a failed stream is
counted, not retried. SIGTERM (or --seconds) ends every stream; the process then prints one JSON line:
agents welcomed, heartbeats sent, failures.

Usage: python bench/sim_agents.py --server HOST:PORT --agents 2500 --seconds 60 [--channels 25]
       [--prefix sim-1] [--ramp-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc

from cronraft.proto.v1 import worker_pb2, worker_pb2_grpc

IDLE_QUEUE = "bench-sim-idle"


class Stats:
    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.welcomed = 0
        self.heartbeats = 0
        self.received = 0
        self.failed = 0
        self.not_leader = 0


async def agent(
    stub: worker_pb2_grpc.WorkerGatewayAsyncStub, worker_id: str, until: float, stats: Stats
) -> None:
    call = stub.Connect()
    try:
        hello = worker_pb2.Hello(worker_id=worker_id, capacity=1, queues=[IDLE_QUEUE])
        await call.write(worker_pb2.WorkerMessage(hello=hello))
        first = await call.read()
        if not isinstance(first, worker_pb2.GatewayMessage) or first.WhichOneof("kind") != "welcome":
            stats.not_leader += 1
            return
        stats.welcomed += 1
        # An agent holds nothing: it heartbeats at the idle interval, as schedworker does.
        welcome = first.welcome
        interval = [max(0.05, (welcome.idle_heartbeat_interval_ms or welcome.heartbeat_interval_ms) / 1000)]

        async def reader() -> None:
            try:
                while True:
                    msg = await call.read()
                    if not isinstance(msg, worker_pb2.GatewayMessage):
                        return
                    stats.received += 1
                    idle_ms = msg.heartbeat_ack.idle_heartbeat_interval_ms
                    if msg.WhichOneof("kind") == "heartbeat_ack" and idle_ms:
                        interval[0] = idle_ms / 1000
            except grpc.aio.AioRpcError:
                stats.failed += 1  # the stream broke: the writer stops (read_task is done)

        read_task = asyncio.create_task(reader())
        await asyncio.sleep(random.uniform(0, interval[0]))  # spread the heartbeats over the interval
        beat = worker_pb2.WorkerMessage(heartbeat=worker_pb2.Heartbeat())
        while time.monotonic() < until and not read_task.done() and not stats.stop.is_set():
            await call.write(beat)
            stats.heartbeats += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stats.stop.wait(), interval[0])
        read_task.cancel()
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        stats.failed += 1
    finally:
        call.cancel()


async def amain(args: argparse.Namespace) -> None:
    stats = Stats()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stats.stop.set)
    until = time.monotonic() + args.seconds
    channels = [grpc.aio.insecure_channel(args.server) for _ in range(args.channels)]
    stubs = [worker_pb2_grpc.WorkerGatewayStub(c) for c in channels]
    tasks = []
    for i in range(args.agents):
        if stats.stop.is_set():
            break
        stub = stubs[i % len(stubs)]
        tasks.append(asyncio.create_task(agent(stub, f"{args.prefix}-{i}", until, stats)))
        if args.ramp_s > 0:
            await asyncio.sleep(args.ramp_s / args.agents)
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()
    print(
        json.dumps(
            {
                "agents": args.agents,
                "welcomed": stats.welcomed,
                "heartbeats": stats.heartbeats,
                "received": stats.received,
                "failed": stats.failed,
                "not_leader": stats.not_leader,
            }
        ),
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description="simulated worker streams")
    p.add_argument("--server", required=True, help="the leader's gRPC address")
    p.add_argument("--agents", type=int, default=2_500)
    p.add_argument("--seconds", type=float, default=60.0, help="heartbeat until then, then disconnect")
    p.add_argument("--channels", type=int, default=25, help="gRPC channels the agents share")
    p.add_argument("--prefix", default="sim", help="worker id prefix (unique per process)")
    p.add_argument("--ramp-s", type=float, default=10.0, help="spread the connections over this long")
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()
