"""Generated and mutated requests for every RPC of a live node, and garbage for its ports (test_fuzz_api).

`message_strategy(descriptor)` builds a hypothesis strategy for any protobuf message from its descriptor:
every field, oneofs, maps and repeated fields, nested messages to a bounded depth, with scalars drawn
from boundary values and a pool of "interesting" strings (ids of stored tasks and executions, cron
expressions, zones, URLs, queue names) so that requests reach past the first check. `Caller` sends a
message (or raw bytes) to one RPC of one node over a plain channel and returns the status code and
details; streaming RPCs (ImportTasks, Connect) get a few messages. `garbage_*` write bytes on raw TCP
connections: random bytes, an HTTP/2 preface followed by random frames (some claiming huge lengths), and
connections opened and left silent.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from hypothesis import strategies as st

from cronraft.proto.v1 import cluster_pb2, scheduler_pb2, worker_pb2

FD = descriptor.FieldDescriptor
SERVICES = (
    scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"],
    cluster_pb2.DESCRIPTOR.services_by_name["Cluster"],
    worker_pb2.DESCRIPTOR.services_by_name["WorkerGateway"],
)
MAX_DEPTH = 5
# A boundary value of each integer width.
_INT_EDGES = [0, 1, -1, 2, 7, 100, 1000, 1001, 2**31 - 1, -(2**31), 2**53, 2**63 - 1, -(2**63)]
_NOW_MS = int(time.time() * 1000)
_TIMES = [_NOW_MS, _NOW_MS - 3_600_000, _NOW_MS + 60_000, 253_402_300_799_999, 253_402_300_800_000]

# Strings worth trying in any string field; `ids` is extended with the ids of stored objects.
INTERESTING = [
    "",
    "default",
    "* * * * *",
    "*/5 * * * * *",
    "0 0 29 2 *",
    "@daily",
    "UTC",
    "Europe/Paris",
    "Nowhere/Else",
    "https://hooks.example.invalid/x",
    "http://",
    "true",
    "x" * 300,
    "9" * 30,
    "-1",
    "\x00",
    "é\u200b\U0001f600",
    "{}",
    "[" * 100,
    "2026-12-25",
    "12:00",
    "../../etc/passwd",
]


def _scalar(field: descriptor.FieldDescriptor, pool: list[str]) -> st.SearchStrategy[Any]:
    t = field.type
    if t in (FD.TYPE_STRING,):
        return st.one_of(st.sampled_from(pool), st.text(max_size=30))
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.floats(allow_nan=True, allow_infinity=True, width=64 if t == FD.TYPE_DOUBLE else 32)
    if t == FD.TYPE_ENUM:
        return st.integers(-2, 20)  # unknown values too (proto3 enums are open)
    bits = (
        64 if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64, FD.TYPE_UINT64, FD.TYPE_FIXED64) else 32
    )
    unsigned = t in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    edges = [v for v in [*_INT_EDGES, *(_TIMES if bits == 64 else [])] if lo <= v <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def message_strategy(
    desc: descriptor.Descriptor, pool: list[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(desc)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for f in desc.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            value = (
                message_strategy(value_f.message_type, pool, depth + 1)
                if value_f.message_type is not None
                else _scalar(value_f, pool)
            )
            fields[f.name] = st.dictionaries(_scalar(key_f, pool), value, max_size=4)
            continue
        one = (
            message_strategy(f.message_type, pool, depth + 1)
            if f.message_type is not None
            else _scalar(f, pool)
        )
        fields[f.name] = st.lists(one, max_size=4) if f.is_repeated else one

    def build(values: dict[str, Any]) -> Message:
        msg = cls()
        for name, value in values.items():
            field = desc.fields_by_name[name]
            target = getattr(msg, name) if field.is_repeated else None
            try:
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    for k, v in value.items():
                        if isinstance(v, Message):
                            target[k].CopyFrom(v)  # type: ignore[index]
                        else:
                            target[k] = v  # type: ignore[index]
                elif target is not None:
                    if field.message_type is not None:
                        for v in value:
                            target.add().CopyFrom(v)
                    else:
                        target.extend(value)
                elif field.message_type is not None:
                    getattr(msg, name).CopyFrom(value)
                else:
                    setattr(msg, name, value)
            except (ValueError, TypeError):
                pass  # e.g. a lone surrogate in a string field: leave the field unset
        return msg

    return st.fixed_dictionaries({}, optional=fields).map(build)


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """A serialized message, damaged: bytes flipped, cut, repeated or spliced with random bytes."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(5)
        if op == 0 and buf:
            buf[rnd.randrange(len(buf))] ^= 1 << rnd.randrange(8)
        elif op == 1 and buf:
            del buf[rnd.randrange(len(buf)) :]
        elif op == 2 and buf:
            i, j = sorted(rnd.randrange(len(buf) + 1) for _ in range(2))
            buf[j:j] = buf[i:j] * rnd.randint(1, 8)
        elif op == 3:
            i = rnd.randrange(len(buf) + 1)
            buf[i:i] = rnd.randbytes(rnd.randint(1, 32))
        else:  # a field with a huge length prefix
            buf += bytes([0x0A]) + bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]) + rnd.randbytes(8)
    return bytes(buf)


class Caller:
    """Sends requests to the RPCs of one node and returns (status code, details)."""

    def __init__(self, address: str, timeout_s: float = 5.0) -> None:
        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.channel.close()

    def call(
        self, method: descriptor.MethodDescriptor, request: Message | bytes
    ) -> tuple[grpc.StatusCode, str]:
        path = f"/{method.containing_service.full_name}/{method.name}"
        out_cls = message_factory.GetMessageClass(method.output_type)

        def serialize(m: Message | bytes) -> bytes:
            return m if isinstance(m, bytes) else m.SerializeToString()

        try:
            if method.client_streaming and method.server_streaming:
                stream = self.channel.stream_stream(path, serialize, out_cls.FromString)
                replies = stream(iter(self._stream_of(request)), timeout=self.timeout_s)
                for _ in zip(range(3), replies, strict=False):
                    pass
                replies.cancel()
            elif method.client_streaming:
                call = self.channel.stream_unary(path, serialize, out_cls.FromString)
                call(iter(self._stream_of(request)), timeout=self.timeout_s)
            elif method.server_streaming:  # e.g. Cluster.Backup: take a few replies, then hang up
                replies = self.channel.unary_stream(path, serialize, out_cls.FromString)(
                    request, timeout=self.timeout_s
                )
                for _ in zip(range(3), replies, strict=False):
                    pass
                replies.cancel()
            else:
                unary = self.channel.unary_unary(path, serialize, out_cls.FromString)
                unary(request, timeout=self.timeout_s)
        except grpc.RpcError as e:
            return e.code(), e.details() or ""  # type: ignore[attr-defined]
        return grpc.StatusCode.OK, ""

    @staticmethod
    def _stream_of(request: Message | bytes) -> list[Message | bytes]:
        return [request, request] if not isinstance(request, bytes) else [request]


def methods() -> Iterator[descriptor.MethodDescriptor]:
    for service in SERVICES:
        yield from service.methods


# ------------------------------------------------------------------------------------------ raw bytes

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _send(address: str, chunks: list[bytes], linger_s: float = 0.05) -> None:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            for chunk in chunks:
                s.sendall(chunk)
            time.sleep(linger_s)
    except OSError:
        pass  # the peer may close on us: that is an answer too


def garbage_http2(address: str, rnd: random.Random, rounds: int) -> None:
    """Random bytes, then an HTTP/2 preface with random frames (random types, flags, streams, and
    lengths up to 16 MiB claimed), then a valid-looking HEADERS frame cut short."""
    for _ in range(rounds):
        _send(address, [rnd.randbytes(rnd.randint(1, 2048))])
        frames = [_PREFACE]
        for _ in range(rnd.randint(1, 8)):
            length = rnd.choice([0, 1, 9, 100, 16_384, 16_777_215])
            header = struct.pack(">I", length)[1:] + bytes([rnd.randrange(12), rnd.randrange(256)])
            frames.append(
                header + struct.pack(">I", rnd.randrange(2**31)) + rnd.randbytes(rnd.randint(0, 256))
            )
        _send(address, frames)
    # A SETTINGS frame, then HEADERS for stream 1 that never end.
    _send(address, [_PREFACE, bytes.fromhex("000000040000000000"), bytes.fromhex("0000ff01040000000182")])


def garbage_raft(address: str, rnd: random.Random, rounds: int) -> None:
    """pysyncobj frames: a 4-byte length and bytes that are not a compressed pickle (or no length)."""
    for _ in range(rounds):
        body = rnd.randbytes(rnd.randint(0, 512))
        length = rnd.choice([len(body), 0, -1, 2**31 - 1, len(body) + 100])
        _send(address, [struct.pack("i", length) + body])
        _send(address, [rnd.randbytes(rnd.randint(1, 1024))])


def silent_connections(address: str, n: int) -> Callable[[], None]:
    """Open `n` TCP connections that send nothing; returns what closes them."""
    host, port = address.rsplit(":", 1)
    socks = []
    for _ in range(n):
        try:
            socks.append(socket.create_connection((host, int(port)), timeout=2))
        except OSError:
            break

    def close() -> None:
        for s in socks:
            s.close()

    return close


__all__ = [
    "INTERESTING",
    "Caller",
    "garbage_http2",
    "garbage_raft",
    "message_strategy",
    "methods",
    "mutate",
    "silent_connections",
]
