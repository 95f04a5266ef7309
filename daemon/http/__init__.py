"""The node's HTTP listener and what it tells: Prometheus metrics, liveness and readiness (issue 15;
docs/monitoring.md).

- `server`: `build_app` (the aiohttp application: /metrics, /healthz, /readyz, and the *mounts*, e.g.
  the dashboard: see its docstring for how to mount more) and `HttpServer` (start, stop, TLS).
- `readiness`: the one truth of "ready" behind /readyz, the gRPC health status and `cronraft_ready`.
- `collector`: the metric families read from the node's state at scrape time.
- `grpc_metrics`: the gRPC server interceptor counting calls by method and code, with their latency.

The instruments the daemon updates as things happen (outcomes, apply) are daemon.metrics.
"""

from cronraft.daemon.http.readiness import MAX_APPLY_LAG, Readiness, evaluate
from cronraft.daemon.http.server import NODE, PUBLIC_PATHS, HttpServer, Mount, build_app, default_mounts

__all__ = [
    "MAX_APPLY_LAG",
    "NODE",
    "PUBLIC_PATHS",
    "HttpServer",
    "Mount",
    "Readiness",
    "build_app",
    "default_mounts",
    "evaluate",
]
