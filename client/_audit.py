"""The audit trail on the client side: the ListAudit request of the SDKs and a record as JSON (schedctl)."""

from __future__ import annotations

from typing import Any

from cronraft.client._parsing import Instant, instant_ms
from cronraft.client._render import format_instant
from cronraft.proto.v1 import audit_pb2

__all__ = ["record_to_json", "request"]


def request(
    principal: str, method: str, since: Instant | None, until: Instant | None, target_id: str
) -> audit_pb2.ListAuditRequest:
    return audit_pb2.ListAuditRequest(
        principal=principal,
        method=method,
        since_ms=0 if since is None else instant_ms(since, "since"),
        until_ms=0 if until is None else instant_ms(until, "until"),
        target_id=target_id,
    )


def record_to_json(r: audit_pb2.AuditRecord) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "time": format_instant(r.time_ms),
        "time_ms": r.time_ms,
        "raft_index": r.raft_index,
        "position": r.position,
        "principal": r.principal,
        "peer": r.peer,
        "method": r.method,
        "request_id": r.request_id,
        "targets": list(r.target_ids),
        "outcome": r.outcome,
    }
    if r.targets_omitted:
        doc["targets_omitted"] = r.targets_omitted
    if r.error:
        doc["error"] = r.error
    return doc
