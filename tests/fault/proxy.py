"""Loopback TCP proxies that inject network faults without root (the fault harness's "proxy" mode).

etcd's robustness tests do the same with a per-member proxy. One asyncio loop in a harness thread runs
every listener. A listener knows the *server* it fronts (a node) and how to name its *client*: a fixed
name (the per-worker proxies) or a map from the connection's source address to a node (the Raft
proxies: each node's outgoing Raft connections leave from its own 127.0.0.x, see tests/fault/_shim.py).
Connections from anything else (the harness itself) are never faulted.

A fault is a rule on the pair (client, server):
- blocked (isolated end or cut link): bytes are swallowed, not forwarded, and the connection is held open
  (a blackhole: the endpoints notice only through their own timeouts). New connections are accepted
  and held the same way. On heal every held connection is reset, so that the endpoints reconnect
  (forwarding the rest of a stream whose middle was swallowed would corrupt it).
- loss P %: each chunk read resets the connection with probability P/100 (TCP hides packet loss inside
  a stream, so loss shows up as broken connections).
- delay D +- J ms: each chunk is forwarded after N(D, J) ms, never before an earlier chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 65536


@dataclass
class Rules:
    """The network faults in force, by process name. Mutated only on the proxy loop."""

    isolated: set[str] = field(default_factory=set)
    cuts: set[frozenset[str]] = field(default_factory=set)
    loss: dict[str, int] = field(default_factory=dict)
    delay: dict[str, tuple[int, int]] = field(default_factory=dict)

    def blocked(self, a: str | None, b: str) -> bool:
        if a is None:
            return False
        return a in self.isolated or b in self.isolated or frozenset((a, b)) in self.cuts

    def loss_of(self, a: str | None, b: str) -> int:
        if a is None:
            return 0
        return max(self.loss.get(a, 0), self.loss.get(b, 0))

    def delay_of(self, a: str | None, b: str) -> tuple[float, float]:
        """(mean, jitter) in seconds: the delays of both ends add up, as for two hops."""
        if a is None:
            return 0.0, 0.0
        da, ja = self.delay.get(a, (0, 0))
        db, jb = self.delay.get(b, (0, 0))
        return (da + db) / 1000, (ja + jb) / 1000


class _Link:
    def __init__(
        self,
        net: ProxyNet,
        client: str | None,
        server: str,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
    ) -> None:
        self.net = net
        self.client = client
        self.server = server
        self.creader = creader
        self.cwriter = cwriter
        self.swriter: asyncio.StreamWriter | None = None
        self.held = False  # swallowed bytes while blocked: must be reset on heal
        self.closed = False

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in (self.cwriter, self.swriter):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.transport.abort()
        self.net.links.discard(self)

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng = self.net.rng
        last_release = 0.0
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def sender() -> None:
            while True:
                item = await queue.get()
                if item is None:
                    with contextlib.suppress(Exception):
                        writer.write_eof()
                    return
                release, data = item
                wait = release - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.closed:
                    return
                writer.write(data)
                await writer.drain()

        send_task = asyncio.create_task(sender())
        try:
            while not self.closed:
                data = await reader.read(_CHUNK)
                if not data:
                    queue.put_nowait(None)
                    break
                rules = self.net.rules
                if self.held or rules.blocked(self.client, self.server):
                    self.held = True
                    continue
                loss = rules.loss_of(self.client, self.server)
                if loss and rng.random() * 100 < loss:
                    self.abort()
                    break
                mean, jitter = rules.delay_of(self.client, self.server)
                release = time.monotonic()
                if mean or jitter:
                    release += max(0.0, rng.gauss(mean, jitter))
                last_release = max(last_release, release)
                queue.put_nowait((last_release, data))
            await send_task
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            self.abort()
        finally:
            if not send_task.done():
                send_task.cancel()


class ProxyNet:
    """Runs the proxies on an asyncio loop in a daemon thread; the methods are called from any thread."""

    def __init__(self, seed: int | None = None) -> None:
        self.rules = Rules()
        self.links: set[_Link] = set()
        self.rng = random.Random(seed)
        self._servers: list[asyncio.Server] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxies", daemon=True)
        self._thread.start()
        self._closed = False

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def listen(
        self,
        upstream: tuple[str, int],
        server: str,
        client: str | Callable[[str], str | None] | None,
        host: str = "127.0.0.1",
    ) -> int:
        """Start a proxy to `upstream` for `server`; returns the port it listens on (127.0.0.1)."""

        async def start() -> int:
            async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                peer = writer.get_extra_info("peername")
                name = client(peer[0]) if callable(client) else client
                await self._serve(_Link(self, name, server, reader, writer), upstream)

            srv = await asyncio.start_server(on_connect, host, 0, reuse_address=True)
            self._servers.append(srv)
            port: int = srv.sockets[0].getsockname()[1]
            return port

        return self._call(start())

    async def _serve(self, link: _Link, upstream: tuple[str, int]) -> None:
        self.links.add(link)
        if self.rules.blocked(link.client, link.server):
            link.held = True  # a blackhole: accept and wait for the heal, which resets it
            try:
                while not link.closed and await link.creader.read(_CHUNK):
                    pass
            except (ConnectionError, OSError):
                pass
            link.abort()
            return
        try:
            sreader, swriter = await asyncio.open_connection(*upstream)
        except OSError:
            link.abort()
            return
        link.swriter = swriter
        if link.closed:  # healed or closed while connecting
            link.abort()
            return
        await asyncio.gather(
            link.pump(link.creader, swriter), link.pump(sreader, link.cwriter), return_exceptions=True
        )
        link.abort()

    def update(self, change: Callable[[Rules], None]) -> None:
        """Apply `change` to the rules; reset held links that are no longer blocked."""

        async def apply() -> None:
            change(self.rules)
            for link in list(self.links):
                if link.held and not self.rules.blocked(link.client, link.server):
                    link.abort()
                elif self.rules.blocked(link.client, link.server):
                    link.held = True

        self._call(apply())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        async def stop() -> None:
            for srv in self._servers:
                srv.close()
            for link in list(self.links):
                link.abort()
            await asyncio.sleep(0.05)  # let the pumps see their closed transports and finish
            for srv in self._servers:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(srv.wait_closed(), 2.0)

        with contextlib.suppress(Exception):
            self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()
