"""The Prometheus endpoint (daemon.metrics) and the [clock] / [metrics] config keys."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import pytest

from cronraft.daemon.config import ClockConfig, MetricsConfig, config_from_dict
from cronraft.daemon.metrics import Gauge, MetricsServer, render
from cronraft.errors import ConfigError
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_render_is_the_text_exposition_format() -> None:
    text = render(
        [
            Gauge("cronraft_is_leader", "1 on the leader.", 1.0, {"node": "n1"}),
            Gauge("cronraft_clock_peer_offset_seconds", "Peer offset.", -0.25, {"node": "n1", "peer": 'a"b'}),
            Gauge("cronraft_clock_peer_offset_seconds", "Peer offset.", 5.0, {"node": "n1", "peer": "c"}),
            Gauge("cronraft_raft_term", "Term.", 7),
        ]
    )
    assert text == (
        "# HELP cronraft_is_leader 1 on the leader.\n"
        "# TYPE cronraft_is_leader gauge\n"
        'cronraft_is_leader{node="n1"} 1\n'
        "# HELP cronraft_clock_peer_offset_seconds Peer offset.\n"
        "# TYPE cronraft_clock_peer_offset_seconds gauge\n"
        'cronraft_clock_peer_offset_seconds{node="n1",peer="a\\"b"} -0.25\n'
        'cronraft_clock_peer_offset_seconds{node="n1",peer="c"} 5\n'
        "# HELP cronraft_raft_term Term.\n"
        "# TYPE cronraft_raft_term gauge\n"
        "cronraft_raft_term 7\n"
    )


async def _request(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    return data


@pytest.mark.asyncio
async def test_server_answers_get_metrics_and_refuses_the_rest() -> None:
    port = free_port()
    calls = []

    def collect() -> list[Gauge]:
        calls.append(1)
        return [Gauge("cronraft_clock_healthy", "ok?", 0.0, {"node": "n1"})]

    server = MetricsServer(f"127.0.0.1:{port}", collect)
    await server.start()
    try:
        ok = await _request(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = ok.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"text/plain; version=0.0.4" in head
        assert b'cronraft_clock_healthy{node="n1"} 0\n' in body
        assert (await _request(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await _request(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert await _request(port, b"x" * 10_000) == b""  # oversized: closed without an answer
        assert len(calls) == 1  # gauges are read at scrape time only
    finally:
        await server.stop()


def _base() -> dict[str, object]:
    return tomllib.loads((ROOT / "cluster-configs" / "single-node.toml").read_text())


def test_clock_and_metrics_keys_default_and_validate() -> None:
    cfg = config_from_dict(_base(), "f.toml")
    assert cfg.clock == ClockConfig(probe_interval_ms=1000, max_offset_ms=1000)
    assert cfg.metrics == MetricsConfig(address="")
    cfg = config_from_dict(
        {
            **_base(),
            "clock": {"probe_interval_ms": 250, "max_offset_ms": 2000},
            "metrics": {"address": "127.0.0.1:9464"},
        },
        "f.toml",
    )
    assert cfg.clock.probe_interval_ms == 250 and cfg.clock.max_offset_ms == 2000
    assert cfg.metrics.address == "127.0.0.1:9464"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"clock": {"probe_interval": 1}}, "f.toml: clock.probe_interval: unknown key"),
        ({"clock": {"probe_interval_ms": 10}}, "f.toml: clock.probe_interval_ms: 10 is too small"),
        ({"clock": {"max_offset_ms": "1s"}}, "f.toml: clock.max_offset_ms: expected an integer"),
        ({"clock": {"max_offset_ms": 50}}, "f.toml: clock.max_offset_ms: 50 is too small"),
        ({"metrics": {"address": "nowhere"}}, "f.toml: metrics.address: 'nowhere': expected host:port"),
        ({"metrics": {"address": 9464}}, "f.toml: metrics.address: expected a string"),
        ({"metrics": {"port": 1}}, "f.toml: metrics.port: unknown key"),
    ],
)
def test_bad_clock_and_metrics_keys_name_file_and_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_from_dict({**_base(), **table}, "f.toml")
    assert str(e.value).startswith(message)
