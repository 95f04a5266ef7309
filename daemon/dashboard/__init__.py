"""The web dashboard (issue 15; docs/dashboard.md): pages and a JSON API served by every node on its
HTTP listener (daemon.http), with the gRPC API's authentication, roles and namespaces.

- `site`: the static page, its CSS and JS (in `static/`, shipped in the package), the security
  headers, and the host and origin checks.
- `api`: `/api/v1/...`, each endpoint one RPC of the gRPC API, rendered as docs/cli.md's JSON;
  `responses`: what the endpoints share (JSON answers and errors, the caller's address, state names).
- `calls`: how an endpoint runs that RPC in process, through the node's interceptors, so that who may
  do what is decided by the very code that decides it for gRPC.
- `params`: query parameters and JSON bodies, with bounds, every problem naming its field.

`mount(app, node)` adds the routes to the listener's aiohttp application.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from cronraft.daemon.dashboard.api import API_PREFIX, Api
from cronraft.daemon.dashboard.calls import InProcessCalls
from cronraft.daemon.dashboard.site import Assets, Guard

if TYPE_CHECKING:
    from cronraft.daemon.node import Node

__all__ = ["API_PREFIX", "mount", "node_interceptors"]


def node_interceptors(node: Node) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors the node's gRPC server runs, in its order (daemon.node.Node.start)."""
    from cronraft.daemon.services.audit import CallInterceptor

    return [*node.security.interceptors, CallInterceptor()]


def mount(
    app: web.Application, node: Node, *, interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None
) -> None:
    """Add the dashboard's routes to `app`: `/` (the page), `/static/{name}` and `/api/v1/...`."""
    guard = Guard(auth_enabled=node.security.authenticator is not None)
    calls = InProcessCalls(node_interceptors(node) if interceptors is None else interceptors)
    api = Api(node, calls)
    assets = Assets()
    routes = [
        web.get("/", guard.wrap(assets.index)),
        web.get("/static/{name}", guard.wrap(assets.static)),
    ]
    routes += [web.route(method, path, guard.wrap(handler)) for method, path, handler in api.routes()]
    app.add_routes(routes)
