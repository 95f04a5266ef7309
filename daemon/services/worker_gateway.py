"""The WorkerGateway service: one `Connect` stream per worker, attached to this term's leader runner
(daemon.leader_runner), which hands out leases and takes heartbeats, results and output. On a follower
the stream is relayed to the leader (daemon.relay), or answered with a NotLeader naming the leader when
the worker says it can reach the leader itself (Hello.direct; not where `preferred_leader` names the
leaders' region) or with `[cluster] relay = false`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from cronraft import errors
from cronraft.daemon.relay import relay_worker
from cronraft.daemon.security.authz import current_principal, worker_namespaces
from cronraft.daemon.wire import (
    bounded_results,
    hello_problem,
    worker_identity_problem,
    worker_problem,
)
from cronraft.proto.v1 import worker_pb2, worker_pb2_grpc

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

log = structlog.get_logger("cronraft.api")

# A worker that reaches a node while no leader is known (an election is on) is held this long, and told
# the new leader the moment this node learns it, instead of being sent away to back off and retry. Below
# the worker's Hello timeout (3 s) so that the answer always arrives.
LEADERLESS_HOLD_S = 2.0
LEADERLESS_POLL_S = 0.02
# Taken from its class once: looked up on a message, a method costs a look-up of a field of that name first
# (upb), and this runs for every message a worker sends.
_kind_of = worker_pb2.WorkerMessage.WhichOneof


class WorkerGatewayServicer(worker_pb2_grpc.WorkerGatewayServicer):
    def __init__(self, node: Node) -> None:
        self.node = node

    async def Connect(
        self,
        request_iterator: AsyncIterator[worker_pb2.WorkerMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[worker_pb2.GatewayMessage]:
        try:
            first = await request_iterator.__anext__()
        except StopAsyncIteration:
            return
        if first.WhichOneof("kind") != "hello" or not first.hello.worker_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "hello: the first message must be a Hello with a worker_id"
            )
        problem = hello_problem(first.hello)
        if problem:
            log.warning("worker refused", problem=problem)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        problem = worker_identity_problem(first.hello, current_principal())
        if problem:
            log.warning("worker refused", problem=problem, peer=context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, problem)
        loop = asyncio.get_running_loop()
        hold_until = loop.time() + LEADERLESS_HOLD_S
        relay = self.node.relay
        while True:
            try:
                runner = self.node.leader_runner()
                break
            except errors.NotLeader as e:
                if (
                    e.leader_address
                    and e.leader_address in first.hello.direct
                    and not self.node.config.cluster.preferred_leader
                ):
                    # The worker can reach the leader itself: sent there, not relayed (one hop fewer; a
                    # relayed stream cost this node ~0.1 ms of CPU per fire in W5). Not in a cluster that
                    # names its leaders' region (preferred_leader): there workers talk to a node of their
                    # own region, which relays them (docs/multi-region.md).
                    yield worker_pb2.GatewayMessage(
                        not_leader=worker_pb2.NotLeader(leader_address=e.leader_address)
                    )
                    return
                if (
                    e.leader_address
                    and relay.enabled
                    and relay.relays(context.invocation_metadata())
                    and relay.target()
                ):
                    # A follower relays the stream to the leader (daemon.relay) instead of sending the
                    # worker away: a worker needs only a node it can reach.
                    async for relayed in relay_worker(relay, first, request_iterator, context):
                        yield relayed
                    return
                if e.leader_address or loop.time() >= hold_until:
                    yield worker_pb2.GatewayMessage(
                        not_leader=worker_pb2.NotLeader(leader_address=e.leader_address or "")
                    )
                    return
            await asyncio.sleep(LEADERLESS_POLL_S)  # the Raft thread changes the leader; poll it briefly
        principal = current_principal()
        # The leader leases it only executions of the namespaces where its credential holds `worker`
        # (None: every one): a namespace's payloads never reach another namespace's workers.
        namespaces = worker_namespaces(principal)
        session = runner.attach(first.hello, bound=principal.source != "none", namespaces=namespaces)
        log.info(
            "worker connected",
            worker=first.hello.worker_id,
            capacity=first.hello.capacity,
            **({} if namespaces is None else {"namespaces": sorted(n or "default" for n in namespaces)}),
        )
        refused: list[str] = []  # why the stream was ended, if a message broke a bound

        async def read() -> None:
            try:
                async for msg in request_iterator:
                    problem = worker_problem(msg)
                    if problem:
                        refused.append(problem)
                        log.warning("worker message refused", worker=session.worker_id, problem=problem)
                        break
                    kind = _kind_of(msg, "kind")
                    if kind == "heartbeat":
                        runner.on_heartbeat(session, msg.heartbeat)
                    elif kind == "results":
                        runner.on_results(session, bounded_results(msg.results.results))
                    elif kind == "output":
                        # Paced by the stream's and the node's read budgets (daemon.leader.output_admission).
                        pause = runner.on_output(session, msg.output)
                        if pause > 0:  # read nothing for a while: flow control then holds the sender
                            await asyncio.sleep(pause)
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                pass
            finally:
                runner.detach(session)

        reader = asyncio.create_task(read())
        try:
            while True:
                out = await session.queue.get()
                if out is None:
                    break
                runner.restamp(out, session)
                yield out
        finally:
            reader.cancel()
            runner.detach(session)
            log.info("worker disconnected", worker=session.worker_id)
        if refused:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refused[0])
        if session.refusal:  # a forged message (daemon.leader.Refusal)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, session.refusal)


__all__ = ["LEADERLESS_HOLD_S", "LEADERLESS_POLL_S", "WorkerGatewayServicer"]
