"""The node's HTTP listener (aiohttp): `build_app` makes the application, `HttpServer` serves it.

Routes of the listener itself, answered without authentication (they expose no task data:
docs/security.md):
- `GET /metrics`: this node's registry (daemon.metrics) in the Prometheus text format, or OpenMetrics
  when the scraper asks for it (`Accept`), gzip when it accepts it; `?name[]=...` selects families.
- `GET /healthz`: liveness. 200 while the process runs and its event loop answers (the handler runs on
  that loop: a blocked loop answers nothing, and the probe times out).
- `GET /readyz`: readiness (daemon.http.readiness): 200 when ready, else 503; both with a JSON body
  `{"node", "ready", "failed": {check: why}}`. The gRPC health service's "" status says the same.

**Mounting more** (the dashboard). A *mount* is a function `mount(app, node)` that adds routes (or
sub-applications, static files) to the application; `build_app(node, mounts=[...])` calls each after the
routes above, which no mount may replace. The node serves what `default_mounts()` returns: add yours
there. Routes a mount adds must authenticate their callers themselves (the same Authenticator as gRPC,
`node.security.authenticator`; with none configured every caller holds every role, as on gRPC): this
listener does not. On a TLS listener, a client certificate, if the client sent one, was verified against
`[tls] client_ca` and is in `request.transport.get_extra_info("peercert")`. The node is also reachable
from any handler as `request.app[NODE]`.

**TLS.** With `[tls]` configured the listener serves HTTPS with the node's certificate. With
`require_client_cert` it asks clients for a certificate and verifies one that is sent, but also accepts a
connection without one (unlike gRPC, which refuses it): a load balancer's or Kubernetes' probe and a
Prometheus without a client certificate can still reach the three routes above, and everything else
authenticates per request. A non-loopback listener without TLS and authentication is refused at config
load unless `insecure = true` (daemon.config.security), as for gRPC.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog
from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from cronraft.daemon.config import TlsConfig, split_host_port
from cronraft.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

log = structlog.get_logger("cronraft.http")

Mount = Callable[[web.Application, "Node"], None]
NODE: web.AppKey[Node] = web.AppKey("node")
PUBLIC_PATHS = ("/metrics", "/healthz", "/readyz")
SHUTDOWN_GRACE_S = 2.0


def default_mounts() -> list[Mount]:
    """What every node serves beside /metrics, /healthz and /readyz (module docstring)."""
    from cronraft.daemon import dashboard  # the web dashboard: /, /static/*, /api/v1/... (docs/dashboard.md)

    return [dashboard.mount]


def build_app(
    node: Node,
    *,
    mounts: Sequence[Mount] = (),
    extra_routes: Sequence[web.AbstractRouteDef] = (),
) -> web.Application:
    """The listener's application: the routes of the module docstring, `extra_routes`, then `mounts`."""
    app = web.Application()
    app[NODE] = node
    node_id = node.config.node.id

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"node": node_id, "alive": True}, headers={"Cache-Control": "no-store"})

    async def readyz(request: web.Request) -> web.Response:
        readiness = node.readiness()
        return web.json_response(
            readiness.body(node_id),
            status=200 if readiness.ready else 503,
            headers={"Cache-Control": "no-store"},
        )

    app.add_routes(
        [
            web.get("/metrics", make_aiohttp_handler(node.metrics.registry)),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            *extra_routes,
        ]
    )
    for mount in mounts:
        mount(app, node)
    return app


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """HTTPS with the node's certificate (None: TLS off); client certificates asked for and verified
    when `require_client_cert`, but not required (module docstring)."""
    if tls.cert is None or tls.key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(tls.cert, tls.key)
        if tls.require_client_cert and tls.client_ca is not None:
            ctx.load_verify_locations(cafile=str(tls.client_ca))
            ctx.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"tls: the HTTP listener cannot use {tls.cert}, {tls.key}: {e}") from None
    return ctx


class HttpServer:
    """Serves `app` on `address` (host:port; port 0 picks a free one, see `port`)."""

    def __init__(self, app: web.Application, address: str, *, ssl_context: ssl.SSLContext | None = None):
        self.address = address
        self._app = app
        self._ssl = ssl_context
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host = split_host_port(self.address)[0]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._ssl is not None else 'http'}://{host}:{self.port}"

    async def start(self) -> None:
        host, port = split_host_port(self.address)
        runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, ssl_context=self._ssl, reuse_address=True)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise Unavailable(f"cannot bind the HTTP address {self.address}: {e.strerror or e}") from None
        self._runner = runner
        self.port = runner.addresses[0][1] if runner.addresses else port
        log.info("http listening", url=self.url, routes=",".join(PUBLIC_PATHS))

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


__all__ = ["NODE", "PUBLIC_PATHS", "HttpServer", "Mount", "build_app", "default_mounts", "server_ssl_context"]
