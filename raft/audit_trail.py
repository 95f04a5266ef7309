"""The audit trail: one record per client command, written by apply, pruned by retention, listed by the API.

(Not `raft.audit`, which is the fault checker's test-only event log.)

A servicer stamps `Command.audit` (principal, peer address, RPC name) on the commands it proposes for a
client; leader-internal commands (fires, grants, results, expiries, retention) carry none and leave no
record. When the state machine applies a command that carries it, `record` writes one `AuditRecord` in
the entry's transaction with the command's outcome (its `CommandResult`: "ok" or the error code),
whatever that outcome is: a refused command is recorded like an applied one. Everything in the record
comes from the log entry (the stamped time, the Raft index, the command's position in its entry and its
body), never from the applying node, so every replica holds the same trail (I1), and it is replicated
state like any other: in snapshots and in the state digest.

Records are keyed `time_ms8 + index8 + position4` in the `audit` sub-database: listed in stamped-time
order (ties, and only ties, in log order), with since/until answered by the key range. Retention
(`prune`, called by the Prune command) deletes the oldest records past `audit_max_age_ms` or beyond
`audit_max_records`, within the step's budget.

Nothing here reads a clock or the configuration.
"""

from __future__ import annotations

import binascii
import struct

from cronraft.errors import InvalidArgument
from cronraft.proto.v1 import audit_pb2, commands_pb2
from cronraft.raft import features
from cronraft.raft.kv import Txn

AuditRecord = audit_pb2.AuditRecord

DB = "audit"
MAX_TARGETS = 16  # ids kept per record; the rest are counted in `targets_omitted`
MAX_ERROR = 200  # characters of the error message kept
MAX_FIELD = 256  # characters of principal, peer and method kept (the leader bounds them too)
LIST_SCAN_LIMIT = 10_000  # records one ListAudit page reads at most (a filtered page may come back short)
_KEY = struct.Struct(">QQI")
KEY_LEN = _KEY.size

# Body fields that name what a command acts on, in the order they are recorded.
_ID_FIELDS = ("task_id", "first_task_id", "execution_id", "name")


def key(time_ms: int, index: int, position: int) -> bytes:
    return _KEY.pack(max(0, time_ms), index, position)


def targets(cmd: commands_pb2.Command) -> list[str]:
    """The task ids, execution ids and calendar names `cmd` names (an import: its first task id; the
    ids of a batch are consecutive from it)."""
    kind = cmd.WhichOneof("body")
    if kind is None:
        return []
    body = getattr(cmd, kind)
    out = [v for v in (getattr(body, f, "") for f in _ID_FIELDS) if v]
    out.extend(getattr(body, "execution_ids", ()))
    if kind == "put_calendar":
        out.append(cmd.put_calendar.calendar.name)
    return out


def outcome(res: commands_pb2.CommandResult) -> str:
    if res.error_code:
        return res.error_code
    return "ok" if res.applied else "not_applied"


def answered_targets(cmd: commands_pb2.Command, res: commands_pb2.CommandResult) -> list[str]:
    """`targets(cmd)` with the id the leader minted for what the command creates (a task, an import's
    first task, a triggered execution) replaced by the one its answer holds. The two differ only for a
    retry answered from the dedup table: its command carries ids of its own, which name nothing (the
    first attempt's task or execution is the answer), and a record naming them was not found by
    `audit list --target` under the id the caller got."""
    ids = targets(cmd)
    kind = cmd.WhichOneof("body")
    if kind == "create_task":
        minted, answered = cmd.create_task.task_id, res.task.task_id
    elif kind == "import_tasks":
        minted, answered = cmd.import_tasks.first_task_id, res.imported.first_task_id
    elif kind == "trigger_task":
        minted, answered = cmd.trigger_task.execution_id, res.execution.execution_id
    else:
        return ids
    if answered and minted != answered:
        ids = [answered if i == minted else i for i in ids]
    return ids


def build(
    index: int,
    position: int,
    cmd: commands_pb2.Command,
    res: commands_pb2.CommandResult,
    *,
    answered_ids: bool = False,
) -> AuditRecord:
    """The record of `cmd` (which carries `audit`), applied at (index, position) with result `res`.
    `answered_ids` (the feature schedule_fixes): the ids a retry was answered with (`answered_targets`),
    not those its command carried."""
    meta = cmd.audit
    ids = answered_targets(cmd, res) if answered_ids else targets(cmd)
    rec = AuditRecord(
        time_ms=cmd.stamped_at_ms,
        raft_index=index,
        position=position,
        principal=meta.principal[:MAX_FIELD],
        peer=meta.peer[:MAX_FIELD],
        method=meta.method[:MAX_FIELD],
        # The servicer prefixes the client's id with the kind of write ("create:<id>"): keep the client's.
        request_id=cmd.request_id.partition(":")[2],
        target_ids=ids[:MAX_TARGETS],
        targets_omitted=max(0, len(ids) - MAX_TARGETS),
        outcome=outcome(res),
        error=res.error[:MAX_ERROR] if res.error_code or not res.applied else "",
    )
    if cmd.WhichOneof("body") == "import_tasks":
        rec.targets_omitted += max(0, len(cmd.import_tasks.specs) - 1)
    return rec


def record(
    txn: Txn, index: int, position: int, cmd: commands_pb2.Command, res: commands_pb2.CommandResult
) -> None:
    """Write the audit record of one applied command (the state machine calls this for every command
    carrying `audit`, after its outcome is known, in the entry's transaction)."""
    answered_ids = features.is_active(txn, features.SCHEDULE_FIXES)
    rec = build(index, position, cmd, res, answered_ids=answered_ids)
    txn.put(DB, key(cmd.stamped_at_ms, index, position), rec.SerializeToString(deterministic=True))


# --------------------------------------------------------------------------------------- retention


def prune(txn: Txn, now_ms: int, max_age_ms: int, max_records: int, limit: int) -> tuple[int, int]:
    """Delete, oldest first, the records stamped at or before `now_ms - max_age_ms` and those beyond the
    newest `max_records` (0 in either: no limit), at most `limit`. Returns (deleted, next_ms): when the
    oldest record left becomes deletable by age (0: never, or no age limit)."""
    if limit <= 0 or (max_age_ms <= 0 and max_records <= 0):
        return 0, 0
    excess = txn.count(DB) - max_records if max_records > 0 else 0
    cutoff = now_ms - max_age_ms + 1 if max_age_ms > 0 else 0  # records stamped before this go
    doomed: list[bytes] = []
    for k, _ in txn.scan(DB):
        if len(doomed) >= limit or (len(doomed) >= excess and _time(k) >= cutoff):
            break
        doomed.append(k)
    for k in doomed:
        txn.delete(DB, k)
    next_ms = 0
    if max_age_ms > 0:
        for k, _ in txn.scan(DB):
            next_ms = _time(k) + max_age_ms
            break
    return len(doomed), next_ms


def _time(k: bytes) -> int:
    return int.from_bytes(k[:8], "big")


# ------------------------------------------------------------------------------------------ reading


def page_start(page_token: str) -> bytes:
    """The key a page token resumes after; InvalidArgument when it is not one a listing returned."""
    try:
        raw = binascii.unhexlify(page_token)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_LEN:
        raise InvalidArgument("page_token", "not a token returned by a previous ListAudit call")
    return raw


def list_records(
    txn: Txn,
    *,
    principal: str = "",
    method: str = "",
    since_ms: int = 0,
    until_ms: int = 0,
    target_id: str = "",
    page_size: int = 100,
    page_token: str = "",
    scan_limit: int = LIST_SCAN_LIMIT,
    max_bytes: int = 0,
) -> tuple[list[AuditRecord], str]:
    """One page of records in key order (stamped time, then log position), filtered; the token (a key,
    in hex) resumes after the last record read. A page reads at most `scan_limit` records, so a filter
    on principal, method or target may return a short or empty page with a token (continue with it).
    With `max_bytes`, a page also ends once its records reach that many bytes (at least one)."""
    start = key(since_ms, 0, 0)
    if page_token:
        start = max(start, page_start(page_token) + b"\0")
    end = key(until_ms, 0, 0) if until_ms > 0 else None
    out: list[AuditRecord] = []
    scanned = size = 0
    last = b""
    for k, raw in txn.scan(DB, start, end):
        if scanned >= scan_limit:
            return out, _token(last)
        scanned += 1
        last = k
        rec = AuditRecord()
        rec.ParseFromString(raw)
        if principal and rec.principal != principal:
            continue
        if method and rec.method != method:
            continue
        if target_id and target_id not in rec.target_ids:
            continue
        out.append(rec)
        size += len(raw)
        if len(out) >= page_size or (max_bytes and size >= max_bytes):
            return out, _token(k)
    return out, ""


def _token(k: bytes) -> str:
    """The token that resumes after key `k`."""
    return binascii.hexlify(k).decode()


__all__ = [
    "DB",
    "LIST_SCAN_LIMIT",
    "MAX_TARGETS",
    "AuditRecord",
    "answered_targets",
    "build",
    "key",
    "list_records",
    "outcome",
    "page_start",
    "prune",
    "record",
    "targets",
]
