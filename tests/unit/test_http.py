"""The node's HTTP listener (daemon.http.server): /metrics, /healthz, /readyz, mounts, TLS; and the gRPC
metrics interceptor (daemon.http.grpc_metrics)."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cronraft.client._pki import Leaf, init_pki
from cronraft.daemon.config import TlsConfig
from cronraft.daemon.http import NODE, HttpServer, Readiness, build_app
from cronraft.daemon.http.grpc_metrics import GrpcMetrics, split_method
from cronraft.daemon.http.server import server_ssl_context
from cronraft.daemon.metrics import NodeMetrics
from cronraft.errors import Unavailable
from tests.support.ports import free_port


class FakeNode:
    """What the listener reads of a node."""

    def __init__(self) -> None:
        self.config = SimpleNamespace(node=SimpleNamespace(id="n1"))
        self.metrics = NodeMetrics()
        self.state = Readiness()

    def readiness(self) -> Readiness:
        return self.state


async def fetch(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with session.get(url, **kwargs) as resp:
        return resp.status, await resp.text()


@pytest.mark.asyncio
async def test_metrics_healthz_and_readyz_answer_without_authentication() -> None:
    node = FakeNode()
    node.metrics.fires.inc(3)

    def mount(app: web.Application, mounted: Any) -> None:
        async def hello(request: web.Request) -> web.Response:
            return web.Response(text=f"hello from {request.app[NODE].config.node.id}")

        assert mounted is node
        app.add_routes([web.get("/hello", hello)])

    server = HttpServer(build_app(node, mounts=[mount]), f"127.0.0.1:{free_port()}")  # type: ignore[arg-type]
    await server.start()
    try:
        base = server.url
        async with aiohttp.ClientSession() as s:
            code, text = await fetch(s, f"{base}/metrics")
            assert code == 200 and "cronraft_fires_total 3.0" in text
            code, text = await fetch(s, f"{base}/metrics", headers={"Accept": "application/openmetrics-text"})
            assert code == 200 and text.rstrip().endswith("# EOF")
            assert await fetch(s, f"{base}/healthz") == (200, '{"node": "n1", "alive": true}')
            code, text = await fetch(s, f"{base}/readyz")
            assert code == 200 and '"ready": true' in text
            node.state = Readiness({"quorum": "connected to 1 of 3 members, not a majority"})
            code, text = await fetch(s, f"{base}/readyz")
            assert code == 503
            assert '"failed": {"quorum": "connected to 1 of 3 members, not a majority"}' in text
            assert await fetch(s, f"{base}/hello") == (200, "hello from n1")
            assert (await fetch(s, f"{base}/nothing"))[0] == 404
            async with s.post(f"{base}/metrics") as resp:
                assert resp.status == 405
    finally:
        await server.stop()


@pytest.mark.asyncio
async def test_an_address_in_use_is_refused_with_unavailable() -> None:
    address = f"127.0.0.1:{free_port()}"
    first = HttpServer(build_app(FakeNode()), address)  # type: ignore[arg-type]
    await first.start()
    try:
        with pytest.raises(Unavailable, match=f"cannot bind the HTTP address {address}"):
            await HttpServer(build_app(FakeNode()), address).start()  # type: ignore[arg-type]
    finally:
        await first.stop()


@pytest.mark.asyncio
async def test_https_with_the_node_certificate_and_optional_verified_client_certificates(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    init_pki(pki, [Leaf("node1", ("127.0.0.1",), server=True), Leaf("client")])
    other = tmp_path / "other"
    init_pki(other, [Leaf("intruder")])
    tls = TlsConfig(
        cert=pki / "node1.pem",
        key=pki / "node1-key.pem",
        ca=pki / "ca.pem",
        client_ca=pki / "ca.pem",
        require_client_cert=True,
    )

    def mount(app: web.Application, node: Any) -> None:
        async def whoami(request: web.Request) -> web.Response:
            cert = request.transport.get_extra_info("peercert") if request.transport else None
            names = [v for rdn in (cert or {}).get("subject", ()) for k, v in rdn if k == "commonName"]
            return web.Response(text=",".join(names) or "anonymous")

        app.add_routes([web.get("/whoami", whoami)])

    server = HttpServer(
        build_app(FakeNode(), mounts=[mount]),  # type: ignore[arg-type]
        f"127.0.0.1:{free_port()}",
        ssl_context=server_ssl_context(tls),
    )
    await server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        async with aiohttp.ClientSession() as s:
            # No client certificate: the public routes answer, a mount sees no identity.
            assert (await fetch(s, f"{server.url}/healthz", ssl=trust))[0] == 200
            assert await fetch(s, f"{server.url}/whoami", ssl=trust) == (200, "anonymous")
            mine = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            mine.load_cert_chain(pki / "client.pem", pki / "client-key.pem")
            assert await fetch(s, f"{server.url}/whoami", ssl=mine) == (200, "client")
            # A certificate of another CA is refused in the handshake.
            bad = ssl.create_default_context(cafile=str(pki / "ca.pem"))
            bad.load_cert_chain(other / "intruder.pem", other / "intruder-key.pem")
            with pytest.raises(aiohttp.ClientError):
                await fetch(s, f"{server.url}/healthz", ssl=bad)
            # Plain HTTP to the TLS listener gets nothing useful.
            with pytest.raises(aiohttp.ClientError):
                await fetch(s, server.url.replace("https", "http") + "/healthz")
    finally:
        await server.stop()
    assert server_ssl_context(TlsConfig()) is None


# ------------------------------------------------------------------------------ gRPC interceptor


class Health(health_pb2_grpc.HealthServicer):
    async def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        if request.service == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such service")
        if request.service == "bug":
            raise RuntimeError("a bug")
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(self, request: Any, context: Any) -> Any:
        for _ in range(2):
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@pytest.mark.asyncio
async def test_grpc_calls_are_counted_by_method_and_code_with_their_latency() -> None:
    metrics = NodeMetrics()
    server = grpc.aio.server(interceptors=[GrpcMetrics(metrics.registry)])
    health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service, code in (("", None), ("", None), ("missing", "NOT_FOUND"), ("bug", "UNKNOWN")):
                try:
                    await stub.Check(health_pb2.HealthCheckRequest(service=service))
                except grpc.aio.AioRpcError as e:
                    assert e.code().name == code
            replies = [r async for r in stub.Watch(health_pb2.HealthCheckRequest())]
            assert len(replies) == 2
    finally:
        await server.stop(None)
    reg = metrics.registry
    svc = "grpc.health.v1.Health"

    def count(method: str, code: str) -> float | None:
        return reg.get_sample_value(
            "cronraft_grpc_requests_total", {"service": svc, "method": method, "code": code}
        )

    assert count("Check", "OK") == 2
    assert count("Check", "NOT_FOUND") == 1
    assert count("Check", "UNKNOWN") == 1
    assert count("Watch", "OK") == 1
    labels = {"service": svc, "method": "Check"}
    assert reg.get_sample_value("cronraft_grpc_request_seconds_count", labels) == 4
    assert split_method("/cronraft.v1.Scheduler/CreateTask") == ("cronraft.v1.Scheduler", "CreateTask")
    assert split_method("") == ("unknown", "unknown")
