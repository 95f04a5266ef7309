"""The gRPC side both clients share: channel options, the stubs of one channel, and reading a failed call.

A channel is sync (`Transport.channel`) or asyncio (`Transport.aio_channel`); the stubs and the status
reading are the same for both. What the status means (retry, redirect, which error) is `_routing`'s.
"""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]

from cronraft.bounds import CLIENT_MAX_RECEIVE_BYTES
from cronraft.client import _routing
from cronraft.proto.v1 import audit_pb2_grpc, cluster_pb2_grpc, scheduler_pb2_grpc

# Reconnect quickly after a node comes back (the gRPC default starts at 1 s and grows to 120 s). The
# largest message accepted: one task or execution always fits, pages are cut well below (cronraft.bounds).
# `min_reconnect_backoff_ms` is gRPC's minimum connect timeout (one attempt's TCP, TLS and HTTP/2
# handshakes), not a pause: at 100 ms an attempt to a node a long round trip away was abandoned before its
# handshakes completed (daemon.relay.core says how S18 found it); the calls' own deadlines bound the waits.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", CLIENT_MAX_RECEIVE_BYTES),
]


class Stubs:
    """The stubs of one channel (sync or asyncio), created once per server address."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.scheduler = scheduler_pb2_grpc.SchedulerStub(channel)
        self.cluster = cluster_pb2_grpc.ClusterStub(channel)
        self.audit = audit_pb2_grpc.AuditStub(channel)


def rpc_status(exc: BaseException) -> tuple[str, str, str | None]:
    """(code name, details, leader address from trailing metadata) of a failed gRPC call."""
    if isinstance(exc, grpc.Call | grpc.aio.AioRpcError):
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        return name, exc.details() or "", _routing.leader_from_metadata(exc.trailing_metadata())
    return "UNKNOWN", str(exc), None
