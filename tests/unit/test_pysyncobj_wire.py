"""raft.pysyncobj_adapter.transport: a Raft connection's encoding of a message (`wire_payload`) and its
send path, through pysyncobj's own TcpConnection on a socket pair, decoded by pysyncobj's own code.

S12 at seed 5 (2026-12-07): 1 MiB output chunks of random bytes reached the log as entries of 1.5 to
4.7 MB, and pysyncobj's encoding (pickle protocol 2, zlib level 3) of each took the leader's Raft thread
0.3 to 0.4 s of CPU per follower: the log advanced one entry every 1 to 2 s."""

from __future__ import annotations

import os
import random
import socket
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj.encryptor import getEncryptor
from pysyncobj.poller import PollPoller
from pysyncobj.tcp_connection import TcpConnection

from cronraft.raft.durability import Durability
from cronraft.raft.pysyncobj_adapter import transport
from cronraft.raft.pysyncobj_adapter.transport import transport_class, wire_payload

NODE = "10.0.0.2:50061"


def _command(payload: bytes) -> bytes:
    """An entry's command as pysyncobj journals it: the replicated call pickled with its protocol 2."""
    return bytes(pysyncobj_pickle.dumps((0, (payload,), {})))


def _append(*payloads: bytes) -> dict[str, Any]:
    entries = [(_command(p), 100 + i, 3) for i, p in enumerate(payloads)]
    return {"type": "append_entries", "term": 3, "commit_index": 99, "entries": entries, "prevLogIdx": 99}


def _text(size: int) -> bytes:
    """`size` bytes of log lines (a task's output as a worker streams it)."""
    rng = random.Random(5)
    words = ["".join(rng.choice("abcdefghijklmnop") for _ in range(rng.randint(2, 9))) for _ in range(2000)]
    lines = [
        f"2026-12-07T05:39:{i % 60:02d}Z INFO " + " ".join(rng.choices(words, k=12))
        for i in range(size // 60)
    ]
    return "\n".join(lines).encode().ljust(size, b".")[:size]


class _Pair:
    """A leader-side connection (sending through the adapter's transport) and a follower-side one (pysyncobj's
    own receive path), encrypted as a cluster with a secret is, on a socket pair with small buffers."""

    def __init__(self, buffer_bytes: int) -> None:
        a, b = socket.socketpair()
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            s.setblocking(False)
        self.received: list[Any] = []
        self.pollers = (PollPoller(), PollPoller())
        self.sender = TcpConnection(self.pollers[0], socket=a, timeout=60.0, recvBufferSize=1 << 20)
        self.receiver = TcpConnection(
            self.pollers[1],
            socket=b,
            timeout=60.0,
            recvBufferSize=1 << 20,
            onMessageReceived=self.received.append,
        )
        encryptor = getEncryptor("the cluster secret")
        self.sender.encryptor = self.receiver.encryptor = encryptor
        self.transport = object.__new__(
            transport_class(Durability(Path("/nonexistent"), Path("/nonexistent"), False))
        )
        self.transport._connections = {NODE: self.sender}
        self.transport._send_random_sleep_duration = 0

    def send(self, message: Any) -> None:
        assert self.transport.send(NODE, message)

    def poll(self, timeout_s: float = 20.0) -> list[Any]:
        """Run both nodes' pollers until a message arrived or `timeout_s` passed. Each poll waits up to
        1 ms for an event: a count of non-waiting rounds ran out on a loaded machine before the kernel
        delivered what was sent (seen once)."""
        deadline = time.monotonic() + timeout_s
        while not self.received and time.monotonic() < deadline:
            for poller in self.pollers:
                poller.poll(0.001)
        return self.received

    def close(self) -> None:
        self.sender.disconnect()
        self.receiver.disconnect()


@pytest.fixture
def pair() -> Iterator[_Pair]:
    made = _Pair(64 << 10)
    yield made
    made.close()


@pytest.mark.parametrize(
    "message",
    [
        _append(b"x" * 200, os.urandom(700)),
        _append(*(os.urandom(300) for _ in range(400))),
        _append(os.urandom(3 << 20)),
        _append(_text(3 << 20)),
        {"type": "next_node_idx", "next_node_idx": 7, "reset": False, "success": True, "cr_epoch": 4},
    ],
    ids=["small", "many-small", "random-3MiB", "text-3MiB", "answer"],
)
def test_pysyncobj_decodes_what_the_adapter_sends(pair: _Pair, message: Any) -> None:
    """Decoded by pysyncobj's own receive path (decrypt, zlib.decompress, pickle.loads): what an older
    release runs too."""
    pair.send(message)
    assert pair.poll() == [message]


def test_a_handshake_after_a_reconnection_still_decodes(pair: _Pair) -> None:
    """pysyncobj reuses a connection object across reconnections, so its handshake (an address, with the
    connection's random key as encryption adds it) goes through the lean connection's send too."""
    pair.send({"type": "cr_ping"})
    assert pair.poll() == [{"type": "cr_ping"}]
    pair.received.clear()
    pair.sender.sendRandKey = pair.receiver.recvRandKey = os.urandom(32)
    pair.sender.send("10.0.0.1:50061")
    assert pair.poll() == ["10.0.0.1:50061"]


def test_a_large_incompressible_entry_costs_the_sender_no_compression(
    pair: _Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flood's entry (3 MiB of random output, 4.7 MB as journaled): pysyncobj ran 7.9 MB through
    zlib at level 3 for it (0.5 s on the loaded test machine); the adapter samples 64 KiB at level 1
    and stores the rest. Counted in bytes handed to the compressor, not in time."""
    compressed: list[tuple[int, int]] = []
    real = zlib.compress

    def counting(data: bytes, level: int = -1) -> bytes:
        compressed.append((len(data), level))
        return real(data, level)

    monkeypatch.setattr(zlib, "compress", counting)
    message = _append(os.urandom(3 << 20))
    pair.send(message)
    assert sum(size for size, level in compressed if level != 0) <= 64 << 10
    monkeypatch.undo()
    assert pair.poll() == [message]


def test_what_compresses_is_still_compressed() -> None:
    """Small messages as pysyncobj compressed them (level 3); large text shrinks as before."""
    small = _append(*(os.urandom(16).hex().encode() * 4 for _ in range(100)))
    assert len(wire_payload(small)) <= len(zlib.compress(pysyncobj_pickle.dumps(small), 3))
    text = _append(_text(4 << 20))
    assert len(wire_payload(text)) < 0.5 * len(text["entries"][0][0])


def test_the_rest_of_a_large_message_goes_out_without_another_send(pair: _Pair) -> None:
    """A message larger than the socket buffers: what the kernel did not take at once goes out as the
    socket drains. pysyncobj's connection waited for the next send on that connection, and here none
    comes (a leader with nothing more to say to that follower until its next heartbeat)."""
    pair.poll(0.005)  # a write event finds nothing to send: pysyncobj stops asking for write events
    message = _append(os.urandom(1 << 20))
    pair.send(message)
    assert pair.poll() == [message]


def test_the_transport_sends_through_the_lean_connection(pair: _Pair) -> None:
    pair.send({"type": "cr_ping"})
    assert type(pair.sender) is transport._LeanConnection
