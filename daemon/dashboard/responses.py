"""What the dashboard's endpoints share (daemon.dashboard.api): JSON answers and errors, the caller's
address and certificate, state names read from a query, and an execution's row in a list."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cronraft import errors
from cronraft.client import _render as render
from cronraft.daemon.dashboard.calls import CallFailed, PeerInfo
from cronraft.proto.v1 import common_pb2

__all__ = ["error_response", "execution_row", "execution_state", "json_response", "peer_of", "task_state"]

_TASK_STATES = {"scheduled", "completed", "cancelled", "paused"}
_EXECUTION_STATES = {
    "pending",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "lost",
    "buffered",
    "expired",
}


def json_response(body: Any, status: int = 200) -> web.Response:
    response = web.json_response(body, status=status)
    response.headers["Cache-Control"] = "no-store"
    return response


def error_response(failure: CallFailed, leader: dict[str, str] | None = None) -> web.Response:
    """`{"error": {"code", "message", "field", "leader"}}` with the HTTP status of the gRPC code."""
    body = {
        "code": failure.code.name.lower(),
        "message": failure.message,
        "field": failure.field,
        "leader": leader,
    }
    response = json_response({"error": body}, failure.status)
    if failure.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="cronraft"'
    return response


def peer_of(request: web.Request) -> PeerInfo:
    """The caller's address in gRPC's form, marked as a dashboard call (the audit trail's `peer`), and
    its verified client certificate when the listener is HTTPS with mutual TLS."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    address = "unknown"
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        address = f"ipv6:[{host}]:{port}" if ":" in str(host) else f"ipv4:{host}:{port}"
    cert = transport.get_extra_info("peercert") if transport is not None else None
    return PeerInfo(f"dashboard:{address}", cert or None)


def _state_name(name: str, allowed: set[str]) -> str:
    """A lower-case state name as the JSON shows it ("paused"), checked ("" for any)."""
    if name and name not in allowed:
        raise errors.InvalidArgument(
            "state", f"unknown state {name[:40]!r}; one of {', '.join(sorted(allowed))}"
        )
    return name.upper()


def task_state(name: str) -> common_pb2.TaskState.ValueType:
    name = _state_name(name, _TASK_STATES)
    return common_pb2.TaskState.Value("TASK_" + name) if name else common_pb2.TASK_STATE_UNSPECIFIED


def execution_state(name: str) -> common_pb2.ExecutionState.ValueType:
    name = _state_name(name, _EXECUTION_STATES)
    return (
        common_pb2.ExecutionState.Value("EXECUTION_" + name)
        if name
        else common_pb2.EXECUTION_STATE_UNSPECIFIED
    )


def execution_row(ex: common_pb2.Execution) -> dict[str, Any]:
    """An execution in a list: the JSON of docs/cli.md without its output tails and return value (up to
    64 KiB each: a page of 50 would weigh megabytes); the execution's own endpoint has them."""
    out = render.execution_to_json(ex)
    for key in ("stdout_tail", "stderr_tail", "return_value"):
        out[key] = None
    return out
