"""A minimal Prometheus endpoint: `GET /metrics` in the text exposition format (version 0.0.4).

Off unless `[metrics] address = "host:port"` is set. Plain asyncio, no dependency: one short-lived
connection per scrape, the request line and headers read with a size and time bound, the answer built
from a snapshot of gauges taken at scrape time (nothing is computed between scrapes).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

from cronraft.daemon.config import split_host_port

log = structlog.get_logger("cronraft.metrics")

MAX_REQUEST_BYTES = 8192
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Gauge:
    name: str
    help: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def render(gauges: Iterable[Gauge]) -> str:
    """The text format: one HELP/TYPE header per metric name, then its samples, in first-seen order."""
    by_name: dict[str, list[Gauge]] = {}
    for g in gauges:
        by_name.setdefault(g.name, []).append(g)
    lines = []
    for name, samples in by_name.items():
        lines.append(f"# HELP {name} {samples[0].help}")
        lines.append(f"# TYPE {name} gauge")
        for g in samples:
            labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(g.labels.items()))
            lines.append(f"{name}{{{labels}}} {_number(g.value)}" if labels else f"{name} {_number(g.value)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, address: str, collect: Callable[[], Iterable[Gauge]]) -> None:
        self.address = address
        self._collect = collect
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        host, port = split_host_port(self.address)
        self._server = await asyncio.start_server(
            self._handle, host, port, reuse_address=True, limit=MAX_REQUEST_BYTES
        )
        log.info("metrics endpoint listening", address=self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method != "GET":
                status, body = "405 Method Not Allowed", "only GET\n"
            elif path.split("?", 1)[0] != "/metrics":
                status, body = "404 Not Found", "try /metrics\n"
            else:
                status, body = "200 OK", render(self._collect())
            data = body.encode()
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass  # a slow, truncated or oversized request: just close
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


__all__ = ["Gauge", "MetricsServer", "render"]
